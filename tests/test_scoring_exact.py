"""Exactness: our kernels equal pyucell, decoupler (AUCell) and scanpy score_genes, and do not
depend on chunking, matrix format, backing, cell order or (where defined so) gene order."""

from __future__ import annotations

from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from scipy import sparse

from cafclassify.scoring import (
    aucell_scores,
    gene_stats,
    scanpy_scores,
    ucell_scores,
    zmean_scores,
)

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
CRC = DATA / "crc_tumour_normal_2850cells_lognorm.h5ad"
TOL = 1e-6


def _random_counts_lognorm(n_cells=250, n_genes=400, seed=0):
    """Sparse float32 log-normalised matrix with exact ties, an empty cell, an empty gene."""
    rng = np.random.default_rng(seed)
    lam = rng.gamma(0.4, 0.5, size=(1, n_genes))
    counts = rng.poisson(lam * rng.lognormal(0, 0.5, size=(n_cells, 1)))
    counts[0] = 0
    counts[:, 11] = 0
    lib = np.maximum(counts.sum(1, keepdims=True), 1)
    X = sparse.csr_matrix(np.log1p(counts / lib * 1e4).astype(np.float32))
    names = pd.Index([f"G{i}" for i in range(n_genes)])
    return X, names


def _sets_for(n_genes, seed=0, signed=True):
    rng = np.random.default_rng(seed + 100)
    sets = {}
    for j, size in enumerate((8, 15, 25)):
        idx = rng.choice(np.arange(n_genes), size, replace=False)
        sets[f"S{j}"] = (idx, np.ones(size))
    sets["S0"][0][0] = 11  # a gene that is zero in every cell
    if signed:
        idx = rng.choice(np.arange(n_genes), 12, replace=False)
        sets["signed"] = (idx, np.r_[np.ones(8), -np.ones(4)])
    return sets


def _names_sets(sets, names, pyucell_suffix=False):
    out = {}
    for k, (idx, w) in sets.items():
        out[k] = [names[i] + (("-" if wi < 0 else "+") if pyucell_suffix else "")
                  for i, wi in zip(idx, w, strict=True)]
    return out


@pytest.fixture(scope="module")
def crc():
    if not CRC.exists():
        pytest.skip(f"shared data folder not found at {DATA} (real-data exactness tests need it)")
    a = ad.read_h5ad(CRC)
    X = sparse.csr_matrix(a.X)
    names = a.var_names
    assert names.is_unique
    # sets: real fibroblast/CAF markers present in this metabolism-gene subset + random genes
    rng = np.random.default_rng(7)
    sets = {f"R{j}": (rng.choice(a.n_vars, s, replace=False), np.ones(s))
            for j, s in enumerate((10, 20, 40))}
    markers = [g for g in ("ACTA2", "PDGFRA", "PDGFRB", "TAGLN", "MYL9", "COL4A1", "COL4A2",
                           "LUM", "SPARC", "THY1", "VIM", "MMP2") if g in names]
    assert len(markers) >= 3
    sets["markers"] = (names.get_indexer(markers), np.ones(len(markers)))
    return X, names, sets


def _sources():
    X, names = _random_counts_lognorm()
    return [("random", X, names, _sets_for(X.shape[1]))]


# ------------------------------- pyucell -------------------------------------
@pytest.mark.parametrize("max_rank", [30, 1500])
def test_ucell_equals_pyucell_random_with_ties(max_rank):
    pyucell = pytest.importorskip("pyucell")
    X, names = _random_counts_lognorm()
    sets = _sets_for(X.shape[1])
    a = ad.AnnData(X, var=pd.DataFrame(index=names))
    pyucell.compute_ucell_scores(a, _names_sets(sets, names, pyucell_suffix=True),
                                 max_rank=max_rank, missing_genes="skip", n_jobs=1)
    ref = a.obs[[f"{k}_UCell" for k in sets]].to_numpy(dtype=float)
    ours = ucell_scores(X, sets, max_rank=max_rank)
    assert np.abs(ours - ref).max() < TOL
    assert ours[:, -1].max() > 0  # signed set not trivially clipped to 0


