"""Tests of the HTML report and the summary page (without a browser)."""

from __future__ import annotations

import base64
import hashlib
import re

import anndata as ad
import numpy as np
import pandas as pd
import pytest

import cafclassify
from cafclassify import _keys as K
from cafclassify._errors import ConfigError, InputFileError
from cafclassify.report import write_report, write_summary
from cafclassify.report._colors import SUBTYPE_COLORS, color_for
from cafclassify.report._common import _coverage_frames, key_numbers
from cafclassify.report._subtypes import _reliability_curves
from cafclassify.report._warnings import collect_warnings

from _report_fixtures import make_annotated


@pytest.fixture(scope="module")
def annotated():
    return make_annotated(1000, random_state=0)


def _imgs(html: str) -> list[str]:
    return re.findall(r'<img src="([^"]+)"', html)


def _data(html: str, attr: str) -> dict[str, int]:
    return {k: int(v) for k, v in re.findall(rf'data-{attr}="([^"]+)" data-value="(\d+)"', html)}


def test_report_is_self_contained_and_counts_use_all_cells(annotated, tmp_path):
    before_obs = annotated.obs.copy()
    before_uns = set(annotated.uns[K.UNS])
    out = write_report(annotated, tmp_path / "r.html", max_cells_plot=300)
    html = out.read_text()
    # self-contained: no scripts, stylesheets, or resources from anywhere but data: URIs
    assert "<script" not in html.lower() and "<link" not in html.lower()
    for src in re.findall(r'(?:src|href)="([^"]+)"', html):
        assert src.startswith(("data:image/png;base64,", "#")), src
    imgs = _imgs(html)
    assert len(imgs) >= 10
    for uri in imgs:
        png = base64.b64decode(uri.split(",", 1)[1])
        assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert "report-errors" not in html and 'data-status="not-run"' not in html
    # numbers on all 1000-ish cells although only 300 are plotted
    assert re.search(rf'data-key="n_cells" data-value="{annotated.n_obs}"', html)
    n_fib = int((annotated.obs[K.OBS_LINEAGE] == "fibroblast").sum())
    assert re.search(rf'data-key="n_fibroblasts" data-value="{n_fib}"', html)
    expected = {str(k): int(v) for k, v in annotated.obs[K.OBS_SUBTYPE].value_counts().items()
                if v or str(k) != "mural"}  # an empty 'mural' row of the vcaf reading is not shown
    assert _data(html, "subtype-count") == expected
    assert sum(expected.values()) == annotated.n_obs
    # the input is not modified
    pd.testing.assert_frame_equal(annotated.obs, before_obs)
    assert set(annotated.uns[K.UNS]) == before_uns
    # lazy top-level access
    assert cafclassify.write_report is write_report
    assert cafclassify.write_summary is write_summary


def test_report_from_h5ad_path_leaves_file_untouched(annotated, tmp_path):
    h5 = tmp_path / "a.h5ad"
    annotated.write_h5ad(h5)
    digest = hashlib.sha256(h5.read_bytes()).hexdigest()
    out = write_report(h5, tmp_path / "sub" / "a.html", title="My <tumour>", max_cells_plot=400)
    html = out.read_text()
    assert hashlib.sha256(h5.read_bytes()).hexdigest() == digest
    assert "<title>My &lt;tumour&gt;</title>" in html  # escaped
    # shapes after the h5ad round trip still read: coverage table, QC table, confusion matrix
    assert 'data-set="dCAF"' in html and 'class="low"' in html
    assert 'id="qc-table"' in html and 'data-figure="confusion matrix"' in html
    assert 'data-figure="reliability diagram"' in html
    assert not list(tmp_path.joinpath("sub").glob(".*part*"))  # no temporary file left


