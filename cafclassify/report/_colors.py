"""One fixed palette for lineages and CAF subtypes, shared by every figure and page.

A label always gets the same colour, in every figure of a report and across the
reports and the summary page of a run: myCAF is red everywhere, ``unassigned`` is
grey everywhere. Labels we do not know (user gene sets, a future subtype) get a
colour derived from a hash of the name, so they too are stable between pages.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from .._keys import NOT_FIBROBLAST, UNASSIGNED

__all__ = [
    "LINEAGE_COLORS",
    "MISSING_COLOR",
    "SUBTYPE_COLORS",
    "color_for",
    "palette_for",
]

#: lineage labels written by ``gate()`` (``_keys.LINEAGES``) and the lineage gene sets
LINEAGE_COLORS: dict[str, str] = {
    "fibroblast": "#d95f02",
    "mural": "#7570b3",
    "epithelial": "#1b9e77",
    "immune": "#386cb0",
    "endothelial": "#e6ab02",
    "other": "#8c6d4f",
    "other_lineage": "#8c6d4f",
}

#: CAF subtypes, states and the two non-subtype labels of ``obs["caf_subtype"]``
SUBTYPE_COLORS: dict[str, str] = {
    "myCAF": "#c0392b",
    "iCAF": "#2e86c1",
    "apCAF": "#27ae60",
    "meCAF": "#8e44ad",
    "vCAF": "#e67e22",
    "dCAF": "#16a085",
    "dCAF_developmental": "#16a085",
    "LTBP2_CAF": "#b7950b",
    "LTBP2+": "#b7950b",
    "LRRC15_myCAF": "#e84393",
    "senescence": "#6d4c41",
    "senescent_CAF": "#6d4c41",
    "cycling": "#00838f",
    "state_cycling": "#00838f",
    UNASSIGNED: "#9e9e9e",
    NOT_FIBROBLAST: "#dddddd",
}

#: colour for missing values (NaN labels)
MISSING_COLOR = "#eeeeee"

# fallback colours for unknown labels (colour-blind-friendly "tab10"-like, minus greys)
_FALLBACK = (
    "#4e79a7",
    "#f28e2b",
    "#59a14f",
    "#b07aa1",
    "#76b7b2",
    "#edc948",
    "#ff9da7",
    "#9c755f",
    "#e15759",
    "#86bcb6",
)


def color_for(label: object) -> str:
    """Return the hex colour of one lineage/subtype label.

    Parameters
    ----------
    label
        A lineage or subtype label (e.g. ``"fibroblast"``, ``"myCAF"``, ``"unassigned"``).

    Returns
    -------
    A ``"#rrggbb"`` string; the same label always gets the same colour.
    """
    if label is None or (isinstance(label, float) and label != label):
        return MISSING_COLOR
    name = str(label)
    if name in SUBTYPE_COLORS:
        return SUBTYPE_COLORS[name]
    if name in LINEAGE_COLORS:
        return LINEAGE_COLORS[name]
    digest = hashlib.md5(name.encode("utf-8"), usedforsecurity=False).digest()
    return _FALLBACK[digest[0] % len(_FALLBACK)]


def palette_for(labels: Iterable[object]) -> dict[str, str]:
    """Return ``{label: colour}`` for several labels (see :func:`color_for`).

    Parameters
    ----------
    labels
        Labels to colour, e.g. the categories of ``obs["caf_subtype"]``.

    Returns
    -------
    Mapping from each label (as ``str``) to its hex colour.
    """
    return {str(lab): color_for(lab) for lab in labels}
