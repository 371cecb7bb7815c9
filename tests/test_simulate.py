"""Tests of the synthetic tumour generator (cafclassify.datasets)."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pytest
import scipy.sparse as sp

from cafclassify._errors import DataError
from cafclassify.datasets import SIM_SUBTYPES, simulate, simulate_to_h5ad


@pytest.fixture(scope="module")
def sim():
    return simulate(2500, n_genes=4000, random_state=3)


def test_counts_are_sparse_int_with_realistic_depth(sim):
    X = sim.X
    assert sp.isspmatrix_csr(X) or isinstance(X, sp.csr_array)
    assert X.dtype == np.int32
    assert X.data.min() >= 1
    umi = np.asarray(X.sum(axis=1)).ravel()
    genes = np.diff(X.indptr)
    assert 3000 < np.median(umi) < 9000
    assert 500 < np.median(genes) < 3000
    # library sizes vary (log-normal), not constant
    assert np.std(np.log(umi)) > 0.3


def test_truth_columns_and_proportions(sim):
    obs = sim.obs
    for col in ("true_lineage", "true_subtype", "true_ltbp2", "true_senescent", "true_cycling"):
        assert col in obs
    frac = obs["true_lineage"].value_counts(normalize=True)
    assert 0.25 < frac["epithelial"] < 0.45
    assert 0.25 < frac["immune"] < 0.45
    assert 0.10 < frac["fibroblast"] < 0.20
    fib = obs["true_lineage"] == "fibroblast"
    assert set(obs.loc[~fib, "true_subtype"].astype(str)) == {"none"}
    sub = obs.loc[fib, "true_subtype"].value_counts()
    assert set(sub.index[sub > 0]) <= set(SIM_SUBTYPES)
    assert sub["myCAF"] > 3 * sub["dCAF"]  # some subtypes rarer than others
    assert not obs.loc[~fib, "true_ltbp2"].any()


def test_overlapping_programmes(sim):
    """MHC-II is high in myeloid cells AND apCAF; mixed cells exist."""
    X = sim.X.tocsc()
    g = sim.var_names.get_loc("CD74")
    cd74 = np.asarray(X[:, g].todense()).ravel() / np.asarray(sim.X.sum(axis=1)).ravel()
    obs = sim.obs
    myeloid = (obs["true_immune_type"] == "myeloid").to_numpy()
    apcaf = (obs["true_subtype"] == "apCAF").to_numpy()
    other_fib = ((obs["true_lineage"] == "fibroblast") & ~obs["true_subtype"].isin(["apCAF"])).to_numpy()
    assert cd74[myeloid].mean() > 3 * cd74[other_fib].mean()
    assert cd74[apcaf].mean() > 3 * cd74[other_fib].mean()
    fib = obs["true_lineage"] == "fibroblast"
    mixed = (obs.loc[fib, "true_secondary_subtype"] != "none").mean()
    assert 0.15 < mixed < 0.35


def test_deterministic_and_seed_dependent():
    a = simulate(300, n_genes=1500, random_state=5)
    b = simulate(300, n_genes=1500, random_state=5)
    c = simulate(300, n_genes=1500, random_state=6)
    assert (a.X != b.X).nnz == 0
    assert list(a.var_names) == list(b.var_names)
    assert (a.X != c.X).nnz > 0


def test_mouse_uses_orthologues():
    m = simulate(200, species="mouse", n_genes=1500, random_state=0)
    names = set(m.var_names)
    assert "Col1a1" in names and "Acta2" in names
    assert "CXCL8" not in names and "Cxcl8" not in names  # no mouse orthologue: absent, not upper/lower-cased


def test_bad_arguments_raise_clear_errors():
    with pytest.raises(DataError, match="n_genes"):
        simulate(100, n_genes=50)
    with pytest.raises(DataError, match="species"):
        simulate(100, species="rat")
    with pytest.raises(DataError, match="unknown"):
        simulate(100, n_genes=1500, lineage_fractions={"tumour": 1.0})


def test_to_h5ad_equals_in_memory(tmp_path):
    path = simulate_to_h5ad(tmp_path / "sim.h5ad", 1500, chunk_size=400, n_genes=1500, random_state=2)
    disk = ad.read_h5ad(path)
    mem = simulate(1500, n_genes=1500, random_state=2)
    assert disk.shape == mem.shape
    assert (sp.csr_matrix(disk.X) != mem.X).nnz == 0
    assert list(disk.obs["true_subtype"]) == list(mem.obs["true_subtype"])
    with pytest.raises(DataError, match="unknown simulate option"):
        simulate_to_h5ad(tmp_path / "x.h5ad", 10, bogus=1)


def test_to_h5ad_in_parallel_equals_serial(tmp_path):
    kw = dict(chunk_size=1100, n_genes=1200, random_state=4)
    serial = ad.read_h5ad(simulate_to_h5ad(tmp_path / "a.h5ad", 3000, **kw))
    parallel = ad.read_h5ad(simulate_to_h5ad(tmp_path / "b.h5ad", 3000, n_jobs=2, **kw))
    assert serial.X.nnz > 0
    assert (serial.X != parallel.X).nnz == 0
    assert serial.obs.equals(parallel.obs)