def test_bad_inputs_raise_clear_errors(tmp_path, annotated):
    with pytest.raises(InputFileError, match="file not found"):
        write_report(tmp_path / "missing.h5ad", tmp_path / "x.html")
    bad = tmp_path / "bad.h5ad"
    bad.write_text("not hdf5")
    with pytest.raises(InputFileError, match="cannot be read"):
        write_report(bad, tmp_path / "x.html")
    with pytest.raises(ConfigError, match="max_cells_plot"):
        write_report(annotated, tmp_path / "x.html", max_cells_plot=0)
    assert not (tmp_path / "x.html").exists()


def test_unannotated_data_renders_not_run_sections(tmp_path):
    rng = np.random.default_rng(0)
    plain = ad.AnnData(rng.poisson(1.0, size=(60, 30)).astype(np.float32))
    html = write_report(plain, tmp_path / "plain.html").read_text()
    assert html.count('data-status="not-run"') == 6  # qc, gate, coverage, scores, subtypes, classifier
    assert 'data-warning="not_run"' in html
    assert "report-errors" not in html


def test_warnings_follow_the_data(annotated):
    keys = {w["key"] for w in collect_warnings(annotated)}
    # planted in the fixture: dCAF has no cells and no genes; other_lineage has no genes
    assert {"subtype_absent", "low_coverage", "gate"} <= keys
    assert not keys & {"few_fibroblasts", "many_unassigned", "qc_removed", "low_f1", "subtype_unlearnt"}

    # a subtype the seed rule found but could not learn is not reported as absent from the sample
    thin = annotated.copy()
    thin.uns[K.UNS][K.UNS_CLASSIFY] = dict(thin.uns[K.UNS][K.UNS_CLASSIFY],
                                         absent_classes=["meCAF", "dCAF"],
                                         weak_labels={"too_few_to_learn": ["meCAF"]})
    warns = {w["key"]: w["text"] for w in collect_warnings(thin)}
    assert "meCAF" in warns["subtype_unlearnt"] and "dCAF" not in warns["subtype_unlearnt"]
    assert "dCAF" in warns["subtype_absent"] and "meCAF" not in warns["subtype_absent"]
    # vCAF absent from the model while cells are called vCAF (mural cells under the 'vcaf'
    # reading; the fixture has 29), and an empty 'mural' category: neither is "no cells"
    thin.uns[K.UNS][K.UNS_CLASSIFY]["absent_classes"] = ["vCAF", "dCAF"]
    thin.obs[K.OBS_SUBTYPE] = thin.obs[K.OBS_SUBTYPE].cat.add_categories(["mural"])
    assert (thin.obs[K.OBS_SUBTYPE] == "vCAF").sum() > 0
    text = {w["key"]: w["text"] for w in collect_warnings(thin)}["subtype_absent"]
    assert "dCAF" in text and "vCAF" not in text and "mural" not in text
    assert "subtype_cells_alone" not in keys
    # the depth of the fibroblasts is named when the data were read as counts, and only then
    deep = thin.copy()
    deep.obs[K.OBS_TOTAL_COUNTS] = np.where(deep.obs[K.OBS_LINEAGE] == "fibroblast", 640.0, 5000.0)
    deep.uns[K.UNS][K.UNS_READ] = {"value_type": "counts"}
    text = {w["key"]: w["text"] for w in collect_warnings(deep)}["subtype_absent"]
    assert "(median 640 counts per fibroblast here)" in text and "not evidence that it is missing" in text
    deep.uns[K.UNS][K.UNS_READ] = {"value_type": "lognorm"}  # a sum of log values is not a depth
    assert "counts per fibroblast" not in {w["key"]: w["text"] for w in collect_warnings(deep)}["subtype_absent"]

    # a class learnt from cells that carry it alone is flagged as resting on thin evidence;
    # one the second reading did not learn is not
    alone = {"apCAF": {"n_cells_alone": 14, "null_q95": 3.0, "n_seeds": 12, "learnt": True},
             "dCAF": {"n_cells_alone": 3, "null_q95": 1.0, "n_seeds": 4, "learnt": False}}
    thin.uns[K.UNS][K.UNS_CLASSIFY]["weak_labels"] = {"too_few_to_learn": ["dCAF"],
                                                      "learnt_from_cells_alone": alone}
    warns = {w["key"]: w["text"] for w in collect_warnings(thin)}
    assert warns["subtype_cells_alone"].startswith("apCAF was learnt from 12 seed cells that carry the programme")
    assert "dCAF" not in warns["subtype_cells_alone"]


