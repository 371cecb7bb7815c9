"""cafclassify.qc / filter_cells: planted outliers, per-sample thresholds, lognorm input."""

from __future__ import annotations

from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

import cafclassify
from cafclassify import _keys as K
from cafclassify._errors import DataError
from cafclassify.pp import QC_REASONS, filter_cells, qc

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"

MT = ["MT-CO1", "MT-CO2", "MT-CO3", "MT-ND1", "MT-ND4", "MT-ATP6", "MT-CYB"]
RIBO = ["RPL3", "RPL7A", "RPL13A", "RPS4X", "RPS6", "RPLP0", "RPSA"]
NOT_RIBO = ["RPS6KA1", "RPL7L1P5"]  # kinase / pseudogene: not ribosomal protein genes
OTHER = (
    "ACTB GAPDH COL1A1 COL1A2 COL3A1 DCN LUM FAP PDGFRA PDGFRB ACTA2 TAGLN MYH11 RGS5 "
    "PECAM1 VWF CDH5 EPCAM KRT8 KRT18 KRT19 PTPRC CD3E CD4 CD8A MS4A1 CD79A CD14 LYZ "
    "CD68 C1QA IL6 CXCL12 CXCL8 CCL2 CFD HLA-DRA CD74 POSTN MMP11 CTHRC1 SFRP2 TWIST1 "
    "THY1 VIM FN1 SPARC TNC LTBP2 MYL9 CNN1 DES MKI67 TOP2A PCNA B2M MALAT1 EEF1A1 "
    "TPT1 FTL FTH1 S100A6 IGFBP7 MGP APOD PI16 DPT CCDC80 SERPINF1 TIMP1 TIMP3 CST3"
).split()
# whole-transcriptome size with many lowly expressed genes: realistic sparsity
FILLER = [f"LOWEXPR{i:05d}" for i in range(10000)]
GENES = OTHER + MT + RIBO + NOT_RIBO + FILLER


def _sim(n_per_sample=(300, 300), lib_scale=(1.0, 1.0), seed=0, n_high_mt=6, n_low_genes=6,
         n_filler=None):
    """Two cell types, per-sample library sizes, planted bad cells in the first sample."""
    rng = np.random.default_rng(seed)
    n_filler = len(FILLER) if n_filler is None else n_filler
    genes = GENES[: len(GENES) - len(FILLER) + n_filler]
    n_g = len(genes)
    base = rng.gamma(1.0, 2.0, size=n_g)
    n_named = n_g - n_filler
    base[n_named:] = rng.gamma(0.3, 0.1, size=n_filler)
    prog = np.ones((2, n_g))
    prog[0, :35] *= 10  # two cell types with different programmes
    prog[1, 35:70] *= 10
    prog[0, n_named : n_named + 1000] *= 8
    prog[1, n_named + 1000 : n_named + 2000] *= 8
    mt_idx = [GENES.index(g) for g in MT]
    base[mt_idx] = 2.0  # ~5% mitochondrial
    blocks, samples, types = [], [], []
    for s, (n, scale) in enumerate(zip(n_per_sample, lib_scale, strict=True)):
        ctype = rng.integers(0, 2, size=n)
        lib = rng.lognormal(0, 0.25, size=(n, 1)) * scale
        blocks.append(rng.poisson(base * prog[ctype] * lib * 3))
        samples += [f"s{s + 1}"] * n
        types.append(ctype)
    X = np.vstack(blocks).astype(np.float32)
    # planted damaged cells (sample 1, library <= median): ~30% mitochondrial reads; their
    # library grows 1.45x, well within 5 MADs
    tot = X[: n_per_sample[0]].sum(1)
    high_mt = np.flatnonzero(tot <= np.median(tot))[:n_high_mt]
    non_mt = X[high_mt].sum(1, keepdims=True) - X[np.ix_(high_mt, mt_idx)].sum(1, keepdims=True)
    X[np.ix_(high_mt, mt_idx)] = np.round(0.45 * non_mt / len(mt_idx))
    # planted empty droplets / debris: 4 genes detected
    low = np.setdiff1d(np.arange(n_per_sample[0]), high_mt)[:n_low_genes]
    keep = rng.choice(n_g - len(MT), size=4, replace=False)
    row = np.zeros(n_g, dtype=np.float32)
    row[keep] = 2
    X[low] = row
    obs = pd.DataFrame({"sample": pd.Categorical(samples), "ctype": np.concatenate(types)},
                       index=[f"c{i}" for i in range(X.shape[0])])
    a = ad.AnnData(X=sp.csr_matrix(X), obs=obs, var=pd.DataFrame(index=genes))
    return a, high_mt, low


