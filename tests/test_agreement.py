"""Agreement of calls with labels (cafclassify.agreement) and the notebook plots (cafclassify.pl)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import anndata as ad
import numpy as np
import pandas as pd
import pytest

import cafclassify
from cafclassify import _keys as K
from cafclassify._errors import ConfigError
from cafclassify.tl._agreement import agreement_table, named_call

from _report_fixtures import make_annotated


def _toy() -> ad.AnnData:
    """10 labelled cells with known calls: 4 myCAF-like (3 myCAF, 1 iCAF), 2 iCAF-like
    (both iCAF), 3 PVL (2 not_fibroblast, 1 vCAF), 1 'Gliacyte' (names nothing)."""
    labels = ["CAFs myCAF-like"] * 4 + ["CAFs MSC iCAF-like"] * 2 + ["PVL Immature"] * 3 + ["Gliacyte"]
    calls = ["myCAF", "myCAF", "myCAF", "iCAF", "iCAF", "iCAF", K.NOT_FIBROBLAST, K.NOT_FIBROBLAST,
             "vCAF", K.NOT_FIBROBLAST]
    lineage = ["fibroblast"] * 6 + ["mural", "mural", "fibroblast", "other"]
    a = ad.AnnData(np.zeros((10, 1), np.float32))
    a.obs["celltype_minor"] = pd.Categorical(labels)
    a.obs[K.OBS_SUBTYPE] = pd.Categorical(calls)
    a.obs[K.OBS_LINEAGE] = pd.Categorical(lineage)
    return a


def test_labels_name_calls_by_word_and_by_lineage():
    subtypes = ["myCAF", "iCAF", "vCAF", K.UNASSIGNED, K.NOT_FIBROBLAST]
    assert named_call("CAFs myCAF-like", subtypes) == "myCAF"
    assert named_call("CAFs MSC iCAF-like", subtypes) == "iCAF"
    assert named_call("PVL Immature", subtypes) == K.NOT_FIBROBLAST  # a non-fibroblast lineage
    assert named_call("Gliacyte", subtypes) is None
    assert named_call("none", subtypes) == K.NOT_FIBROBLAST  # simulate()'s truth outside CAFs
    lineages = list(K.LINEAGES)
    assert named_call("PVL Immature", lineages) == "mural"
    assert named_call("CAFs myCAF-like", lineages) == "fibroblast"
    assert named_call("T cells CD4+", lineages) == "immune"
    assert named_call("Endothelial ACKR1", lineages) == "endothelial"
    assert named_call("myCAF", ["iCAF"]) is None  # no substring matching: iCAF is not in myCAF


def test_agreement_counts_and_rates_on_known_cells():
    res = cafclassify.agreement(_toy(), "celltype_minor")
    assert res.crosstab.loc["CAFs myCAF-like", "myCAF"] == 3
    assert res.crosstab.loc["CAFs myCAF-like", "iCAF"] == 1
    assert res.crosstab.to_numpy().sum() == 10
    pl = res.per_label.set_index("label")
    assert pl.loc["CAFs myCAF-like", "agreement"] == pytest.approx(0.75)
    assert pl.loc["CAFs MSC iCAF-like", "agreement"] == pytest.approx(1.0)
    assert pl.loc["PVL Immature", "agreement"] == pytest.approx(2 / 3)
    assert np.isnan(pl.loc["Gliacyte", "agreement"])
    # 9 cells have a label that names a call; 3 + 2 + 2 = 7 got it
    assert res.n_named == 9 and res.overall == pytest.approx(7 / 9)
    pc = res.per_call.set_index("call")
    assert pc.loc["iCAF", "agreement"] == pytest.approx(2 / 3)  # 2 of 3 iCAF calls are iCAF-like
    tidy = res.to_frame()
    assert list(tidy.columns) == ["label", "call", "n_cells", "fraction_of_label", "named_call"]
    assert tidy["n_cells"].sum() == 10


def test_ari_is_one_for_the_same_grouping_and_subset_restricts_cells():
    a = _toy()
    a.obs["same"] = a.obs[K.OBS_SUBTYPE].astype(str)
    assert cafclassify.agreement(a, "same").ari == pytest.approx(1.0)
    fib = cafclassify.agreement(a, "celltype_minor", subset="fibroblasts")
    assert fib.n_cells == 7 and fib.subset == "cells the gate called fibroblast"
    lin = cafclassify.agreement(a, "celltype_minor", key=K.OBS_LINEAGE)
    assert lin.per_label.set_index("label").loc["PVL Immature", "named_call"] == "mural"
    with pytest.raises(ConfigError, match="label column 'nope'"):
        cafclassify.agreement(a, "nope")
    table = agreement_table(a, "celltype_minor")
    assert set(table["level"]) == {"lineage", "subtype"}
    assert list(agreement_table(a, None).columns)[:3] == ["level", "label", "call"]


def test_agreement_on_the_simulated_truth_matches_a_direct_count():
    a = make_annotated(600, random_state=3)
    res = cafclassify.agreement(a, "true_subtype", subset="fibroblasts")
    fib = (a.obs[K.OBS_LINEAGE] == "fibroblast").to_numpy()
    truth = a.obs["true_subtype"].astype(str).to_numpy()[fib]
    calls = a.obs[K.OBS_SUBTYPE].astype(str).to_numpy()[fib]
    named = np.array([named_call(t, list(set(calls))) is not None for t in truth])
    assert res.overall == pytest.approx((truth == calls)[named].mean())


def test_plots_return_axes_and_save(tmp_path):
    a = make_annotated(500, random_state=1)
    for fn, kw in ((cafclassify.pl.lineages, {}), (cafclassify.pl.subtypes, {}),
                   (cafclassify.pl.signature_scores, {}), (cafclassify.pl.composition, {"sample_key": "sample"}),
                   (cafclassify.pl.agreement, {"label_key": "true_subtype"})):
        out = tmp_path / f"{fn.__name__}.png"
        ax = fn(a, save=out, **kw)
        assert isinstance(ax, matplotlib.axes.Axes)
        assert out.read_bytes()[:4] == b"\x89PNG"
        matplotlib.pyplot.close(ax.figure)
    fig, ax = matplotlib.pyplot.subplots()
    assert cafclassify.pl.composition(a, ax=ax) is ax  # draws on the given Axes
    bars = [p for p in ax.patches if p.get_width() > 0]
    assert sum(p.get_width() for p in bars) == pytest.approx(1.0)  # one bar: fractions sum to 1
    with pytest.raises(ConfigError, match="obsm\\['X_tsne'\\]"):
        cafclassify.pl.lineages(a, basis="X_tsne")
    b = a.copy()
    del b.obs[K.OBS_SUBTYPE]
    with pytest.raises(ConfigError, match="caf_subtype"):
        cafclassify.pl.subtypes(b)
