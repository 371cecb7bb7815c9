"""Tests of CafModel persistence and transfer (cafclassify.model)."""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest
import scanpy as sc

from cafclassify import _keys as K
from cafclassify._errors import ModelError
from cafclassify.datasets import simulate
from cafclassify.model import FORMAT_VERSION, CafModel
from cafclassify.scoring import score
from cafclassify.tl._classify import classify, train


@pytest.fixture(scope="module")
def data():
    a = simulate(2500, n_genes=2500, random_state=21)
    sc.pp.normalize_total(a, target_sum=1e4)
    sc.pp.log1p(a)
    a.obs[K.OBS_LINEAGE] = a.obs["true_lineage"].astype(str)
    score(a, "caf_v1", method="ucell")
    return a


@pytest.mark.parametrize(
    ("estimator", "calibration"),
    [("logreg", "temperature"), ("logreg", "isotonic"), ("hgb", "temperature")],
)
def test_save_load_identical(data, tmp_path, estimator, calibration):
    model = train(data, estimator=estimator, calibration=calibration, n_hvg=150, cv=3)
    path = model.save(tmp_path / "m.cafmodel")
    loaded = CafModel.load(path)
    assert loaded.classes == model.classes and loaded.genes == model.genes
    assert loaded.summary["cv"]["macro_f1"] == pytest.approx(model.summary["cv"]["macro_f1"])
    a = classify(data, model, copy=True)
    b = classify(data, loaded, copy=True)
    c = classify(data, str(path), copy=True)  # a path works too
    assert (a.obs[K.OBS_SUBTYPE] == b.obs[K.OBS_SUBTYPE]).all()
    np.testing.assert_array_equal(a.obsm[K.OBSM_SUBTYPE_PROBA].to_numpy(),
                                  b.obsm[K.OBSM_SUBTYPE_PROBA].to_numpy())
    np.testing.assert_array_equal(b.obsm[K.OBSM_SUBTYPE_PROBA].to_numpy(),
                                  c.obsm[K.OBSM_SUBTYPE_PROBA].to_numpy())
    # the file holds no pickle: metadata is JSON, arrays load with allow_pickle=False
    with zipfile.ZipFile(path) as zf:
        meta = json.loads(zf.read("metadata.json"))
    assert meta["format_version"] == FORMAT_VERSION
    assert meta["signature_sha256"] == model.signature_sha256 != ""


def test_newer_format_version_refused(data, tmp_path):
    model = train(data, n_hvg=100, cv=3)
    path = model.save(tmp_path / "m.cafmodel")
    newer = tmp_path / "newer.cafmodel"
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(newer, "w") as dst:
        for name in src.namelist():
            raw = src.read(name)
            if name == "metadata.json":
                meta = json.loads(raw)
                meta["format_version"] = FORMAT_VERSION + 1
                raw = json.dumps(meta).encode()
            dst.writestr(name, raw)
    with pytest.raises(ModelError, match="newer"):
        CafModel.load(newer)


def test_not_a_model_file(tmp_path):
    bad = tmp_path / "bad.cafmodel"
    bad.write_text("hello")
    with pytest.raises(ModelError, match="not a cafclassify model"):
        CafModel.load(bad)
    with pytest.raises(ModelError, match="not found"):
        CafModel.load(tmp_path / "missing.cafmodel")


def test_low_gene_overlap_refused(data, tmp_path):
    model = train(data, n_hvg=200, cv=3)
    path = model.save(tmp_path / "m.cafmodel")
    loaded = CafModel.load(path)
    other = data.copy()
    keep = set(loaded.genes[: len(loaded.genes) // 5])  # only 20 % of the model genes survive
    other.var_names = [g if g in keep or g not in loaded.genes else f"X{g}" for g in other.var_names]
    with pytest.raises(ModelError) as exc:
        classify(other, loaded)
    msg = str(exc.value)
    assert "m.cafmodel" in msg and "20%" in msg
    # with a lower minimum it runs and reports the overlap
    classify(other, loaded, min_gene_overlap=0.1)
    ov = other.uns[K.UNS]["classify"]["gene_overlap"]
    assert ov["overlap"] == pytest.approx(len(keep) / len(loaded.genes))


def test_transfer_to_mouse_maps_orthologues(data):
    model = train(data, n_hvg=200, cv=3)
    m = simulate(1500, species="mouse", n_genes=2500, random_state=2)
    sc.pp.normalize_total(m, target_sum=1e4)
    sc.pp.log1p(m)
    m.obs[K.OBS_LINEAGE] = m.obs["true_lineage"].astype(str)
    classify(m, model, min_gene_overlap=0.0)
    ov = m.uns[K.UNS]["classify"]["gene_overlap"]
    assert ov["species_mapping"] == "human->mouse"
    assert ov["n_found"] > 0
