"""cafclassify.score(): AnnData in, obsm/uns out; gene-set resolution, formats, backing, errors."""

from __future__ import annotations

import logging
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from scipy import sparse

import cafclassify as cc
from cafclassify._errors import ConfigError, DataError, SignatureError
from cafclassify.scoring import aucell_scores, scanpy_scores, ucell_scores, zmean_scores

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
CRC = DATA / "crc_tumour_normal_2850cells_lognorm.h5ad"

# real human symbols (so that species detection and symbol matching work as on real data)
GENES = [
    "ACTA2", "TAGLN", "MYL9", "PDGFRB", "RGS5", "CSPG4", "PTPRC", "CD3E", "CD2", "LCK",
    "EPCAM", "KRT8", "KRT18", "KRT19", "PECAM1", "VWF", "CDH5", "LYZ", "CD68", "CD14",
] + [f"ZNF{i}" for i in range(100, 280)]
UP = ["ACTA2", "TAGLN", "MYL9", "PDGFRB"]
T_CELL = ["PTPRC", "CD3E", "CD2", "LCK"]


@pytest.fixture
def planted():
    """300 cells: first 100 express the UP programme, next 100 the T-cell programme."""
    rng = np.random.default_rng(0)
    n, g = 300, len(GENES)
    lam = np.full((n, g), 0.3)
    lam[:100, [GENES.index(x) for x in UP]] = 6.0
    lam[100:200, [GENES.index(x) for x in T_CELL]] = 6.0
    counts = rng.poisson(lam).astype(np.float32)
    lib = counts.sum(1, keepdims=True)
    lib[lib == 0] = 1
    X = np.log1p(counts / lib * 1e4).astype(np.float32)
    a = ad.AnnData(
        sparse.csr_matrix(X),
        obs=pd.DataFrame({"truth": ["up"] * 100 + ["t"] * 100 + ["other"] * 100},
                         index=[f"cell{i}" for i in range(n)]),
        var=pd.DataFrame(index=GENES),
    )
    a.layers["counts"] = sparse.csr_matrix(counts)
    return a


SIGS = {"contractile": UP, "t_cell": T_CELL}


def _idx(a, genes):
    return a.var_names.get_indexer(genes)


@pytest.mark.parametrize("method", ["ucell", "aucell", "scanpy", "zmean"])
def test_score_writes_obsm_and_uns_and_recovers_planted_programme(planted, method):
    a = planted
    X_before = a.X.copy()
    assert cc.score(a, SIGS, method=method, species="human") is None
    df = a.obsm["caf_scores"]
    assert isinstance(df, pd.DataFrame)
    assert list(df.columns) == ["contractile", "t_cell"]
    assert df.index.equals(a.obs_names)
    assert (df.dtypes == np.float64).all()
    means = df.groupby(a.obs["truth"]).mean()
    assert means.loc["up", "contractile"] > means.loc["other", "contractile"] + 0.1 * abs(
        means.loc["other", "contractile"]) + 1e-3
    assert means.loc["t", "t_cell"] > means.loc["up", "t_cell"]
    rec = a.uns["cafclassify"]["score"]["caf_scores"]
    assert rec["params"]["method"] == method
    assert rec["params"]["library"] == "user_dict" and len(rec["params"]["library_sha256"]) == 64
    assert rec["coverage"]["contractile"]["n_found"] == 4
    assert rec["coverage"]["contractile"]["status"] == "ok"
    assert rec["value_type_assumed"] in {"lognorm", "counts"}
    assert (a.X != X_before).nnz == 0  # the matrix itself is never modified


def test_score_equals_kernels(planted):
    a = planted
    sets = {k: (_idx(a, v), np.ones(len(v))) for k, v in SIGS.items()}
    expected = {
        "ucell": ucell_scores(a.X, sets, max_rank=50),
        "aucell": aucell_scores(a.X, sets, tie_order="decoupler"),
        "scanpy": scanpy_scores(a.X, sets, random_state=3),
        "zmean": zmean_scores(a.X, sets),
    }
    for m, want in expected.items():
        cc.score(a, SIGS, method=m, key_added=m, max_rank=50, random_state=3, species="human",
                 chunk_size=64)
        np.testing.assert_allclose(a.obsm[m].to_numpy(), want, atol=1e-12, err_msg=m)


def test_signed_sets_from_weight_dict(planted):
    a = planted
    cc.score(a, {"contractile_not_t": {**dict.fromkeys(UP, 1.0), **dict.fromkeys(T_CELL, -1.0)}},
             method="zmean", species="human")
    s = a.obsm["caf_scores"]["contractile_not_t"].groupby(a.obs["truth"]).mean()
    assert s["up"] > s["other"] > s["t"]


