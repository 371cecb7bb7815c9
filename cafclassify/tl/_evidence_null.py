"""The null of the subtype evidence: expression-matched random gene sets and their moments.

Every programme's evidence (:mod:`cafclassify.tl._evidence`, step 3) is read in units of
the null: how many SDs the programme's score sits above random gene sets of its size and
expression level, in the same cell. This module draws those sets, scores them and pools
their mean and SD per cell.

Draws
-----
Each gene of a set is replaced by a random gene of the same mean-expression bin among
fibroblasts (the expressed genes cut into ``N_BINS`` = 25 bins of equal gene count, as
``scanpy.tl.score_genes``; a bin holds at least ``MIN_POOL`` = 50 genes, so a targeted
panel has fewer bins, down to one), with the same direction, never a gene of the set
itself. One random stream per set, seeded by ``random_state`` and the set's name: a
set's null does not depend on which other sets are scored or in which order.

Moments
-------
The null's mean and SD per cell and set, by which every score is standardised, are read
from ``N_MOMENTS`` = 500 draws per set, drawn ``N_NULL`` = 50 at a time and pooled
(the pairwise update of Chan, Golub & LeVeque 1979); only the first 200
(``_evidence.N_EXIST``, as float32) are kept, for the existence test (``_evidence_seeds`` step
6), which re-applies the seed rule to each kept draw.

Why 500: the draws are shared by every cell, so their Monte-Carlo error is shared too.
With 50 draws the SD of a set's null is known to about 10 % (``1 / sqrt(2 * 50)``) and
its mean to about 0.14 null SDs, the same error in every cell, so a whole class moves
across the seed threshold with ``random_state``: on the breast sample the author iCAFs
gave 23-46 iCAF seeds over ``random_state`` 0-7 (34-36 over 0-5 with 500 draws). With
500 the errors are about 3 % and 0.04 SD. Measured (``docs/classifier.md``, ARI over ``random_state`` 0-5, mean
and SD, 50 -> 500 draws): the breast sample 0.629 (SD 0.027) -> 0.618 (0.009),
synthetic 70 % myCAF 0.529 (0.044) -> 0.560 (0.013), ~520 UMI 0.328 (0.027) -> 0.343
(0.009), full-length reads of sorted mouse CAFs 0.731 (0.026) -> 0.745 (0.003). The
number is a Monte-Carlo precision, not a fitted value: more draws change the evidence
less and less, and the cost is linear in them.

Scoring
-------
A draw's score is ``(X - m) @ w`` over the fibroblasts' sparse rows, computed by a numba
kernel that writes the dense result directly (CSR rows times a sparse genes x draws
weight matrix, parallel over cells); the neighbourhood average ``W @ S`` by a second one.
They replace ``scipy``'s sparse-sparse product, which builds a sparse result and then
densifies it. Measured on 50,000 cells x 15,000 genes (2,000 detected per cell), 6 sets
of 30 genes, one process on the 2-core machine, two runs each: the evidence with 50
draws took 3.6-5.9 s with ``scipy`` and 1.9-3.6 s with the kernels; with 500 draws for
the moments it takes 13-15 s (``docs/classifier.md``, "Null draws"). The scoring
module's kernel (``scoring._linear._rows_dot``) computes the same product with *dense*
weights over the union of the sets' genes, so every stored value visits every column;
here each gene is in a handful of a chunk's 300 columns (6 sets x 50 draws). Measured on
20,000 cells x 15,000 genes (2,000 detected per cell), one chunk of draws: 0.21 s with
sparse weights, 1.14 s with ``_rows_dot`` (6,593 genes x 300 columns), equal results.
"""

from __future__ import annotations

import numba as nb
import numpy as np
import scipy.sparse as sp

__all__ = ["MIN_POOL", "N_BINS", "N_MOMENTS", "N_NULL", "Moments", "NullSampler", "averaged", "centred_scores"]

#: conventions (not fitted to any dataset)
N_NULL = 50
N_MOMENTS = 500
N_BINS = 25
#: an expression bin holds at least this many expressed genes (score_genes' ctrl_size)
MIN_POOL = 50