def test_planted_outliers_flagged_and_good_cells_kept():
    a, high_mt, low = _sim()
    qc(a, sample_key="sample")
    reason = a.obs[K.OBS_QC_REASON]
    assert isinstance(reason.dtype, pd.CategoricalDtype)
    assert list(reason.cat.categories) == list(QC_REASONS)
    assert (reason.iloc[high_mt] == "high_mt").all()
    assert (reason.iloc[low] == "low_genes").all()
    planted = np.zeros(a.n_obs, dtype=bool)
    planted[high_mt] = planted[low] = True
    assert a.obs[K.OBS_QC_PASS].to_numpy()[~planted].mean() > 0.98
    assert a.obs[K.OBS_QC_PASS].dtype == bool
    sec = a.uns[K.UNS][K.UNS_QC]
    tab = pd.DataFrame(sec["table"]).set_index("sample")
    assert tab.loc["s1", "removed_high_mt"] == len(high_mt)
    assert tab.loc["s1", "removed_low_genes"] == len(low)
    assert (tab["n_kept"] + tab["n_removed"] == tab["n_cells"]).all()
    assert sec["thresholds"]["s1"]["max_pct_mt"] >= 20.0  # the floor
    assert sec["n_ribo_genes"] == len(RIBO)  # RPS6KA1 and the pseudogene are not counted


def test_metrics_match_scanpy():
    import scanpy as sc

    a, _, _ = _sim()
    qc(a)
    b = a.copy()
    b.var["mt"] = b.var_names.str.startswith("MT-")
    b.var["ribo"] = b.var_names.isin(RIBO)
    m, _ = sc.pp.calculate_qc_metrics(b, qc_vars=["mt", "ribo"], inplace=False, percent_top=None)
    for col in ("n_genes_by_counts", "total_counts", "pct_counts_mt", "pct_counts_ribo"):
        np.testing.assert_allclose(a.obs[col].to_numpy(), m[col].to_numpy(), rtol=1e-6, atol=1e-9)


def test_per_sample_thresholds_follow_the_sample():
    a, _, _ = _sim(lib_scale=(1.0, 4.0), n_high_mt=0, n_low_genes=0)
    qc(a, sample_key="sample")
    th = a.uns[K.UNS][K.UNS_QC]["thresholds"]
    assert th["s2"]["min_counts"] > 2.5 * th["s1"]["min_counts"]
    assert th["s2"]["median_counts"] > 3 * th["s1"]["median_counts"]
    # the same small library is an outlier in sample 2 but not in sample 1
    target = np.sqrt(th["s1"]["min_counts"] * th["s2"]["min_counts"])
    X = a.X.toarray()
    i1, i2 = 0, a.n_obs - 1  # first cell of s1, last cell of s2
    row = np.floor(X[i1] * target / X[i1].sum())
    X[i1] = X[i2] = row
    a.X = sp.csr_matrix(X)
    qc(a, sample_key="sample", min_genes=1)  # gene thresholds off: look at counts alone
    reason = a.obs[K.OBS_QC_REASON]
    assert reason.iloc[i1] == "pass"
    assert reason.iloc[i2] == "low_counts"
    # pooled thresholds differ from the per-sample ones
    pooled = qc(a, copy=True)
    assert pooled.uns[K.UNS][K.UNS_QC]["thresholds"]["all"]["min_counts"] != th["s2"]["min_counts"]


