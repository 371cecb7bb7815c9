"""One layout for every sparse matrix: duplicates summed, column indices sorted.

scipy and anndata define a CSR/CSC matrix whose index arrays hold the same
position twice as having the *sum* of those entries there, and allow the indices
of a row (column) in any order. Such matrices are valid and real pipelines write
them (concatenated 10x runs, hand-built ``csr_matrix((data, indices, indptr))``).
Every operation that works on the stored values one by one (``log1p``,
``expm1``, ``data != 0``, counting stored entries as detected genes) gives a
different result on them than on the same matrix stored canonically: ``log1p(2) +
log1p(3)`` is not ``log1p(5)``.

So every reader hands out *canonical* matrices (:func:`canonical`): in memory once,
right after reading (:func:`canonicalise_adata`), and on the out-of-core paths for
every block as it is read (a row block of a CSR matrix holds whole rows, so its
duplicates are within the block). Checking costs one pass over the indices of the
block (small next to reading it from disk); only non-canonical blocks are copied.
Dense matrices have no layout to fix and are returned as they are.
"""

from __future__ import annotations

import logging

import scipy.sparse as sp

__all__ = ["canonical", "canonicalise_adata", "is_canonical"]

logger = logging.getLogger(__name__)


def is_canonical(X) -> bool:
    """True for dense matrices and for sparse ones with sorted, unique indices per row/column."""
    if not sp.issparse(X):
        return True
    if X.format not in ("csr", "csc"):
        return False
    # recomputed, not scipy's cached flag: a matrix built from arrays may carry a stale one
    for attr in ("_has_canonical_format", "_has_sorted_indices"):
        if attr in vars(X):
            delattr(X, attr)
    if X.indptr.dtype != X.indices.dtype:
        # scipy would first copy all indices to indptr's dtype (GBs for 64-bit indptr)
        from ..scoring._chunks import _csr_is_canonical

        ok = bool(_csr_is_canonical(X.indptr, X.indices))
        X.has_canonical_format = ok
        return ok
    return bool(X.has_canonical_format)


def canonical(X, *, copy: bool = True):
    """``X`` with duplicate entries summed and indices sorted (same sparse format).

    Parameters
    ----------
    X
        A scipy sparse matrix or array, or anything else (returned unchanged).
    copy
        If False, a non-canonical CSR/CSC matrix is fixed in place.

    Returns
    -------
    ``X`` itself when it is already canonical (or dense); otherwise the canonical
    matrix (CSR stays CSR, CSC stays CSC; COO/other sparse formats become CSR).
    Explicitly stored zeros are kept (they change no value).
    """
    if not sp.issparse(X):
        return X
    if X.format not in ("csr", "csc"):
        return sp.csr_matrix(X)  # conversion from COO sums duplicates and sorts
    if is_canonical(X):
        return X
    out = X.copy() if copy else X
    out.sum_duplicates()  # also sorts the indices
    return out


def canonicalise_adata(adata) -> list[str]:
    """Make ``X``, every layer and ``raw.X`` of an in-memory AnnData canonical, in place.

    Returns the names of the matrices that were not canonical (for the read record).
    """
    fixed: list[str] = []
    if sp.issparse(adata.X) and not is_canonical(adata.X):
        adata.X = canonical(adata.X, copy=False)
        fixed.append("X")
    for key in list(adata.layers.keys()):
        M = adata.layers[key]
        if sp.issparse(M) and not is_canonical(M):
            adata.layers[key] = canonical(M, copy=False)
            fixed.append(f"layers[{key!r}]")
    raw = adata.raw
    if raw is not None and sp.issparse(raw.X) and not is_canonical(raw.X):
        import anndata as ad

        adata.raw = ad.AnnData(X=canonical(raw.X, copy=False), var=raw.var, varm=dict(raw.varm))
        fixed.append("raw.X")
    if fixed:
        logger.info(
            "%s stored with duplicate and/or unsorted sparse indices: duplicates summed and "
            "indices sorted before any arithmetic (scipy/anndata semantics).", ", ".join(fixed),
        )
    return fixed
