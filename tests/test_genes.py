"""Gene identity: ID type, species, symbol repair, orthologues, Ensembl -> symbol."""

from __future__ import annotations

from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest

from cafclassify._errors import SignatureError
from cafclassify.genes import (
    detect_id_type,
    detect_species,
    is_mangled,
    orthologues,
    repair_mangled,
    repair_symbol,
    resolve_gene_identity,
    to_species,
)
from cafclassify.genes._tables import alias_table, ensembl_human_to_symbol, mouse_symbols

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
OVARIAN = DATA / "ovarian_tumour_66cells_logtpm.h5ad"


def _adata(var_names, var=None):
    X = np.zeros((3, len(var_names)), dtype=np.float32)
    a = ad.AnnData(X=X, var=var if var is not None else pd.DataFrame(index=list(var_names)))
    if var is not None:
        a.var_names = list(var_names)
    return a


def test_detect_id_type():
    assert detect_id_type(["ENSG00000108821", "ENSG00000011465.17"]) == "ensembl_human"
    assert detect_id_type(["ENSMUSG00000001506", "ENSMUSG00000019929.3"]) == "ensembl_mouse"
    assert detect_id_type(["COL1A1", "DCN", "ACTA2"]) == "symbol"
    assert detect_id_type(["COL1A1", "ENSG00000108821"]) == "mixed"


def test_detect_species():
    assert detect_species(["COL1A1", "DCN", "CD74", "ACTA2", "PTPRC"]) == "human"
    assert detect_species(["Col1a1", "Dcn", "Cd74", "H2-Ab1", "Acta2"]) == "mouse"
    assert detect_species(["col1a1a", "dcn", "cd74a", "acta2", "ptprc"]) == "unknown"
    assert detect_species(["ENSG00000108821"] * 3) == "human"


def test_repair_outdated_symbols():
    assert repair_symbol("IL8", "human") == "CXCL8"
    assert repair_symbol("CTGF", "human") == "CCN2"
    assert repair_symbol("WISP2", "human") == "CCN5"
    assert repair_symbol("SEPT4", "human") == "SEPTIN4"
    assert repair_symbol("Ctgf", "mouse") == "Ccn2"
    assert repair_symbol("CXCL8", "human") == "CXCL8"  # current stays
    assert repair_symbol("IL8", "mouse") == "IL8"  # species-specific table


def test_mangled_symbols():
    assert is_mangled("1-Mar") and is_mangled("Sep.04") and is_mangled("2-Sep")
    assert not is_mangled("SEP15") and not is_mangled("MARCHF1")
    assert repair_mangled("Sep.04", "human") == "SEPTIN4"
    assert repair_mangled("2-Sep", "mouse") == "Septin2"
    assert repair_mangled("1-Mar", "human") == "MARCHF1"
    assert repair_mangled("1-Dec", "human") is None  # DELEC1 or BHLHE40: ambiguous
    assert repair_mangled("Sep-30", "human") is None  # no SEPTIN30


def test_alias_table_is_consistent_with_gene_tables():
    gencode = set(ensembl_human_to_symbol().values())
    for old, new in alias_table()["human"].items():
        assert new in gencode, new
        assert old not in gencode, f"{old} is still a current GENCODE v44 name"
    mouse = mouse_symbols()
    for old in alias_table()["mouse"]:
        assert old not in mouse, old


def test_orthologues_use_the_table_not_letter_case():
    m = to_species(
        ["HLA-DQB1", "CXCL8", "COL1A1", "HLA-DRB1", "MMP1"], source="human", target="mouse"
    )
    assert m["HLA-DQB1"] == "H2-Ab1"
    assert m["COL1A1"] == "Col1a1"
    assert m["HLA-DRB1"] == "H2-Eb1"
    assert m["MMP1"] == "Mmp1a"
    assert "CXCL8" not in m  # no mouse orthologue
    back = to_species(["H2-Ab1", "Ccl2", "Lyz2"], source="mouse", target="human")
    assert back == {"H2-Ab1": "HLA-DQB1", "Ccl2": "CCL2", "Lyz2": "LYZ"}
    assert orthologues("IL8", source="human", target="mouse") == ()  # repaired first, still none
    assert orthologues("CTGF", source="human", target="mouse") == ("Ccn2",)
    with pytest.raises(SignatureError):
        to_species(["A"], source="human", target="rat")


def test_resolve_symbols_with_repair_and_input_unchanged():
    a = _adata(["COL1A1", "IL8", "DCN", "CTGF", "ACTA2"])
    before = a.var_names.copy()
    gi = resolve_gene_identity(a)
    assert gi.species == "human" and gi.id_type == "symbol"
    assert list(gi.symbols) == ["COL1A1", "CXCL8", "DCN", "CCN2", "ACTA2"]
    assert gi.repaired == {"IL8": "CXCL8", "CTGF": "CCN2"} and gi.n_repaired == 2
    assert gi.source_column is None
    assert a.var_names.equals(before) and "cafclassify_symbol" not in a.var


def test_resolve_ensembl_with_version_suffix_and_unmapped():
    ids = ["ENSG00000108821.14", "ENSG00000011465", "ENSG00000107796.13", "ENSG99999999999"]
    gi = resolve_gene_identity(_adata(ids))
    assert gi.id_type == "ensembl_human" and gi.species == "human"
    assert list(gi.symbols) == ["COL1A1", "DCN", "ACTA2", ""]
    assert gi.n_unmapped == 1


def test_resolve_uses_symbol_column():
    ids = ["ENSMUSG00000001506", "ENSMUSG00000019929", "ENSMUSG00000035783"]
    var = pd.DataFrame({"gene_symbols": ["Col1a1", "Dcn", "Acta2"]}, index=ids)
    gi = resolve_gene_identity(_adata(ids, var))
    assert gi.source_column == "gene_symbols" and gi.species == "mouse"
    assert list(gi.symbols) == ["Col1a1", "Dcn", "Acta2"]
    # explicit column, also for symbol var_names
    var2 = pd.DataFrame({"sym": ["Col1a1", "Dcn", "Acta2"]}, index=ids)
    assert resolve_gene_identity(_adata(ids, var2), symbol_column="sym").source_column == "sym"


def test_resolve_errors():
    ids = ["ENSMUSG00000001506", "ENSMUSG00000019929"]
    with pytest.raises(SignatureError, match="symbol_column"):
        resolve_gene_identity(_adata(ids))
    with pytest.raises(SignatureError, match="no column 'nope'"):
        resolve_gene_identity(_adata(["COL1A1"]), symbol_column="nope")
    with pytest.raises(SignatureError, match="species"):
        resolve_gene_identity(_adata(["COL1A1"]), species="zebrafish")


@pytest.mark.skipif(not OVARIAN.exists(), reason="shared test data folder not present")
def test_ovarian_ensembl_ids_resolve_to_human_symbols():
    a = ad.read_h5ad(OVARIAN, backed="r")
    gi = resolve_gene_identity(a)
    assert gi.id_type == "ensembl_human" and gi.species == "human"
    assert gi.source_column is None
    assert gi.mapping_rate > 0.95, gi.mapping_rate
    assert {"COL1A1", "DCN", "EPCAM", "KRT8"} <= set(gi.symbols)
