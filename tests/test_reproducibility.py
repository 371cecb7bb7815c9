"""Same input, config and seed -> identical results, whatever the number of threads.

* The API chain score -> gate -> classify (training on the data) gives bit-identical
  scores, lineages, subtype labels and probabilities in two runs in one process, and
  in fresh processes with 1 and with 2 threads (``NUMBA_NUM_THREADS`` /
  ``OMP_NUM_THREADS`` / BLAS variables).
* The scoring kernels give identical results with ``numba.set_num_threads(1)`` and
  ``(2)`` in one process.
* Every ``.h5ad`` written by the CLI records the package version, the signature set
  and its hash, the parameters, the SHA-256 of its inputs and the seed in
  ``uns["cafclassify"]["provenance"]``.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest

from cafclassify import _keys as K

SIM_KW = dict(
    n_cells=500, n_genes=1500, random_state=3,
    lineage_fractions={"fibroblast": 0.5, "immune": 0.2, "epithelial": 0.2,
                       "endothelial": 0.05, "mural": 0.05},
)

# the chain, as a script: used in-process and in fresh subprocesses
CHAIN = textwrap.dedent(
    """
    import numpy as np
    import anndata as ad
    import cafclassify as cc

    def run_chain(path, seed=0):
        a = cc.read(path)
        cc.score(a, random_state=seed)
        cc.gate(a, random_state=seed)
        cc.classify(a, random_state=seed)
        scores = a.obsm["caf_scores"]
        proba = a.obsm["caf_subtype_proba"]
        return {
            "score_names": np.asarray(scores.columns, dtype=str),
            "scores": scores.to_numpy(dtype=np.float64),
            "lineage": a.obs["caf_lineage"].astype(str).to_numpy(dtype=str),
            "lineage_conf": a.obs["caf_lineage_confidence"].to_numpy(dtype=np.float64),
            "lineage_scores": a.obsm["caf_lineage_scores"].to_numpy(dtype=np.float64),
            "subtype": a.obs["caf_subtype"].astype(str).to_numpy(dtype=str),
            "subtype_conf": a.obs["caf_subtype_confidence"].to_numpy(dtype=np.float64),
            "proba_names": np.asarray(proba.columns, dtype=str),
            "proba": proba.to_numpy(dtype=np.float64),
            "seed_label": a.obs["caf_seed_label"].astype(str).to_numpy(dtype=str),
        }
    """
)


def _chain_namespace() -> dict:
    ns: dict = {}
    exec(compile(CHAIN, "<chain>", "exec"), ns)
    return ns


def assert_identical(a: dict, b: dict, what: str) -> None:
    assert set(a) == set(b)
    for key in sorted(a):
        x, y = np.asarray(a[key]), np.asarray(b[key])
        assert x.shape == y.shape, (what, key)
        if x.dtype.kind == "f":
            # bit-identical, NaN where NaN (non-fibroblasts have NaN probabilities)
            assert np.array_equal(x, y, equal_nan=True), (what, key, np.nanmax(np.abs(x - y)))
        else:
            assert np.array_equal(x, y), (what, key)


@pytest.fixture(scope="module")
def sim_path(tmp_path_factory) -> Path:
    import cafclassify as cc

    path = tmp_path_factory.mktemp("repro") / "sim.h5ad"
    cc.simulate(**SIM_KW).write_h5ad(path)
    return path


def test_two_runs_in_one_process_are_identical(sim_path):
    ns = _chain_namespace()
    first = ns["run_chain"](sim_path)
    second = ns["run_chain"](sim_path)
    assert_identical(first, second, "run 1 vs run 2")
    # the result is not degenerate: several lineages and subtypes were called
    assert len(set(first["lineage"])) >= 3
    assert len(set(first["subtype"]) - {K.NOT_FIBROBLAST, K.UNASSIGNED}) >= 2


@pytest.fixture(scope="module")
def thread_runs(sim_path, tmp_path_factory):
    """The chain in two fresh processes run side by side: 1 vs 2 threads (numba/OpenMP/BLAS)."""
    tmp_path = tmp_path_factory.mktemp("threads")
    script = tmp_path / "chain.py"
    script.write_text(
        CHAIN + textwrap.dedent(
            """
            import sys, numba
            res = run_chain(sys.argv[1])
            res["numba_threads"] = np.array(numba.get_num_threads())
            np.savez(sys.argv[2], **res)
            """
        )
    )
    procs = {}
    for n in (1, 2):
        env = dict(os.environ)
        for var in ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                    "MKL_NUM_THREADS"):
            env[var] = str(n)
        procs[n] = subprocess.Popen(
            [sys.executable, str(script), str(sim_path), str(tmp_path / f"t{n}.npz")],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
    for n, proc in procs.items():
        _, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, f"{n} thread(s):\n{err[-3000:]}"
    res = {}
    for n in (1, 2):
        with np.load(tmp_path / f"t{n}.npz") as z:
            res[n] = {k: z[k] for k in z.files}
    return res


#: outputs that go through multi-threaded BLAS (logistic-regression fit and predict)
BLAS_OUTPUTS = ("proba", "subtype_conf")


@pytest.mark.slow
def test_one_and_two_threads_in_fresh_processes_give_identical_results(thread_runs, sim_path):
    one, two = dict(thread_runs[1]), dict(thread_runs[2])
    assert int(one.pop("numba_threads")) == 1
    assert int(two.pop("numba_threads")) == 2
    # labels, lineages, scores and seeds: bit-identical
    exact = [k for k in one if k not in BLAS_OUTPUTS]
    assert_identical({k: one[k] for k in exact}, {k: two[k] for k in exact}, "1 vs 2 threads")
    # probabilities: identical up to floating-point summation order in BLAS
    for k in BLAS_OUTPUTS:
        np.testing.assert_allclose(one[k], two[k], rtol=0, atol=1e-12, equal_nan=True)
    # and the single-thread run equals a run in this (differently threaded) process
    here = _chain_namespace()["run_chain"](sim_path)
    assert_identical({k: here[k] for k in exact}, {k: one[k] for k in exact}, "here vs subprocess")
    for k in BLAS_OUTPUTS:
        np.testing.assert_allclose(here[k], one[k], rtol=0, atol=1e-12, equal_nan=True)


@pytest.mark.slow
def test_probabilities_are_bit_identical_across_blas_threads(thread_runs):
    for k in BLAS_OUTPUTS:
        assert np.array_equal(thread_runs[1][k], thread_runs[2][k], equal_nan=True), k


def test_scoring_kernels_do_not_depend_on_numba_threads():
    import numba
    import scipy.sparse as sp

    from cafclassify.scoring import aucell_scores, ucell_scores

    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("numba was started with a single thread (NUMBA_NUM_THREADS=1)")
    rng = np.random.default_rng(0)
    X = sp.random(3000, 800, density=0.1, random_state=rng, format="csr", dtype=np.float64)
    X.data = np.round(np.log1p(X.data * 20), 2)  # many ties, as in real data
    sets = {f"s{i}": (np.sort(rng.choice(800, 25, replace=False)), np.ones(25)) for i in range(6)}
    sets["signed"] = (np.arange(10, 30), np.r_[np.ones(10), -np.ones(10)])
    before = numba.get_num_threads()
    try:
        out = {}
        for n in (1, 2):
            numba.set_num_threads(n)
            out[n] = (ucell_scores(X, sets, max_rank=200, chunk_size=700),
                      aucell_scores(X, sets, chunk_size=700))
    finally:
        numba.set_num_threads(before)
    for a, b in zip(out[1], out[2], strict=True):
        assert np.array_equal(np.asarray(a), np.asarray(b))
    assert np.ptp(np.asarray(out[1][0])) > 0  # not a constant


# ============================================================================ provenance


def _run_cli(argv: list[str]) -> tuple[int, str]:
    from cafclassify.cli import main

    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(["--threads", "1", *argv])
    return code, err.getvalue()


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def cli_outputs(sim_path, tmp_path_factory):
    work = tmp_path_factory.mktemp("cli")
    steps = [
        ("read", sim_path, work / "read.h5ad", []),
        ("gate", work / "read.h5ad", work / "gate.h5ad", ["--seed", "7"]),
        ("score", work / "gate.h5ad", work / "score.h5ad", ["--seed", "7"]),
        ("classify", work / "score.h5ad", work / "classified.h5ad", ["--seed", "7"]),
        ("classify", work / "score.h5ad", work / "classified_again.h5ad", ["--seed", "7"]),
    ]
    out = {}
    for step, src, dst, extra in steps:
        code, err = _run_cli([step, str(src), "-o", str(dst), *extra])
        assert code == 0, f"{step}:\n{err[-3000:]}"
        out[dst.stem] = (step, src, dst, extra)
    return out


def _provenance(path: Path) -> dict:
    return ad.read_h5ad(path).uns[K.UNS][K.UNS_PROVENANCE]


@pytest.mark.parametrize("name", ["read", "gate", "score", "classified"])
def test_cli_output_records_provenance(cli_outputs, name):
    import cafclassify

    step, src, dst, extra = cli_outputs[name]
    prov = _provenance(dst)
    assert prov["step"] == step
    assert prov["package_version"] == cafclassify.__version__
    assert list(prov["inputs"]) == [str(src)]
    assert list(prov["input_sha256"]) == [_sha(src)]
    assert int(prov["seed"]) == (7 if "--seed" in extra else 0)
    params = prov["parameters"]
    assert isinstance(params, dict) and params["output"] == str(dst)
    assert "--seed" not in extra or int(params["seed"]) == 7
    assert prov["command"].startswith(f"cafclassify --threads 1 {step} ")
    assert {"python", "scanpy", "anndata", "numpy"} <= set(prov["versions"])
    for key in ("signature_set", "signature_sha256", "run_date_utc"):
        assert key in prov
    # the previous steps are kept in the history
    assert len(prov["history"]) == ["read", "gate", "score", "classified"].index(name)


@pytest.mark.parametrize("name", ["gate", "score"])
def test_cli_output_records_signature_hash(cli_outputs, name):
    from cafclassify.genesets import load_signatures

    lib = load_signatures("caf_v1")
    prov = _provenance(cli_outputs[name][2])
    assert prov["signature_set"] == lib.name
    assert prov["signature_sha256"] == lib.sha256
    assert len(prov["signature_sha256"]) == 64


def test_classify_provenance_names_the_signature_library_it_used(cli_outputs):
    from cafclassify.genesets import load_signatures

    prov = _provenance(cli_outputs["classified"][2])
    assert prov["signature_sha256"] == load_signatures("caf_v1").sha256


def test_cli_classify_twice_with_the_same_seed_is_identical(cli_outputs):
    a = ad.read_h5ad(cli_outputs["classified"][2])
    b = ad.read_h5ad(cli_outputs["classified_again"][2])
    for key in (K.OBS_SUBTYPE, K.OBS_LINEAGE, K.OBS_SEED):
        pd.testing.assert_series_equal(a.obs[key], b.obs[key])
    pd.testing.assert_frame_equal(a.obsm[K.OBSM_SUBTYPE_PROBA], b.obsm[K.OBSM_SUBTYPE_PROBA],
                                  check_exact=True)
    pd.testing.assert_frame_equal(a.obsm[K.OBSM_SCORES], b.obsm[K.OBSM_SCORES], check_exact=True)
    # the recorded parameters are the same too (only the date and output name may differ)
    pa, pb = a.uns[K.UNS][K.UNS_PROVENANCE], b.uns[K.UNS][K.UNS_PROVENANCE]
    drop = {"output"}
    assert json.dumps({k: v for k, v in pa["parameters"].items() if k not in drop}, sort_keys=True) \
        == json.dumps({k: v for k, v in pb["parameters"].items() if k not in drop}, sort_keys=True)
