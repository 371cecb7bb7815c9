"""What each subtype's definition rests on (cafclassify.tl._definitions): recorded by
classify, listed and warned about in the report."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest

from cafclassify import _keys as K
from cafclassify.genesets import load_signatures
from cafclassify.report import write_report
from cafclassify.report._warnings import collect_warnings
from cafclassify.tl._classify import _definitions
from cafclassify.tl._definitions import NOT_STATED, _rating, definition_records, is_thin


def test_ratings_are_read_from_the_library_statement():
    recs = definition_records("caf_v1")
    lib = load_signatures("caf_v1")
    assert list(recs) == [n for n, gs in lib.sets.items() if gs.group == "subtype"]
    assert {n: r["rating"] for n, r in recs.items()} == {
        "myCAF": "Good", "iCAF": "Good", "apCAF": "Moderate", "meCAF": "Weak to moderate",
        "vCAF": "Moderate", "dCAF": "Low confidence", "LTBP2_CAF": "Weak"}
    assert {n for n, r in recs.items() if r["thin"]} == {"meCAF", "dCAF", "LTBP2_CAF"}
    assert recs["dCAF"]["evidence"] == lib.sets["dCAF"].evidence.strip()
    assert recs["dCAF"]["display_name"] == lib.sets["dCAF"].display_name


@pytest.mark.parametrize(("text", "rating"), [
    ("Good: 6 seed-named genes", "Good"),
    ("  Low confidence : no seed gene", "Low confidence"),
    ("", NOT_STATED),
    ("no colon in this statement", NOT_STATED),
    ("A long sentence that is not a rating at all, then: a colon", NOT_STATED),
])
def test_rating_is_the_opening_label_or_not_stated(text, rating):
    assert _rating(text) == rating


def test_thin_means_weak_or_low():
    assert is_thin("Weak") and is_thin("weak to moderate") and is_thin("Low confidence")
    assert not is_thin("Good") and not is_thin("Moderate") and not is_thin(NOT_STATED)


def test_a_library_that_states_nothing_rates_nothing():
    """A user library (no evidence column, group 'user'): no subtype set is rated, and the
    classes classify records are 'not stated', never thin."""
    assert definition_records({"A": ["COL1A1", "DCN"], "B": ["ACTA2", "TAGLN"]}) == {}
    recs = _definitions({"A": ["COL1A1", "DCN"], "B": ["ACTA2", "TAGLN"]}, ["A", "B"])
    assert recs == {c: {"display_name": c, "rating": NOT_STATED, "thin": False, "evidence": ""} for c in "AB"}
    # a model whose library cannot be loaded again (a user file that moved): classes only
    assert set(_definitions("/no/such/library.gmt", ["myCAF"])) == {"myCAF"}
    # the built-in library: every subtype set, plus a class it does not rate
    recs = _definitions("caf_v1", ["myCAF", "extra"])
    assert recs["dCAF"]["thin"] and recs["extra"]["rating"] == NOT_STATED


def _called(counts: dict[str, int], definitions: dict) -> ad.AnnData:
    """Fibroblasts called as ``counts`` says, with ``definitions`` recorded by classify."""
    labels = [c for c, n in counts.items() for _ in range(n)]
    a = ad.AnnData(np.zeros((len(labels), 3), dtype=np.float32))
    a.obs_names = [f"c{i}" for i in range(a.n_obs)]
    a.obs[K.OBS_LINEAGE] = pd.Categorical(["fibroblast"] * a.n_obs, categories=list(K.LINEAGES))
    a.obs[K.OBS_SUBTYPE] = pd.Categorical(labels)
    a.obs[K.OBS_LTBP2] = False
    a.uns[K.UNS] = {K.UNS_CLASSIFY: {"definitions": definitions, "counts": counts}}
    return a


def test_report_lists_the_definitions_and_warns_about_thin_ones_holding_cells(tmp_path):
    defs = _definitions("caf_v1", [])
    a = _called({"myCAF": 60, "iCAF": 30, "dCAF": 7}, defs)
    a.write_h5ad(tmp_path / "a.h5ad")  # through h5ad, as the workflow reads it
    a = ad.read_h5ad(tmp_path / "a.h5ad")
    warns = {w["key"]: w for w in collect_warnings(a)}
    thin = warns["thin_definition"]
    assert thin["level"] == "info" and thin["group"] == "Fibroblasts and subtypes"
    assert "dCAF (7 cells, rated 'Low confidence')" in thin["text"]
    assert "meCAF" not in thin["text"]  # thin, but no cell was called meCAF
    assert "LTBP2" not in thin["text"]  # the LTBP2+ axis has its own caveat
    html = write_report(a, tmp_path / "r.html").read_text()
    table = html[html.index('id="subtype-definitions"'):]
    table = table[:table.index("</table>")]
    order = [table.index(f'data-definition="{c}"') for c in ("myCAF", "iCAF", "apCAF", "meCAF", "vCAF", "dCAF",
                                                               "LTBP2_CAF")]
    assert order == sorted(order)  # subtype order, the LTBP2+ axis last
    assert 'class="thin" data-definition="dCAF" data-thin="1">Low confidence<' in table
    assert 'data-definition="myCAF" data-thin="0">Good<' in table
    # only well-rated subtypes called: no warning, the table is still there
    b = _called({"myCAF": 60, "iCAF": 30}, defs)
    assert "thin_definition" not in {w["key"] for w in collect_warnings(b)}
    assert 'id="subtype-definitions"' in write_report(b, tmp_path / "b.html").read_text()
    # mural cells called vCAF (the perivascular reading) are counted apart from the set's calls
    d = _called({"myCAF": 60, "vCAF": 12}, defs)
    lin = d.obs[K.OBS_LINEAGE].astype(str).to_numpy()
    lin[-8:] = "mural"
    d.obs[K.OBS_LINEAGE] = pd.Categorical(lin, categories=list(K.LINEAGES))
    html = write_report(d, tmp_path / "d.html").read_text()
    row = html[html.index('data-definition="vCAF"') - 400:html.index('data-definition="vCAF"')]
    assert ">4 + 8 mural<" in row and "placed by the gate&#39;s pericyte" in html
    # nothing recorded (an older file): no table, no warning
    c = _called({"myCAF": 60, "dCAF": 30}, {})
    assert "thin_definition" not in {w["key"] for w in collect_warnings(c)}
    assert 'id="subtype-definitions"' not in write_report(c, tmp_path / "c.html").read_text()


def test_proportion_tables_carry_the_rating_of_each_subtype(tmp_path):
    from cafclassify.get import proportion_table
    from cafclassify.report import write_summary

    a = _called({"myCAF": 60, "dCAF": 7, "unassigned": 3}, _definitions("caf_v1", []))
    a.write_h5ad(tmp_path / "a.h5ad")
    a = ad.read_h5ad(tmp_path / "a.h5ad")
    t = proportion_table(a)
    sub = t[t["level"] == "subtype"].set_index("label")["definition_rating"]
    assert sub["myCAF"] == "Good" and sub["dCAF"] == "Low confidence"
    assert pd.isna(sub["unassigned"])  # not a subtype: nothing to rate
    assert t.loc[t["level"] == "lineage", "definition_rating"].isna().all()
    html = write_summary([tmp_path / "a.h5ad"], tmp_path / "s.html").read_text()
    head = html[html.index('id="proportions-table"'):html.index("</thead>", html.index('id="proportions-table"'))]
    assert 'class="rating thin" data-definition="dCAF" data-thin="1">Low confidence<' in head
    assert 'class="rating" data-definition="myCAF" data-thin="0">Good<' in head
    s = pd.read_csv(tmp_path / "s_proportions.csv").set_index("subtype")
    assert s.loc["dCAF", "definition_rating"] == "Low confidence" and s.loc["dCAF", "n_cells"] == 7
    assert pd.isna(s.loc["unassigned", "definition_rating"])
    # nothing recorded (an older file): the column is there, empty
    old = _called({"myCAF": 60, "dCAF": 7}, {})
    assert proportion_table(old)["definition_rating"].isna().all()


def test_summary_says_varies_when_the_datasets_libraries_disagree():
    from cafclassify.report._summary import _ratings_by_subtype

    t = pd.DataFrame({"subtype": ["myCAF", "myCAF", "dCAF", "dCAF", "iCAF", "unassigned"],
                      "definition_rating": ["Good", "Good", "Low confidence", "Good", None, None]})
    r = _ratings_by_subtype(t)
    assert r["myCAF"] == {"rating": "Good", "thin": False}
    assert r["dCAF"] == {"rating": "varies", "thin": False}  # one library rates it low, another good
    assert "iCAF" not in r and "unassigned" not in r  # no rating recorded: nothing shown
