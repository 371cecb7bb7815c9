"""kNN graphs on 8,192 cells or more (cafclassify.tl._knn)."""

from __future__ import annotations

import anndata as ad
import numpy as np
import scipy.sparse as sp

from cafclassify.tl._evidence import fibroblast_graph
from cafclassify.tl._knn import EXACT_BELOW, _approximate, neighbors


def _with_pcs(pcs: np.ndarray) -> ad.AnnData:
    """An AnnData whose only representation is ``obsm["X_pca"]``."""
    a = ad.AnnData(np.zeros((pcs.shape[0], 1), dtype=np.float32))
    a.obsm["X_pca"] = pcs
    return a


def test_graph_of_many_cells_is_built():
    """Left to itself scanpy 1.11 switches to pynndescent at 8,192 cells and then fails on
    its csr_array ("'csr_array' object has no attribute 'getnnz'"); the classifier failed
    on a 100,000-cell tumour. Two planted groups: every neighbour is in the cell's group."""
    rng = np.random.default_rng(0)
    n = EXACT_BELOW + 200
    group = np.arange(n) % 2
    pcs = rng.normal(size=(n, 10)) + 8.0 * group[:, None]
    a = _with_pcs(pcs)
    neighbors(a, n_neighbors=15, use_rep="X_pca", random_state=0)
    D = sp.csr_matrix(a.obsp["distances"])
    rows = np.repeat(np.arange(n), np.diff(D.indptr))
    assert (np.diff(D.indptr) >= 10).all()
    assert (group[rows] == group[D.indices]).all()


def test_fibroblast_graph_of_many_cells():
    rng = np.random.default_rng(1)
    n, g = EXACT_BELOW + 100, 60
    counts = rng.poisson(1.0, size=(n, g)).astype(np.float32)
    X = sp.csr_matrix(np.log1p(counts))
    W = fibroblast_graph(X, random_state=0)
    assert W.shape == (n, n)
    np.testing.assert_allclose(np.asarray(W.sum(axis=1)).ravel(), 1.0)


def test_graph_of_many_cells_is_exact():
    """From 8,192 cells on the graph is exact, as below (scikit-learn's search, not
    pynndescent's approximate one): each cell's neighbours are its nearest cells."""
    rng = np.random.default_rng(2)
    n, k = EXACT_BELOW + 300, 15
    pcs = rng.normal(size=(n, 20))
    a = _with_pcs(pcs)
    neighbors(a, n_neighbors=k, use_rep="X_pca", random_state=0)
    D = sp.csr_matrix(a.obsp["distances"])
    for i in rng.choice(n, size=300, replace=False):
        d = ((pcs - pcs[i]) ** 2).sum(axis=1)
        d[i] = np.inf
        expected = set(np.argsort(d, kind="stable")[: k - 1].tolist())  # scanpy keeps k - 1 besides the cell
        assert set(D.indices[D.indptr[i]:D.indptr[i + 1]].tolist()) == expected, i


def test_approximate_graph_has_the_exact_layout(monkeypatch):
    """Beyond APPROXIMATE_FROM (lowered here) the graph is pynndescent's, laid out as the
    exact search's: no self, n_neighbors - 1 others per row (as returned by scanpy:
    n_neighbors + 1 entries with the cell itself, so the fibroblast average counted the
    cell twice and 15 others instead of 14)."""
    from cafclassify.tl import _knn

    rng = np.random.default_rng(4)
    n, k = 3000, 15
    group = np.arange(n) % 2
    pcs = rng.normal(size=(n, 10)) + 8.0 * group[:, None]
    exact = _with_pcs(pcs)
    neighbors(exact, n_neighbors=k, use_rep="X_pca")
    monkeypatch.setattr(_knn, "APPROXIMATE_FROM", 1000)
    a = _with_pcs(pcs)
    neighbors(a, n_neighbors=k, use_rep="X_pca")
    D, E = sp.csr_matrix(a.obsp["distances"]), sp.csr_matrix(exact.obsp["distances"])
    rows = np.repeat(np.arange(n), np.diff(D.indptr))
    assert (np.diff(D.indptr) == k - 1).all() and (np.diff(E.indptr) == k - 1).all()
    assert not (D.indices == rows).any()
    assert (group[rows] == group[D.indices]).all()
    # approximate, but nearly the exact neighbours
    assert (D.multiply(E) > 0).sum() >= 0.95 * E.nnz
    # the fibroblast average over that graph: the cell and 14 others, equal weights
    counts = rng.poisson(1.0, size=(n, 60)).astype(np.float32)
    W = fibroblast_graph(sp.csr_matrix(np.log1p(counts)), random_state=0)
    assert (np.diff(W.indptr) == k).all()
    np.testing.assert_allclose(W.diagonal(), 1.0 / k)
    np.testing.assert_allclose(W.data, 1.0 / k)


def test_approximate_graph_beyond_exact_sizes():
    """From 150,000 cells on the graph is pynndescent's (with scanpy 1.11 its csr_array
    broke ``sc.pp.neighbors``); its transformer, given to scanpy on fewer cells here:
    two planted groups, every neighbour in the cell's group, no search index built."""
    import scanpy as sc

    rng = np.random.default_rng(3)
    n = 3000
    group = np.arange(n) % 2
    a = _with_pcs(rng.normal(size=(n, 10)) + 8.0 * group[:, None])
    tr = _approximate(n, 15, 0)
    sc.pp.neighbors(a, n_neighbors=15, use_rep="X_pca", transformer=tr)
    D = sp.csr_matrix(a.obsp["distances"])
    rows = np.repeat(np.arange(n), np.diff(D.indptr))
    assert (np.diff(D.indptr) >= 10).all()
    assert (group[rows] == group[D.indices]).all()
    assert not tr.index_.compressed
