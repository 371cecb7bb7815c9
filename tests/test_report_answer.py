"""The report answers first: headline, composition, trust checks, refusal card, agreement;
figure fixes (QC panels, lineage map, palettes); the summary lists every dataset."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

import cafclassify
from cafclassify import _keys as K
from cafclassify._errors import DataError
from cafclassify.get import proportion_table
from cafclassify.report import write_report, write_summary
from cafclassify.report._colors import LINEAGE_COLORS, SUBTYPE_COLORS
from cafclassify.report._sections import _cluster_margin, _numeric_sort, _qc_panel_words
from cafclassify.tl._insufficient import mark_classification_skipped

from _report_fixtures import make_annotated

REFUSAL = ("obsm['caf_scores']: fewer than two subtype scores are available (['meCAF']). What to do: "
           "score the subtype sets (cafclassify.score) with enough gene coverage.")


def _refused(a, **kwargs):
    """Classification skipped; ``perivascular="separate"`` (no vCAF call to keep) unless given."""
    mark_classification_skipped(a, DataError(REFUSAL), **{"perivascular": "separate", **kwargs})
    return a


def _first_screen(html: str) -> str:
    return html[html.index('<section id="answer">'):html.index('<section id="warnings">')]


def test_first_screen_answers_with_composition_trust_and_labels(tmp_path):
    a = make_annotated(800, random_state=0)
    html = write_report(a, tmp_path / "r.html", label_key="true_subtype").read_text()
    top = _first_screen(html)
    n_fib = int((a.obs[K.OBS_LINEAGE] == "fibroblast").sum())
    assert f"{a.n_obs:,} cells; {n_fib:,} fibroblasts" in top
    assert 'data-figure="subtype composition"' in top
    assert 'id="trust"' in top and "fibroblasts unassigned" in top
    assert 'data-figure="agreement (subtype)"' in top  # calls next to the labels, on the first screen
    assert "agreement with the simulated truth" in top and "accuracy" not in top
    res = cafclassify.agreement(a, "true_subtype", subset="fibroblasts")
    assert f'data-key="agreement_subtype" data-value="{res.overall}"' in top
    assert 'id="refusal"' not in html
    # provenance is folded at the end, after the scores
    assert html.index('id="provenance-details"') > html.index('<section id="scores">')
    assert re.search(r'<details id="provenance-details">', html)


def test_refused_dataset_gets_one_card_with_reason_and_fix(tmp_path):
    a = _refused(make_annotated(500, random_state=1))
    html = write_report(a, tmp_path / "r.html").read_text()
    top = _first_screen(html)
    assert 'id="refusal"' in top and "No CAF subtypes were called" in top
    assert "cafclassify score" in top and "--min-coverage" in top  # the fix, in CLI terms
    assert "min_coverage: 0.2" in top  # ... and in config terms
    assert 'id="unassigned-fraction"' not in top  # no meaningless unassigned card
    # the reason is not repeated as a raw warning bullet, and sections say why they are empty
    assert "subtype classification was skipped" not in html
    assert "Not run: Only" in html and "No classifier was trained: Only" in html
    assert "fewer than two subtype scores are available" in html  # the classifier's own words, in small print
    assert 'id="state-flags"' in html  # no subtype column, but the flags are written and shown
    assert "the signature scores and the LTBP2+ and cell-state flags below are complete" in top


ONE_CLASS = ("adata: only 1 subtype(s) (myCAF) have at least 10 confident seed cells (cells passing the seed "
             "rule: {'myCAF': 23, 'iCAF': 5}); a classifier needs two or more. iCAF: 5 cells carry it, more than "
             "random gene sets of its size and expression level (2, 99.2 % quantile), but only 7 pass the "
             "neighbourhood rule. What to do: read the per-cell subtype scores (obsm['caf_scores']); check the "
             "gate and the subtype gene coverage.")


def test_a_skipped_classifier_keeps_the_compartments_vcaf_calls(tmp_path):
    """Skipped fibroblast classifier, default reading: the mural cells of tumour tissue stay vCAF
    (the gate's compartment needs no classifier), every fibroblast is 'unassigned', and the report,
    the summary and the CSV say that fibroblast subtypes were not called, and why."""
    a = make_annotated(500, random_state=1)
    lin = a.obs[K.OBS_LINEAGE].astype(str).to_numpy()
    a.obs[K.OBS_SUBTYPE] = "myCAF"  # a stale call of an earlier run must not survive
    mark_classification_skipped(a, DataError(ONE_CLASS))
    calls = a.obs[K.OBS_SUBTYPE].astype(str).to_numpy()
    assert (calls[lin == "mural"] == "vCAF").all() and (lin == "mural").sum() > 0
    assert (calls[lin == "fibroblast"] == K.UNASSIGNED).all()
    assert (calls[~np.isin(lin, ["mural", "fibroblast"])] == K.NOT_FIBROBLAST).all()
    conf = a.obs[K.OBS_SUBTYPE_CONF].to_numpy()
    gate_conf = pd.to_numeric(a.obs[K.OBS_LINEAGE_CONF], errors="coerce").fillna(1.0).to_numpy()
    np.testing.assert_allclose(conf[lin == "mural"], gate_conf[lin == "mural"])
    assert np.isnan(conf[lin != "mural"]).all()
    assert list(a.obsm[K.OBSM_SUBTYPE_PROBA].columns) == ["vCAF"]
    sec = a.uns[K.UNS][K.UNS_CLASSIFY]
    assert sec["status"] == "skipped" and sec["perivascular"]["n_vcaf"] == (lin == "mural").sum()
    assert sec["unassigned"]["meaning"].startswith("not classified")
    html = write_report(a, tmp_path / "r.html").read_text()
    top = _first_screen(html)
    assert "No fibroblast subtypes were called for this dataset; its perivascular (mural) cells keep" in top
    assert "no fibroblast subtypes called (see below)" in top and "called vCAF by the gate&#39;s compartment" in top
    assert "At most one subtype has enough fibroblasts" in top  # not the gene-coverage card
    assert "--min-coverage" not in top
    assert 'id="unassigned-fraction"' not in top and "many_unassigned" not in html
    assert "Fibroblast subtypes not called" in html and 'data-figure="subtype embedding"' not in html
    assert 'data-subtype-count="mural"' not in html  # no cell: an empty category is not a result
    assert f'data-subtype-count="vCAF" data-value="{int((lin == "mural").sum())}"' in html
    # the LTBP2+ axis and the state flags do not need the classifier: shown for all fibroblasts
    flags = html[html.index('id="state-flags"'):html.index("</table>", html.index('id="state-flags"'))]
    assert "all fibroblasts" in flags and "unassigned" not in flags
    n_cyc = int(a.obs[K.OBS_CYCLING].to_numpy()[lin == "fibroblast"].sum())
    assert n_cyc > 0 and f'data-flag-count="cycling" data-value="{n_cyc}"' in flags
    assert "ONE seed gene" in a.uns[K.UNS][K.UNS_CLASSIFY]["ltbp2"]["caveat"]
    write_summary({"skipped": a}, tmp_path / "s.html")
    table = pd.read_csv(tmp_path / "s_proportions.csv")
    assert set(table["subtype"]) == {"vCAF", K.UNASSIGNED}
    assert table["status"].str.startswith("vCAF only, fibroblasts not subtyped: fewer than two subtypes").all()
    # the library's rating of the vCAF definition travels with the kept calls, as after a classification
    assert set(table.loc[table["subtype"] == "vCAF", "definition_rating"]) == {"Moderate"}
    # the Wu/Cords reading has no call to keep: nothing is written
    b = make_annotated(500, random_state=1)
    mark_classification_skipped(b, DataError(ONE_CLASS), perivascular="separate")
    assert K.OBS_SUBTYPE not in b.obs and K.OBSM_SUBTYPE_PROBA not in b.obsm


NO_CLASS = ("adata: only 0 subtype(s) (none) have at least 10 confident seed cells (cells passing the seed "
            "rule: {'myCAF': 0, 'iCAF': 0}); a classifier needs two or more. myCAF: 0 cells carry it, random "
            "gene sets of its size and expression level reach 3 (98.8 % quantile). What to do: ...")


def test_no_evidenced_subtype_gets_its_own_words_and_names_a_small_sample(tmp_path):
    """No subtype evidenced at all (the ovarian file's 20 fibroblasts): the card says none, not
    'at most one', and names the sample's size when it is under the report's 50."""
    a = make_annotated(500, random_state=1)
    mark_classification_skipped(a, DataError(NO_CLASS))
    top = _first_screen(write_report(a, tmp_path / "r.html").read_text())
    assert "No subtype has enough fibroblasts that clearly carry it" in top and "At most one" not in top
    assert "fewer than 50 here" not in top
    lin = a.obs[K.OBS_LINEAGE].astype(str).to_numpy()
    keep = (lin != "fibroblast") | (np.cumsum(lin == "fibroblast") <= 20)  # 20 fibroblasts
    b = a[keep].copy()
    mark_classification_skipped(b, DataError(NO_CLASS))
    top = _first_screen(write_report(b, tmp_path / "r2.html").read_text())
    assert "A small sample (fewer than 50 here), or shallow cells" in top
    assert "cafclassify train a.h5ad b.h5ad" in top  # the pooled-model fix
    write_summary({"none": b}, tmp_path / "s.html")  # the summary reads the reason the same way
    status = pd.read_csv(tmp_path / "s_proportions.csv")["status"]
    assert status.str.startswith("vCAF only, fibroblasts not subtyped: fewer than two subtypes").all()


def test_warnings_are_grouped_and_coverage_is_one_plain_sentence(tmp_path):
    a = make_annotated(600, random_state=0)
    html = write_report(a, tmp_path / "r.html").read_text()
    box = html[html.index('<section id="warnings">'):html.index("</section>", html.index('<section id="warnings">'))]
    assert box.count('data-warning="low_coverage"') == 1
    assert '<span class="wg">Gene coverage</span>' in box
    assert "status: ok" not in box and "no_genes_found" not in box


def test_qc_panels_follow_the_data():
    labels, drop, notes = _qc_panel_words({"value_type": "lognorm", "matrix": "X", "n_mt_genes": 0})
    assert "not counts" in labels[K.OBS_TOTAL_COUNTS] and drop == [K.OBS_PCT_MT]
    labels, drop, notes = _qc_panel_words({"value_type": "counts", "matrix": "layers['counts']",
                                           "n_mt_genes": 13})
    assert labels == {} and drop == [] and notes == {}


def test_lineage_map_uses_the_cluster_margin_and_clusters_sort_as_numbers():
    a = make_annotated(300, random_state=0)
    a.obs[K.OBS_LINEAGE_CLUSTER] = pd.Categorical(np.where(np.arange(a.n_obs) % 2, "10", "2"))
    gate = {"clusters": pd.DataFrame({"cluster": ["10", "2"], "lineage": ["other", "immune"],
                                      "margin": [0.0, 0.9]})}
    m = _cluster_margin(a, gate)
    assert np.allclose(m[::2], 0.9) and np.allclose(m[1::2], 0.0)  # 'other' is not certain
    # a contested call (most cells with evidence name other lineages) is not clear either
    gate["clusters"]["contested"] = [False, True]
    assert np.allclose(_cluster_margin(a, gate), 0.0)
    df = pd.DataFrame({"cluster": ["0", "1", "10", "11", "2"]})
    assert list(_numeric_sort(df, "cluster")["cluster"]) == ["0", "1", "2", "10", "11"]


def _rgb(h):
    return np.array([int(h[i:i + 2], 16) for i in (1, 3, 5)], float)


def test_lineage_and_subtype_palettes_do_not_collide():
    subtypes = ["myCAF", "iCAF", "apCAF", "meCAF", "vCAF", "dCAF", "LTBP2_CAF", K.UNASSIGNED]
    lineages = list(K.LINEAGES)
    dist = min(np.linalg.norm(_rgb(LINEAGE_COLORS[lin]) - _rgb(SUBTYPE_COLORS[s]))
               for lin in lineages for s in subtypes)
    assert dist > 60, dist  # the old fibroblast/vCAF pair was ~30 apart


def test_summary_lists_datasets_that_were_not_subtyped(tmp_path):
    ok = make_annotated(400, random_state=0)
    ref = _refused(make_annotated(400, random_state=1))
    out = write_summary({"ok": ok, "refused": ref}, tmp_path / "s.html")
    table = pd.read_csv(tmp_path / "s_proportions.csv")
    row = table[table["dataset"] == "refused"]
    assert len(row) == 1 and row["status"].iloc[0].startswith("not subtyped: too few subtype gene sets")
    assert row["n_cells"].isna().all()
    assert set(table.loc[table["dataset"] == "ok", "status"]) == {"subtyped"}
    html = out.read_text()
    assert 'data-dataset="refused"' in html and 'data-status="not-subtyped"' in html


def test_proportions_leave_unmeasured_lineages_empty():
    a = make_annotated(300, random_state=0)
    lin = a.obs[K.OBS_LINEAGE].astype(str).replace("epithelial", "other")  # the gate could not call it
    a.obs[K.OBS_LINEAGE] = pd.Categorical(lin, categories=list(K.LINEAGES))
    a.uns[K.UNS][K.UNS_GATE]["sets_used"] = np.array(["fibroblast", "mural", "immune", "endothelial"])
    t = proportion_table(a, sample_key="sample")
    epi = t[(t["level"] == "lineage") & (t["label"] == "epithelial")]
    assert len(epi) and epi["fraction"].isna().all() and epi["n_cells"].isna().all()
    assert epi[["ci95_low", "ci95_high"]].isna().all().all()  # no interval around an unknown
    imm = t[(t["level"] == "lineage") & (t["label"] == "immune")]
    assert imm["fraction"].notna().all() and (imm["n_cells"] > 0).any()
    del a.uns[K.UNS][K.UNS_GATE]["sets_used"]  # no record of the sets: 0 stays 0
    t = proportion_table(a, sample_key="sample")
    assert (t[(t["level"] == "lineage") & (t["label"] == "epithelial")]["n_cells"] == 0).all()


def test_api_classify_skips_or_raises_and_stamps_its_own_provenance(monkeypatch):
    import cafclassify._api as api

    def refuse(adata, *args, **kwargs):
        raise DataError(REFUSAL)

    monkeypatch.setattr(api, "_tl_classify", refuse)
    a = make_annotated(200, random_state=0)
    assert cafclassify.classify(a) is None  # default on_insufficient="skip"
    assert a.uns[K.UNS][K.UNS_CLASSIFY]["status"] == "skipped"
    # no invented fibroblast subtype (stale ones removed); the mural cells keep their vCAF call
    calls = a.obs[K.OBS_SUBTYPE].astype(str)
    lin = a.obs[K.OBS_LINEAGE].astype(str)
    assert set(calls[lin == "fibroblast"]) == {K.UNASSIGNED} and set(calls[lin == "mural"]) == {"vCAF"}
    prov = a.uns[K.UNS][K.UNS_PROVENANCE]
    assert prov["step"] == "classify" and "Python API" in prov["command"]
    assert len(prov["history"]) == 1  # the fixture's earlier record moved into the history
    with pytest.raises(DataError):
        cafclassify.classify(make_annotated(200, random_state=0), on_insufficient="error")
    import inspect

    assert inspect.signature(cafclassify.classify).parameters["on_insufficient"].default == "skip"


def test_calls_the_labels_contradict_are_warned_about():
    from cafclassify.report._warnings import collect_warnings

    a = make_annotated(600, random_state=0)
    calls = a.obs[K.OBS_SUBTYPE].astype(str)
    a.obs["lab"] = calls.to_numpy()
    assert not [w for w in collect_warnings(a, "lab") if w["key"] == "low_agreement"]
    swapped = calls.map(lambda c: {"myCAF": "iCAF", "iCAF": "myCAF"}.get(c, c))
    a.obs["lab"] = swapped.to_numpy()  # every myCAF and iCAF call contradicted by the labels
    warns = sorted(w["text"] for w in collect_warnings(a, "lab") if w["key"] == "low_agreement")
    fib = (a.obs[K.OBS_LINEAGE] == "fibroblast").to_numpy()
    n_i, n_my = int(((calls == "iCAF") & fib).sum()), int(((calls == "myCAF") & fib).sum())
    assert len(warns) == 2
    assert f"Of the {n_i:,} labelled fibroblasts called iCAF, only 0 (0%)" in warns[0]
    assert f"Of the {n_my:,} labelled fibroblasts called myCAF, only 0 (0%)" in warns[1]
    assert all(w["group"] == "Agreement with labels" for w in collect_warnings(a, "lab")
               if w["key"] == "low_agreement")


def _with_mural_calls(a):
    """Half the mural cells called vCAF (the 'vcaf' reading), half 'mural' (normal tissue);
    a few fibroblasts without a call (NaN), which are no CAFs."""
    lin = a.obs[K.OBS_LINEAGE].astype(str).to_numpy()
    sub = a.obs[K.OBS_SUBTYPE].astype(str).to_numpy().copy()
    mural = np.flatnonzero(lin == "mural")
    assert mural.size >= 10
    sub[mural[::2]] = "vCAF"
    sub[mural[1::2]] = "mural"
    cats = list(dict.fromkeys([*a.obs[K.OBS_SUBTYPE].cat.categories, "vCAF", "mural"]))
    fib = np.flatnonzero(lin == "fibroblast")
    sub[fib[:5]] = None
    a.obs[K.OBS_SUBTYPE] = pd.Categorical(sub, categories=cats)
    return a, sub


def test_caf_fractions_are_the_same_in_the_table_the_summary_and_the_report(tmp_path):
    """CAFs are the fibroblasts plus the mural cells called vCAF, everywhere (pl.composition's
    definition): before, the report's subtype table divided by the fibroblasts only (breast
    example: vCAF 320 = '84.7 %', fractions summing to 185 %) and the summary left the mural
    vCAFs out (vCAF 0 %), while the first screen counted them (46 %)."""
    a, sub = _with_mural_calls(make_annotated(800, random_state=3))
    caf = ~np.isin(sub, [K.NOT_FIBROBLAST, "mural", None])
    samples = a.obs["sample"].astype(str).to_numpy()
    expected = (pd.crosstab(samples[caf], sub[caf], normalize="index").stack().rename("fraction"))
    # proportions.csv (cafclassify.get.proportion_table)
    t = proportion_table(a, sample_key="sample")
    t = t[t["level"] == "subtype"].set_index(["sample", "label"])["fraction"]
    assert "mural" not in set(t.index.get_level_values(1))
    pd.testing.assert_series_equal(t.loc[expected.index], expected, check_names=False)
    # the summary's table
    write_summary({"d": a}, tmp_path / "s.html")
    s = pd.read_csv(tmp_path / "s_proportions.csv").set_index(["sample", "subtype"])["fraction"]
    pd.testing.assert_series_equal(s.loc[expected.index], expected, check_names=False)
    assert "mural" not in set(s.index.get_level_values(1))
    # the report's subtype table: fractions of the CAFs, summing to 100 %
    html = write_report(a, tmp_path / "r.html", max_cells_plot=200).read_text()
    table = re.search(r'<table[^>]*id="subtype-counts".*?</table>', html, re.S).group(0)
    pct = [float(x) for x in re.findall(r'<td class="num">([\d.]+)%</td>', table)]
    assert sum(pct) == pytest.approx(100.0, abs=0.2)
    bounds = [(float(a), float(b)) for a, b in re.findall(r'<td class="num interval">([\d.]+)% – ([\d.]+)%</td>', table)]
    assert len(bounds) == len(pct) and all(lo <= p <= hi for (lo, hi), p in zip(bounds, pct, strict=True))
    vcaf = int(caf.sum()) and (sub[caf] == "vCAF").mean()
    assert f"{vcaf:.1%}" in table
    assert f"fractions of the {int(caf.sum()):,} CAFs" in html
