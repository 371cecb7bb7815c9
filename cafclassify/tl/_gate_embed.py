"""The lineage gate's embedding: highly variable genes -> PCA -> kNN graph -> Leiden.

The gate decides per cluster (:mod:`._gate_decide`), so its clusters come from the
usual single-cell embedding, built on the log-normalised cells (counts are normalised
and log1p-transformed on a copy; the lineage scores themselves are rank-based): the
top 2,000 highly variable genes (seurat flavour), up to ``n_pcs`` principal
components, a symmetric kNN graph (15 neighbours, fewer in small data) and Leiden
clustering, the best of 10 random starts by modularity (:func:`_leiden_best`). Above
``max_cells_graph`` cells the graph is built on a random subsample and every other cell
joins the cluster with the nearest centroid in PCA space, so memory stays bounded on
atlas-scale data. The same pass sums each gene's
log-normalised values and their squares, which the stage-2 refinement
(:mod:`._gate_refine`) needs for its gene SDs. The mesenchymal compartment
(:mod:`._gate_stroma`) is re-embedded with the same function.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
from anndata import AnnData

from .._utils import take_rows
from ._gate_refine import col_sums, log_block

__all__ = ["_embed_and_cluster", "_embedding_record", "_graph_subsample", "_select_hvg"]

logger = logging.getLogger(__name__)

_ASSIGN_CHUNK = 50_000  # cells per block when assigning cells outside the graph subsample
#: Leiden runs from different random starts; the partition with the highest modularity is kept
N_LEIDEN_RUNS = 10


def _graph_subsample(n: int, max_cells_graph: int, random_state: int) -> np.ndarray:
    """Sorted rows of the cells the kNN graph is built on (all cells up to ``max_cells_graph``)."""
    if n <= max_cells_graph:
        return np.arange(n)
    return np.sort(np.random.default_rng(random_state).choice(n, size=max_cells_graph, replace=False))


def _embed_and_cluster(X, *, value_type: str, n_pcs: int, resolution: float,
                       max_cells_graph: int, random_state: int, sub_rows=None) -> tuple[np.ndarray, dict]:
    """HVG -> PCA -> kNN -> Leiden on (a subsample of) the cells.

    Above ``max_cells_graph`` cells the graph is built on a random subsample
    (:func:`_graph_subsample`) and the other cells join the cluster with the nearest
    centroid in PCA space. ``sub_rows``: the subsample's rows if already read. The
    returned info holds ``_colsums``, per-gene sums of the log-normalised values and of
    their squares over all cells (for the stage-2 gene SDs, without another pass).
    """
    import scanpy as sc

    n, n_genes = X.shape
    info: dict[str, Any] = {"n_cells_graph": int(min(n, max_cells_graph)), "subsampled": n > max_cells_graph}
    sub_idx = _graph_subsample(n, max_cells_graph, random_state)

    def _prep(block):
        # embedding only: counts are normalised + log1p'd on a copy (scores are rank-based)
        return log_block(block, value_type)

    sub = AnnData(_prep(take_rows(X, sub_idx) if sub_rows is None else sub_rows))
    del sub_rows
    s1, s2 = col_sums(sub.X, n_genes)
    n_top = int(min(2000, sub.n_vars))
    try:
        sc.pp.highly_variable_genes(sub, n_top_genes=n_top, flavor="seurat")
        hvg = np.flatnonzero(sub.var["highly_variable"].to_numpy())
    except Exception as exc:  # pragma: no cover - degenerate matrices (e.g. constant genes)
        logger.info("HVG selection failed (%s); using all genes for the embedding.", exc)
        hvg = np.arange(sub.n_vars)
    if hvg.size < 3:
        hvg = np.arange(sub.n_vars)
    Xh = sub.X[:, hvg]
    n_comps = int(max(1, min(n_pcs, Xh.shape[0] - 1, Xh.shape[1] - 1)))
    emb = AnnData(Xh)
    sc.pp.pca(emb, n_comps=n_comps, random_state=random_state)
    n_neighbors = int(min(15, max(3, emb.n_obs // 10)))
    # symmetric kNN graph (sklearn; avoids UMAP's just-in-time compilation)
    from sklearn.neighbors import NearestNeighbors

    pcs = emb.obsm["X_pca"]
    nn = NearestNeighbors(n_neighbors=n_neighbors).fit(pcs)
    adj = nn.kneighbors_graph(pcs, mode="connectivity")
    adj.setdiag(0)
    adj.eliminate_zeros()
    adj = adj.maximum(adj.T).tocsr()
    sub_lab, quality = _leiden_best(emb, adj, resolution=resolution, random_state=random_state)
    info.update(n_hvg=int(hvg.size), n_pcs=n_comps, n_neighbors=n_neighbors, _hvg=hvg, **quality)
    if not info["subsampled"]:
        info["_colsums"] = (s1, s2)
        return sub_lab, info

    # assign the remaining cells to the nearest cluster centroid in PCA space
    loadings = emb.varm["PCs"]  # genes x comps
    mean = np.asarray(Xh.mean(axis=0)).ravel()
    k = sub_lab.max() + 1
    cent = np.vstack([pcs[sub_lab == c].mean(axis=0) for c in range(k)])
    labels = np.empty(n, dtype=int)
    labels[sub_idx] = sub_lab
    rest = np.setdiff1d(np.arange(n), sub_idx)
    for start in range(0, rest.size, _ASSIGN_CHUNK):
        rows = rest[start:start + _ASSIGN_CHUNK]
        blk = _prep(take_rows(X, rows))
        b1, b2 = col_sums(blk, n_genes)
        s1 += b1
        s2 += b2
        blk = blk[:, hvg]
        proj = np.asarray(blk @ loadings) - mean @ loadings
        d = (proj**2).sum(1)[:, None] - 2 * proj @ cent.T + (cent**2).sum(1)[None, :]
        labels[rows] = d.argmin(axis=1)
    info["_colsums"] = (s1, s2)
    return labels, info


def _leiden_best(emb: AnnData, adj, *, resolution: float, random_state: int,
                 n_runs: int = N_LEIDEN_RUNS) -> tuple[np.ndarray, dict]:
    """Leiden labels of the graph ``adj``: of ``n_runs`` runs from different random
    starts, the partition with the highest modularity (the objective Leiden optimises).

    One run is one local optimum, and which one depends on the random start: on the
    breast example the gate's fibroblasts at ``random_state`` 0-5 were 378-403 cells
    (6-25 of the authors' perivascular cells among them) because one start split the
    perivascular cells into a cluster mixed with fibroblasts. The best of several runs is
    the usual remedy for a heuristic optimiser, with the usual number of starts: Seurat's
    ``FindClusters`` keeps the best of ``n.start = 10`` random starts, R leidenAlg's
    ``find_partition_with_rep`` the best of ``nrep = 10``. It leaves the gate much less
    dependent on ``random_state`` (``docs/gate.md``). The starts are
    ``random_state * n_runs + i``, so they never overlap between two ``random_state``
    values. Ties keep the earliest run.
    """
    import igraph as ig
    import scanpy as sc

    src, dst = adj.nonzero()
    upper = src < dst
    graph = ig.Graph(n=adj.shape[0], edges=np.column_stack([src[upper], dst[upper]]).tolist())
    best_q, best, qualities = -np.inf, None, []
    for i in range(int(n_runs)):
        sc.tl.leiden(emb, resolution=resolution, flavor="igraph", n_iterations=2,
                     random_state=int(random_state) * int(n_runs) + i, key_added="c", adjacency=adj)
        lab = emb.obs["c"].astype(int).to_numpy()
        q = float(graph.modularity(lab.tolist(), resolution=resolution))
        qualities.append(q)
        if best is None or q > best_q:  # (an edgeless graph has no modularity: its first run)
            best_q, best = q, lab
    return best, {"leiden_runs": int(n_runs), "modularity": best_q,
                  "modularity_range": [float(min(qualities)), float(max(qualities))]}


def _embedding_record(info: dict) -> dict:
    """The embedding's info as ``uns`` values (private ``_`` entries are not recorded)."""
    def value(v):
        if isinstance(v, str | bool):
            return v
        if isinstance(v, float):
            return float(v)
        if isinstance(v, list | tuple):
            return [float(x) for x in v]
        return int(v)

    return {k: value(v) for k, v in info.items() if not k.startswith("_")}


def _select_hvg(X, *, value_type: str, max_cells: int, random_state: int) -> np.ndarray:
    """Top-2000 HVGs (seurat flavour) on at most ``max_cells`` random cells.

    Used by the stage-2 refinement when the clusters come from ``cluster_key`` or
    the data are too small to cluster (otherwise the embedding's HVGs are reused).
    """
    import scanpy as sc

    n = X.shape[0]
    rng = np.random.default_rng(random_state)
    rows = np.sort(rng.choice(n, size=max_cells, replace=False)) if n > max_cells else np.arange(n)
    sub = AnnData(log_block(take_rows(X, rows), value_type))
    try:
        sc.pp.highly_variable_genes(sub, n_top_genes=int(min(2000, sub.n_vars)), flavor="seurat")
        hvg = np.flatnonzero(sub.var["highly_variable"].to_numpy())
    except Exception as exc:  # pragma: no cover - degenerate matrices
        logger.info("HVG selection failed (%s); using all genes.", exc)
        hvg = np.arange(sub.n_vars)
    return hvg if hvg.size >= 3 else np.arange(sub.n_vars)
