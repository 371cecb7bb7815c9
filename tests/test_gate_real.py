"""Integration tests of the lineage gate on real, author-labelled public data.

The files live in ``shared/data`` beside the repository (see its README for
provenance and licences). The asserted levels are the project's targets (issue:
fibroblast precision and recall >= 0.95, pericytes+SMC mural >= 0.90, ovarian
agreement >= 0.90, blood <= 1% fibroblasts). The two colorectal targets the gate
did not reach on this marker-depleted panel are regression tests at the reached level, as
issue 14 restated them (reason in the code).
"""

from __future__ import annotations

from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest

from cafclassify import _keys as K
from cafclassify.tl import gate

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
pytestmark = pytest.mark.skipif(not DATA.is_dir(), reason=f"real test data not found at {DATA}")


@pytest.fixture(scope="module")
def crc():
    a = ad.read_h5ad(DATA / "crc_tumour_normal_2850cells_lognorm.h5ad")
    gate(a)
    return a


def _fib(crc):
    is_fib = crc.obs["is_fibroblast"].to_numpy().astype(bool)
    called = (crc.obs[K.OBS_LINEAGE] == "fibroblast").to_numpy()
    stage1 = (crc.obs[K.OBS_LINEAGE_STAGE1] == "fibroblast").to_numpy()
    return is_fib, called, stage1


def test_crc_fibroblast_precision(crc):
    is_fib, called, _ = _fib(crc)
    assert (called & is_fib).sum() / called.sum() >= 0.95


def test_crc_refinement_adds_fibroblasts_without_losing_precision(crc):
    is_fib, called, stage1 = _fib(crc)
    ref = crc.uns[K.UNS][K.UNS_GATE]["refine"]
    assert ref["applied"] is True and ref["cv_balanced_accuracy"]["lineage_model"] >= 0.9
    # stage 2 recovers fibroblasts that stage 1 left as "other" (mixed low-quality
    # cluster); the cells it adds are mostly author-labelled fibroblasts (7 of 8)
    added = called & ~stage1
    assert ref["changes"]["other"]["fibroblast"] >= 3
    assert (called & is_fib).sum() > (stage1 & is_fib).sum()
    assert is_fib[added].mean() >= 0.8
    # epithelium has no measured marker here, hence no seeds: it must stay "other"
    epi = crc.obs["cell_type"].astype(str).str.contains("Epithelial").to_numpy()
    assert (crc.obs[K.OBS_LINEAGE].astype(str).to_numpy()[epi] == "fibroblast").sum() == 0


# Issue 14 restated the colorectal targets: on this 4,210-gene metabolic panel (no COL1A1,
# DCN, FAP, MYH11, DES, CNN1, RGS5, NOTCH3) the reached levels are the documented limit of a
# marker-depleted panel (docs/gate.md, Limits): 6 fibroblasts stay 'other' in a low-quality
# mixed cluster (~120 genes detected) and 9 sit in the mural cluster. These are regression
# tests at the reached level (377/400); the gate's targets are now measured on the
# full-transcriptome breast file (tests/test_subtype_real.py).
def test_crc_fibroblast_recall_regression(crc):
    is_fib, called, _ = _fib(crc)
    assert (called & is_fib).sum() >= 377


def test_crc_pericytes_mural(crc):
    ct = crc.obs["cell_type"].astype(str)
    lab = crc.obs[K.OBS_LINEAGE].astype(str)
    peri = (ct == "Pericyte").to_numpy()
    assert (lab[peri] == "mural").mean() >= 0.9
    # missing markers are recorded, not silently ignored
    miss = crc.uns[K.UNS][K.UNS_GATE]["missing_markers"]["fibroblast"]
    assert {"COL1A1", "DCN", "FAP"} <= set(miss)


# Regression test at the reached level (64/80, issue 14): SMC 16/30 mural, 8 in the
# fibroblast cluster. The panel lacks MYH11/DES/CNN1/RGS5/NOTCH3; those 8 SMCs are
# PDGFRA-negative but ACTG2/MYLK/ACTA2-high like many colon fibroblasts, and the
# whole-profile model also places them with fibroblasts (docs/gate.md, Limits).
def test_crc_mural_regression(crc):
    ct = crc.obs["cell_type"].astype(str)
    lab = crc.obs[K.OBS_LINEAGE].astype(str)
    m = ct.isin(["Pericyte", "SMC"]).to_numpy()
    assert (lab[m] == "mural").sum() >= 64


