"""Linear signature scores: scanpy-compatible module score and z-score mean, exact and chunked.

Both are, per cell, a weighted sum of gene values plus a constant per set
(``X[:, genes] @ W + b``), computed block by block on sparse rows without
densifying. ``X`` (cells x genes: CSR, CSC, dense or backed) and ``sets`` (name ->
``(indices, weights)``) are read as described in :mod:`cafclassify.scoring._chunks`;
the result is ``float64`` of shape ``(n_cells, n_sets)``. Per-cell work runs in
numba (parallel over cells).

Reference implementations reproduced exactly (see ``tests/test_scoring_exact.py``):

``scanpy_scores``
    scanpy 1.11 ``sc.tl.score_genes`` (same control genes, same ``random_state``).
``zmean_scores``
    defined here (weighted mean of per-gene z-scores).
"""

from __future__ import annotations

from collections.abc import Mapping

import numba as nb
import numpy as np
import pandas as pd

from .._errors import SignatureError
from ._chunks import (
    DEFAULT_CHUNK_SIZE,
    _as_index_sets,
    _check_matrix,
    _colmap,
    _union,
    iter_csr_chunks,
)
from ._gene_stats import gene_stats

__all__ = [
    "scanpy_control_genes",
    "scanpy_scores",
    "zmean_scores",
]


# ---------------------------------------------------------------------------
# numba kernel (rows [start, stop) of a CSR matrix given by its arrays)
# ---------------------------------------------------------------------------
@nb.njit(parallel=True, cache=True, nogil=True)
def _rows_dot(data, indices, indptr, start, stop, colmap, W):  # pragma: no cover
    """``X[start:stop, union] @ W`` for the mapped columns, accumulated in float64."""
    n = stop - start
    n_out = W.shape[1]
    out = np.zeros((n, n_out))
    for r in nb.prange(n):
        row = start + r
        for k in range(indptr[row], indptr[row + 1]):
            c = colmap[indices[k]]
            if c >= 0:
                v = np.float64(data[k])
                for j in range(n_out):
                    out[r, j] += v * W[c, j]
    return out


# ---------------------------------------------------------------------------
# linear scores: scanpy-compatible and zmean
# ---------------------------------------------------------------------------
def _linear_scores(X, union: np.ndarray, W: np.ndarray, b: np.ndarray, chunk_size: int) -> np.ndarray:
    n_cells, n_genes = _check_matrix(X)
    cmap = _colmap(union, n_genes)
    out = np.empty((n_cells, W.shape[1]))
    W = np.ascontiguousarray(W, dtype=np.float64)
    for start, stop, csr, off in iter_csr_chunks(X, chunk_size):
        out[start:stop] = _rows_dot(csr.data, csr.indices, csr.indptr, off, off + stop - start, cmap, W)
    return out + b[None, :]


def scanpy_control_genes(
    gene_means: np.ndarray,
    genes: np.ndarray,
    *,
    ctrl_size: int = 50,
    n_bins: int = 25,
    random_state: int | None = 0,
    gene_pool: np.ndarray | None = None,
) -> np.ndarray:
    """Control genes exactly as ``sc.tl.score_genes`` (scanpy 1.11, ``ctrl_as_ref=True``) draws them.

    Genes of ``gene_pool`` (default all) are cut into ``n_bins`` expression bins by
    the rank of their mean (``rank(method="min") // round(n / (n_bins - 1))``). For
    each bin holding a set gene, ``ctrl_size`` genes are drawn without replacement
    from the bin (all of them if the bin is smaller), set genes are removed, and
    the union is returned (sorted column positions). The draw replays scanpy's
    ``np.random.seed(random_state)`` + ``Series.sample`` sequence on a private
    ``RandomState``, so the global numpy RNG is left untouched.
    """
    gene_means = np.asarray(gene_means, dtype=np.float64)
    genes = np.asarray(genes, dtype=np.int64)
    pool = np.arange(gene_means.size) if gene_pool is None else np.asarray(gene_pool, dtype=np.int64)
    rs = np.random.RandomState(random_state)
    avg = pd.Series(gene_means[pool], index=pool)
    avg = avg[np.isfinite(avg)]
    n_items = int(np.round(len(avg) / (n_bins - 1)))
    if n_items < 1:
        raise SignatureError(
            f"too few genes ({len(avg)}) for {n_bins} expression bins.",
            fix="use fewer bins (n_bins) or a larger gene pool.",
        )
    cut = avg.rank(method="min") // n_items
    in_pool = np.isin(genes, cut.index.to_numpy())
    control: set[int] = set()
    gene_set = set(genes.tolist())
    for c in np.unique(cut.loc[genes[in_pool]].to_numpy()):
        r_genes = cut.index.to_numpy()[(cut == c).to_numpy()]
        if ctrl_size < r_genes.size:
            r_genes = r_genes[rs.choice(r_genes.size, size=ctrl_size, replace=False)]
        control.update(int(g) for g in r_genes if int(g) not in gene_set)
    return np.array(sorted(control), dtype=np.int64)