def test_classifier_section_tells_unlearnt_from_unsupported(annotated, tmp_path):
    thin = annotated.copy()
    thin.uns[K.UNS][K.UNS_CLASSIFY] = dict(thin.uns[K.UNS][K.UNS_CLASSIFY],
                                         absent_classes=["meCAF", "dCAF"],
                                         weak_labels={"too_few_to_learn": ["meCAF"]})
    html = write_report(thin, tmp_path / "thin.html").read_text()
    unsupported = re.search(r"Subtypes without support[^<]*<strong>([^<]*)</strong>", html).group(1)
    unlearnt = re.search(r'data-key="unlearnt">[^<]*<strong>([^<]*)</strong>', html).group(1)
    assert unsupported == "dCAF" and unlearnt == "meCAF"
    assert "learnt from cells that pass the rule on their own" not in html
    thin.uns[K.UNS][K.UNS_CLASSIFY]["weak_labels"] = {
        "too_few_to_learn": ["meCAF"], "neighbourhood_counts": {"myCAF": 50, "apCAF": 2},
        "candidate_counts": {"myCAF": 40, "apCAF": 2},
        "learnt_from_cells_alone": {"apCAF": {"n_cells_alone": 14, "null_q95": 3.0, "n_seeds": 12,
                                              "learnt": True}}}
    html = write_report(thin, tmp_path / "thin2.html").read_text()
    assert "learnt from cells that pass the rule on their own (apCAF: 14 cells, random gene sets 3)" in html

    bad = annotated.copy()
    lin = np.array(["immune"] * bad.n_obs, dtype=object)
    lin[:12] = "fibroblast"
    bad.obs[K.OBS_LINEAGE] = pd.Categorical(lin, categories=list(K.LINEAGES))
    sub = np.where(lin == "fibroblast", K.UNASSIGNED, K.NOT_FIBROBLAST)
    sub[:2] = "myCAF"
    bad.obs[K.OBS_SUBTYPE] = pd.Categorical(sub)
    bad.obs[K.OBS_LTBP2] = False
    qc = bad.uns[K.UNS][K.UNS_QC]
    qc["table"] = pd.DataFrame({"sample": ["S1"], "n_cells": [2000], "n_kept": [1000], "n_removed": [1000]})
    bad.uns[K.UNS][K.UNS_CLASSIFY]["training"]["cv_macro_f1"] = 0.31
    warns = collect_warnings(bad)
    keys = {w["key"] for w in warns}
    assert {"few_fibroblasts", "many_unassigned", "qc_removed", "ltbp2_thin", "low_f1"} <= keys
    text = " ".join(w["text"] for w in warns)
    assert "Only 12 fibroblasts" in text and "1,000 of 2,000 cells (50%)" in text
    assert "no LTBP2+ fibroblasts" in text and "only 0 LTBP2+" not in text
    # LTBP2 absent from the genes (a panel): say it is not measured, not that its calls are thin
    bad.uns[K.UNS][K.UNS_CLASSIFY]["ltbp2"] = {"status": "LTBP2 not measured", "n_positive": 0,
                                               "caveat": "LTBP2+ CAF calls rest on ONE seed gene"}
    lt = {w["key"]: w for w in collect_warnings(bad)}["ltbp2_thin"]
    assert lt["text"].startswith("LTBP2 is not measured in these data") and lt["level"] == "info"
    assert "ONE seed gene" not in lt["text"]