def test_crc_immune_and_endothelial_not_fibroblast(crc):
    ct = crc.obs["cell_type"].astype(str)
    lab = crc.obs[K.OBS_LINEAGE].astype(str)
    myeloid = ct.isin(["TAM", "Normal Macrophage", "Monocyte"]).to_numpy()
    assert (lab[myeloid] == "fibroblast").mean() <= 0.01
    assert (lab[myeloid] == "immune").mean() >= 0.8
    endo = (ct == "Endothelial").to_numpy()
    assert (lab[endo] == "endothelial").mean() >= 0.75


def test_ovarian_stroma_vs_epithelial():
    a = ad.read_h5ad(DATA / "ovarian_tumour_66cells_logtpm.h5ad")
    assert str(a.var_names[0]).startswith("ENSG")  # Ensembl IDs: mapped by gene matching
    gate(a)
    lab = a.obs[K.OBS_LINEAGE].astype(str).to_numpy()
    call = a.obs["call"].astype(str).to_numpy()
    pred = np.where(lab == "epithelial", "Epithelial", "Stroma")
    assert (pred == call).mean() >= 0.9
    assert ((lab == "fibroblast") & (call == "Stroma")).sum() >= 20


def test_breast_counts_end_to_end():
    import scanpy as sc

    a = ad.read_h5ad(DATA / "breast_tumour_302cells_counts.h5ad")
    a.layers["counts"] = a.X.copy()
    sc.pp.normalize_total(a, target_sum=1e4)
    sc.pp.log1p(a)
    gate(a)
    lab = a.obs[K.OBS_LINEAGE].astype(str)
    fib = (lab == "fibroblast").to_numpy()
    assert 3 <= fib.sum() <= 80
    col = a[:, ["COL1A1", "DCN", "LUM"]].X.toarray()
    # called fibroblasts are the collagen/DCN/LUM-high cells
    assert col[fib].mean() > 5 * col[~fib].mean()
    assert (lab == "epithelial").sum() >= 150 and (lab == "immune").sum() >= 40
    if fib.sum() < 50:
        assert any("fibroblasts" in w for w in a.uns[K.UNS][K.UNS_GATE]["warnings"])


def test_pbmc_has_almost_no_fibroblasts(caplog):
    import scanpy as sc

    p = sc.datasets.pbmc68k_reduced()
    a = p.raw.to_adata()
    with caplog.at_level("WARNING"):
        gate(a)
    frac = (a.obs[K.OBS_LINEAGE] == "fibroblast").mean()
    assert frac <= 0.01
    w = a.uns[K.UNS][K.UNS_GATE]["warnings"]
    assert any("fibroblasts" in m and "subtyping" in m for m in w)
    assert "fibroblasts" in caplog.text
    counts = pd.Series(a.uns[K.UNS][K.UNS_GATE]["counts"])
    assert counts.sum() == a.n_obs


def test_crc_lineage_confidence_not_inverted(crc):
    """Issue 15: correctly gated immune clusters showed ~0 and unplaced cells ~1."""
    conf = crc.obs[K.OBS_LINEAGE_CONF].to_numpy()
    lab = crc.obs[K.OBS_LINEAGE].astype(str).to_numpy()
    ct = crc.obs["cell_type"].astype(str)
    immune_ok = ct.isin(["T", "B", "TAM", "Monocyte", "Normal Macrophage"]).to_numpy() & (lab == "immune")
    assert np.median(conf[immune_ok]) >= 0.5
    assert np.median(conf[lab == "other"]) <= 0.1


def test_breast_gate_does_not_hang_on_one_leiden_start():
    """The gate's fibroblasts barely move with ``random_state``: the embedding keeps the best
    of 10 Leiden starts. With one start, seeds 0-2 gave 378 / 383 / 403 fibroblasts (6 / 9 /
    25 of the authors' perivascular cells among them: seed 2 split the perivascular cells
    into a cluster mixed with fibroblasts), and the subtype calls moved with them."""
    import cafclassify as caf

    a = caf.read(DATA / "wu2021_brca_CID4465_1564cells_counts.h5ad")
    caf.qc(a)
    a = a[a.obs["qc_pass"].to_numpy()].copy()
    fib = []
    for rs in (0, 1, 2):
        b = a.copy()
        gate(b, random_state=rs)
        fib.append((b.obs[K.OBS_LINEAGE] == "fibroblast").to_numpy())
        assert b.uns[K.UNS][K.UNS_GATE]["embedding"]["leiden_runs"] == 10
    author = a.obs["author_lineage"].astype(str).to_numpy()
    for f in fib:
        assert (f & (author == "perivascular_mural")).sum() <= 12
        assert (f & (author == "fibroblast")).sum() / (author == "fibroblast").sum() >= 0.95
    for f in fib[1:]:
        assert (f != fib[0]).sum() <= 5  # cells whose fibroblast call depends on the seed
