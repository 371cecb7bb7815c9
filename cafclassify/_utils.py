"""Small helpers shared by the analysis functions."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from anndata import AnnData

from ._errors import DataError

__all__ = ["GatheredRows", "get_matrix", "stack_rows", "stored_row_bytes", "take_rows"]


def _canonical(block):
    """Rows as values: a sparse block with duplicates summed and indices sorted."""
    from .io._canonical import canonical

    return canonical(block, copy=False) if sp.issparse(block) else block


def get_matrix(adata: AnnData, layer: str | None):
    """Return ``(matrix, where)`` for ``adata.X`` or ``adata.layers[layer]``.

    Parameters
    ----------
    adata
        The data.
    layer
        A layer name, or ``None`` for ``adata.X``.

    Returns
    -------
    The matrix (as stored: sparse, dense or a backed dataset) and a short description of
    where it came from, for messages.
    """
    if layer is None:
        X, where = adata.X, "adata.X"
    else:
        from .io._lazy import lazy_layer, lazy_layer_names

        # a backed AnnData from open_lazy() keeps its layers on disk: read them from there
        names = lazy_layer_names(adata)
        if layer not in names:
            raise DataError(
                f"layer {layer!r} not found (available layers: {names or 'none'}).",
                path="adata.layers",
                fix="pass layer=None to use adata.X, or one of the available layers.",
            )
        X, where = lazy_layer(adata, layer), f"adata.layers[{layer!r}]"
    if X is None:
        raise DataError(
            "the AnnData object has no expression matrix.",
            path=where,
            fix="load the data with its matrix (X).",
        )
    if X.shape != (adata.n_obs, adata.n_vars):
        raise DataError(
            f"matrix shape {X.shape} does not match the AnnData shape {adata.shape}.", path=where
        )
    return X, where


def _is_backed_matrix(X) -> bool:
    """An on-disk matrix (anndata backed sparse dataset or h5py dataset)."""
    if isinstance(X, np.ndarray) or sp.issparse(X):
        return False
    mod = type(X).__module__
    return mod.startswith(("anndata", "h5py"))


#: rows per window when rows are gathered from an on-disk matrix
TAKE_BLOCK = 20_000
#: a window is read whole when at least this fraction of its rows is wanted; otherwise
#: only the wanted rows are read (one small HDF5 read each). Measured on gzip/lzf files:
#: a row read alone costs about as much as 1.5 rows of a block read, so reading a whole
#: window pays off only when it is mostly wanted.
_WHOLE_WINDOW = 0.5


def stack_rows(parts: list) -> np.ndarray | sp.spmatrix:
    """Blocks of rows, one under the other: CSR if they are sparse, else an ndarray."""
    if sp.issparse(parts[0]):
        return sp.vstack([sp.csr_matrix(p) for p in parts], format="csr")
    return np.vstack([np.asarray(p) for p in parts])


def take_rows(X, rows) -> np.ndarray | sp.spmatrix:
    """``X[rows]`` for in-memory *and* on-disk matrices, in the order of ``rows``.

    On a backed (HDF5) matrix anndata reads an index array row by row, one small HDF5
    read per cell, even when the rows are contiguous. Here the rows are split into
    windows of :data:`TAKE_BLOCK` cells: a contiguous run is read as one slice, a window
    of which most rows are wanted is read in one piece and subset in memory, and the
    wanted rows of a sparsely used window are read one by one. The cost is thus never
    more than one sequential pass over the rows spanned, and never a full pass for a
    few scattered rows (e.g. the fibroblasts of a million-cell tumour file).

    Parameters
    ----------
    X
        Cells x genes matrix: ndarray, scipy sparse, or an on-disk dataset.
    rows
        Integer row indices (any order; repeats allowed).

    Returns
    -------
    The rows, in the given order: CSR for sparse input (canonical: duplicate entries
    summed, indices sorted), ndarray for dense.
    """
    rows = np.asarray(rows, dtype=np.int64).ravel()
    if isinstance(X, GatheredRows):
        return X.take(rows)
    if not _is_backed_matrix(X):
        return _canonical(X[rows])
    if rows.size == 0:
        block = X[0:0]
        return sp.csr_matrix(block) if sp.issparse(block) else np.asarray(block)
    uniq, inverse = np.unique(rows, return_inverse=True)
    lo, hi = int(uniq[0]), int(uniq[-1]) + 1
    if hi - lo == uniq.size:  # one contiguous range: one slice
        got = X[lo:hi]
    else:
        parts = []
        for start in range(lo, hi, TAKE_BLOCK):
            stop = min(start + TAKE_BLOCK, hi)
            a, b = np.searchsorted(uniq, [start, stop])
            if a == b:
                continue
            want = uniq[a:b]
            if want[-1] - want[0] + 1 == want.size:  # a contiguous run
                parts.append(X[int(want[0]):int(want[-1]) + 1])
            elif want.size >= _WHOLE_WINDOW * (stop - start):
                parts.append(X[start:stop][want - start])
            else:
                parts.append(X[want])
        got = stack_rows(parts)
    if sp.issparse(got):
        got = _canonical(sp.csr_matrix(got))  # on-disk blocks as stored: duplicates summed here
    else:
        got = np.asarray(got)
    if uniq.size == rows.size and np.array_equal(uniq, rows):
        return got
    return got[inverse]


def stored_row_bytes(X, rows) -> int:
    """Bytes that ``rows`` of ``X`` take in memory once read (CSR: values + indices)."""
    rows = np.asarray(rows, dtype=np.int64).ravel()
    if rows.size == 0:
        return 0
    group = getattr(X, "group", None)
    if group is not None and "indptr" in group:  # anndata backed sparse dataset
        indptr = group["indptr"][:]
        nnz = int((indptr[rows + 1] - indptr[rows]).sum())
        return nnz * (np.dtype(group["data"].dtype).itemsize + np.dtype(group["indices"].dtype).itemsize)
    if sp.issparse(X):
        X = sp.csr_matrix(X)
        nnz = int((X.indptr[rows + 1] - X.indptr[rows]).sum())
        return nnz * (X.data.dtype.itemsize + X.indices.dtype.itemsize)
    return int(rows.size) * int(X.shape[1]) * np.dtype(X.dtype).itemsize


class GatheredRows:
    """Some rows of an on-disk matrix, read once into memory.

    An analysis that visits the same scattered rows of a backed file several times
    (the fibroblasts of a tumour file when a classifier is trained: HVGs, feature
    statistics, seeds, prediction) reads them once here instead of once per visit.
    :func:`take_rows` on this object returns rows by their row numbers in the
    full matrix; rows that were not gathered are read from the source.

    Parameters
    ----------
    X
        The full matrix (on disk or in memory).
    rows
        Row numbers to hold in memory.
    """

    def __init__(self, X, rows):
        self.source = X
        self.rows = np.unique(np.asarray(rows, dtype=np.int64))
        block = take_rows(X, self.rows)
        self.block = sp.csr_matrix(block) if sp.issparse(block) else np.asarray(block)
        self.shape = tuple(X.shape)
        self.dtype = self.block.dtype
        #: the value type of the whole matrix, when the caller has decided it
        self.value_type: str | None = None

    @property
    def nbytes(self) -> int:
        """Memory held by the gathered rows."""
        b = self.block
        return int(b.data.nbytes + b.indices.nbytes + b.indptr.nbytes) if sp.issparse(b) else int(b.nbytes)

    def holds_exactly(self, rows) -> bool:
        """Whether ``rows`` are the gathered rows, in the same (ascending) order."""
        rows = np.asarray(rows).ravel()
        return rows.shape == self.rows.shape and bool(np.array_equal(rows, self.rows))

    def take(self, rows) -> np.ndarray | sp.spmatrix:
        """Rows by their numbers in the full matrix, in the given order."""
        rows = np.asarray(rows, dtype=np.int64).ravel()
        if rows.size == 0:
            return self.block[:0]
        pos = np.searchsorted(self.rows, rows)
        inside = pos < self.rows.size
        if not (inside.all() and np.array_equal(self.rows[pos], rows)):
            return take_rows(self.source, rows)
        return self.block[pos]
