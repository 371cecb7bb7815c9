"""Exact, chunked signature-scoring kernels on sparse or dense cells x genes matrices.

Every kernel takes a matrix ``X`` (cells x genes; ``scipy.sparse`` CSR/CSC, a dense
``numpy`` array, or a backed AnnData matrix such as ``adata.X`` of
``anndata.read_h5ad(path, backed="r")``) and ``sets``, a mapping from set name to
``(indices, weights)`` (integer column positions and per-gene weights; objects with
``.indices``/``.weights`` attributes, such as :class:`cafclassify.genesets.MatchedSet`,
are accepted too). The result is a ``float64`` array of shape ``(n_cells, n_sets)`` in
the order of ``sets``.

The matrix is read in blocks of ``chunk_size`` cells and never densified: an
in-memory CSR matrix is scanned in place (no copy), other inputs are converted one
block at a time. Per-cell work runs in numba (parallel over cells). The only
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
``scanpy_scores``
    scanpy 1.11 ``sc.tl.score_genes`` (same control genes, same ``random_state``).
``zmean_scores``
    defined here (weighted mean of per-gene z-scores).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import numba as nb
import numpy as np
import pandas as pd
from scipy import sparse

from .._errors import DataError, SignatureError

__all__ = [
    "GeneStats",
    "IndexSet",
    "aucell_scores",
    "decoupler_tie_order",
    "default_n_up",
    "gene_stats",
    "iter_csr_chunks",
    "scanpy_control_genes",
    "scanpy_scores",
    "ucell_scores",
    "zmean_scores",
]

DEFAULT_CHUNK_SIZE = 20_000


# ---------------------------------------------------------------------------
# set normalisation
# ---------------------------------------------------------------------------
@dataclass(frozen=True)
class IndexSet:
    """A gene set as column positions and weights (validated, duplicates rejected)."""

    name: str
    indices: np.ndarray  # int64, unique
    weights: np.ndarray  # float64, same length, finite and non-zero

    @property
    def up(self) -> np.ndarray:
        """Columns with a positive weight (genes expected *up* in the programme)."""
        return self.indices[self.weights > 0]

    @property
    def down(self) -> np.ndarray:
        """Columns with a negative weight (genes expected *down*)."""
        return self.indices[self.weights < 0]


def _as_index_sets(sets, n_genes: int) -> list[IndexSet]:
    """Normalise ``sets`` to a list of :class:`IndexSet`, raising SignatureError on bad input."""
    if isinstance(sets, Mapping):
        items = list(sets.items())
    else:
        raise SignatureError(
            f"gene sets must be a mapping of name -> (indices, weights), got {type(sets).__name__}.",
            fix="pass e.g. {'myCAF': (np.array([3, 17, 42]), np.ones(3))}.",
        )
    if not items:
        raise SignatureError("no gene sets to score.", fix="pass at least one gene set.")
    out = []
    for name, spec in items:
        if hasattr(spec, "indices") and hasattr(spec, "weights"):
            idx, w = spec.indices, spec.weights
        elif isinstance(spec, tuple) and len(spec) == 2:
            idx, w = spec
        else:
            idx, w = spec, None
        idx = np.asarray(idx)
        if idx.ndim != 1 or (idx.size and not np.issubdtype(idx.dtype, np.integer)):
            raise SignatureError(
                "gene indices must be a 1-d array of integer column positions.",
                path=f"gene set {name!r}",
                fix="match gene names to positions first (cafclassify.match_signatures).",
            )
        idx = idx.astype(np.int64)
        w = np.ones(idx.size) if w is None else np.asarray(w, dtype=np.float64).ravel()
        if w.shape != idx.shape:
            raise SignatureError(
                f"{idx.size} gene indices but {w.size} weights.",
                path=f"gene set {name!r}",
                fix="give one weight per gene.",
            )
        if idx.size == 0:
            raise SignatureError(
                "the set has no genes in the data.",
                path=f"gene set {name!r}",
                fix="drop the set or check the gene names / species.",
            )
        if idx.min() < 0 or idx.max() >= n_genes:
            raise SignatureError(
                f"gene index out of range for a matrix with {n_genes} genes.",
                path=f"gene set {name!r}",
                fix="indices must be column positions into the matrix being scored.",
            )
        if np.unique(idx).size != idx.size:
            raise SignatureError(
                "the set lists the same gene more than once.",
                path=f"gene set {name!r}",
                fix="remove duplicated genes (after alias/orthologue mapping).",
            )
        if not np.all(np.isfinite(w)) or np.any(w == 0):
            raise SignatureError(
                "weights must be finite and non-zero (+ for up, - for down genes).",
                path=f"gene set {name!r}",
                fix="remove genes with weight 0 or fix the weights.",
            )
        out.append(IndexSet(str(name), idx, w))
    return out


# ---------------------------------------------------------------------------
# chunked access
# ---------------------------------------------------------------------------
def _is_backed_sparse(X) -> bool:
    try:
        from anndata.abc import CSCDataset, CSRDataset
    except ImportError:  # pragma: no cover - anndata < 0.11
        from anndata._core.sparse_dataset import BaseCompressedSparseDataset as _B

        return isinstance(X, _B)
    return isinstance(X, CSRDataset | CSCDataset)


def _check_matrix(X) -> tuple[int, int]:
    shape = getattr(X, "shape", None)
    if shape is None or len(shape) != 2:
        raise DataError(
            f"expected a 2-d cells x genes matrix, got {type(X).__name__}.",
            fix="pass adata.X, a layer, a scipy.sparse matrix or a 2-d numpy array.",
        )
    if not hasattr(X, "__getitem__"):
        raise DataError(f"cannot read cells from a matrix of type {type(X).__name__}.")
    return int(shape[0]), int(shape[1])


def _to_csr_block(block, n_genes: int) -> sparse.csr_matrix:
    """Convert one block of cells to canonical CSR with finite values (zeros dropped)."""
    if sparse.issparse(block):
        block = sparse.csr_matrix(block)  # no copy if already csr_matrix
        if not block.has_canonical_format:
            block = block.copy()
            block.sum_duplicates()
    else:
        block = np.asarray(block)
        if block.ndim != 2 or block.shape[1] != n_genes:
            raise DataError(f"unexpected block shape {block.shape}.")
        if not np.issubdtype(block.dtype, np.number) or np.issubdtype(block.dtype, np.complexfloating):
            raise DataError(
                f"the expression matrix has non-numeric dtype {block.dtype}.",
                fix="convert the matrix to float32/float64.",
            )
        block = sparse.csr_matrix(block)
    if block.dtype.kind == "b":
        block = block.astype(np.float32)
    if block.data.size and block.dtype.kind == "f" and not np.isfinite(block.data).all():
        raise DataError(
            "the expression matrix contains NaN or infinite values.",
            fix="replace them (e.g. with 0) or remove the affected cells/genes before scoring.",
        )
    return block


@nb.njit(cache=True, nogil=True)
def _csr_is_canonical(indptr, indices) -> bool:
    """Column indices strictly increasing within every row (sorted, no duplicates).

    scipy's ``has_canonical_format`` casts ``indices`` to the dtype of ``indptr`` first:
    for a matrix with a 64-bit ``indptr`` (more than 2**31 - 1 values) that is a
    temporary copy of all indices (9 GB at 1M cells x 1,200 values).
    """
    for i in range(indptr.size - 1):
        for j in range(indptr[i] + 1, indptr[i + 1]):
            if indices[j] <= indices[j - 1]:
                return False
    return True


def _all_finite(values: np.ndarray, step: int = 1 << 24) -> bool:
    """``np.isfinite(values).all()`` without a boolean array the size of ``values``."""
    return all(np.isfinite(values[a:a + step]).all() for a in range(0, values.size, step))


def iter_csr_chunks(X, chunk_size: int = DEFAULT_CHUNK_SIZE) -> Iterator[tuple[int, int, sparse.csr_matrix, int]]:
    """Yield ``(start, stop, csr, offset)`` blocks of cells.

    For an in-memory canonical CSR matrix the whole matrix is yielded each time with
    ``offset=start`` (rows ``start:stop`` are processed in place, no copy); otherwise
    ``csr`` is the converted block and ``offset=0``.
    """
    n_cells, n_genes = _check_matrix(X)
    if chunk_size is None or int(chunk_size) < 1:
        raise DataError(f"chunk_size must be a positive integer, got {chunk_size!r}.")
    chunk_size = int(chunk_size)
    inplace = (
        isinstance(X, sparse.csr_matrix | sparse.csr_array)
        and X.dtype.kind in "fiu"
        and _csr_is_canonical(X.indptr, X.indices)
    )
    if inplace:
        X = sparse.csr_matrix(X) if not isinstance(X, sparse.csr_matrix) else X
        if X.data.size and X.dtype.kind == "f" and not _all_finite(X.data):
            raise DataError(
                "the expression matrix contains NaN or infinite values.",
                fix="replace them (e.g. with 0) or remove the affected cells/genes before scoring.",
            )
    csc_whole = isinstance(X, sparse.csc_matrix | sparse.csc_array)
    for start in range(0, n_cells, chunk_size):
        stop = min(start + chunk_size, n_cells)
        if inplace:
            yield start, stop, X, start
        else:
            block = X[start:stop] if not csc_whole else X[start:stop, :]
            yield start, stop, _to_csr_block(block, n_genes), 0


def _colmap(union: np.ndarray, n_genes: int) -> np.ndarray:
    cm = np.full(n_genes, -1, dtype=np.int64)
    cm[union] = np.arange(union.size, dtype=np.int64)
    return cm


def _union(isets: list[IndexSet]) -> np.ndarray:
    return np.unique(np.concatenate([s.indices for s in isets])).astype(np.int64)


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


@nb.njit(cache=True, nogil=True)
def _accumulate_gene_stats(data, indices, indptr, start, stop, s, ss, nz, s_nat):  # pragma: no cover
    """Add per-gene sum, sum of squares and non-zero count over rows (row order).

    ``s_nat`` accumulates in the dtype of ``s_nat`` (float32 for float32 data), in
    row order, as ``scipy.sparse`` column sums do.
    """
    for row in range(start, stop):
        for k in range(indptr[row], indptr[row + 1]):
            v = np.float64(data[k])
            if v != 0:
                g = indices[k]
                s[g] += v
                ss[g] += v * v
                nz[g] += 1
                s_nat[g] += data[k]


# ---------------------------------------------------------------------------
# gene statistics (one streaming pass)
# ---------------------------------------------------------------------------
@dataclass(frozen=True)
class GeneStats:
    """Per-gene statistics over all cells, from one streaming pass."""

    n_cells: int
    mean: np.ndarray  # float64
    var: np.ndarray  # float64, unbiased (ddof=1); 0 when n_cells < 2
    n_nonzero: np.ndarray  # int64 number of cells with a non-zero value
    scanpy_mean: np.ndarray  # mean from sums accumulated in the data's precision, as scanpy


def gene_stats(X, *, chunk_size: int = DEFAULT_CHUNK_SIZE) -> GeneStats:
    """Per-gene mean, variance (ddof=1) and detection count, reading ``X`` chunk by chunk.

    ``mean`` is accumulated in float64. ``scanpy_mean`` reproduces the gene means
    ``sc.tl.score_genes`` bins on: column sums accumulated in cell order in the
    data's own precision (float32 for float32 data, like ``scipy.sparse`` and
    numpy's row-wise reduction do), then divided in float64; with float32 data it
    differs from ``mean`` by ~1e-7 relative, enough to move genes across bin edges.
    The variance merges per-chunk sums of squares around each chunk's mean
    (Chan et al.) to limit cancellation.
    """
    n_cells, n_genes = _check_matrix(X)
    mean = np.zeros(n_genes)
    m2 = np.zeros(n_genes)
    sums = np.zeros(n_genes)
    nz = np.zeros(n_genes, dtype=np.int64)
    s_nat = None
    tot = 0
    for start, stop, csr, off in iter_csr_chunks(X, chunk_size):
        nb_ = stop - start
        s = np.zeros(n_genes)
        ss = np.zeros(n_genes)
        if s_nat is None:
            s_nat = np.zeros(n_genes, dtype=np.float32 if csr.dtype == np.float32 else np.float64)
        _accumulate_gene_stats(csr.data, csr.indices, csr.indptr, off, off + nb_, s, ss, nz, s_nat)
        cmean = s / nb_
        cm2 = np.maximum(ss - s * cmean, 0.0)
        if tot == 0:
            mean, m2 = cmean, cm2
        else:
            delta = cmean - mean
            newtot = tot + nb_
            mean = mean + delta * (nb_ / newtot)
            m2 = m2 + cm2 + delta * delta * (tot * nb_ / newtot)
        tot += nb_
        sums += s
    if n_cells:
        # float64 column sums in cell order, as scipy/scanpy on sparse input
        mean = sums / n_cells
    var = m2 / (n_cells - 1) if n_cells > 1 else np.zeros(n_genes)
    s_nat = np.zeros(n_genes) if s_nat is None else s_nat.astype(np.float64)
    return GeneStats(n_cells=n_cells, mean=mean, var=var, n_nonzero=nz,
                     scanpy_mean=s_nat / max(n_cells, 1))


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
