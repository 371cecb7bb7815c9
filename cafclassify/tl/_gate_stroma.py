"""Hierarchical step of the lineage gate: re-cluster the mesenchymal compartment.

After the global lineage decision, the cells called ``fibroblast`` or ``mural``, plus
every cell of a cluster in which fibroblast or mural evidence was significant, form
the stromal (mesenchymal) compartment. Within it, variation is no longer dominated
by the tumour's lineage structure (epithelium vs immune vs stroma) but by
fibroblast-vs-mural and subtype differences, so the compartment gets its own HVGs,
PCA, kNN graph and Leiden clusters, as stromal atlases do. Each sub-cluster is then
decided with exactly the global evidence test (lineage sets vs random gene sets, the
same significance, effect-size and ``level x level / peak`` rules, the same per-cell
exceptions); see :func:`cafclassify.tl._gate_decide._decide` and ``docs/gate.md``.
:func:`merge_compartment` then puts the compartment's calls and sub-clusters in place of
the global ones, so that stage 2 reads one decision.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd

from .._utils import take_rows
from ._gate_decide import _decide
from ._gate_embed import _embed_and_cluster, _embedding_record

__all__ = ["merge_compartment", "recluster_stroma"]

logger = logging.getLogger(__name__)

STROMA_LINEAGES = ("fibroblast", "mural")
MIN_COMPARTMENT = 30  # fewer cells: no sub-clustering (the global stage's own minimum)


def recluster_stroma(X, *, value_type: str, S: np.ndarray, mu: np.ndarray, sigma: np.ndarray,
                     labels: list[str], stage1: dict[str, Any], n_pcs: int, resolution: float,
                     max_cells_graph: int, random_state: int,
                     taken: set[str] = frozenset()) -> dict[str, Any]:
    """Re-decide the mesenchymal compartment on its own sub-clusters.

    Parameters
    ----------
    X
        Cells x genes (CSR or dense) of the whole dataset.
    value_type
        ``"counts"`` (the embedding normalises a copy) or anything else (used as is).
    S, mu, sigma
        Lineage scores, per-cell null means and null SDs (columns as ``labels``).
    labels
        Lineage names of the score columns.
    stage1
        Result of the global ``_decide`` (``final``, ``codes``, ``cl_call``, ``present``,
        ``table``).
    taken
        Cluster names already in use (the sub-cluster names ``stroma.<k>`` avoid them).
    n_pcs, resolution, max_cells_graph, random_state
        Embedding options (the compartment graph is capped at ``max_cells_graph``
        cells like the global one; the others join the nearest sub-cluster centroid).

    Returns
    -------
    dict with ``applied`` and, when applied, ``rows`` (compartment cell indices),
    ``result`` (``_decide`` on the compartment), ``subclusters`` (labels ``"stroma.<k>"``)
    and ``info`` for ``uns``.
    """
    info: dict[str, Any] = {"applied": False}
    idx = [labels.index(x) for x in STROMA_LINEAGES if x in labels]
    if len(idx) < 2:
        info["reason"] = "fibroblast and mural sets are not both usable: nothing to separate"
        return {"applied": False, "info": info}
    final, codes, present = stage1["final"], stage1["codes"], stage1["present"]
    stromal_cluster = present[:, idx].any(axis=1)
    comp = np.isin(final, idx) | stromal_cluster[codes]
    rows = np.flatnonzero(comp)
    info["n_cells"] = int(rows.size)
    info["from_clusters"] = [str(c) for c in np.asarray(stage1["uniq"])[stromal_cluster]]
    if rows.size < MIN_COMPARTMENT:
        info["reason"] = f"only {rows.size} cells in the mesenchymal compartment (< {MIN_COMPARTMENT})"
        return {"applied": False, "info": info}
    sub_lab, emb = _embed_and_cluster(take_rows(X, rows), value_type=value_type, n_pcs=n_pcs,
                                      resolution=resolution, max_cells_graph=max_cells_graph,
                                      random_state=random_state)
    emb.pop("_hvg", None)
    emb.pop("_colsums", None)
    prefix = "stroma."
    while any(str(t).startswith(prefix) for t in taken):
        prefix = "_" + prefix
    sub = np.array([f"{prefix}{k}" for k in sub_lab], dtype=object)
    res = _decide(S[rows], mu[rows], sigma, sub, labels)
    lab = np.array([*labels, "other"], dtype=object)
    before = lab[final[rows]]
    after = lab[res["final"]]
    tab = pd.crosstab(pd.Series(before, name="from"), pd.Series(after, name="to"))
    changes = {str(f): {str(t): int(v) for t, v in row.items() if v and f != t} for f, row in tab.iterrows()}
    info.update({
        "applied": True,
        "n_subclusters": int(len(res["uniq"])),
        "embedding": _embedding_record(emb),
        "subclusters": res["table"].to_dict(orient="list"),
        "changes": {f: t for f, t in changes.items() if t},
        "n_changed": int((before != after).sum()),
    })
    logger.info("Gate mesenchymal compartment: %d cells, %d sub-clusters, %d calls changed (%s).",
                rows.size, info["n_subclusters"], info["n_changed"], info["changes"])
    return {"applied": True, "rows": rows, "result": res, "subclusters": sub, "info": info}


def merge_compartment(res: dict[str, Any], st: dict[str, Any], clusters: np.ndarray) -> dict[str, Any]:
    """Global decision with the compartment cells' calls and (sub-)clusters replaced.

    Compartment cells carry their sub-cluster (``s<k>``) as decision cluster; the
    per-cluster arrays that stage 2 reads (``codes``, ``cl_call``, margin) are
    rebuilt over global clusters that kept cells plus the sub-clusters.
    """
    rows, sub = st["rows"], st["result"]
    out = dict(res)
    for key in ("final", "conf", "own", "unplaced"):
        v = res[key].copy()
        v[rows] = sub[key]
        out[key] = v
    merged = clusters.astype(object).copy()
    merged[rows] = st["subclusters"]
    g_table, s_table = res["table"], sub["table"]
    g_call = dict(zip(g_table["cluster"], res["cl_call"], strict=True))
    g_margin = dict(zip(g_table["cluster"], res["margin"], strict=True))
    s_call = dict(zip(s_table["cluster"], sub["cl_call"], strict=True))
    s_margin = dict(zip(s_table["cluster"], sub["margin"], strict=True))
    codes, uniq = pd.factorize(pd.Series(merged).astype(str), sort=True)
    is_sub = np.array([u in s_call for u in uniq])  # sub-cluster names never collide (taken=)
    out["cl_call"] = np.array([s_call[u] if s else g_call[u] for u, s in zip(uniq, is_sub, strict=True)])
    margin = np.array([s_margin[u] if s else g_margin[u] for u, s in zip(uniq, is_sub, strict=True)])
    out["margin"] = margin
    out["codes"] = codes
    out["uniq"] = uniq
    out["clusters"] = merged.astype(str)
    return out