def test_ucell_equals_pyucell_on_real_crc(crc):
    pyucell = pytest.importorskip("pyucell")
    X, names, sets = crc
    a = ad.AnnData(X, var=pd.DataFrame(index=names))
    pyucell.compute_ucell_scores(a, _names_sets(sets, names), max_rank=1500,
                                 missing_genes="skip", n_jobs=1, chunk_size=1000)
    ref = a.obs[[f"{k}_UCell" for k in sets]].to_numpy(dtype=float)
    ours = ucell_scores(X, sets, max_rank=1500, chunk_size=999)
    assert np.abs(ours - ref).max() < TOL
    assert ours.std(0).min() > 0.01


# ------------------------------ decoupler -------------------------------------
def _decoupler_aucell(X, names, sets):
    dc = pytest.importorskip("decoupler")
    net = pd.DataFrame([(k, names[i]) for k, (idx, _) in sets.items() for i in idx],
                       columns=["source", "target"])
    a = ad.AnnData(X, obs=pd.DataFrame(index=[f"c{i}" for i in range(X.shape[0])]),
                   var=pd.DataFrame(index=names))
    res = dc.mt.aucell(a, net, tmin=1)
    if res is not None:  # decoupler drops empty cells and returns a repaired object
        a = res
    es = a.obsm["score_aucell"]
    keep = np.flatnonzero(np.asarray((X != 0).sum(1)).ravel() > 0)
    return es, keep


def test_aucell_equals_decoupler_random_with_ties_and_empty_gene():
    X, names = _random_counts_lognorm()
    sets = _sets_for(X.shape[1], signed=False)
    es, keep = _decoupler_aucell(X, names, sets)
    ours = aucell_scores(X, sets, tie_order="decoupler", chunk_size=64)
    assert list(es.index) == [f"c{i}" for i in keep]
    ref = es[list(sets)].to_numpy()
    assert np.abs(ours[keep] - ref).max() < TOL
    assert np.all(ours[np.setdiff1d(np.arange(X.shape[0]), keep)] == 0)
    assert ours.max() > 0.05


def test_aucell_equals_decoupler_on_real_crc(crc):
    X, names, sets = crc
    X = X[::4]  # every 4th cell (all cell types): decoupler loops over cells in Python
    es, keep = _decoupler_aucell(X, names, sets)
    ours = aucell_scores(X, sets, tie_order="decoupler", chunk_size=1000)
    assert np.abs(ours[keep] - es[list(sets)].to_numpy()).max() < TOL


# ------------------------------- scanpy ---------------------------------------
def _scanpy_ref(X, names, sets, random_state=0):
    sc = pytest.importorskip("scanpy")
    a = ad.AnnData(X, var=pd.DataFrame(index=names))
    for k, genes in _names_sets(sets, names).items():
        sc.tl.score_genes(a, genes, score_name=k, random_state=random_state)
    return a.obs[list(sets)].to_numpy(dtype=float)


@pytest.mark.parametrize("random_state", [0, 11])
def test_scanpy_equals_score_genes_random(random_state):
    X, names = _random_counts_lognorm(n_genes=600)
    sets = _sets_for(X.shape[1], signed=False)
    ref = _scanpy_ref(X, names, sets, random_state)
    ours = scanpy_scores(X, sets, random_state=random_state, chunk_size=97)
    assert np.abs(ours - ref).max() < TOL


def test_scanpy_equals_score_genes_on_real_crc(crc):
    X, names, sets = crc
    ref = _scanpy_ref(X, names, sets)
    ours = scanpy_scores(X, sets, chunk_size=1000)
    assert np.abs(ours - ref).max() < TOL


# ---------------------- chunking, formats, backing, order ---------------------
def _all_methods(X, sets, chunk_size):
    up_sets = {k: v for k, v in sets.items() if k != "signed"}
    return {
        "ucell": ucell_scores(X, sets, max_rank=60, chunk_size=chunk_size),
        "aucell": aucell_scores(X, sets, n_up=40, chunk_size=chunk_size),
        "aucell_dc": aucell_scores(X, up_sets, tie_order="decoupler", chunk_size=chunk_size),
        "scanpy": scanpy_scores(X, up_sets, ctrl_size=30, chunk_size=chunk_size),
        "zmean": zmean_scores(X, sets, chunk_size=chunk_size),
    }


