"""kNN graphs with ``scanpy.pp.neighbors``: exact up to 150,000 cells, and working beyond.

scanpy builds the graph of fewer than 8,192 cells (Euclidean, ``knn=True``) by exact
brute-force search, and of more cells with pynndescent's approximate transformer. Two
things go wrong with the latter here:

* **It fails.** scanpy reads pynndescent's result with ``.getnnz``; pynndescent 0.7
  returns a ``scipy.sparse.csr_array``, which has no ``getnnz`` (scipy 1.17), so with
  scanpy 1.11 (the last release for Python 3.11) ``sc.pp.neighbors`` fails on large data
  with "'csr_array' object has no attribute 'getnnz'". Measured: the classifier failed on
  a 100,000-cell simulated tumour (its 15,000 fibroblasts' graph) while every test, on
  fewer fibroblasts, passed.
* **It is slow at the sizes that matter here.** pynndescent compiles its kernels with
  numba in every new process (each workflow rule is one). Measured on 2 cores, 30
  principal components, 15 neighbours, a fresh process per run, numba's on-disk cache
  warm (seconds, scikit-learn's exact search as scanpy's ``transformer="sklearn"`` /
  pynndescent without its search index):

  | cells | 9,000 | 100,000 | 150,000 | 200,000 |
  |---|---|---|---|---|
  | exact (scikit-learn) | 4.0 | 20.2 | 39.8 | 67.2 |
  | pynndescent | 27.8 | 32.2 | 35.4 | 38.3 |

  ``classify`` of 8,984 simulated fibroblasts took 43.4 s with pynndescent (189 s on its
  first use after installation, 175 s of it compiling) and 21.4 s with the exact graph.

So :func:`neighbors` keeps scanpy's exact search below 8,192 cells (small data keep their
graphs bit for bit), asks scanpy for scikit-learn's exact transformer from 8,192 to
``APPROXIMATE_FROM`` (150,000, where the two cost the same; the chunked brute force is
quadratic in cells, its memory bounded by scikit-learn's ``working_memory``), and only
from there on uses pynndescent, with the parameters scanpy would give it (UMAP's
``n_trees`` and ``n_iters`` for the number of cells, scanpy's ``n_jobs``), its output
converted to ``csr_matrix``, and without building the search index that
``fit_transform`` compresses at the end: it serves queries of new cells, which a graph
among the given cells never makes. Its distances are then laid out as the exact search's
(the cell itself left out, the ``n_neighbors - 1`` nearest others kept: scanpy keeps
pynndescent's ``n_neighbors + 1`` entries with the cell among them). The graph is exact up to 150,000 cells (a tumour of a
million cells has about that many fibroblasts), as the gate's (``_gate_embed``,
scikit-learn directly) and the report's already are.
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
#: from this many cells on, pynndescent's approximate graph (faster than exact search)
APPROXIMATE_FROM = 150_000


def neighbors(adata: AnnData, *, n_neighbors: int, use_rep: str, random_state: int = 0) -> None:
    """``sc.pp.neighbors(adata, n_neighbors=..., use_rep=..., random_state=...)``, at every size."""
    import scanpy as sc

    approximate = adata.n_obs >= APPROXIMATE_FROM
    kw = {}
    if approximate:
        kw["transformer"] = _approximate(adata.n_obs, n_neighbors, random_state)
    elif adata.n_obs >= EXACT_BELOW:
        kw["transformer"] = "sklearn"
    sc.pp.neighbors(adata, n_neighbors=n_neighbors, use_rep=use_rep, random_state=random_state, **kw)
    if approximate:
        key = adata.uns["neighbors"]["distances_key"]
        adata.obsp[key] = _as_exact_layout(adata.obsp[key], n_neighbors)


def _as_exact_layout(D, n_neighbors: int) -> sp.csr_matrix:
    """The distances matrix as scanpy's exact search leaves it: without the cell itself
    and with each row's ``n_neighbors - 1`` nearest other cells.

    scanpy keeps pynndescent's matrix as returned: ``n_neighbors + 1`` entries per row,
    the cell itself among them, so a graph built from it (``fibroblast_graph``) would
    average over 15 other cells and count the cell twice where the exact search gives 14
    and once.
    """
    D = sp.csr_matrix(D)
    rows = np.repeat(np.arange(D.shape[0]), np.diff(D.indptr))
    other = D.indices != rows
    rows, cols, vals = rows[other], D.indices[other], D.data[other]
    order = np.lexsort((vals, rows))  # by row, then by distance
    rows, cols, vals = rows[order], cols[order], vals[order]
    rank = np.arange(rows.size) - np.searchsorted(rows, rows)  # position within its row
    keep = rank < n_neighbors - 1
    return sp.csr_matrix((vals[keep], (rows[keep], cols[keep])), shape=D.shape)


def _approximate(n_obs: int, n_neighbors: int, random_state: int):
    """scanpy's own pynndescent transformer for ``n_obs`` cells, returning ``csr_matrix``
    and building no search index (module docstring)."""
    import scanpy as sc
    from pynndescent import PyNNDescentTransformer

    class _GraphOnly(PyNNDescentTransformer):
        def fit_transform(self, X, y=None, **fit_params):
            self.fit(X, compress_index=False)
            return self.transform(X=None)

        def transform(self, X):
            return sp.csr_matrix(super().transform(X))

    return _GraphOnly(
        n_neighbors=n_neighbors, metric="euclidean", metric_kwds={}, random_state=random_state,
        n_jobs=sc.settings.n_jobs,
        n_trees=min(64, 5 + round(n_obs**0.5 / 20.0)),
        n_iters=max(5, round(np.log2(n_obs))),
    )