def test_coverage_reader_accepts_every_shape():
    records = [
        {"set": "myCAF", "n_genes": 4, "n_found": 3, "coverage": 0.75, "found": ["A", "B", "C"],
         "missing": ["D"], "status": "ok"},
        {"set": "dCAF", "n_genes": 2, "n_found": 0, "coverage": 0.0, "found": [], "missing": ["E", "F"],
         "status": "skipped"},
    ]
    as_dict_of_records = {r["set"]: {k: v for k, v in r.items() if k != "set"} for r in records}
    as_frame = pd.DataFrame(records).assign(found=["A;B;C", ""], missing=["D", "E;F"])
    as_str_lists = pd.DataFrame(records).astype(str)  # the gate writes str(list)
    frames = []
    for cov in (records, as_dict_of_records, as_frame, as_str_lists):
        a = ad.AnnData(np.zeros((2, 2), dtype=np.float32))
        a.uns[K.UNS] = {K.UNS_SCORE: {"caf_scores": {"coverage": cov}}}
        df = _coverage_frames(a)["caf_scores"].set_index("set").sort_index()
        frames.append(df)
    for df in frames:
        assert df.loc["myCAF", "found"] == ["A", "B", "C"]
        assert df.loc["dCAF", "missing"] == ["E", "F"]
        assert df.loc["dCAF", "coverage"] == 0.0 and df.loc["myCAF", "n_found"] == 3


def test_reads_the_classifier_record_as_the_classifier_writes_it():
    # shape of cafclassify.tl.classify(): training_summary -> cv / calibration / weak_labels
    rel = {"bin_centre": [0.5, 0.9], "accuracy": [0.4, 0.95], "confidence": [0.5, 0.9], "count": [3, 9]}
    cl = {"params": {"threshold": 0.5}, "absent_classes": ["dCAF"],
          "model": {"classes": ["myCAF", "iCAF", "apCAF"]},
          "ltbp2": {"caveat": "one seed gene"},
          "training_summary": {
              "weak_labels": {"n_seeds": 30, "seed_counts": {"myCAF": 20, "iCAF": 10}},
              "cv": {"macro_f1": 0.7, "labels": ["myCAF", "iCAF"], "confusion_matrix": [[18, 2], [3, 7]],
                     "per_class": {"myCAF": {"precision": 0.86, "recall": 0.9}}},
              "calibration": {"ece_before": 0.1, "ece_after": 0.02, "reliability_before": rel,
                              "reliability_after": rel}}}
    a = make_annotated(300, random_state=2)
    a.uns[K.UNS][K.UNS_CLASSIFY] = cl
    curves = _reliability_curves(cl)
    assert list(curves) == ["before calibration", "after calibration"]
    np.testing.assert_array_equal(curves["after calibration"]["counts"], [3, 9])
    from cafclassify.report._context import _Ctx
    from cafclassify.report._subtypes import _classifier_section

    sec = _classifier_section(_Ctx(a, max_cells_plot=100, random_state=0), key_numbers(a))
    assert sec["macro_f1"] == "0.700" and sec["ece_after"] == "0.020"
    assert [r[0]["text"] for r in sec["seeds"]["rows"]] == ["myCAF", "iCAF"]  # not the total n_seeds
    assert sec["confusion"]["uri"].startswith("data:image/png")  # labels from the cv block (2), not model
    assert sec["absent"] == "dCAF"


