"""Rank-based signature scores: UCell and AUCell, exact and chunked.

Both score each cell from the ranks of the signature genes among that cell's
values. ``X`` (cells x genes: CSR, CSC, dense or backed) and ``sets`` (name ->
``(indices, weights)``) are read as described in :mod:`cafclassify.scoring._chunks`;
the result is ``float64`` of shape ``(n_cells, n_sets)``.

Per-cell work runs in numba (parallel over cells). The only
per-cell information the rank-based methods need is the *number of genes with a
larger value* than each signature gene, so each cell's non-zero values are sorted
once and every signature gene is located by binary search; zeros, which all tie at
the bottom, are handled in closed form.

Reference implementations reproduced exactly (see ``tests/test_scoring_exact.py``):

``ucell_scores``
    pyucell 0.8 (``compute_ucell_scores``, ``ties_method="average"``,
    ``missing_genes="skip"``, ``w_neg=1``).
``aucell_scores``
    decoupler 2.x ``dc.mt.aucell`` when given the same ``n_up`` and tie order
    (:func:`decoupler_tie_order`).
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np

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
    "aucell_scores",
    "decoupler_tie_order",
    "default_n_up",
    "ucell_scores",
]


# ---------------------------------------------------------------------------
# numba kernels (rows [start, stop) of a CSR matrix given by its arrays)
# ---------------------------------------------------------------------------
@nb.njit(parallel=True, cache=True, nogil=True)
def _ucell_ranks(data, indices, indptr, start, stop, colmap, n_cols, max_rank):  # pragma: no cover
    """Average-tie rank (1 = highest) of each mapped gene among the cell's non-zero values.

    Zeros, and non-zero values ranked beyond ``max_rank``, get ``max_rank`` (as pyucell).
    """
    n = stop - start
    out = np.full((n, n_cols), float(max_rank))
    for r in nb.prange(n):
        row = start + r
        a = indptr[row]
        b = indptr[row + 1]
        buf = np.empty(b - a, dtype=np.float64)
        vals = np.zeros(n_cols, dtype=np.float64)
        m = 0
        for k in range(a, b):
            v = data[k]
            if v != 0:
                buf[m] = v
                m += 1
                c = colmap[indices[k]]
                if c >= 0:
                    vals[c] = v
        if m == 0:
            continue
        srt = np.sort(buf[:m])
        for c in range(n_cols):
            v = vals[c]
            if v == 0:
                continue
            lo = np.searchsorted(srt, v, side="left")
            hi = np.searchsorted(srt, v, side="right")
            rank = (m - hi) + (hi - lo + 1) / 2.0
            if rank < max_rank:
                out[r, c] = rank
    return out


@nb.njit(parallel=True, cache=True, nogil=True)
def _aucell_contrib(data, indices, indptr, start, stop, colmap, union, prio, n_ranked, n_up):  # pragma: no cover
    """``max(0, n_up - rank)`` per mapped gene; ``rank`` is the ordinal rank of the gene
    among ``n_ranked`` genes by decreasing value, ties broken by increasing ``prio``
    (``prio`` is a permutation of 0..n_ranked-1 on ranked genes). Cells without any
    non-zero value get 0 for every gene.
    """
    n = stop - start
    n_cols = union.shape[0]
    out = np.zeros((n, n_cols))
    for r in nb.prange(n):
        row = start + r
        a = indptr[row]
        b = indptr[row + 1]
        nnz = b - a
        vals = np.empty(nnz, dtype=np.float64)
        prs = np.empty(nnz, dtype=np.int64)
        cols = np.empty(nnz, dtype=np.int64)
        m = 0
        n_pos = 0
        for k in range(a, b):
            v = data[k]
            if v != 0:
                vals[m] = v
                prs[m] = prio[indices[k]]
                cols[m] = colmap[indices[k]]
                if v > 0:
                    n_pos += 1
                m += 1
        if m == 0:
            continue
        vals = vals[:m]
        prs = prs[:m]
        cols = cols[:m]
        # order by priority, then stable sort by decreasing value
        o1 = np.argsort(prs)
        v1 = -vals[o1]
        o2 = np.argsort(v1, kind="mergesort")
        order = o1[o2]
        n_zero = n_ranked - m
        seen = np.zeros(n_cols, dtype=np.bool_)
        for pos in range(m):
            e = order[pos]
            c = cols[e]
            if c < 0:
                continue
            seen[c] = True
            rank = pos + 1
            if vals[e] < 0:
                rank += n_zero
            if rank < n_up:
                out[r, c] = n_up - rank
        if n_pos + 1 >= n_up:
            continue
        # zero-valued mapped genes: rank = n_pos + 1 + #(zero genes with smaller priority)
        sorted_prs = np.sort(prs)
        for c in range(n_cols):
            if seen[c]:
                continue
            p = prio[union[c]]
            n_nz_before = np.searchsorted(sorted_prs, p, side="left")
            rank = n_pos + 1 + (p - n_nz_before)
            if rank < n_up:
                out[r, c] = n_up - rank
    return out


# ---------------------------------------------------------------------------
# UCell
# ---------------------------------------------------------------------------
def _u_from_ranks(ranks: np.ndarray, max_rank: int) -> np.ndarray:
    lgt = ranks.shape[1]
    s_min = lgt * (lgt + 1) / 2.0
    s_max = float(lgt * max_rank)
    if s_max == s_min:
        return np.zeros(ranks.shape[0])
    return 1.0 - (ranks.sum(axis=1) - s_min) / (s_max - s_min)


def ucell_scores(X, sets, *, max_rank: int = 1500, chunk_size: int = DEFAULT_CHUNK_SIZE) -> np.ndarray:
    """UCell scores (Andreatta & Carmona 2021): normalised Mann-Whitney U of per-cell ranks.

    For each cell, genes with a non-zero value are ranked by decreasing value
    (1 = highest; ties get their average rank). Zeros, and ranks above ``max_rank``,
    are set to ``max_rank``. For a set of ``n`` genes with rank sum ``R``::

        U = 1 - (R - n(n+1)/2) / (n * max_rank - n(n+1)/2)

    Signed sets: ``max(0, U(up genes) - U(down genes))`` (UCell's ``w_neg = 1``);
    only the sign of each weight is used. A set with only down genes therefore
    scores 0 everywhere, exactly as in UCell/pyucell.

    Identical to ``pyucell.compute_ucell_scores(..., ties_method="average",
    missing_genes="skip")`` (which computes in float32; we compute in float64).

    Parameters
    ----------
    X
        Cells x genes matrix (CSR, CSC, dense or backed). Rank-based: any
        monotone per-cell transform (counts, CP10k, log1p) gives the same scores.
    sets
        Mapping name -> ``(indices, weights)`` or objects with ``indices``/``weights``.
    max_rank
        Rank cap; must exceed the number of up (and of down) genes of every set.
    chunk_size
        Cells per block.

    Returns
    -------
    ``float64`` array (n_cells x n_sets), values in [0, 1].
    """
    n_cells, n_genes = _check_matrix(X)
    isets = _as_index_sets(sets, n_genes)
    max_rank = int(max_rank)
    if max_rank < 1:
        raise SignatureError(f"max_rank must be a positive integer, got {max_rank}.")
    for s in isets:
        if max(s.up.size, s.down.size) >= max_rank:
            raise SignatureError(
                f"the set has {max(s.up.size, s.down.size)} genes of one direction, "
                f"not fewer than max_rank={max_rank}.",
                path=f"gene set {s.name!r}",
                fix="increase max_rank (UCell needs max_rank well above the set size).",
            )
    union = _union(isets)
    cmap = _colmap(union, n_genes)
    pos_cols = [cmap[s.up] for s in isets]
    neg_cols = [cmap[s.down] for s in isets]
    out = np.zeros((n_cells, len(isets)))
    for start, stop, csr, off in iter_csr_chunks(X, chunk_size):
        ranks = _ucell_ranks(csr.data, csr.indices, csr.indptr, off, off + stop - start,
                             cmap, union.size, max_rank)
        for j in range(len(isets)):
            sc = _u_from_ranks(ranks[:, pos_cols[j]], max_rank) if pos_cols[j].size else 0.0
            if neg_cols[j].size:
                sc = np.maximum(sc - _u_from_ranks(ranks[:, neg_cols[j]], max_rank), 0.0)
            out[start:stop, j] = sc
    return out


# ---------------------------------------------------------------------------
# AUCell
# ---------------------------------------------------------------------------
def default_n_up(n_genes: int, auc_threshold: float = 0.05) -> int:
    """``ceil(auc_threshold * n_genes)`` clipped to ``[2, n_genes]`` (decoupler's default)."""
    return int(np.clip(math.ceil(auc_threshold * n_genes), 2, n_genes))


def decoupler_tie_order(nonempty: np.ndarray, *, seed: int = 0) -> np.ndarray:
    """Tie-breaking priorities that reproduce decoupler's AUCell ranking.

    decoupler drops genes that are zero in every cell, then shuffles the remaining
    genes with ``numpy.random.default_rng(0)`` and ranks with
    ``scipy.stats.rankdata(-x, method="ordinal")``, so tied values are ordered by
    shuffled position. This returns ``prio`` with ``prio[g]`` = shuffled position of
    gene ``g`` (a permutation of ``0..n_nonempty-1`` on non-empty genes); empty genes
    get priorities after all non-empty ones, so they never change the rank of a
    non-empty gene.
    """
    nonempty = np.asarray(nonempty, dtype=bool)
    ne_idx = np.flatnonzero(nonempty)
    n_ne = ne_idx.size
    rng = np.random.default_rng(seed=seed)
    perm = rng.choice(np.arange(n_ne), n_ne, replace=False)
    prio = np.empty(nonempty.size, dtype=np.int64)
    prio[ne_idx[perm]] = np.arange(n_ne)
    prio[~nonempty] = n_ne + np.arange((~nonempty).sum())
    return prio


def _aucell_max(n_genes_set: int, n_up: int) -> float:
    k = min(n_genes_set, n_up - 1)
    return float(sum(n_up - i for i in range(1, k + 1)))


def aucell_scores(
    X,
    sets,
    *,
    n_up: int | None = None,
    auc_threshold: float = 0.05,
    tie_order: np.ndarray | str | None = None,
    n_ranked: int | None = None,
    gene_nonzero: np.ndarray | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> np.ndarray:
    """AUCell scores (Aibar et al. 2017): area under the gene-recovery curve in the top ``n_up`` ranks.

    Genes are ranked per cell by decreasing value (ordinal ranks, 1 = highest;
    ties ordered by ``tie_order``). For a set ``F`` the AUC is
    ``sum over genes of F with rank < n_up of (n_up - rank)``, divided by its
    maximum ``sum_{i=1}^{min(|F|, n_up-1)} (n_up - i)``; this is the recovery-curve
    area decoupler computes. Signed sets: ``AUC(up genes) - AUC(down genes)``
    (not clipped). Cells with no non-zero value score 0.

    Parameters
    ----------
    X
        Cells x genes matrix (CSR, CSC, dense or backed). Rank-based.
    sets
        Mapping name -> ``(indices, weights)``; only the sign of weights is used.
    n_up
        Rank cut-off. Default ``ceil(auc_threshold * n_ranked)`` clipped to ``[2, n_ranked]``.
    auc_threshold
        Fraction of genes used when ``n_up`` is None.
    tie_order
        Per-gene tie-breaking priority (lower first), a permutation of
        ``0..n_ranked-1`` on the ranked genes. Default: column order.
        ``"decoupler"`` reproduces ``dc.mt.aucell`` exactly: genes that are zero in
        every cell are dropped from the ranking and from the sets (one extra pass
        over the cells unless ``gene_nonzero`` is given), ``n_up`` defaults to 5% of
        the remaining genes and ties follow :func:`decoupler_tie_order`. Sets with
        no detected gene then score 0. Note that tie-breaking by a fixed gene order
        makes AUCell depend on the order of the columns whenever values tie
        (including zeros, in cells with fewer than ``n_up`` detected genes).
    n_ranked
        Number of genes that take part in the ranking (default all columns; genes
        with ``tie_order >= n_ranked`` are treated as absent, as decoupler does with
        genes that are zero in every cell).
    gene_nonzero
        Per-gene number of cells with a non-zero value (for ``tie_order="decoupler"``).
    chunk_size
        Cells per block.

    Returns
    -------
    ``float64`` array (n_cells x n_sets).
    """
    n_cells, n_genes = _check_matrix(X)
    isets = _as_index_sets(sets, n_genes)
    if isinstance(tie_order, str):
        if tie_order != "decoupler":
            raise SignatureError(f"tie_order must be an array, None or 'decoupler', got {tie_order!r}.")
        if gene_nonzero is None:
            gene_nonzero = gene_stats(X, chunk_size=chunk_size).n_nonzero
        nonempty = np.asarray(gene_nonzero) > 0
        kept = {}
        for s in isets:
            m = nonempty[s.indices]
            if m.any():
                kept[s.name] = (s.indices[m], s.weights[m])
        out = np.zeros((n_cells, len(isets)))
        if kept:
            sub = aucell_scores(X, kept, n_up=n_up, auc_threshold=auc_threshold,
                                tie_order=decoupler_tie_order(nonempty),
                                n_ranked=int(nonempty.sum()), chunk_size=chunk_size)
            names = list(kept)
            for j, s in enumerate(isets):
                if s.name in kept:
                    out[:, j] = sub[:, names.index(s.name)]
        return out
    n_ranked = n_genes if n_ranked is None else int(n_ranked)
    if n_up is None:
        n_up = default_n_up(n_ranked, auc_threshold)
    n_up = math.ceil(n_up)
    if not 1 < n_up <= n_ranked:
        raise SignatureError(
            f"n_up={n_up} must be between 2 and the number of ranked genes ({n_ranked})."
        )
    if tie_order is None:
        prio = np.arange(n_genes, dtype=np.int64)
    else:
        prio = np.asarray(tie_order, dtype=np.int64)
        if prio.shape != (n_genes,) or np.unique(prio).size != n_genes:
            raise SignatureError("tie_order must be a permutation with one entry per gene.")
    union = _union(isets)
    cmap = _colmap(union, n_genes)
    out = np.zeros((n_cells, len(isets)))
    pos_cols = [cmap[s.up] for s in isets]
    neg_cols = [cmap[s.down] for s in isets]
    for start, stop, csr, off in iter_csr_chunks(X, chunk_size):
        contrib = _aucell_contrib(csr.data, csr.indices, csr.indptr, off, off + stop - start,
                                  cmap, union, prio, n_ranked, n_up)
        for j in range(len(isets)):
            sc = 0.0
            if pos_cols[j].size:
                sc = contrib[:, pos_cols[j]].sum(axis=1) / _aucell_max(pos_cols[j].size, n_up)
            if neg_cols[j].size:
                sc = sc - contrib[:, neg_cols[j]].sum(axis=1) / _aucell_max(neg_cols[j].size, n_up)
            out[start:stop, j] = sc
    return out
