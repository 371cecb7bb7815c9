"""Per-gene statistics (mean, variance, detection count) from one streaming pass over the cells.

AUCell uses the detection counts (genes zero in every cell leave the ranking, as in
decoupler), the linear scores use the means (scanpy's expression bins) and the
mean and variance (zmean). The matrix is read block by block with
:func:`~cafclassify.scoring._chunks.iter_csr_chunks` and never densified; the
per-block accumulation runs in numba.
"""

from __future__ import annotations

from dataclasses import dataclass

import numba as nb
import numpy as np

from ._chunks import DEFAULT_CHUNK_SIZE, _check_matrix, iter_csr_chunks

__all__ = [
    "GeneStats",
    "gene_stats",
]


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
