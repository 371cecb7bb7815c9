"""Loading user gene sets and matching signatures to data."""

from __future__ import annotations

import logging
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest

from cafclassify._errors import SignatureError
from cafclassify.genesets import (
    COVERAGE_COLUMNS,
    SignatureLibrary,
    coverage_table,
    load_signatures,
    match_signatures,
)

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
OVARIAN = DATA / "ovarian_tumour_66cells_logtpm.h5ad"
CRC = DATA / "crc_tumour_normal_2850cells_lognorm.h5ad"


def _adata(genes):
    return ad.AnnData(
        X=np.zeros((2, len(genes)), dtype=np.float32), var=pd.DataFrame(index=list(genes))
    )


# ---------------------------------------------------------------- loading


def test_gmt(tmp_path):
    p = tmp_path / "my.gmt"
    p.write_text("setA\tdesc A\tCOL1A1\tDCN\tDCN\nsetB\t\tACTA2\tTAGLN\n")
    lib = load_signatures(p)
    assert lib.name == "my" and list(lib.sets) == ["setA", "setB"]
    assert lib["setA"].genes == ("COL1A1", "DCN")  # duplicate dropped
    assert lib["setA"].description == "desc A"
    assert lib["setB"].group == "user" and lib["setB"].tiers == ("user", "user")
    assert len(lib.sha256) == 64


def test_gmt_malformed_line_names_file_and_line(tmp_path):
    p = tmp_path / "bad.gmt"
    p.write_text("setA\tdesc\tCOL1A1\nsetB COL1A1 DCN\n")
    with pytest.raises(SignatureError, match=r"bad\.gmt.*line 2"):
        load_signatures(p)


def test_gene_list_with_comments(tmp_path):
    p = tmp_path / "fibro_markers.txt"
    p.write_text("# my markers\nCOL1A1\nDCN  # decorin\n\nLUM\n")
    lib = load_signatures(p)
    assert list(lib.sets) == ["fibro_markers"]
    assert lib["fibro_markers"].genes == ("COL1A1", "DCN", "LUM")
    grp = tmp_path / "x.grp"
    grp.write_text("ACTA2\n")
    assert load_signatures(grp)["x"].genes == ("ACTA2",)


def test_long_table_weights_and_errors(tmp_path):
    p = tmp_path / "net.tsv"
    p.write_text("source\ttarget\tweight\niCAF\tIL6\t1\niCAF\tACTA2\t-1\nmyCAF\tACTA2\t2.5\n")
    lib = load_signatures(p)
    assert lib["iCAF"].genes == ("IL6", "ACTA2") and lib["iCAF"].weights == (1.0, -1.0)
    assert lib["myCAF"].weights == (2.5,)
    c = tmp_path / "net.csv"
    c.write_text("source,target\niCAF,IL6\n")
    assert load_signatures(c)["iCAF"].weights == (1.0,)
    bad = tmp_path / "bad.tsv"
    bad.write_text("set\tgene\niCAF\tIL6\n")
    with pytest.raises(SignatureError, match="source"):
        load_signatures(bad)
    badw = tmp_path / "badw.tsv"
    badw.write_text("source\ttarget\tweight\niCAF\tIL6\tabc\n")
    with pytest.raises(SignatureError, match="weight"):
        load_signatures(badw)


def test_dict_specs():
    lib = load_signatures({"a": ["COL1A1", "DCN"], "b": {"IL6": 1, "ACTA2": -1}})
    assert lib["a"].weights == (1.0, 1.0) and lib["b"].weights == (1.0, -1.0)
    assert load_signatures(lib) is lib
    with pytest.raises(SignatureError, match="'a'"):
        load_signatures({"a": 5})
    with pytest.raises(SignatureError, match="weight"):
        load_signatures({"a": {"IL6": "x"}})


def test_unknown_spec_errors(tmp_path):
    with pytest.raises(SignatureError, match="built-in"):
        load_signatures("caf_v99")
    p = tmp_path / "x.xlsx"
    p.write_text("")
    with pytest.raises(SignatureError, match="format"):
        load_signatures(p)


