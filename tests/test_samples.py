"""One rule names the sample column, for the tables, the report and the summary
(``cafclassify/get/_samples.py``)."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest

import cafclassify as caf
from cafclassify.get import CONVENTIONAL_SAMPLE_COLUMNS, recorded_sample_key


def _cells(**columns) -> ad.AnnData:
    n = 6
    obs = pd.DataFrame({k: pd.Categorical(v) for k, v in columns.items()}, index=[f"c{i}" for i in range(n)])
    return ad.AnnData(np.zeros((n, 2), dtype=np.float32), obs=obs)


def test_nothing_recorded_and_no_conventional_column_is_one_sample():
    a = _cells(donor=list("aabbcc"))
    assert recorded_sample_key(a) is None
    assert recorded_sample_key(a, conventional=True) is None


@pytest.mark.parametrize("column", CONVENTIONAL_SAMPLE_COLUMNS)
def test_a_conventional_column_only_when_asked(column):
    a = _cells(**{column: list("aabbcc")})
    assert recorded_sample_key(a) is None
    assert recorded_sample_key(a, conventional=True) == column


def test_conventional_columns_in_their_documented_order():
    a = _cells(**{"orig.ident": list("aabbcc"), "sample_id": list("xxxyyy")})
    assert recorded_sample_key(a, conventional=True) == "sample_id"


def test_the_column_qc_used_wins_over_a_conventional_one():
    a = caf.simulate(n_cells=200, n_genes=500, random_state=0)
    a.obs["donor"] = pd.Categorical(np.where(np.arange(a.n_obs) % 2 == 0, "d1", "d2"))
    assert recorded_sample_key(a, conventional=True) == "batch"  # conventional
    caf.qc(a, sample_key="donor")
    assert recorded_sample_key(a) == "donor"
    assert recorded_sample_key(a, conventional=True) == "donor"


def test_records_in_order_and_stale_names_passed_over():
    a = _cells(donor=list("aabbcc"), patient=list("pppqqq"), batch=list("bbbbbb"))
    a.uns["cafclassify"] = {
        "read": {"sample_column": "patient"},
        "qc": {"params": {"sample_key": "dropped_column"}},  # no longer an obs column
        "provenance": {"parameters": {"sample_key": "donor"}, "history": {}},
    }
    assert recorded_sample_key(a) == "patient"  # read's record comes before provenance
    del a.uns["cafclassify"]["read"]
    assert recorded_sample_key(a) == "donor"
    # None as h5ad stores it ("NA", "None", "") is not a column name
    a.uns["cafclassify"] = {"qc": {"params": {"sample_key": "NA"}}}
    a.obs["NA"] = a.obs["donor"]
    assert recorded_sample_key(a, conventional=True) == "batch"


def test_provenance_history_is_read_from_the_most_recent_step_back():
    a = _cells(donor=list("aabbcc"), patient=list("pppqqq"))
    a.uns["cafclassify"] = {"provenance": {
        "step": "classify", "parameters": {"layer": "counts"},
        "history": {"01_read": {"parameters": {"sample_column": "patient"}},
                    "02_qc": {"parameters": {"sample_key": "donor"}}},
    }}
    assert recorded_sample_key(a) == "donor"


def test_odd_uns_shapes_do_not_raise():
    a = _cells(sample=list("aabbcc"))
    a.uns["cafclassify"] = {"qc": "not a mapping", "provenance": {"history": ["x"], "parameters": None}}
    assert recorded_sample_key(a) is None
    assert recorded_sample_key(a, conventional=True) == "sample"
    a.uns["cafclassify"] = "garbage"
    assert recorded_sample_key(a, conventional=True) == "sample"


def test_summary_splits_samples_by_the_same_rule():
    from cafclassify.report._summary import proportions_table

    a = _cells(**{"orig.ident": list("aabbcc")})
    a.obs["caf_lineage"] = pd.Categorical(["fibroblast"] * a.n_obs)
    a.obs["caf_subtype"] = pd.Categorical(["iCAF", "iCAF", "myCAF", "myCAF", "iCAF", "myCAF"])
    page = proportions_table(a, "d").set_index(["sample", "subtype"])["fraction"]
    props = caf.get.proportion_table(a, sample_key=recorded_sample_key(a, conventional=True))
    table = props[props["level"] == "subtype"].set_index(["sample", "label"])["fraction"]
    assert set(page.index.get_level_values(0)) == {"a", "b", "c"}
    # the same samples and the same fractions in the summary's table and the CLI's table
    assert np.allclose(page.sort_index().to_numpy(), table.sort_index().to_numpy())
    assert page.sort_index().index.tolist() == table.sort_index().index.tolist()
