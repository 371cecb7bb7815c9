"""Configuration and dataset sheet: validation and helpers shared by all rules."""

import re
import shlex
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pandas as pd
from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

DATASET_ID = r"[A-Za-z0-9][A-Za-z0-9_.-]*"
POOLED = "_pooled"  # cannot collide with a dataset id (ids start with a letter or digit)
MODEL_FILE = "model.cafmodel"


def _schema_error(what, exc):
    """Turn snakemake's jsonschema failure into one readable paragraph."""
    text = str(exc)
    problem = re.search(r"ValidationError: (.+)", text)
    where = re.search(r"On instance((?:\[[^\]]*\])+)", text)
    row_no = re.search(r"Error validating row (\d+)", text)
    detail = problem.group(1).strip() if problem else text.strip().splitlines()[-1]
    if where:
        keys = re.findall(r"\[([^\]]*)\]", where.group(1))
        detail = f"{'.'.join(k.strip(chr(39)) for k in keys)}: {detail}"
    if row_no:
        detail = f"data row {int(row_no.group(1)) + 1}: {detail}"
    return WorkflowError(
        f"{what} is invalid: {detail}. Fix the value (allowed values and defaults are "
        "documented in workflow/schemas/ and config/README.md) and rerun."
    )


# ---- config -------------------------------------------------------------------
try:
    validate(config, schema="../schemas/config.schema.yaml")
except WorkflowError as exc:
    raise _schema_error("The workflow configuration (config/config.yaml or --config)", exc)


# ---- dataset sheet ------------------------------------------------------------
def _load_sheet(path):
    if not Path(path).is_file():
        raise WorkflowError(
            f"The dataset sheet {path} does not exist. Set `datasets:` in the config to a "
            "tab-separated file with the columns id, path_or_url, sha256, format, species, "
            "sample_column, label_column, notes (see config/README.md)."
        )
    sheet = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    sheet.columns = [c.strip() for c in sheet.columns]
    if sheet.empty:
        raise WorkflowError(f"The dataset sheet {path} lists no datasets.")
    try:
        validate(sheet, schema="../schemas/datasets.schema.yaml")
    except WorkflowError as exc:
        raise _schema_error(f"The dataset sheet {path}", exc)
    # the schema pattern ends in '$', which Python's re.search also matches before a
    # trailing newline: check the ids again with fullmatch (they become folder names)
    bad = [i for i in sheet["id"] if re.fullmatch(DATASET_ID, i) is None]
    if bad:
        raise WorkflowError(
            f"The dataset sheet {path} is invalid: id(s) {', '.join(map(repr, bad))} may contain "
            "only letters, digits, '_', '.' and '-' and must start with a letter or digit. "
            "Rename the dataset(s) and rerun."
        )
    dup = sorted(sheet["id"][sheet["id"].duplicated()].unique())
    if dup:
        raise WorkflowError(f"The dataset sheet {path} repeats the id(s) {', '.join(dup)}; ids must be unique.")
    return sheet.set_index("id", drop=False)


datasets = _load_sheet(config["datasets"])
DATASETS = list(datasets.index)

_unknown_pool = sorted(set(config["train"]["pool"]) - set(DATASETS))
if _unknown_pool:
    raise WorkflowError(
        f"config train.pool lists dataset id(s) not in {config['datasets']}: "
        f"{', '.join(_unknown_pool)} (known ids: {', '.join(DATASETS)})."
    )
if len(config["train"]["pool"]) == 1:
    raise WorkflowError("config train.pool lists a single dataset; pool at least two, or leave it empty.")


def is_url(value):
    return urlsplit(value).scheme.lower() in ("http", "https", "ftp", "file") and "://" in value


for _id, _src in datasets["path_or_url"].items():
    if urlsplit(_src).scheme.lower() == "http" and not config["fetch"]["allow_http"]:
        raise WorkflowError(
            f"Dataset {_id}: {_src} is an unencrypted http:// URL. Use the https:// address, "
            "or set fetch: allow_http: true in the config."
        )
    if not is_url(_src) and not Path(_src).exists():
        raise WorkflowError(
            f"Dataset {_id}: the input {_src} does not exist (paths are relative to the "
            "working directory, usually the repository root)."
        )


wildcard_constraints:
    dataset="|".join(re.escape(d) for d in DATASETS),
    filename=r"[A-Za-z0-9_.-]+",


# ---- helpers used by the rules ---------------------------------------------------
def cli_opts(**opts):
    """Render options as one shell-quoted string: None/False/"" dropped, True -> bare flag."""
    parts = []
    for key, value in opts.items():
        if value is None or value is False or (isinstance(value, str) and value in ("", "auto")):
            continue
        flag = f"--{key.replace('_', '-')}"
        parts += [flag] if value is True else [flag, str(value)]
    return shlex.join(parts)


def row(wildcards):
    return datasets.loc[wildcards.dataset]


def download_name(dataset_id):
    """File name for a URL dataset under resources/downloads/<id>/ (safe characters only)."""
    name = unquote(Path(urlsplit(datasets.loc[dataset_id, "path_or_url"]).path).name)
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", name).lstrip(".-_") or "data"
    return name


def input_data(wildcards):
    src = datasets.loc[wildcards.dataset, "path_or_url"]
    if is_url(src):
        return f"resources/downloads/{wildcards.dataset}/{download_name(wildcards.dataset)}"
    return src


def model_for(wildcards):
    """Pooled datasets use the shared model; the others train their own inside classify."""
    if wildcards.dataset in config["train"]["pool"]:
        return f"results/{POOLED}/{MODEL_FILE}"
    return []


def mem_mb(factor, floor=1000):
    """Memory request grown with the input size (h5ad on disk is compressed ~3-5x)."""

    def _mem(wildcards, input):
        return max(floor, int(factor * input.size_mb) + floor)

    return _mem


def final_outputs():
    out = []
    for d in DATASETS:
        out += [
            f"results/{d}/classified.h5ad",
            f"results/{d}/cells.csv",
            f"results/{d}/proportions.csv",
            f"results/{d}/report.html",
        ]
    out += ["results/summary/summary.html", "results/summary/summary.csv", "results/summary/summary.png"]
    return out