@pytest.fixture(scope="module")
def baseline():
    X, names = _random_counts_lognorm(n_cells=180, n_genes=300, seed=5)
    sets = _sets_for(300, seed=5)
    return X, sets, _all_methods(X, sets, chunk_size=10_000)


def _assert_same(got, want, atol=1e-12):
    for k in want:
        np.testing.assert_allclose(got[k], want[k], atol=atol, rtol=0, err_msg=k)


def test_chunked_equals_unchunked(baseline):
    X, sets, want = baseline
    for cs in (1, 17):
        _assert_same(_all_methods(X, sets, chunk_size=cs), want)


def test_csr_csc_dense_equal(baseline):
    X, sets, want = baseline
    _assert_same(_all_methods(X.tocsc(), sets, chunk_size=50), want)
    _assert_same(_all_methods(X.toarray(), sets, chunk_size=50), want)
    _assert_same(_all_methods(sparse.csr_array(X), sets, chunk_size=50), want)
    # non-canonical CSR (unsorted indices, an explicit zero) gives the same scores
    Y = X.copy()
    Y.data[::7] = 0  # explicit zeros
    Z = Y.copy()
    Z.eliminate_zeros()
    assert Y.nnz > Z.nnz
    _assert_same(_all_methods(Y, sets, chunk_size=50), _all_methods(Z, sets, chunk_size=50))


def test_backed_equals_in_memory(baseline, tmp_path):
    X, sets, want = baseline
    p = tmp_path / "m.h5ad"
    ad.AnnData(X).write_h5ad(p)
    b = ad.read_h5ad(p, backed="r")
    try:
        assert not isinstance(b.X, sparse.spmatrix | np.ndarray)
        _assert_same(_all_methods(b.X, sets, chunk_size=41), want)
    finally:
        b.file.close()


def test_invariant_to_cell_order(baseline):
    X, sets, want = baseline
    perm = np.random.default_rng(1).permutation(X.shape[0])
    got = _all_methods(X[perm], sets, chunk_size=33)
    _assert_same({k: v for k, v in got.items()}, {k: v[perm] for k, v in want.items()})


def test_invariant_to_gene_order(baseline):
    """UCell, zmean and scanpy (with the same control genes) do not depend on the column
    order; AUCell does not when the tie-break order travels with the genes."""
    X, sets, _ = baseline
    n = X.shape[1]
    perm = np.random.default_rng(2).permutation(n)  # new column j = old column perm[j]
    inv = np.argsort(perm)
    Xp = X[:, perm]
    psets = {k: (inv[idx], w) for k, (idx, w) in sets.items()}
    np.testing.assert_allclose(ucell_scores(Xp, psets, max_rank=60),
                               ucell_scores(X, sets, max_rank=60), atol=1e-12)
    np.testing.assert_allclose(zmean_scores(Xp, psets), zmean_scores(X, sets), atol=1e-12)
    prio = np.random.default_rng(3).permutation(n)
    np.testing.assert_allclose(aucell_scores(Xp, psets, n_up=40, tie_order=prio[perm]),
                               aucell_scores(X, sets, n_up=40, tie_order=prio), atol=1e-12)
    up = {k: v for k, v in sets.items() if k != "signed"}
    pup = {k: v for k, v in psets.items() if k != "signed"}
    _, ctrl = scanpy_scores(X, up, return_controls=True)
    np.testing.assert_allclose(
        scanpy_scores(Xp, pup, control_genes={k: inv[c["up"]] for k, c in ctrl.items()}),
        scanpy_scores(X, up), atol=1e-12)


def test_gene_means_equal_scanpy_sparse_means(baseline):
    X, _, _ = baseline
    # scanpy bins genes on scipy column sums (accumulated in float32 for float32 data);
    # ours must be bit-identical, whatever the chunking and format
    from scanpy.tools._score_genes import _nan_means

    ref = _nan_means(X, axis=0)
    for Y in (X, X.tocsc(), X.toarray()):
        assert np.array_equal(gene_stats(Y, chunk_size=13).scanpy_mean, ref)
    assert not np.array_equal(gene_stats(X).mean, ref)  # float64 means differ slightly
