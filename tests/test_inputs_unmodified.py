"""Inputs are never modified, and outputs are written atomically.

* Every CLI step (read, qc, gate, score, train, classify, report) is run on a small
  simulated dataset; the SHA-256 and the modification time of each of its inputs are
  the same before and after.
* A write that fails half-way (the h5ad writer raises after writing part of the
  temporary file) leaves the previous complete output intact and no temporary file;
  a rerun succeeds.
* A CLI process killed with SIGKILL while it writes a large file leaves the previous
  complete output under the final name (never a half-written file); a rerun succeeds.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import anndata as ad
import numpy as np
import pytest

from cafclassify.cli import main

STEPS = ["read", "qc", "gate", "score", "train", "classify", "report"]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def fingerprint(paths: list[Path]) -> dict[str, tuple[str, int, int]]:
    """sha256, mtime (ns) and mode of every file (a folder: of every file inside)."""
    out = {}
    for p in paths:
        files = sorted(q for q in p.rglob("*") if q.is_file()) if p.is_dir() else [p]
        for f in files:
            st = f.stat()
            out[str(f)] = (sha256(f), st.st_mtime_ns, st.st_mode)
    return out


def run_cli(argv: list[str]) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(["--threads", "1", *argv])
    return code, err.getvalue()


def temp_leftovers(folder: Path) -> list[Path]:
    return [p for p in folder.iterdir() if p.name.startswith(".") or ".part" in p.name]


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    """Run every step once; record the inputs' fingerprints before and after each step."""
    import cafclassify as cc

    work = tmp_path_factory.mktemp("chain")
    sim = cc.simulate(
        400, n_genes=1500, random_state=0,
        lineage_fractions={"fibroblast": 0.5, "immune": 0.2, "epithelial": 0.2,
                           "endothelial": 0.05, "mural": 0.05},
    )
    # a stored embedding: the report uses it instead of computing a UMAP (keeps the test fast)
    sim.obsm["X_umap"] = np.random.default_rng(0).normal(size=(sim.n_obs, 2))
    raw = work / "raw.h5ad"
    sim.write_h5ad(raw)
    w = {name: work / name for name in
         ("read.h5ad", "qc.h5ad", "gate.h5ad", "score.h5ad", "model.cafmodel", "classified.h5ad",
          "cells.csv", "report.html")}
    commands = {
        "read": ([raw], ["read", str(raw), "-o", str(w["read.h5ad"])]),
        "qc": ([w["read.h5ad"]], ["qc", str(w["read.h5ad"]), "-o", str(w["qc.h5ad"])]),
        "gate": ([w["qc.h5ad"]], ["gate", str(w["qc.h5ad"]), "-o", str(w["gate.h5ad"])]),
        "score": ([w["gate.h5ad"]], ["score", str(w["gate.h5ad"]), "-o", str(w["score.h5ad"])]),
        "train": ([w["score.h5ad"]], ["train", str(w["score.h5ad"]), "-o", str(w["model.cafmodel"])]),
        "classify": (
            [w["score.h5ad"], w["model.cafmodel"]],
            ["classify", str(w["score.h5ad"]), "--model", str(w["model.cafmodel"]),
             "-o", str(w["classified.h5ad"]), "--cells-csv", str(w["cells.csv"])],
        ),
        "report": ([w["classified.h5ad"]],
                   ["report", str(w["classified.h5ad"]), "-o", str(w["report.html"])]),
    }
    record = {}
    all_inputs: list[Path] = []
    for step in STEPS:
        inputs, argv = commands[step]
        before = fingerprint(inputs)
        time.sleep(0.01)  # a rewrite within the same clock tick would keep the mtime
        code, err = run_cli(argv)
        assert code == 0, f"{step} failed:\n{err[-3000:]}"
        record[step] = (before, fingerprint(inputs))
        all_inputs += inputs
    final = {p: v for p, v in fingerprint(sorted(set(all_inputs))).items()}
    return {"record": record, "first": {k: v for s in STEPS for k, v in record[s][0].items()},
            "final": final, "work": work}


@pytest.mark.parametrize("step", STEPS)
def test_step_leaves_its_inputs_unchanged(chain, step):
    before, after = chain["record"][step]
    assert before, f"{step}: no inputs fingerprinted"
    assert after == before


def test_no_input_is_changed_by_any_later_step(chain):
    for path, value in chain["final"].items():
        assert chain["first"][path] == value, path