def test_mangled_symbols_repaired_or_dropped_with_warning(tmp_path, caplog):
    p = tmp_path / "m.gmt"
    p.write_text("s\t\tCOL1A1\tSep.04\t1-Mar\t1-Dec\tDCN\n")
    with caplog.at_level(logging.WARNING, logger="cafclassify"):
        lib = load_signatures(p)
    assert lib["s"].genes == ("COL1A1", "SEPTIN4", "MARCHF1", "DCN")
    text = caplog.text
    assert "Sep.04" in text and "SEPTIN4" in text and "1-Dec" in text and "m.gmt" in text


def test_subset(tmp_path):
    lib = load_signatures("caf_v1")
    sub = lib.subset(groups=["subtype"])
    assert list(sub.sets) == ["myCAF", "iCAF", "apCAF", "meCAF", "vCAF", "dCAF", "LTBP2_CAF"]
    assert list(lib.subset(names=["iCAF", "myCAF"]).sets) == ["myCAF", "iCAF"]  # library order
    with pytest.raises(SignatureError, match="nope"):
        lib.subset(names=["nope"])
    with pytest.raises(SignatureError, match="gate"):
        lib.subset(groups=["gate"])
    assert isinstance(sub, SignatureLibrary) and sub.sha256 == lib.sha256


# ---------------------------------------------------------------- matching


def test_match_found_missing_renamed_and_weights():
    a = _adata(["DCN", "IL8", "COL1A1", "GAPDH", "ACTA2"])
    lib = {"x": {"COL1A1": 1, "CXCL8": 1, "ACTA2": -1, "NOTAGENE": 1}}
    m = match_signatures(lib, a)["x"]
    assert m.found == ["COL1A1", "CXCL8", "ACTA2"] and m.missing == ["NOTAGENE"]
    assert list(m.indices) == [2, 1, 4]
    assert list(m.weights) == [1.0, 1.0, -1.0]
    assert m.renamed == {"CXCL8": "IL8"}
    assert m.coverage == pytest.approx(0.75) and m.n_genes == 4


def test_outdated_symbol_in_signature_is_repaired():
    a = _adata(["CXCL8", "CCN2", "DCN"])
    m = match_signatures({"x": ["IL8", "CTGF", "DCN"]}, a)["x"]
    assert m.found == ["IL8", "CTGF", "DCN"] and list(m.indices) == [0, 1, 2]


def test_low_coverage_modes(caplog):
    a = _adata(["COL1A1", "DCN", "ACTA2", "PTPRC"])
    lib = {"good": ["COL1A1", "DCN"], "poor": ["ACTA2", "MISSING1", "MISSING2", "MISSING3"]}
    with caplog.at_level(logging.WARNING):
        out = match_signatures(lib, a, min_coverage=0.5)
    assert list(out) == ["good"]
    assert "'poor'" in caplog.text and "MISSING1" in caplog.text and "skipped" in caplog.text
    with pytest.raises(SignatureError, match="poor"):
        match_signatures(lib, a, min_coverage=0.5, on_low_coverage="raise")
    kept = match_signatures(lib, a, min_coverage=0.5, on_low_coverage="keep")
    assert kept["poor"].status == "low_coverage_kept" and kept["poor"].found == ["ACTA2"]
    # min_genes applies too
    assert "good" not in match_signatures(lib, a, min_genes=3)
    t = coverage_table(lib, a, min_coverage=0.5)
    assert tuple(t.columns) == COVERAGE_COLUMNS
    assert dict(zip(t["set"], t["status"], strict=True)) == {
        "good": "ok",
        "poor": "low_coverage_skipped",
    }
    with pytest.raises(SignatureError):
        match_signatures(lib, a, on_low_coverage="ignore")


def test_duplicate_var_symbols_take_first():
    a = _adata(["IL8", "COL1A1", "CXCL8"])  # IL8 and CXCL8 are the same gene
    m = match_signatures({"x": ["CXCL8", "COL1A1"]}, a)["x"]
    assert list(m.indices) == [0, 1]
    assert any("used the first" in n for n in m.notes)