def test_rank_methods_identical_on_counts_and_lognorm_mean_methods_warn(planted, caplog):
    a = planted
    cc.score(a, SIGS, method="ucell", species="human", key_added="ln")
    cc.score(a, SIGS, method="ucell", species="human", layer="counts", key_added="ct")
    np.testing.assert_allclose(a.obsm["ln"], a.obsm["ct"], atol=1e-12)
    assert a.uns["cafclassify"]["score"]["ct"]["value_type_detected"] == "counts"
    assert a.uns["cafclassify"]["score"]["ct"]["params"]["layer"] == "counts"
    with caplog.at_level(logging.WARNING, logger="cafclassify.scoring"):
        cc.score(a, SIGS, method="scanpy", species="human", layer="counts", key_added="sc")
    assert any("log-normalised" in r.getMessage() for r in caplog.records)
    assert "not log-normalised" in a.uns["cafclassify"]["score"]["sc"]["value_type_note"]


def test_copy_returns_new_object_and_leaves_input_alone(planted):
    a = planted
    b = cc.score(a, SIGS, species="human", copy=True)
    assert b is not a and "caf_scores" in b.obsm
    assert "caf_scores" not in a.obsm and "cafclassify" not in a.uns


def test_backed_anndata_scored_chunk_by_chunk(planted, tmp_path):
    a = planted
    p = tmp_path / "planted.h5ad"
    a.write_h5ad(p)
    cc.score(a, SIGS, method="aucell", species="human")
    b = ad.read_h5ad(p, backed="r")
    try:
        cc.score(b, SIGS, method="aucell", species="human", chunk_size=37)
        np.testing.assert_allclose(b.obsm["caf_scores"], a.obsm["caf_scores"], atol=1e-12)
        assert b.uns["cafclassify"]["score"]["caf_scores"]["params"]["backed"] is True
        with pytest.raises(DataError, match="backed"):
            cc.score(b, SIGS, species="human", copy=True)
    finally:
        b.file.close()


def test_uns_record_survives_h5ad_round_trip(planted, tmp_path):
    a = planted
    cc.score(a, {**SIGS, "absent": ["NOTAGENE1", "NOTAGENE2", "ACTA2"]}, species="human",
             method="scanpy")
    p = tmp_path / "out.h5ad"
    a.write_h5ad(p)
    r = ad.read_h5ad(p)
    rec = r.uns["cafclassify"]["score"]["caf_scores"]
    assert rec["coverage"]["absent"]["status"] == "low_coverage_skipped"
    assert "absent" not in r.obsm["caf_scores"].columns
    assert rec["method_details"]["n_control_genes"]["contractile"] > 0
    np.testing.assert_allclose(r.obsm["caf_scores"], a.obsm["caf_scores"])


def test_low_coverage_and_bad_options(planted):
    a = planted
    half = {"half": ["ACTA2", "NOTAGENE1", "NOTAGENE2", "NOTAGENE3"]}
    with pytest.raises(SignatureError):
        cc.score(a, half, species="human", on_low_coverage="raise")
    with pytest.raises(SignatureError, match="none of the 1 gene sets"):
        cc.score(a, half, species="human")
    cc.score(a, half, species="human", on_low_coverage="keep")
    assert list(a.obsm["caf_scores"].columns) == ["half"]
    with pytest.raises(ConfigError, match="unknown scoring method"):
        cc.score(a, SIGS, method="gsva")
    with pytest.raises(ConfigError):
        cc.score(a, SIGS, chunk_size=0)
    with pytest.raises(ConfigError):
        cc.score(a, SIGS, on_low_coverage="ignore")
    with pytest.raises(DataError, match="layer 'nope' not found"):
        cc.score(a, SIGS, layer="nope", species="human")
    bad = a.copy()
    bad.X = bad.X.toarray()
    bad.X[3, 4] = np.nan
    with pytest.raises(DataError, match="NaN"):
        cc.score(bad, SIGS, species="human")


def test_dense_input_equals_sparse(planted):
    a = planted
    d = a.copy()
    d.X = d.X.toarray()
    for m in ("ucell", "zmean"):
        cc.score(a, SIGS, method=m, key_added=m, species="human")
        cc.score(d, SIGS, method=m, key_added=m, species="human")
        np.testing.assert_allclose(a.obsm[m], d.obsm[m], atol=1e-12)


def test_list_methods_top_level():
    df = cc.list_methods()
    assert df["method"].tolist() == ["ucell", "aucell", "scanpy", "zmean"]


def test_builtin_library_on_real_crc_ranks_mural_cells_first():
    if not CRC.exists():
        pytest.skip(f"shared data folder not found at {DATA}")
    a = ad.read_h5ad(CRC)
    cc.score(a, "caf_v1", sets=["mural"], min_coverage=0.3)
    s = a.obsm["caf_scores"]["mural"].groupby(a.obs["cell_type"], observed=True).mean()
    # pericytes and smooth muscle cells express the mural programme; T cells do not
    assert min(s["Pericyte"], s["SMC"]) > 5 * s["T"]
    assert s.idxmax() in {"Pericyte", "SMC"}
    rec = a.uns["cafclassify"]["score"]["caf_scores"]
    assert rec["params"]["library"] == "caf_v1"
    assert rec["params"]["sets_scored"] == ["mural"]