def scanpy_scores(
    X,
    sets,
    *,
    ctrl_size: int = 50,
    n_bins: int = 25,
    random_state: int | None = 0,
    gene_means: np.ndarray | None = None,
    control_genes: Mapping[str, np.ndarray] | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    return_controls: bool = False,
):
    """Seurat/scanpy module score: mean of set genes minus mean of binned random control genes.

    Reproduces ``sc.tl.score_genes`` (scanpy 1.11): control genes are drawn per set
    with :func:`scanpy_control_genes` from gene means over *all* cells (one extra
    streaming pass unless ``gene_means`` is given), re-seeding with
    ``random_state`` for every set as scanpy does when called once per set.
    Signed sets: ``score(up genes) - score(down genes)``, each with its own
    controls; weight magnitudes are not used. Expects log-normalised values.

    Parameters
    ----------
    X
        Cells x genes matrix (CSR, CSC, dense or backed).
    sets
        Mapping name -> ``(indices, weights)``.
    ctrl_size, n_bins, random_state
        As in ``sc.tl.score_genes``.
    gene_means
        Per-gene means over all cells used for binning (skip the extra pass); use
        :attr:`GeneStats.scanpy_mean` to reproduce scanpy exactly.
    control_genes
        Optional mapping set name -> control column positions (for the up genes of
        that set), to use a fixed control set instead of drawing one.
    chunk_size
        Cells per block.
    return_controls
        Also return the control genes used, ``{set: {"up": idx, "down": idx}}``.

    Returns
    -------
    ``float64`` array (n_cells x n_sets), and the controls if asked.
    """
    n_cells, n_genes = _check_matrix(X)
    isets = _as_index_sets(sets, n_genes)
    if gene_means is None and (control_genes is None or any(s.down.size for s in isets)):
        gene_means = gene_stats(X, chunk_size=chunk_size).scanpy_mean
    cols_w: list[tuple[int, np.ndarray, float]] = []  # (set position, genes, weight)
    controls: dict[str, dict[str, np.ndarray]] = {}
    for j, s in enumerate(isets):
        controls[s.name] = {}
        for part, genes, sign in (("up", s.up, 1.0), ("down", s.down, -1.0)):
            if genes.size == 0:
                continue
            if part == "up" and control_genes is not None and s.name in control_genes:
                ctrl = np.asarray(control_genes[s.name], dtype=np.int64)
            else:
                ctrl = scanpy_control_genes(gene_means, genes, ctrl_size=ctrl_size,
                                            n_bins=n_bins, random_state=random_state)
            if ctrl.size == 0:
                raise SignatureError(
                    "no control genes found in any expression bin.",
                    path=f"gene set {s.name!r}",
                    fix="score more genes (the gene pool is too small) or use another method.",
                )
            controls[s.name][part] = ctrl
            cols_w.append((j, genes, sign / genes.size))
            cols_w.append((j, ctrl, -sign / ctrl.size))
    union = np.unique(np.concatenate([g for _, g, _ in cols_w]))
    pos = {int(g): i for i, g in enumerate(union)}
    W = np.zeros((union.size, len(isets)))
    for j, genes, w in cols_w:
        for g in genes:
            W[pos[int(g)], j] += w
    out = _linear_scores(X, union, W, np.zeros(len(isets)), chunk_size)
    return (out, controls) if return_controls else out


def zmean_scores(
    X,
    sets,
    *,
    gene_mean: np.ndarray | None = None,
    gene_std: np.ndarray | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> np.ndarray:
    """Weighted mean of per-gene z-scores.

    ``z[c, g] = (x[c, g] - mean[g]) / std[g]`` with mean and standard deviation
    (ddof=1) of each gene over all cells (one streaming pass unless given; genes
    with ``std == 0`` contribute ``z = 0``). The score of a set with weights ``w``
    is ``sum_g w_g z[c, g] / sum_g |w_g|``, so down genes (negative weights) count
    against the score. Computed without densifying: ``X @ (w / std) - sum(w mean / std)``.
    Expects log-normalised values.

    Returns
    -------
    ``float64`` array (n_cells x n_sets).
    """
    n_cells, n_genes = _check_matrix(X)
    isets = _as_index_sets(sets, n_genes)
    if gene_mean is None or gene_std is None:
        st = gene_stats(X, chunk_size=chunk_size)
        gene_mean = st.mean if gene_mean is None else gene_mean
        gene_std = np.sqrt(st.var) if gene_std is None else gene_std
    gene_mean = np.asarray(gene_mean, dtype=np.float64)
    gene_std = np.asarray(gene_std, dtype=np.float64)
    union = _union(isets)
    pos = np.searchsorted(union, np.arange(n_genes))  # only used at union genes
    W = np.zeros((union.size, len(isets)))
    b = np.zeros(len(isets))
    for j, s in enumerate(isets):
        sd = gene_std[s.indices]
        inv = np.divide(1.0, sd, out=np.zeros_like(sd), where=sd > 0)
        w = s.weights / np.abs(s.weights).sum()
        W[pos[s.indices], j] = w * inv
        b[j] = -np.sum(w * inv * gene_mean[s.indices])
    return _linear_scores(X, union, W, b, chunk_size)
