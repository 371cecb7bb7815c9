"""Inputs that are handled, not refused: duplicate barcodes and genes, a lying extension,
already normalised values, a subtype without seed cells. Each run succeeds and records what
it did (``docs/errors.md``, "Inputs that are handled, not refused")."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pytest

from cafclassify import _keys as K

from _bad_input_cases import CSV_HEADER, good_csv_rows
from _cli_fixtures import Shared, quiet_threads, run_cli, write_counts_h5ad


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    return Shared(tmp_path_factory.mktemp("shared_inputs"))

# ---- inputs that are handled, not refused ---------------------------------------------


def test_duplicate_barcodes_are_made_unique_and_reported(tmp_path):
    barcodes = [f"cell{i:03d}" for i in range(60)]
    barcodes[10] = barcodes[11] = barcodes[12] = "cell000"
    p = write_counts_h5ad(tmp_path / "dup.h5ad", barcodes=barcodes)
    out = tmp_path / "r.h5ad"
    code, _, err = run_cli(["read", str(p), "-o", str(out)])
    assert code == 0, err
    assert "3 duplicate cell barcodes made unique" in err
    r = ad.read_h5ad(out)
    assert r.obs_names.is_unique and r.n_obs == 60
    rec = r.uns[K.UNS][K.UNS_READ]
    assert rec["n_duplicate_barcodes"] == 3
    assert list(rec["duplicate_barcodes"]) == ["cell000"]


def test_duplicate_gene_names_are_made_unique_keep_symbol_and_reported(tmp_path):
    genes = ["COL1A1", "DCN", "PDGFRA", "ACTA2", "PTPRC"] + [f"GENE{i}" for i in range(35)]
    genes[20] = genes[21] = "DCN"
    p = write_counts_h5ad(tmp_path / "dupg.h5ad", genes=genes)
    out = tmp_path / "r.h5ad"
    code, _, err = run_cli(["read", str(p), "-o", str(out)])
    assert code == 0, err
    assert "2 duplicate gene names made unique" in err
    r = ad.read_h5ad(out)
    assert r.var_names.is_unique and r.n_vars == 40
    rec = r.uns[K.UNS][K.UNS_READ]
    assert rec["n_duplicate_genes"] == 2
    assert list(rec["duplicate_genes"]) == ["DCN"]
    # the renamed copies keep the real symbol, so signature matching still sees DCN
    assert (r.var[K.VAR_SYMBOL] == "DCN").sum() == 3


def test_extension_does_not_decide_the_format(tmp_path):
    """A CSV named .h5ad is read as what it is (content wins over the name)."""
    p = tmp_path / "actually_csv.h5ad"
    p.write_text(CSV_HEADER + "".join(r + "\n" for r in good_csv_rows()))
    out = tmp_path / "r.h5ad"
    code, _, err = run_cli(["read", str(p), "-o", str(out)])
    assert code == 0, err
    rec = ad.read_h5ad(out).uns[K.UNS][K.UNS_READ]
    assert rec["format"] == "csv"


def test_already_lognormalised_input_is_not_normalised_again(tmp_path):
    rng = np.random.default_rng(7)
    counts = rng.poisson(2.0, size=(60, 40)).astype(float)
    lib = counts.sum(1, keepdims=True)
    lognorm = np.log1p(counts / lib * 1e4)
    p = write_counts_h5ad(tmp_path / "lognorm.h5ad", values=lognorm)
    out = tmp_path / "r.h5ad"
    code, _, err = run_cli(["read", str(p), "-o", str(out)])
    assert code == 0, err
    r = ad.read_h5ad(out)
    assert r.uns[K.UNS][K.UNS_READ]["value_type"] == "lognorm"
    assert K.LAYER_COUNTS not in r.layers
    np.testing.assert_allclose(r.X.toarray(), lognorm.astype(np.float32), rtol=1e-6)


def test_log2_tpm_and_tpm_inputs_read_as_ln_cp10k(tmp_path):
    """log2(1 + TPM) and plain TPM tables become what the counts would: ln(1 + CP10k)."""
    rng = np.random.default_rng(7)
    counts = rng.poisson(rng.gamma(0.5, 4.0, size=40), size=(60, 40)).astype(float) + 1
    lib = counts.sum(1, keepdims=True)
    expected = np.log1p(counts / lib * 1e4).astype(np.float32)
    for name, values, vtype in (("log2tpm", np.log2(1 + counts / lib * 1e6), "lognorm"),
                                ("tpm", counts / lib * 1e6, "linear")):
        p = write_counts_h5ad(tmp_path / f"{name}.h5ad", values=values)
        out = tmp_path / f"r_{name}.h5ad"
        code, _, err = run_cli(["read", str(p), "-o", str(out)])
        assert code == 0, err
        r = ad.read_h5ad(out)
        assert r.uns[K.UNS][K.UNS_READ]["value_type"] == vtype
        np.testing.assert_allclose(r.X.toarray(), expected, rtol=1e-4, atol=1e-4)


def test_subtype_without_seed_cells_is_reported_absent(shared):
    """A dataset with no dCAF: training succeeds, dCAF is reported absent, never called."""
    quiet_threads()
    import cafclassify as cc

    sim = cc.simulate(
        500, n_genes=1500, random_state=1,
        lineage_fractions={"fibroblast": 0.6, "epithelial": 0.2, "immune": 0.2},
        subtype_fractions={"myCAF": 0.35, "iCAF": 0.35, "vCAF": 0.15, "apCAF": 0.15},
    )
    raw = shared.root / "no_dcaf.h5ad"
    sim.write_h5ad(raw)
    a = cc.read(raw)
    cc.gate(a)
    cc.score(a)
    model = cc.train(a, random_state=0)
    absent = list(model.summary["absent_classes"])
    assert "dCAF" in absent
    assert "dCAF" not in model.classes
    cc.classify(a, model)
    assert (a.obs[K.OBS_SUBTYPE].astype(str) == "dCAF").sum() == 0
    assert "dCAF" in list(a.uns[K.UNS][K.UNS_CLASSIFY]["absent_classes"])