@pytest.mark.parametrize("rule", ["evidence", "zscore"])
def test_seed_table_names_the_rule_that_chose_the_seeds(rule):
    """The default seeds come from programme evidence against random gene sets, not from
    marker scores: the seed table's header and note say which rule chose them."""
    from cafclassify.report._context import _Ctx
    from cafclassify.report._subtypes import _classifier_section

    a = make_annotated(300, random_state=2)
    a.uns[K.UNS][K.UNS_CLASSIFY] = {"training_summary": {
        "weak_labels": {"seed_rule": rule, "seed_counts": {"myCAF": 20, "iCAF": 10}},
        "pseudo_label_counts": {"myCAF": 5, "iCAF": 3}}}
    seeds = _classifier_section(_Ctx(a, max_cells_plot=100, random_state=0), key_numbers(a))["seeds"]
    assert seeds["columns"][1] == ("seed cells (evidence)" if rule == "evidence" else "seed cells (markers)")
    assert ("against random gene sets" in seeds["note"]) == (rule == "evidence")
    assert ("marker scores" in seeds["note"]) == (rule == "zscore")
    assert [r[3]["text"] for r in seeds["rows"]] == ["25", "13"]  # seeds + pseudo-labels


def test_reliability_bins_of_a_few_cells_are_not_joined_to_the_curve():
    """A bin of one or two cells has accuracy 0 or 1: joined to the curve it drew a spike
    to 0 in the breast example's report although the ECE was 0.009."""
    import matplotlib.pyplot as plt

    from cafclassify.report._figures import MIN_BIN_CELLS, draw_reliability_curve

    c = {"confidence": np.array([0.55, 0.65, 0.75, 0.95]), "accuracy": np.array([1.0, 0.0, 0.0, 0.99]),
         "counts": np.array([1, 2, 1, 250])}
    fig, ax = plt.subplots()
    draw_reliability_curve(ax, c, color="k", marker="o", label="after")
    joined, apart = ax.lines
    np.testing.assert_array_equal(joined.get_xdata(), [0.95])
    np.testing.assert_array_equal(apart.get_xdata(), [0.55, 0.65, 0.75])
    assert apart.get_linestyle() == "None" and apart.get_markerfacecolor() == "none"
    assert MIN_BIN_CELLS == 10  # the report's caption names this number
    plt.close(fig)
    fig, ax = plt.subplots()  # no counts: every bin joined
    draw_reliability_curve(ax, {k: c[k] for k in ("confidence", "accuracy")}, color="k", marker="o", label="x")
    assert len(ax.lines) == 1 and len(ax.lines[0].get_xdata()) == 4
    plt.close(fig)


def test_umap_is_computed_on_a_subsample_when_none_is_stored(tmp_path):
    a = make_annotated(400, random_state=5, with_umap=False, n_samples=1)
    html = write_report(a, tmp_path / "u.html", max_cells_plot=150).read_text()
    assert "UMAP computed for this report on 150 cells" in html
    assert "X_umap" not in a.obsm  # computed on a copy


def test_summary_table_figure_and_links(tmp_path):
    paths = {}
    for name, seed, ns in (("a", 0, 2), ("b", 1, 1)):
        p = tmp_path / "data" / f"{name}.h5ad"
        p.parent.mkdir(exist_ok=True)
        make_annotated(500, random_state=seed, n_samples=ns).write_h5ad(p)
        paths[name] = p
    reports = {"a": tmp_path / "reports" / "a.html", "b": "https://example.org/b.html"}
    out = write_summary(list(paths.values()), tmp_path / "out" / "summary.html", report_links=reports)
    table = pd.read_csv(tmp_path / "out" / "summary_proportions.csv")
    assert list(table.columns) == ["dataset", "sample", "subtype", "n_cells", "fraction", "status",
                                   "ci95_low", "ci95_high", "definition_rating"]
    assert (table["ci95_low"] <= table["fraction"]).all() and (table["fraction"] <= table["ci95_high"]).all()
    assert set(table["status"]) == {"subtyped"}
    assert (tmp_path / "out" / "summary_proportions.png").read_bytes()[:4] == b"\x89PNG"
    for name, p in paths.items():
        obs = ad.read_h5ad(p).obs
        fib = obs[K.OBS_LINEAGE] == "fibroblast"
        t = table[table["dataset"] == name]
        assert t["n_cells"].sum() == int(fib.sum())
        assert "not_fibroblast" not in set(t["subtype"])
        for (_, g) in t.groupby("sample"):
            assert np.isclose(g["fraction"].sum(), 1.0)
        for _, r in t.iterrows():
            m = fib & (obs["sample"].astype(str) == r["sample"]) & (obs[K.OBS_SUBTYPE] == r["subtype"])
            assert r["n_cells"] == int(m.sum())
    html = out.read_text()
    assert 'href="../reports/a.html"' in html and 'href="https://example.org/b.html"' in html
    assert len(_imgs(html)) == 1
    with pytest.raises(InputFileError, match="not unique"):
        write_summary([("x", paths["a"]), ("x", paths["b"])], tmp_path / "s.html")
    with pytest.raises(InputFileError, match="needs a dataset name"):
        write_summary([ad.read_h5ad(paths["a"])], tmp_path / "s.html")


