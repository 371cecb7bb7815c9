"""Species from evidence, not guesses (issue #18).

Upper-cased mouse gene names are flagged by their mouse-only genes (a WARNING and a
record in uns, shown in the report); a species given against the evidence is a
WARNING too; a model of one species applied to data of another is a WARNING with a
record in ``uns["cafclassify"]["classify"]``.
"""

from __future__ import annotations

import logging

import pytest

from cafclassify import _keys as K
from cafclassify.datasets import simulate
from cafclassify.genes import note_model_species, species_evidence, species_mismatch
from cafclassify.io import read


@pytest.fixture(scope="module")
def mouse_names():
    return list(simulate(50, n_genes=15000, species="mouse", random_state=0).var_names)


def test_upper_case_mouse_names_are_ambiguous_not_human(mouse_names):
    assert species_evidence(mouse_names)["verdict"] == "mouse"
    ev = species_evidence([g.upper() for g in mouse_names])
    assert ev["by_case"] == "human"  # what case alone says
    assert ev["verdict"] == "ambiguous" and ev["n_mouse_only"] > 500
    human = list(simulate(50, n_genes=15000, random_state=0).var_names)
    assert species_evidence(human)["verdict"] == "human"


def test_real_human_names_are_not_flagged(shared_data):
    """A Cell Ranger GRCh38 gene list (33,694 names, outdated ones included) stays human."""
    import anndata as ad

    p = shared_data / "breast_tumour_302cells_counts.h5ad"
    if not p.exists():
        pytest.skip(f"{p} not available (shared data)")
    ev = species_evidence(list(ad.read_h5ad(p, backed="r").var_names))
    assert ev["verdict"] == "human", ev


def test_read_warns_and_records(tmp_path, caplog):
    a = simulate(300, n_genes=15000, species="mouse", random_state=0)
    a.var_names = [g.upper() for g in a.var_names]
    p = tmp_path / "upper_mouse.h5ad"
    a.write_h5ad(p)
    with caplog.at_level(logging.WARNING, logger="cafclassify"):
        r = read(p)
    rec = r.uns[K.UNS][K.UNS_READ]
    assert rec["species_warning"]["kind"] == "ambiguous_species"
    assert any("mouse-only genes" in m.message and m.levelno == logging.WARNING for m in caplog.records)
    from cafclassify.report._warnings import collect_warnings

    assert any(w["key"] == "species" for w in collect_warnings(r))
    h = simulate(300, n_genes=3000, random_state=0)
    q = tmp_path / "human.h5ad"
    h.write_h5ad(q)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="cafclassify"):
        r2 = read(q, species="mouse")
    assert r2.uns[K.UNS][K.UNS_READ]["species_warning"]["kind"] == "declared_species_mismatch"
    assert any("look human" in m.message for m in caplog.records)
    assert read(q).uns[K.UNS][K.UNS_READ]["species_warning"] is None


def test_model_species_mismatch_is_a_warning(caplog):
    import anndata as ad

    with caplog.at_level(logging.WARNING, logger="cafclassify"):
        rec = species_mismatch("mouse", "human", model_path="m.joblib")
    assert rec["kind"] == "model_species_mismatch"
    assert any(r.levelno == logging.WARNING and "orthologue" in r.message for r in caplog.records)
    assert species_mismatch("human", "human") is None and species_mismatch("unknown", "human") is None
    a = ad.AnnData(uns={K.UNS: {K.UNS_CLASSIFY: {"gene_overlap": {"data_species": "human"}}}})
    assert note_model_species(a, "mouse")["data_species"] == "human"
    assert a.uns[K.UNS][K.UNS_CLASSIFY]["species_warning"]["model_species"] == "mouse"
