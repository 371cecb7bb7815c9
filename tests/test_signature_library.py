"""Machine checks on the shipped caf_v1 signature library (content and provenance)."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import pytest

from cafclassify.genes._tables import alias_table, ensembl_human_to_symbol, orthologue_table
from cafclassify.genesets import list_signatures, load_signatures
from cafclassify.genesets._library import _builtin_root

LIB_DIR = Path(__file__).resolve().parents[1] / "signatures" / "caf_v1"

REQUIRED = {
    "lineage": ["fibroblast", "mural", "epithelial", "immune", "endothelial", "other_lineage"],
    "subtype": ["myCAF", "iCAF", "apCAF", "meCAF", "vCAF", "dCAF", "LTBP2_CAF"],
    "state": ["senescence", "cycling"],
    "optional": [
        "normal_fibroblast",
        "caf_activation",
        "LRRC15_CAF",
        "lipid_CAF",
        "CD10_GPR77_CAF",
        "tumour_restraining_CAF",
    ],
}
SEED_KEYS = {"S000", "S001", "S004"}


def _rows(name: str) -> list[dict[str, str]]:
    with open(LIB_DIR / name, encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh, delimiter="\t"))


@pytest.fixture(scope="module")
def lib():
    return load_signatures("caf_v1")


def test_builtin_is_listed_and_found_in_repo():
    assert "caf_v1" in list_signatures()
    assert _builtin_root() is not None


def test_required_sets_and_groups(lib):
    for group, names in REQUIRED.items():
        for n in names:
            assert n in lib.sets, n
            assert lib.sets[n].group == group, n
    assert set(lib.sets) == {n for v in REQUIRED.values() for n in v}


def test_every_gene_has_known_source_and_every_set_is_declared():
    keys = {r["key"] for r in _rows("sources.tsv")}
    sets = {r["set"] for r in _rows("sets.tsv")}
    genes = _rows("genes.tsv")
    assert genes
    seen = set()
    for r in genes:
        assert r["set"] in sets, r
        src = [k for k in r["sources"].split(";") if k]
        assert src and all(k in keys for k in src), r
        assert (r["set"], r["human"]) not in seen, r
        seen.add((r["set"], r["human"]))
        assert r["direction"] in ("+", "-")
        assert r["tier"] in ("seed", "literature", "inferred")
        # a gene in the seed tier must cite a seed text
        if r["tier"] == "seed":
            assert SEED_KEYS & set(src), r
    # no set without genes
    assert sets == {r["set"] for r in genes}


def test_human_symbols_are_current():
    old = alias_table()["human"]
    gencode = set(ensembl_human_to_symbol().values())
    for r in _rows("genes.tsv"):
        assert r["human"] not in old, f"{r['human']} is an outdated symbol ({old.get(r['human'])})"
        assert r["human"] in gencode, f"{r['human']} is not a GENCODE v44 gene name"


def test_mouse_column_agrees_with_orthologue_table():
    h2m, _ = orthologue_table()
    for r in _rows("genes.tsv"):
        cands = h2m.get(r["human"], ())
        if r["mouse"] == "-":
            assert not cands, f"{r['human']}: table has {cands} but genes.tsv says none"
            assert "no mouse orthologue" in r["note"], r
        else:
            assert r["mouse"] in cands, f"{r['human']} -> {r['mouse']} not in table {cands}"
            # best candidate chosen, not just any
            assert r["mouse"] == cands[0], r


def test_design_decisions(lib):
    hard_pericyte = {"RGS5", "KCNJ8", "ABCC9", "HIGD1B"}
    assert hard_pericyte <= set(lib["mural"].genes)
    assert not hard_pericyte & set(lib["vCAF"].genes)
    # the fibroblast gate is fibroblast-specific: nothing shared with mural cells
    fib = set(lib["fibroblast"].genes)
    assert not fib & set(lib["mural"].genes)
    assert not fib & {"ACTA2", "PDGFRB", "VIM"}
    assert len(fib) >= 20
    # negative markers where the evidence gives one
    icaf = lib["iCAF"]
    assert icaf.weights[icaf.genes.index("ACTA2")] == -1.0
    assert lib["LTBP2_CAF"].genes[0] == "LTBP2"
    assert lib["LTBP2_CAF"].tier_counts.get("seed") == 1
    assert len(lib["LRRC15_CAF"]) == 14


def test_sets_tsv_documents_evidence():
    for r in _rows("sets.tsv"):
        assert len(r["evidence"]) > 30, r["set"]
        assert 0 < float(r["min_coverage"]) <= 1
    ev = {r["set"]: r["evidence"].lower() for r in _rows("sets.tsv")}
    assert "one seed gene" in ev["LTBP2_CAF"]
    assert "low confidence" in ev["dCAF"]


def test_sha256_is_stable_and_tracks_content(tmp_path, lib):
    assert load_signatures("caf_v1").sha256 == lib.sha256
    copy = tmp_path / "caf_v1"
    shutil.copytree(LIB_DIR, copy)
    assert load_signatures(copy).sha256 == lib.sha256
    text = (copy / "genes.tsv").read_text()
    (copy / "genes.tsv").write_text(text.replace("myCAF\tHOPX", "myCAF\tHOPXX", 1))
    changed = load_signatures(copy)
    assert changed.sha256 != lib.sha256
    assert "HOPXX" in changed["myCAF"].genes


def test_broken_library_folder_errors_name_file_and_line(tmp_path):
    from cafclassify._errors import SignatureError

    copy = tmp_path / "lib"
    shutil.copytree(LIB_DIR, copy)
    lines = (copy / "genes.tsv").read_text().splitlines()
    lines[3] = lines[3].replace(lines[3].split("\t")[5], "NOPE")
    (copy / "genes.tsv").write_text("\n".join(lines) + "\n")
    with pytest.raises(SignatureError, match=r"genes\.tsv.*line 4.*NOPE"):
        load_signatures(copy)