def test_first_failing_reason_wins_and_explicit_thresholds():
    a, high_mt, low = _sim()
    X = a.X.toarray()
    X[low[0], [GENES.index(g) for g in MT]] = 5  # low genes AND high mt
    a.X = sp.csr_matrix(X)
    qc(a, sample_key="sample")
    assert a.obs[K.OBS_QC_REASON].iloc[low[0]] == "low_genes"
    b = qc(a, sample_key="sample", max_pct_mt=1.0, copy=True)
    assert (b.obs[K.OBS_QC_REASON] == "high_mt").sum() > (a.obs[K.OBS_QC_REASON] == "high_mt").sum()
    assert b.uns[K.UNS][K.UNS_QC]["thresholds"]["s2"]["max_pct_mt"] == 1.0
    c = qc(a, min_genes=10_000, copy=True)
    assert (c.obs[K.OBS_QC_REASON] == "low_genes").all()
    assert K.OBS_QC_PASS not in a.obs or a.obs[K.OBS_QC_PASS].sum() > 0  # a is unchanged by copy


def test_lognorm_input_skips_count_parts():
    import scanpy as sc

    a, high_mt, low = _sim()
    ref = qc(a, copy=True)
    b = a.copy()
    sc.pp.normalize_total(b, target_sum=1e4)
    sc.pp.log1p(b)
    qc(b)
    sec = b.uns[K.UNS][K.UNS_QC]
    assert sec["value_type"] == "lognorm"
    assert "count_thresholds" in sec["skipped"]
    assert sec["thresholds"]["all"]["min_counts"] is None
    assert not (b.obs[K.OBS_QC_REASON].isin(["low_counts", "high_counts"])).any()
    # detected genes are unchanged by normalisation; mt % is exact for log1p(CP10k)
    np.testing.assert_array_equal(b.obs["n_genes_by_counts"], ref.obs["n_genes_by_counts"])
    np.testing.assert_allclose(b.obs["pct_counts_mt"], ref.obs["pct_counts_mt"], rtol=1e-4)
    assert (b.obs[K.OBS_QC_REASON].iloc[high_mt] == "high_mt").all()
    assert (b.obs[K.OBS_QC_REASON].iloc[low] == "low_genes").all()
    with pytest.raises(DataError, match="needs raw counts"):
        qc(b, doublets=True)


def test_gene_panel_has_no_automatic_mt_threshold():
    a, high_mt, _ = _sim()
    panel = a[:, : len(GENES) - len(FILLER)].copy()  # ~100 genes: a targeted panel / subset
    qc(panel)
    sec = panel.uns[K.UNS][K.UNS_QC]
    assert "gene panel" in sec["skipped"]["mt"]
    assert sec["thresholds"]["all"]["max_pct_mt"] is None
    assert not (panel.obs[K.OBS_QC_REASON] == "high_mt").any()
    qc(panel, max_pct_mt=30, min_genes=1)  # an explicit threshold still applies
    assert (panel.obs[K.OBS_QC_REASON].iloc[high_mt] == "high_mt").all()


def test_ensembl_ids_resolved_to_find_mitochondrial_genes():
    a, high_mt, _ = _sim()
    ens = {  # GENCODE v44
        "MT-CO1": "ENSG00000198804", "MT-CO2": "ENSG00000198712", "MT-CO3": "ENSG00000198938",
        "MT-ND1": "ENSG00000198888", "MT-ND4": "ENSG00000198886", "MT-ATP6": "ENSG00000198899",
        "MT-CYB": "ENSG00000198727",
    }
    a.var_names = [ens.get(g, g) for g in a.var_names]
    qc(a)
    sec = a.uns[K.UNS][K.UNS_QC]
    assert sec["n_mt_genes"] == len(MT)
    assert sec["symbols_from"].startswith("resolve_gene_identity")
    assert (a.obs[K.OBS_QC_REASON].iloc[high_mt] == "high_mt").all()