def test_colours_are_fixed_and_distinct():
    subtypes = ["myCAF", "iCAF", "apCAF", "meCAF", "vCAF", "dCAF", "LTBP2_CAF", K.UNASSIGNED]
    colours = [color_for(s) for s in subtypes]
    assert len(set(colours)) == len(colours)
    assert color_for(K.UNASSIGNED) == SUBTYPE_COLORS[K.UNASSIGNED]
    assert color_for("my_custom_set") == color_for("my_custom_set")  # stable for unknown labels
    assert re.fullmatch(r"#[0-9a-f]{6}", color_for("my_custom_set"))


def test_input_facts_name_the_normalisation_and_the_matrix_read(annotated, tmp_path):
    """How the values were turned into ln(1 + CP10k), and why adata.raw was read, are on
    the report's input table, not only among the read record's other fields."""
    a = annotated.copy()
    rec = dict(a.uns[K.UNS][K.UNS_READ])
    rec["normalization"] = ("log2(1 + x) values of 1e+06 per cell rewritten as ln(1 + x) of "
                            "10000 per cell")
    rec["details"] = {"source_matrix": "raw.X",
                      "source_matrix_reason": "X holds 2000 of the 29733 genes of adata.raw"}
    a.uns[K.UNS] = {**a.uns[K.UNS], K.UNS_READ: rec}
    html = write_report(a, tmp_path / "r.html", max_cells_plot=200).read_text()
    facts = html[html.index('id="input"'):]
    facts = facts[: facts.index("more from the read step")]
    assert re.search(r"normalisation</td>\s*<td[^>]*>log2\(1 \+ x\) values of 1e\+06", facts)
    assert re.search(r"matrix read</td>\s*<td[^>]*>raw.X: X holds 2000 of the 29733 genes", facts)


def test_gate_parameters_say_how_the_clusters_were_made(annotated, tmp_path):
    """The gate's parameter table names its clustering: Leiden, how many random starts were
    compared and the modularity kept; files from before the best-of-starts rule say one start."""
    from cafclassify.report._sections import _clustering_note

    a = annotated.copy()
    a.uns[K.UNS][K.UNS_GATE]["embedding"] = {"source": "leiden", "n_cells_graph": a.n_obs, "leiden_runs": 10,
                                             "modularity": 0.81234, "modularity_range": np.array([0.8011, 0.81234])}
    html = write_report(a, tmp_path / "r.html").read_text()
    gate = html[html.index('id="gate"'):]
    gate = gate[:gate.index("</section>")]
    assert "clustering" in gate
    assert f"Leiden on {a.n_obs:,} cells: the best of 10 random starts by modularity (kept 0.8123; " \
           "the 10 starts ranged 0.8011-0.8123)" in gate
    assert _clustering_note({"source": "leiden", "n_cells_graph": 66}) == "Leiden on 66 cells, one random start"
    assert _clustering_note({"source": "obs['louvain']"}) == "obs['louvain']"
    assert _clustering_note({}) == ""
