"""Agreement of cafclassify's calls with labels given by others (authors, a simulation).

Method
------
The calls (``obs["caf_subtype"]`` or ``obs["caf_lineage"]``) are cross-tabulated
against a label column of ``obs`` (an atlas's author annotation, or the planted
``true_subtype`` of simulated data). Three numbers summarise the table:

* the **adjusted Rand index** (ARI, :func:`sklearn.metrics.adjusted_rand_score`)
  between the calls and the labels mapped onto the calls they name (below): 1 = the
  same partition of the cells, about 0 = no more alike than chance. Mapping first
  keeps a finer label vocabulary (25 atlas cell types vs 6 lineages) from lowering
  the index by itself; the ARI against the raw labels is kept as ``ari_raw``;
* **per-label agreement**: for each label, the call it *names* (``"CAFs myCAF-like"``
  names ``myCAF``; ``"PVL Immature"`` names the ``mural`` lineage, and at the subtype
  level the perivascular reading's label: ``vCAF`` (``perivascular="vcaf"``) or
  ``mural`` (``"separate"``)) and the fraction of that label's cells
  given that call, plus the call given most often;
* **overall agreement**: among cells whose label names a call, the fraction given
  that call.

Names are matched on lower-cased word tokens (``"MSC iCAF-like"`` -> ``msc``,
``icaf``, ``like``), never on substrings, and lineages through a short list of the
words atlases use for them (``CAFs``, ``PVL``, ``pericyte``, ``T``, ``myeloid``...).
A label that names nothing (``"Cancer Cycling"`` at the subtype level is matched
through its lineage; ``"Gliacyte"`` is not) is still in the table and the ARI, only
not in the per-label and overall agreement.

This is *agreement* with someone else's annotation, not accuracy: the authors'
labels are themselves calls, made with their own markers and thresholds.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from .. import _keys as K
from .._errors import ConfigError

__all__ = ["Agreement", "agreement", "agreement_levels", "agreement_table", "named_call"]

#: words atlases use for each lineage (lower-case tokens)
LINEAGE_WORDS: dict[str, tuple[str, ...]] = {
    "fibroblast": ("fibroblast", "fibroblasts", "caf", "cafs", "stromal", "stroma", "fibro"),
    "mural": ("mural", "pvl", "pericyte", "pericytes", "smc", "smcs", "perivascular",
              "perivascular_mural", "vsmc", "myofibroblast_smc"),
    "epithelial": ("epithelial", "epithelium", "cancer", "tumor", "tumour", "luminal", "basal",
                   "malignant", "hepatocyte", "keratinocyte"),
    "immune": ("immune", "t", "b", "nk", "nkt", "myeloid", "macrophage", "macrophages",
               "monocyte", "monocytes", "dc", "dcs", "pdc", "plasma", "plasmablasts",
               "plasmablast", "mast", "tam", "lymphocyte", "lymphocytes", "neutrophil",
               "neutrophils", "cd4", "cd8", "treg", "tregs"),
    "endothelial": ("endothelial", "endothelium", "ec", "ecs", "lymphatic"),
}


def _tokens(label: str) -> list[str]:
    return [t for t in re.split(r"[^0-9a-z]+", str(label).lower()) if t]


def named_call(label: object, calls: Sequence[str], *, mural_call: str | None = None) -> str | None:
    """The call that ``label`` names, or None.

    Parameters
    ----------
    label
        One label, e.g. ``"CAFs MSC iCAF-like"`` or ``"PVL Immature"``.
    calls
        The vocabulary of calls, e.g. the categories of ``obs["caf_subtype"]``.
    mural_call
        What a label of the mural lineage names among subtype calls: ``"vCAF"`` under
        the classifier's ``perivascular="vcaf"`` reading, ``"mural"`` under
        ``"separate"`` (default: ``"mural"`` if it is a call, else ``not_fibroblast``).

    Returns
    -------
    A call named by the label: the same name, else a call that is one of the label's
    word tokens (``"iCAF"`` in ``"CAFs MSC iCAF-like"``), else the lineage the label
    names (or ``"not_fibroblast"`` for a non-fibroblast lineage when the calls are
    subtypes). ``None`` when the label names nothing in ``calls``.
    """
    text = str(label)
    calls = [str(c) for c in calls]
    if text in calls:
        return text
    if text.lower() in ("none", "not_caf", "not_fibroblast", "non_fibroblast", "non-fibroblast"):
        return K.NOT_FIBROBLAST if K.NOT_FIBROBLAST in calls else None
    toks = _tokens(text)
    lower = {c.lower(): c for c in calls}
    for t in toks:
        if t in lower and t not in {"unassigned"}:
            return lower[t]
    tokset = set(toks)
    for lineage, words in LINEAGE_WORDS.items():
        if tokset & set(words) or text.lower() == lineage:
            if lineage == "mural" and mural_call is not None and mural_call in calls:
                return mural_call
            if lineage in calls:
                return lineage
            if lineage != "fibroblast" and K.NOT_FIBROBLAST in calls:
                return K.NOT_FIBROBLAST
            return None
    return None


@dataclass
class Agreement:
    """Agreement of calls with labels (see :func:`agreement`).

    Attributes
    ----------
    label_key, key
        The label column and the call column compared.
    crosstab
        Cells per (label, call): labels as rows, calls as columns.
    ari
        Adjusted Rand index between the calls and the labels mapped onto the calls they
        name (all ``"Endothelial ..."`` labels count as ``endothelial``; a label that
        names no call stays a group of its own), on the compared cells.
    ari_raw
        Adjusted Rand index between the calls and the labels as given (penalises a
        label vocabulary finer than the calls, e.g. 25 atlas cell types vs 6 lineages).
    per_label
        One row per label: ``label, n_cells, named_call, n_named, agreement,
        top_call, top_fraction`` (``agreement`` = fraction of the label's cells given
        the call the label names; NaN when it names none).
    per_call
        One row per call: ``call, n_cells, n_named, agreement`` (fraction of the
        cells given this call whose label names it).
    overall
        Among cells whose label names a call, the fraction given that call (NaN when
        no label names a call).
    n_cells, n_named
        Cells compared; of those, cells whose label names a call.
    subset
        Which cells were compared (a description).
    """

    label_key: str
    key: str
    crosstab: pd.DataFrame
    ari: float
    per_label: pd.DataFrame
    per_call: pd.DataFrame
    overall: float
    n_cells: int
    n_named: int
    subset: str = "all cells with a label"
    ari_raw: float = float("nan")
    notes: list[str] = field(default_factory=list)

    def to_frame(self) -> pd.DataFrame:
        """Tidy long table: ``label, call, n_cells, fraction_of_label, named_call``."""
        ct = self.crosstab
        rows = []
        named = dict(zip(self.per_label["label"], self.per_label["named_call"], strict=False))
        for lab in ct.index:
            total = int(ct.loc[lab].sum())
            for call in ct.columns:
                n = int(ct.loc[lab, call])
                rows.append({"label": lab, "call": call, "n_cells": n,
                             "fraction_of_label": n / total if total else np.nan,
                             "named_call": named.get(lab)})
        return pd.DataFrame(rows, columns=["label", "call", "n_cells", "fraction_of_label",
                                           "named_call"])

    def summary(self) -> dict:
        """The headline numbers as a plain dict (for ``uns`` or a table)."""
        return {"label_key": self.label_key, "key": self.key, "subset": self.subset,
                "n_cells": self.n_cells, "n_named": self.n_named,
                "ari": float(self.ari), "ari_raw": float(self.ari_raw), "overall_agreement": float(self.overall)}


def _order(labels: Sequence[str], first: Sequence[str]) -> list[str]:
    labels = list(dict.fromkeys(str(x) for x in labels))
    tail = [x for x in (K.UNASSIGNED, K.NOT_FIBROBLAST) if x in labels]
    head = [x for x in first if x in labels and x not in tail]
    return head + [x for x in labels if x not in head and x not in tail] + tail


def agreement(
    adata,
    label_key: str,
    *,
    key: str = K.OBS_SUBTYPE,
    subset: str | np.ndarray | None = None,
) -> Agreement:
    """Compare cafclassify's calls with labels in ``obs`` (an atlas's authors, a simulation).

    Parameters
    ----------
    adata
        Annotated data with ``obs[key]`` (calls) and ``obs[label_key]`` (labels).
        Not modified.
    label_key
        ``obs`` column with the labels, e.g. ``"celltype_minor"`` or ``"true_subtype"``.
    key
        ``obs`` column with the calls: ``"caf_subtype"`` (default) or ``"caf_lineage"``.
    subset
        Which cells to compare: ``None`` = every cell with a label; ``"fibroblasts"``
        = cells the gate called fibroblast (for subtype calls: every call except
        ``not_fibroblast``); or a boolean mask over the cells.

    Returns
    -------
    :class:`Agreement` with the cross-tabulation, the ARI, per-label and per-call
    agreement; ``.to_frame()`` gives a tidy table.

    Examples
    --------
    >>> res = cafclassify.agreement(adata, "celltype_minor")  # doctest: +SKIP
    >>> res.ari, res.per_label[["label", "named_call", "agreement"]]  # doctest: +SKIP
    """
    from sklearn.metrics import adjusted_rand_score

    for col, what in ((label_key, "label column"), (key, "call column")):
        if col not in adata.obs.columns:
            raise ConfigError(
                f"the {what} {col!r} is not in obs (columns: {', '.join(map(str, adata.obs.columns[:20]))}).",
                fix=f"pass an obs column as {'label_key' if what == 'label column' else 'key'}; "
                    "calls are written by cafclassify.gate (caf_lineage) and cafclassify.classify "
                    "(caf_subtype).",
            )
    labels = adata.obs[label_key]
    calls = adata.obs[key]
    mask = labels.notna().to_numpy() & calls.notna().to_numpy()
    desc = "all cells with a label"
    if isinstance(subset, str):
        if subset != "fibroblasts":
            raise ConfigError(f"subset={subset!r} is not known.",
                              fix="pass subset=None, 'fibroblasts' or a boolean mask.")
        if K.OBS_LINEAGE in adata.obs.columns:
            mask &= (adata.obs[K.OBS_LINEAGE].astype(str) == "fibroblast").to_numpy()
        else:
            mask &= (calls.astype(str) != K.NOT_FIBROBLAST).to_numpy()
        desc = "cells the gate called fibroblast"
    elif subset is not None:
        sub = np.asarray(subset, dtype=bool)
        if sub.shape != (adata.n_obs,):
            raise ConfigError(f"subset has shape {sub.shape}, expected ({adata.n_obs},).",
                              fix="pass a boolean mask with one value per cell.")
        mask &= sub
        desc = "selected cells"
    lab = labels.astype(str).to_numpy()[mask]
    cal = calls.astype(str).to_numpy()[mask]
    call_cats = ([str(c) for c in calls.cat.categories] if isinstance(calls.dtype, pd.CategoricalDtype)
                 else sorted(set(cal)))
    call_order = _order([c for c in call_cats if c in set(cal)] or call_cats,
                        (*K.LINEAGES, "myCAF", "iCAF", "apCAF", "meCAF", "vCAF", "dCAF"))
    rank = {c: i for i, c in enumerate(call_order)}

    # under the vCAF reading, perivascular labels (PVL, pericytes) name vCAF among subtypes
    reading = (adata.uns.get(K.UNS, {}).get(K.UNS_CLASSIFY, {}).get("params", {}) or {}).get("perivascular")
    mural_call = ("vCAF" if reading == "vcaf" else "mural") if key == K.OBS_SUBTYPE else None

    def _key(s):
        nc = named_call(s, call_order, mural_call=mural_call)
        return (nc is None, rank.get(nc, len(rank)), str(s).lower())

    label_order = sorted(set(lab), key=_key)
    ct = pd.crosstab(pd.Categorical(lab, categories=label_order),
                     pd.Categorical(cal, categories=call_order), dropna=False)
    ct.index = pd.Index([str(x) for x in ct.index], name=label_key)
    ct.columns = pd.Index([str(x) for x in ct.columns], name=key)
    n = int(mask.sum())
    named = {lb: named_call(lb, call_order, mural_call=mural_call) for lb in label_order}
    mapped = np.array([named[x] if named[x] is not None else f"label:{x}" for x in lab], dtype=object)
    ari = float(adjusted_rand_score(mapped, cal)) if n >= 2 else float("nan")
    ari_raw = float(adjusted_rand_score(lab, cal)) if n >= 2 else float("nan")
    rows = []
    for lb in label_order:
        r = ct.loc[lb]
        total = int(r.sum())
        nc = named[lb]
        n_named = int(r.get(nc, 0)) if nc is not None else 0
        top = str(r.idxmax()) if total else None
        rows.append({"label": lb, "n_cells": total, "named_call": nc, "n_named": n_named,
                     "agreement": (n_named / total) if (nc is not None and total) else np.nan,
                     "top_call": top, "top_fraction": (int(r.max()) / total) if total else np.nan})
    per_label = pd.DataFrame(rows, columns=["label", "n_cells", "named_call", "n_named", "agreement",
                                            "top_call", "top_fraction"])
    crows = []
    for c in call_order:
        col = ct[c]
        total = int(col.sum())
        hit = int(sum(int(col[lb]) for lb in label_order if named[lb] == c))
        with_name = int(sum(int(col[lb]) for lb in label_order if named[lb] is not None))
        crows.append({"call": c, "n_cells": total, "n_named": hit,
                      "agreement": hit / with_name if with_name else np.nan})
    per_call = pd.DataFrame(crows, columns=["call", "n_cells", "n_named", "agreement"])
    has_name = per_label["named_call"].notna()
    n_with = int(per_label.loc[has_name, "n_cells"].sum())
    overall = float(per_label.loc[has_name, "n_named"].sum() / n_with) if n_with else float("nan")
    return Agreement(label_key=str(label_key), key=str(key), crosstab=ct, ari=ari,
                     per_label=per_label, per_call=per_call, overall=overall, n_cells=n,
                     n_named=n_with, subset=desc, ari_raw=ari_raw)


def agreement_levels(adata, label_key: str, *, lineage_label_key: str | None = None) -> dict[str, Agreement]:
    """Agreement at both levels the report shows: ``{"lineage": ..., "subtype": ...}``.

    ``lineage``: ``obs["caf_lineage"]`` against the labels on every labelled cell;
    ``subtype``: ``obs["caf_subtype"]`` against the labels on the cells the gate
    called fibroblast. A level whose calls are absent is left out. ``lineage_label_key``
    compares the lineages with another column (a simulation's ``true_lineage``);
    by default a simulation's ``true_subtype`` is paired with its ``true_lineage``.
    """
    out: dict[str, Agreement] = {}
    if lineage_label_key is None and label_key == "true_subtype" and "true_lineage" in adata.obs.columns:
        lineage_label_key = "true_lineage"
    if K.OBS_LINEAGE in adata.obs.columns:
        out["lineage"] = agreement(adata, lineage_label_key or label_key, key=K.OBS_LINEAGE)
    if K.OBS_SUBTYPE in adata.obs.columns:
        out["subtype"] = agreement(adata, label_key, key=K.OBS_SUBTYPE, subset="fibroblasts")
    return out


def agreement_table(adata, label_key: str | None) -> pd.DataFrame:
    """Tidy table of :func:`agreement_levels`: ``level, label, call, n_cells,
    fraction_of_label, named_call`` (empty, with these columns, without labels)."""
    cols = ["level", "label", "call", "n_cells", "fraction_of_label", "named_call"]
    if not label_key or label_key not in adata.obs.columns:
        return pd.DataFrame(columns=cols)
    frames = [res.to_frame().assign(level=level) for level, res in agreement_levels(adata, label_key).items()]
    return pd.concat(frames, ignore_index=True)[cols] if frames else pd.DataFrame(columns=cols)
