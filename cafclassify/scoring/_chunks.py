"""Gene-set index handling and chunked reading of cells x genes matrices, shared by all scorers.

Every scoring kernel (UCell and AUCell in :mod:`cafclassify.scoring._kernels`, the
linear scores in :mod:`cafclassify.scoring._linear`) takes a matrix ``X`` (cells x
genes; ``scipy.sparse`` CSR/CSC, a dense ``numpy`` array, or a backed AnnData
matrix such as ``adata.X`` of ``anndata.read_h5ad(path, backed="r")``) and
``sets``, a mapping from set name to
``(indices, weights)`` (integer column positions and per-gene weights; objects with
``.indices``/``.weights`` attributes, such as :class:`cafclassify.genesets.MatchedSet`,
are accepted too). The result is a ``float64`` array of shape ``(n_cells, n_sets)`` in
the order of ``sets``.

This module normalises ``sets`` to :class:`IndexSet` objects, checks ``X`` and
hands it out in blocks of cells. The matrix is read in blocks of ``chunk_size``
cells and never densified: an in-memory CSR matrix is scanned in place (no copy),
other inputs are converted one block at a time.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import numba as nb
import numpy as np
from scipy import sparse

from .._errors import DataError, SignatureError

__all__ = [
    "IndexSet",
    "iter_csr_chunks",
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
