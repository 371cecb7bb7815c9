"""The workflow's configuration is validated before any job runs: the JSON schemas of
``workflow/schemas/`` refuse wrong types, unknown keys and unsafe dataset ids, and the
package's dataset-id rule is the schema's (``docs/errors.md``, "Workflow configuration")."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pandas as pd
import pytest

from _cli_fixtures import REPO

SCHEMAS = REPO / "workflow" / "schemas"

# ---- workflow configuration (schema used by workflow/rules/common.smk) -----------------


def _validate(obj, schema: str):
    from snakemake.utils import validate

    validate(obj, schema=str(SCHEMAS / schema))


def _base_config() -> dict:
    import yaml

    return yaml.safe_load((REPO / "config" / "config.yaml").read_text())


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (lambda c: c["qc"].update(nmads="five"), "'five' is not of type 'number'"),
        (lambda c: c.update(colour="blue"), "'colour' was unexpected"),
        (lambda c: c["score"].update(method="magic"), "'magic' is not one of"),
        (lambda c: c.update(seed=1.5), "is not of type 'integer'"),
    ],
    ids=["wrong_type", "unknown_key", "bad_enum", "float_seed"],
)
def test_config_schema_refuses(edit, expected):
    from snakemake.exceptions import WorkflowError

    cfg = _base_config()
    _validate(dict(cfg), "config.schema.yaml")  # the shipped config is valid
    edit(cfg)
    with pytest.raises(WorkflowError, match=re.escape(expected)):
        _validate(cfg, "config.schema.yaml")


@pytest.mark.parametrize(
    "bad_id",
    ["my data", "x;rm -rf ~", "$(whoami)", "a|b", "`id`", "-rf", "../etc", "a\nb", "ok'quote"],
)
def test_dataset_ids_with_spaces_or_shell_characters_are_refused(bad_id):
    from snakemake.exceptions import WorkflowError

    good = pd.DataFrame({"id": ["ok_id-1.v2"], "path_or_url": ["data/a.h5ad"]})
    _validate(good, "datasets.schema.yaml")
    bad = pd.DataFrame({"id": [bad_id], "path_or_url": ["data/a.h5ad"]})
    with pytest.raises(WorkflowError, match="does not match"):
        _validate(bad, "datasets.schema.yaml")


# ---- dataset ids: one rule in Python and in the schema ---------------------------------

_SAFE_IDS = ["crc", "GSE12345", "ok_id-1.v2", "9lives", "a" * 64]
_UNSAFE_IDS = ["my data", "x;rm -rf ~", "$(whoami)", "a|b", "`id`", "-rf", "../etc", "a/b",
               "a\nb", "ok'quote", 'q"', "", "_x", "a" * 65, "ab\n"]


def test_dataset_id_rule_matches_the_schema():
    import yaml

    from cafclassify._validate import DATASET_ID_PATTERN

    schema = yaml.safe_load((SCHEMAS / "datasets.schema.yaml").read_text())
    assert schema["properties"]["id"]["pattern"] == DATASET_ID_PATTERN
    assert schema["properties"]["id"]["maxLength"] == 64


@pytest.mark.parametrize("value", _SAFE_IDS)
def test_validate_dataset_id_accepts(value):
    from cafclassify._validate import validate_dataset_id

    assert validate_dataset_id(value) == value


@pytest.mark.parametrize("value", _UNSAFE_IDS, ids=repr)
def test_validate_dataset_id_refuses(value):
    from cafclassify._errors import ConfigError
    from cafclassify._validate import validate_dataset_id

    with pytest.raises(ConfigError, match="What to do: rename the dataset|non-empty") as info:
        validate_dataset_id(value, source="config/datasets.tsv")
    assert info.value.path == "config/datasets.tsv"


SNAKEMAKE = Path(sys.executable).with_name("snakemake")


@pytest.mark.skipif(not SNAKEMAKE.exists(), reason="snakemake not installed")
def test_workflow_refuses_dataset_id_with_trailing_newline(tmp_path):
    import subprocess

    (tmp_path / "config").mkdir()
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "a.h5ad").write_bytes(b"placeholder, never read in a dry run\n")
    (tmp_path / "config" / "datasets.tsv").write_text('id\tpath_or_url\n"ab\n"\tdata/a.h5ad\n')
    (tmp_path / "config" / "config.yaml").write_text("datasets: config/datasets.tsv\n")
    proc = subprocess.run(
        [str(SNAKEMAKE), "--snakefile", str(REPO / "Snakefile"), "--directory", str(tmp_path),
         "-n", "--cores", "1", "--configfile", str(tmp_path / "config" / "config.yaml")],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )
    text = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "Traceback" not in text
    assert "id(s) 'ab\\n' may contain only letters" in text, text[-2000:]
