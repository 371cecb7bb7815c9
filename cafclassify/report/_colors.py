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

#: lineage labels written by ``gate()`` (``_keys.LINEAGES``) and the lineage gene sets.
#: Lineages use soft (pastel) tones and subtypes saturated ones, so a lineage is never
#: mistaken for a subtype (the old fibroblast/vCAF, epithelial/dCAF, mural/meCAF and
#: immune/iCAF pairs were near-identical); fibroblast, the lineage the page is about,
#: is the one dark lineage colour.
LINEAGE_COLORS: dict[str, str] = {
    "fibroblast": "#8c6d31",
    "mural": "#fdb462",
    "epithelial": "#b3de69",
    "immune": "#80b1d3",
    "endothelial": "#fb8072",
    "other": "#ffed6f",
    "other_lineage": "#ffed6f",
}

#: CAF subtypes, states and the two non-subtype labels of ``obs["caf_subtype"]``
#: (saturated tones; greys are reserved for ``unassigned`` and ``not_fibroblast``)
SUBTYPE_COLORS: dict[str, str] = {
    "myCAF": "#d62728",
    "iCAF": "#1f77b4",
    "apCAF": "#2ca02c",
    "meCAF": "#9467bd",
    "vCAF": "#e377c2",
    "dCAF": "#17becf",
    "dCAF_developmental": "#17becf",
    "LTBP2_CAF": "#bcbd22",
    "LTBP2+": "#bcbd22",
    "LRRC15_myCAF": "#ff7f0e",
    "senescence": "#8c564b",
    "senescent_CAF": "#8c564b",
    "cycling": "#393b79",
    "state_cycling": "#393b79",
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