def test_counts_layer_preferred_and_sample_column_from_read(tmp_path):
    a, high_mt, _ = _sim()
    p = tmp_path / "x.h5ad"
    a.write_h5ad(p)
    r = cafclassify.read(p, sample_column="sample")
    qc(r)
    sec = r.uns[K.UNS][K.UNS_QC]
    assert sec["matrix"] == "layers['counts']"
    assert sec["params"]["sample_key"] == "sample"
    assert set(sec["thresholds"]) == {"s1", "s2"}
    assert (r.obs[K.OBS_QC_REASON].iloc[high_mt] == "high_mt").all()
    r.write_h5ad(tmp_path / "out.h5ad")  # everything in uns is h5ad-serialisable
    back = ad.read_h5ad(tmp_path / "out.h5ad")
    assert list(back.uns[K.UNS][K.UNS_QC]["table"]["sample"]) == ["s1", "s2"]


def test_doublets_planted():
    a, _, _ = _sim(n_per_sample=(400,), lib_scale=(1.0,), n_high_mt=0, n_low_genes=0,
                   n_filler=2000)
    X = a.X.toarray()
    rng = np.random.default_rng(3)
    # make 30 doublets: sum of a type-0-like and a type-1-like cell
    i0, i1 = np.flatnonzero(a.obs["ctype"] == 0), np.flatnonzero(a.obs["ctype"] == 1)
    dbl = rng.choice(a.n_obs, size=30, replace=False)
    for d in dbl:
        X[d] = X[rng.choice(i0)] + X[rng.choice(i1)]
    a.X = sp.csr_matrix(X)
    qc(a, doublets=True, random_state=0)
    score = a.obs[K.OBS_DOUBLET_SCORE].to_numpy()
    is_d = np.zeros(a.n_obs, dtype=bool)
    is_d[dbl] = True
    assert np.median(score[is_d]) > np.percentile(score[~is_d], 90)
    predicted = a.obs["predicted_doublet"].to_numpy()
    assert predicted[is_d].mean() > 0.3 and predicted[~is_d].mean() < 0.05
    assert not a.obs[K.OBS_QC_PASS].to_numpy()[predicted].any()  # every predicted doublet fails
    assert predicted[(a.obs[K.OBS_QC_REASON] == "doublet").to_numpy()].all()
    again = qc(a, doublets=True, random_state=0, copy=True)
    np.testing.assert_array_equal(again.obs[K.OBS_DOUBLET_SCORE], score)  # deterministic


def test_filter_cells_and_zero_left():
    a, high_mt, low = _sim()
    with pytest.raises(DataError, match="run cafclassify.qc"):
        filter_cells(a)
    qc(a, sample_key="sample")
    n_pass = int(a.obs[K.OBS_QC_PASS].sum())
    f = filter_cells(a, copy=True)
    assert f.n_obs == n_pass and a.n_obs == 600
    assert f.uns[K.UNS][K.UNS_QC]["filtered"] == {"n_before": 600, "n_after": n_pass}
    assert filter_cells(a) is None
    assert a.n_obs == n_pass and a.obs[K.OBS_QC_PASS].all()
    qc(a, min_genes=10_000)
    with pytest.raises(DataError, match="no cell passes QC") as exc:
        filter_cells(a)
    assert "min_genes" in str(exc.value) and "nmads" in exc.value.fix
    assert a.n_obs == n_pass  # nothing removed on failure


def test_bad_sample_key_and_scaled_matrix():
    a, _, _ = _sim()
    with pytest.raises(DataError, match="sample_key='batch'"):
        qc(a, sample_key="batch")
    b = a.copy()
    b.X = sp.csr_matrix(b.X.toarray() - 1.0)
    with pytest.raises(DataError, match="scaled"):
        qc(b)


@pytest.mark.skipif(not DATA.is_dir(), reason=f"shared data folder {DATA} not present")
def test_real_breast_qc():
    a = cafclassify.read(DATA / "breast_tumour_302cells_counts.h5ad")
    qc(a)
    sec = a.uns[K.UNS][K.UNS_QC]
    assert sec["matrix"] == "layers['counts']" and sec["n_mt_genes"] == 13
    tab = pd.DataFrame(sec["table"])
    assert tab["n_cells"].sum() == 302
    # a pre-filtered example: the MAD thresholds should not cut more than a few cells
    assert tab["n_kept"].sum() >= 290
    assert a.obs["pct_counts_mt"].between(0, 100).all()
