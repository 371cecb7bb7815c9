"""kNN graphs with ``scanpy.pp.neighbors`` that also work on 8,192 cells or more.

scanpy builds the graph of fewer than 8,192 cells (Euclidean, ``knn=True``) by exact
brute-force search, and of more cells with pynndescent's approximate transformer, whose
result it then reads with ``.getnnz``. pynndescent 0.7 returns a ``scipy.sparse.csr_array``,
which has no ``getnnz`` (scipy 1.17), so with scanpy 1.11 (the last release for Python
3.11) ``sc.pp.neighbors`` fails on large data with "'csr_array' object has no attribute
'getnnz'". Measured: the classifier failed on a 100,000-cell simulated tumour (its
15,000 fibroblasts' graph) while every test, on fewer fibroblasts, passed.

:func:`neighbors` passes scanpy the transformer scanpy would build itself (the same
parameters: UMAP's ``n_trees`` and ``n_iters`` for the number of cells, scanpy's
``n_jobs``), with its output converted to ``csr_matrix``. Below 8,192 cells it calls
scanpy unchanged, so small data keep their exact graphs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import scipy.sparse as sp

if TYPE_CHECKING:
    from anndata import AnnData

__all__ = ["neighbors"]

#: scanpy uses exact neighbours below this many cells (Euclidean metric, knn=True)
EXACT_BELOW = 8192


def neighbors(adata: AnnData, *, n_neighbors: int, use_rep: str, random_state: int = 0) -> None:
    """``sc.pp.neighbors(adata, n_neighbors=..., use_rep=..., random_state=...)``, large data included."""
    import scanpy as sc

    kw = {}
    if adata.n_obs >= EXACT_BELOW:
        kw["transformer"] = _approximate(adata.n_obs, n_neighbors, random_state)
    sc.pp.neighbors(adata, n_neighbors=n_neighbors, use_rep=use_rep, random_state=random_state, **kw)


def _approximate(n_obs: int, n_neighbors: int, random_state: int):
    """scanpy's own pynndescent transformer for ``n_obs`` cells, returning ``csr_matrix``."""
    import scanpy as sc
    from pynndescent import PyNNDescentTransformer

    class _CsrMatrixOut(PyNNDescentTransformer):
        def fit_transform(self, X, y=None, **fit_params):
            return sp.csr_matrix(super().fit_transform(X, y, **fit_params))

        def transform(self, X):
            return sp.csr_matrix(super().transform(X))

    return _CsrMatrixOut(
        n_neighbors=n_neighbors, metric="euclidean", metric_kwds={}, random_state=random_state,
        n_jobs=sc.settings.n_jobs,
        n_trees=min(64, 5 + round(n_obs**0.5 / 20.0)),
        n_iters=max(5, round(np.log2(n_obs))),
    )