def test_chain_leaves_no_temporary_files(chain):
    assert temp_leftovers(chain["work"]) == []


# ============================================================================ atomicity


def _counts_h5ad(path: Path, n_cells=80, n_genes=60, seed=0) -> Path:
    import pandas as pd
    import scipy.sparse as sp

    rng = np.random.default_rng(seed)
    genes = ["COL1A1", "DCN", "PDGFRA", "ACTA2", "PTPRC"] + [f"GENE{i}" for i in range(n_genes - 5)]
    X = sp.csr_matrix(rng.poisson(2.0, size=(n_cells, n_genes)).astype(np.float32))
    ad.AnnData(X=X, obs=pd.DataFrame(index=[f"c{i}" for i in range(n_cells)]),
               var=pd.DataFrame(index=genes)).write_h5ad(path)
    return path


def test_failed_write_keeps_previous_output_and_no_temp_file(tmp_path, monkeypatch):
    src = _counts_h5ad(tmp_path / "in.h5ad")
    out_dir = tmp_path / "out"
    out = out_dir / "read.h5ad"
    code, err = run_cli(["read", str(src), "-o", str(out)])
    assert code == 0, err
    previous = sha256(out)

    real_write = ad.AnnData.write_h5ad
    seen: list[Path] = []

    def half_write(self, filename, *args, **kwargs):
        real_write(self, filename, *args, **kwargs)
        p = Path(filename)
        seen.append(p)
        data = p.read_bytes()
        p.write_bytes(data[: len(data) // 2])  # half of the file is on disk ...
        raise OSError(28, "No space left on device")  # ... when the disk fills up

    src2 = _counts_h5ad(tmp_path / "in2.h5ad", seed=1)
    monkeypatch.setattr(ad.AnnData, "write_h5ad", half_write)
    code, err = run_cli(["read", str(src2), "-o", str(out)])
    # a full disk is a user-facing problem (exit 2, one paragraph naming the output), not a bug
    assert code == 2, err
    assert "Traceback" not in err
    line = [ln for ln in err.splitlines() if ln.startswith("cafclassify read: error:")]
    assert len(line) == 1, err
    assert str(out) in line[0] and "No space left on device" in line[0]
    assert seen and seen[0] != out and seen[0].parent == out_dir  # wrote a temp file, not `out`
    assert not seen[0].exists()  # the temp file was removed
    assert sha256(out) == previous  # the previous complete output is intact
    assert ad.read_h5ad(out).n_obs == 80
    assert temp_leftovers(out_dir) == []

    monkeypatch.setattr(ad.AnnData, "write_h5ad", real_write)
    code, err = run_cli(["read", str(src2), "-o", str(out)])
    assert code == 0, err
    assert sha256(out) != previous
    assert ad.read_h5ad(out).uns["cafclassify"]["read"]["path"] == str(src2.resolve())


@pytest.mark.slow
@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs POSIX signals")
def test_sigkill_during_write_never_leaves_a_half_written_file(tmp_path):
    out = tmp_path / "sim.h5ad"
    # a small complete file first: this is what must survive the kill
    code, err = run_cli(["simulate", "--n-cells", "50", "--n-genes", "500", "-o", str(out)])
    assert code == 0, err
    previous = sha256(out)

    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", NUMBA_NUM_THREADS="1")
    proc = subprocess.Popen(
        [sys.executable, "-m", "cafclassify.cli", "simulate", "--seed", "1", "--n-cells", "4000",
         "--n-genes", "15000", "-o", str(out)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    killed_at = None
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and proc.poll() is None:
            temps = [p for p in tmp_path.iterdir() if p.name.startswith(".sim.h5ad.")]
            if temps and temps[0].stat().st_size > 0:  # the writer is half-way through
                killed_at = temps[0].stat().st_size
                proc.send_signal(signal.SIGKILL)
                break
            time.sleep(0.002)
    finally:
        if proc.poll() is None and killed_at is None:
            proc.kill()
        proc.wait(30)
    assert killed_at is not None, "the writer finished before it could be interrupted"
    assert proc.returncode == -signal.SIGKILL
    # the final name still holds the previous complete file
    assert sha256(out) == previous
    assert ad.read_h5ad(out).n_obs == 50
    # a rerun succeeds (the stale temporary file of the killed run does not get in the way)
    code, err = run_cli(["simulate", "--n-cells", "60", "--n-genes", "500", "-o", str(out)])
    assert code == 0, err
    assert ad.read_h5ad(out).n_obs == 60