def test_only_unknown_genes_is_a_clear_error():
    a = _adata(["COL1A1", "DCN", "ACTA2"])
    with pytest.raises(SignatureError, match="none of the genes"):
        match_signatures({"x": ["FOO1", "BAR2"]}, a)


def test_unknown_species_is_a_clear_error():
    a = _adata(["col1a1a", "dcn", "acta2b", "cd74a", "ptprc"])
    with pytest.raises(SignatureError, match="species="):
        match_signatures("caf_v1", a)
    # the user can say what the names are
    with pytest.raises(SignatureError, match="none of the genes"):
        match_signatures("caf_v1", a, species="human")


def test_mouse_data_maps_through_orthologues():
    genes = [
        "Col1a1",
        "Col1a2",
        "Col3a1",
        "Dcn",
        "Lum",
        "Pdgfra",
        "Cd74",
        "H2-Ab1",
        "H2-Aa",
        "H2-Eb1",
        "H2-DMa",
        "Acta2",
        "Il6",
        "Cxcl12",
        "Cxcl1",
        "Cxcl8",
        "Ccn2",
        "Tagln",
    ]
    a = _adata(genes)
    lib = load_signatures("caf_v1")
    out = match_signatures(lib, a, min_coverage=0.0)
    ap = out["apCAF"]
    assert ap.renamed["HLA-DQB1"] == "H2-Ab1" and ap.renamed["CD74"] == "Cd74"
    assert "HLA-DPA1" in ap.missing  # no mouse orthologue
    ic = out["iCAF"]
    # CXCL8 has no mouse orthologue: reported missing although a var 'Cxcl8' exists
    assert "CXCL8" in ic.missing and "Cxcl8" not in ic.renamed.values()
    assert ic.renamed["ACTA2"] == "Acta2" and ic.weights[ic.found.index("ACTA2")] == -1.0
    assert out["myCAF"].renamed["CCN2"] == "Ccn2"


def test_user_mouse_set_on_human_data():
    a = _adata(["HLA-DQB1", "CD74", "COL1A1"])
    m = match_signatures({"ap": ["H2-Ab1", "Cd74"]}, a)["ap"]
    assert m.renamed == {"H2-Ab1": "HLA-DQB1", "Cd74": "CD74"}


def test_builtin_on_ensembl_ids_with_versions():
    a = _adata(["ENSG00000108821.14", "ENSG00000011465.17", "ENSG00000139329.5"])  # COL1A1 DCN LUM
    t = coverage_table("caf_v1", a)
    fib = t.set_index("set").loc["fibroblast"]
    assert fib["n_found"] == 3 and "COL1A1->ENSG00000108821.14" in fib["renamed"]
    assert len(t) == len(load_signatures("caf_v1"))


# ---------------------------------------------------------------- real data


@pytest.mark.skipif(not OVARIAN.exists(), reason="shared test data folder not present")
def test_ovarian_ensembl_data_matches_caf_v1():
    a = ad.read_h5ad(OVARIAN, backed="r")
    out = match_signatures("caf_v1", a)
    assert out["fibroblast"].coverage > 0.9
    for name in ("myCAF", "iCAF", "epithelial"):
        assert name in out, name
    assert all(a.var_names[i].startswith("ENSG") for i in out["myCAF"].indices)


@pytest.mark.skipif(not CRC.exists(), reason="shared test data folder not present")
def test_crc_reports_missing_gate_genes_but_keeps_the_gate():
    a = ad.read_h5ad(CRC, backed="r")
    t = coverage_table("caf_v1", a).set_index("set")
    fib = t.loc["fibroblast"]
    missing = set(fib["missing"].split(";"))
    assert {"COL1A1", "DCN", "FAP"} <= missing
    assert fib["status"] == "ok" and fib["n_found"] >= 4
    assert "PDGFRA" in fib["found"].split(";")
    out = match_signatures("caf_v1", a)
    assert "fibroblast" in out and "COL1A1" in out["fibroblast"].missing
