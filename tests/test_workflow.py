"""Tests for the Snakemake workflow: dry-run job lists, lint, config/sheet validation, a tiny full run."""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = Path(sys.executable).with_name("snakemake")
HEADER = "id\tpath_or_url\tsha256\tformat\tspecies\tsample_column\tlabel_column\tnotes\n"

pytestmark = pytest.mark.skipif(not SNAKEMAKE.exists(), reason="snakemake not installed")


def snakemake(workdir: Path, *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["PATH"] = f"{SNAKEMAKE.parent}{os.pathsep}{env.get('PATH', '')}"
    return subprocess.run(
        [
            str(SNAKEMAKE),
            "--snakefile",
            str(REPO / "Snakefile"),
            "--directory",
            str(workdir),
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=workdir,
    )


def job_counts(output: str) -> dict[str, int]:
    """Parse the 'Job stats' table of a dry run into {rule: count}."""
    block = output.split("Job stats:", 1)[1]
    counts = {}
    for line in block.splitlines()[3:]:
        m = re.match(r"^(\S+)\s+(\d+)\s*$", line)
        if not m:
            break
        counts[m.group(1)] = int(m.group(2))
    return counts


def make_project(tmp_path: Path, sheet_rows: list[str], config_extra: str = "") -> Path:
    work = tmp_path / "work"
    (work / "config").mkdir(parents=True)
    (work / "data").mkdir()
    for name in ("a.h5ad", "b.h5ad"):
        (work / "data" / name).write_bytes(b"placeholder, never read in a dry run\n")
    (work / "config" / "datasets.tsv").write_text(HEADER + "".join(r + "\n" for r in sheet_rows))
    (work / "config" / "config.yaml").write_text(
        "datasets: config/datasets.tsv\n" + textwrap.dedent(config_extra)
    )
    return work


def dry_run(work: Path) -> subprocess.CompletedProcess:
    return snakemake(
        work, "-n", "--cores", "2", "--configfile", str(work / "config" / "config.yaml")
    )


def test_dry_run_two_datasets_one_url(tmp_path):
    url = "https://example.org/geo/GSM0000001_tumour%20filtered.h5"
    work = make_project(
        tmp_path,
        [
            "local_one\tdata/a.h5ad\t\th5ad\thuman\t\t\tlocal file",
            f"remote-two\t{url}\t{'a' * 64}\t10x_h5\tmouse\t\t\tremote file",
        ],
    )
    proc = dry_run(work)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    counts = job_counts(proc.stdout)
    assert counts == {
        "fetch": 1,
        "read": 2,
        "qc": 2,
        "gate": 2,
        "score": 2,
        "classify": 2,
        "report": 2,
        "summary": 1,
        "all": 1,
        "total": 15,
    }
    # the download lands under resources/downloads/<id>/ with a shell-safe name
    assert "resources/downloads/remote-two/GSM0000001_tumour_filtered.h5" in proc.stdout
    assert "results/local_one/report.html" in proc.stdout


def test_dry_run_pooled_training(tmp_path):
    work = make_project(
        tmp_path,
        ["a\tdata/a.h5ad", "b\tdata/b.h5ad"],
        "train:\n  pool: [a, b]\n",
    )
    proc = dry_run(work)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    counts = job_counts(proc.stdout)
    assert counts["train"] == 1
    assert counts["classify"] == 2
    assert "results/_pooled/model.cafmodel" in proc.stdout


def test_bundled_default_config_dry_run(tmp_path):
    """The shipped config + sheet + bundled example plan the full job list."""
    work = tmp_path / "work"
    (work / "config").mkdir(parents=True)
    for name in ("config.yaml", "datasets.tsv"):
        shutil.copy(REPO / "config" / name, work / "config" / name)
    (work / "resources").mkdir()
    (work / "resources" / "example").symlink_to(REPO / "resources" / "example")
    proc = snakemake(
        work, "-n", "--cores", "2", "--configfile", str(work / "config" / "config.yaml")
    )
    assert proc.returncode == 0, proc.stderr + proc.stdout
    counts = job_counts(proc.stdout)
    assert counts["read"] == 2 and counts["summary"] == 1
    assert "fetch" not in counts and "train" not in counts  # local files, no pooling


def test_lint_is_clean():
    proc = snakemake(REPO, "--lint")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Congratulations, your workflow is in a good condition" in proc.stdout + proc.stderr


@pytest.mark.parametrize(
    ("config_extra", "expected"),
    [
        ("qc:\n  nmads: five\n", "'five' is not of type 'number'"),
        ("colour: blue\n", "'colour' was unexpected"),
        ("score:\n  method: ucell\n  threads: 4\n", "'threads' was unexpected"),
        ("score:\n  method: magic\n", "'magic' is not one of"),
        ("train:\n  pool: [a, zzz]\n", "zzz"),
    ],
)
def test_invalid_config_is_refused(tmp_path, config_extra, expected):
    work = make_project(tmp_path, ["a\tdata/a.h5ad", "b\tdata/b.h5ad"], config_extra)
    proc = dry_run(work)
    assert proc.returncode != 0
    text = proc.stdout + proc.stderr
    assert expected in text, text[-3000:]
    assert "Traceback" not in text


@pytest.mark.parametrize(
    ("row", "expected"),
    [
        ("my data\tdata/a.h5ad", "'my data' does not match"),
        ("x;rm -rf ~\tdata/a.h5ad", "does not match"),
        ("$(whoami)\tdata/a.h5ad", "does not match"),
        ("ok\tdata/a.h5ad\tnot-a-hash", "'not-a-hash' does not match"),
        ("ok\tdata/a.h5ad\t\tparquet", "'parquet' is not one of"),
        ("ok\tdata/missing.h5ad", "does not exist"),
        ("ok\thttp://example.org/x.h5ad", "unencrypted http://"),
    ],
)
def test_invalid_dataset_sheet_is_refused(tmp_path, row, expected):
    work = make_project(tmp_path, [row])
    proc = dry_run(work)
    assert proc.returncode != 0
    text = proc.stdout + proc.stderr
    assert "dataset sheet" in text.lower() or "Dataset" in text
    assert expected in text, text[-3000:]
    assert "Traceback" not in text


def test_duplicate_ids_are_refused(tmp_path):
    work = make_project(tmp_path, ["a\tdata/a.h5ad", "a\tdata/b.h5ad"])
    proc = dry_run(work)
    assert proc.returncode != 0
    assert "repeats the id(s) a" in proc.stdout + proc.stderr


def _modules_ready() -> str | None:
    for mod in (
        "cafclassify.io",
        "cafclassify.pp",
        "cafclassify.tl",
        "cafclassify.scoring",
        "cafclassify.report",
        "cafclassify.model",
    ):
        if importlib.util.find_spec(mod) is None:
            return mod
    import cafclassify.report as rep
    import cafclassify.tl as tl

    for name, module in (
        ("gate", tl),
        ("train", tl),
        ("classify", tl),
        ("write_report", rep),
        ("write_summary", rep),
    ):
        if not hasattr(module, name):
            return f"{module.__name__}.{name}"
    return None


@pytest.mark.slow
def test_full_workflow_on_tiny_subsample(tmp_path, shared_data):
    """Whole workflow on 400 cells of the colorectal file (both tumour and normal)."""
    missing = _modules_ready()
    if missing:
        pytest.skip(f"{missing} not available yet")
    import anndata as ad
    import numpy as np
    import pandas as pd

    full = ad.read_h5ad(shared_data / "crc_tumour_normal_2850cells_lognorm.h5ad")
    rng = np.random.default_rng(0)
    keep = np.sort(rng.choice(full.n_obs, size=400, replace=False))
    small = full[keep].copy()
    work = tmp_path / "work"
    (work / "config").mkdir(parents=True)
    small.write_h5ad(work / "crc400.h5ad")
    (work / "config" / "datasets.tsv").write_text(
        HEADER + "crc400\tcrc400.h5ad\t\th5ad\thuman\ttumor_normal\tcell_type\t400-cell subsample\n"
    )
    (work / "config" / "config.yaml").write_text("datasets: config/datasets.tsv\n")
    proc = snakemake(
        work,
        "--cores",
        "2",
        "--configfile",
        str(work / "config" / "config.yaml"),
        timeout=600,
    )
    logs = (
        "\n".join(
            f"--- {p}\n{p.read_text()[-2000:]}" for p in sorted((work / "logs").rglob("*.log"))
        )
        if (work / "logs").exists()
        else ""
    )
    assert proc.returncode == 0, proc.stderr[-4000:] + logs
    res = work / "results" / "crc400"
    for name in (
        "classified.h5ad",
        "cells.csv",
        "proportions.csv",
        "report.html",
        "signature_coverage.csv",
    ):
        assert (res / name).stat().st_size > 0, name
    cells = pd.read_csv(res / "cells.csv")
    out = ad.read_h5ad(res / "classified.h5ad")
    assert len(cells) == out.n_obs
    assert set(cells["sample"]) <= {"Tumor", "Normal"}
    prov = out.uns["cafclassify"]["provenance"]
    assert prov["step"] == "classify"
    assert [k.split("_", 1)[1] for k in prov["history"]] == ["read", "qc", "gate", "score"]
    summary = work / "results" / "summary"
    for name in ("summary.html", "summary.csv", "summary.png"):
        assert (summary / name).stat().st_size > 0, name
    shutil.rmtree(work / ".snakemake", ignore_errors=True)
