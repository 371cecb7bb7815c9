"""Small helpers shared by the analysis functions."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from anndata import AnnData

from ._errors import DataError

__all__ = ["get_matrix", "take_rows"]


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
        if layer not in adata.layers:
            raise DataError(
                f"layer {layer!r} not found (available layers: {sorted(adata.layers) or 'none'}).",
                path="adata.layers",
                fix="pass layer=None to use adata.X, or one of the available layers.",
            )
        X, where = adata.layers[layer], f"adata.layers[{layer!r}]"
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


#: rows per block when rows are gathered from an on-disk matrix
TAKE_BLOCK = 20_000
#: below this fraction of the rows spanned, rows are read one by one instead of in blocks
_SPARSE_SELECTION = 0.002


def take_rows(X, rows) -> np.ndarray | sp.spmatrix:
    """``X[rows]`` for in-memory *and* on-disk matrices, in the order of ``rows``.

    On a backed (HDF5) matrix anndata reads an index array row by row, one small HDF5
    read per cell (minutes for 50,000 random cells of a large file). Here rows are
    gathered from contiguous blocks of :data:`TAKE_BLOCK` cells read in one piece, so a
    selection costs at most one sequential pass over the rows it spans. Very sparse
    selections (fewer than 1 in 500 rows spanned) are read row by row.

    Parameters
    ----------
    X
        Cells x genes matrix: ndarray, scipy sparse, or an on-disk dataset.
    rows
        Integer row indices (any order; repeats allowed).

    Returns
    -------
    The rows, in the given order: CSR for sparse input, ndarray for dense.
    """
    rows = np.asarray(rows, dtype=np.int64).ravel()
    if not _is_backed_matrix(X):
        return X[rows]
    if rows.size == 0:
        block = X[0:0]
        return sp.csr_matrix(block) if sp.issparse(block) else np.asarray(block)
    uniq, inverse = np.unique(rows, return_inverse=True)
    lo, hi = int(uniq[0]), int(uniq[-1]) + 1
    if hi - lo == uniq.size:  # one contiguous range: one slice
        got = X[lo:hi]
    elif uniq.size < _SPARSE_SELECTION * (hi - lo):
        got = X[uniq]
    else:
        parts = []
        for start in range(lo, hi, TAKE_BLOCK):
            stop = min(start + TAKE_BLOCK, hi)
            a, b = np.searchsorted(uniq, [start, stop])
            if a == b:
                continue
            block = X[start:stop]
            parts.append(block[uniq[a:b] - start])
        got = sp.vstack([sp.csr_matrix(p) for p in parts], format="csr") if sp.issparse(parts[0]) \
            else np.vstack(parts)
    if sp.issparse(got):
        got = sp.csr_matrix(got)
    else:
        got = np.asarray(got)
    if uniq.size == rows.size and np.array_equal(uniq, rows):
        return got
    return got[inverse]