class NullSampler:
    """Expression-matched random versions of gene sets (module docstring, "Draws").

    Parameters
    ----------
    mean
        Mean log-expression of every gene over the fibroblasts.
    sets
        Set name -> (gene column indices, directions).
    n_bins
        At most this many expression bins.
    random_state
        Seed of every set's random stream.
    """

    def __init__(self, mean: np.ndarray, sets: dict[str, tuple[np.ndarray, np.ndarray]], *,
                 n_bins: int = N_BINS, random_state: int = 0):
        expressed = mean > 0
        self.n_expressed = int(expressed.sum())
        # the expressed genes in bins of at least MIN_POOL genes (fewer bins on a panel)
        self.n_bins = int(max(1, min(n_bins, self.n_expressed // MIN_POOL)))
        self.bins = np.full(mean.size, -1, dtype=np.int64)
        self.bins[expressed] = _bins(mean[expressed], self.n_bins)
        self.pools = {b: np.flatnonzero(self.bins == b) for b in range(self.n_bins)}
        self.any_expressed = np.flatnonzero(expressed)  # the pool of a gene no fibroblast expresses
        self.max_bins = n_bins
        self.sets = sets
        self.rngs = {name: np.random.default_rng([random_state, *name.encode()]) for name in sets}

    def info(self) -> dict:
        """What the null is, for the report."""
        return {"n_bins": self.n_bins, "n_expressed_genes": self.n_expressed,
                "min_genes_per_bin": int(min((p.size for p in self.pools.values()), default=0)),
                "rule": (f"expression-matched random genes: the expressed genes in {self.n_bins} bins of "
                         f"equal size (at most {self.max_bins}; at least {MIN_POOL} genes per bin where there "
                         "are enough)")}

    def draw(self, n_draws: int) -> list[tuple[np.ndarray, np.ndarray]]:
        """The next ``n_draws`` random versions of every set, set by set."""
        cols = []
        for name, (idx, w) in self.sets.items():
            rng = self.rngs[name]
            excl = set(np.asarray(idx).tolist())
            for _r in range(n_draws):
                d = np.empty(len(idx), dtype=np.int64)
                for j, g in enumerate(idx):
                    pool = self.pools.get(self.bins[g], self.any_expressed)
                    cand = pool[rng.integers(0, pool.size)] if pool.size else g
                    tries = 0
                    while cand in excl and pool.size > 1 and tries < 10:
                        cand = pool[rng.integers(0, pool.size)]
                        tries += 1
                    d[j] = cand
                cols.append((d, np.asarray(w, dtype=np.float64)))
        return cols


def _bins(mean: np.ndarray, n_bins: int) -> np.ndarray:
    order = np.argsort(mean, kind="stable")
    b = np.empty(mean.size, dtype=np.int64)
    b[order] = np.minimum((np.arange(mean.size) * n_bins) // max(mean.size, 1), n_bins - 1)
    return b


def centred_scores(Xf: sp.csr_matrix, mean: np.ndarray, cols: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """``(X - m) @ Wg`` for sets ``cols`` (weights scaled to ``sum |w| = 1``), dense float64.

    ``X`` is never densified (module docstring, "Scoring").
    """
    Wg = _weight_matrix(Xf.shape[1], cols)
    X = Xf if sp.isspmatrix_csr(Xf) else sp.csr_matrix(Xf)
    out = _csr_times_sparse(X.data, X.indices, X.indptr, Wg.data, Wg.indices, Wg.indptr, Wg.shape[1])
    out -= np.asarray(Wg.T @ mean).ravel()[None, :]
    return out


def averaged(W: sp.csr_matrix, B: np.ndarray) -> np.ndarray:
    """``W @ B`` for the sparse averaging operator ``W`` and dense ``B`` (cells x columns).

    The same product as ``scipy``'s, parallel over cells (numba).
    """
    W = W if sp.isspmatrix_csr(W) else sp.csr_matrix(W)
    return _csr_times_dense(W.data, W.indices, W.indptr, np.ascontiguousarray(B, dtype=np.float64))


@nb.njit(parallel=True, cache=True, nogil=True)
def _csr_times_sparse(data, indices, indptr, w_data, w_indices, w_indptr, n_out):  # pragma: no cover
    """Dense ``X @ Wg`` for CSR ``X`` (cells x genes) and CSR ``Wg`` (genes x columns)."""
    n = indptr.size - 1
    out = np.zeros((n, n_out))
    for r in nb.prange(n):
        for k in range(indptr[r], indptr[r + 1]):
            g = indices[k]
            v = np.float64(data[k])
            for t in range(w_indptr[g], w_indptr[g + 1]):
                out[r, w_indices[t]] += v * w_data[t]
    return out


@nb.njit(parallel=True, cache=True, nogil=True)
def _csr_times_dense(data, indices, indptr, B):  # pragma: no cover
    """Dense ``A @ B`` for CSR ``A`` (rows x k) and C-contiguous ``B`` (k x columns)."""
    n = indptr.size - 1
    m = B.shape[1]
    out = np.zeros((n, m))
    for r in nb.prange(n):
        for k in range(indptr[r], indptr[r + 1]):
            a = data[k]
            row = B[indices[k]]
            for j in range(m):
                out[r, j] += a * row[j]
    return out


def _weight_matrix(n_genes: int, cols: list[tuple[np.ndarray, np.ndarray]]) -> sp.csr_matrix:
    rows, cidx, vals = [], [], []
    for j, (idx, w) in enumerate(cols):
        tot = np.abs(w).sum()
        if tot <= 0:
            continue
        rows.append(idx)
        cidx.append(np.full(idx.size, j))
        vals.append(w / tot)
    if not rows:
        return sp.csr_matrix((n_genes, len(cols)))
    return sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cidx))),
                         shape=(n_genes, len(cols)))


class Moments:
    """Mean and SD over null draws (the last axis), per cell and set, pooled chunk by chunk."""

    def __init__(self, N: np.ndarray):
        self.n = 0
        self.mean = np.zeros(N.shape[:2])
        self.m2 = np.zeros(N.shape[:2])
        self.add(N)

    def add(self, N: np.ndarray) -> None:
        """Pool another chunk of draws (Chan, Golub & LeVeque's update of the mean and M2;
        from no draws it is the chunk's own mean and M2, exactly)."""
        m = N.shape[2]
        mean_b = N.mean(axis=2)
        m2_b = ((N - mean_b[:, :, None]) ** 2).sum(axis=2)
        delta = mean_b - self.mean
        tot = self.n + m
        self.mean += delta * (m / tot)
        self.m2 += m2_b + delta**2 * (self.n * m / tot)
        self.n = tot

    @property
    def sd(self) -> np.ndarray:
        """Population SD (``ddof=0``, as ``np.std``)."""
        return np.sqrt(self.m2 / self.n)

    def standardise(self, S: np.ndarray, N: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Scores ``S`` and kept draws ``N`` in null-SD units; ``N`` is overwritten."""
        sd = self.sd
        floor = 1e-6 + 1e-3 * np.nanmedian(sd) if np.isfinite(np.nanmedian(sd)) else 1e-6
        sd = np.maximum(sd, floor)
        N -= self.mean[:, :, None]
        N /= sd[:, :, None]
        return (S - self.mean) / sd, N
