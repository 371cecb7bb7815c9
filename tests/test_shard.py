"""Sharding: split by cells, process shards separately, merge; per-cell results unchanged.

The central test runs the same CLI chain on a simulated dataset twice: whole
(read -> qc --filter -> gate -> score) and sharded into 3 (read -> shard x 3 ->
qc x 3 -> score x 3 -> merge --filter -> gate), and requires every per-cell output
(matrix, QC metrics and marks, lineage, scores) to be identical. Cells are ordered by
library size so that per-shard QC thresholds differ from the global ones: the test
also checks that they would have given different marks, i.e. that the recomputation
over all cells in ``merge`` is what makes the results equal.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import anndata as ad
import h5py
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from cafclassify._errors import DataError
from cafclassify.cli import build_parser, main
from cafclassify.io._shard import (
    count_cells,
    merge_h5ad,
    n_shards_for,
    requalify_qc,
    shard_bounds,
    write_shard,
)

REPO = Path(__file__).resolve().parents[1]
N_SHARDS = 3


def _cli(*argv: str) -> None:
    assert main([*map(str, argv)]) == 0, f"cafclassify {' '.join(map(str, argv))} failed"


def _has_cli(step: str) -> bool:
    parser = build_parser()
    sub = next(a for a in parser._actions if getattr(a, "choices", None) and "read" in a.choices)
    return step in sub.choices


def _shard(src: Path, out: Path, index: int) -> None:
    if _has_cli("shard"):
        _cli("shard", src, "-o", out, "--n-shards", N_SHARDS, "--index", index, "--chunk-size", 300)
    else:  # CLI subcommand not wired yet: the same library call
        write_shard(src, out, n_shards=N_SHARDS, index=index, chunk_size=300)


def _merge(inputs: list[Path], out: Path) -> None:
    if _has_cli("merge"):
        _cli("merge", *inputs, "-o", out, "--filter", "--chunk-size", 250)
    else:
        merge_h5ad(inputs, out, filter=True, chunk_size=250)


# --------------------------------------------------------------------------- planning


def test_shard_bounds_are_balanced_contiguous_and_complete():
    for n, k in [(10, 3), (9, 3), (1000, 7), (5, 5), (1, 1)]:
        b = shard_bounds(n, k)
        assert len(b) == k and b[0][0] == 0 and b[-1][1] == n
        assert all(b[i][1] == b[i + 1][0] for i in range(k - 1))
        sizes = [stop - start for start, stop in b]
        assert max(sizes) - min(sizes) <= 1
    with pytest.raises(DataError):
        shard_bounds(2, 3)
    with pytest.raises(DataError):
        shard_bounds(10, 0)


def test_n_shards_for_threshold():
    assert n_shards_for(1_000_000, 200_000) == 5
    assert n_shards_for(1_000_001, 200_000) == 6
    assert n_shards_for(200_000, 200_000) == 1
    assert n_shards_for(10**7, 0) == 1 and n_shards_for(10**7, None) == 1


def test_count_cells_reads_headers(tmp_path):
    a = ad.AnnData(sp.random(37, 11, density=0.3, format="csr", dtype=np.float32, random_state=0))
    a.write_h5ad(tmp_path / "a.h5ad")
    assert count_cells(tmp_path / "a.h5ad") == 37
    (tmp_path / "m.mtx").write_text("%%MatrixMarket matrix coordinate integer general\n%c\n50 23 4\n1 1 1\n")
    assert count_cells(tmp_path / "m.mtx") == 23  # 10x layout: genes x cells
    (tmp_path / "t.csv").write_text("g,c1\nA,1\n")
    assert count_cells(tmp_path / "t.csv") is None


# --------------------------------------------------------------------------- round trip


def _toy(n: int = 101, g: int = 40, seed: int = 0) -> ad.AnnData:
    rng = np.random.default_rng(seed)
    X = sp.random(n, g, density=0.2, format="csr", dtype=np.float32, random_state=seed)
    obs = pd.DataFrame(
        {
            "sample": pd.Categorical(rng.choice(["s1", "s2", "s3"], n), categories=["s3", "s1", "s2"]),
            "x": rng.normal(size=n),
            "flag": rng.random(n) < 0.5,
        },
        index=[f"cell{i}" for i in range(n)],
    )
    a = ad.AnnData(X, obs=obs, var=pd.DataFrame(index=[f"G{j}" for j in range(g)]))
    a.layers["counts"] = sp.csr_matrix(np.round(X.toarray() * 10).astype(np.int32))
    a.layers["dense"] = rng.normal(size=(n, g)).astype(np.float32)
    a.obsm["scores"] = pd.DataFrame(rng.normal(size=(n, 3)), index=a.obs_names, columns=["a", "b", "c"])
    a.obsm["X_emb"] = rng.normal(size=(n, 2))
    a.uns["note"] = {"k": 1}
    return a


def test_shard_then_merge_round_trip_is_exact(tmp_path):
    a = _toy()
    src = tmp_path / "a.h5ad"
    a.write_h5ad(src)
    shards = [tmp_path / f"s{i}.h5ad" for i in range(N_SHARDS)]
    for i, s in enumerate(shards):
        write_shard(src, s, n_shards=N_SHARDS, index=i, chunk_size=7)
    sizes = [ad.read_h5ad(s).n_obs for s in shards]
    assert sizes == [34, 34, 33]
    out = tmp_path / "merged.h5ad"
    merge_h5ad(shards[::-1], out, chunk_size=13)  # any input order: merged in shard order
    m = ad.read_h5ad(out)
    assert list(m.obs_names) == list(a.obs_names)
    assert (m.X != a.X).nnz == 0 and m.X.dtype == a.X.dtype
    assert (m.layers["counts"] != a.layers["counts"]).nnz == 0
    np.testing.assert_array_equal(m.layers["dense"], a.layers["dense"])
    pd.testing.assert_frame_equal(m.obs, a.obs)
    assert list(m.obs["sample"].cat.categories) == ["s3", "s1", "s2"]
    pd.testing.assert_frame_equal(m.obsm["scores"], a.obsm["scores"])
    np.testing.assert_array_equal(m.obsm["X_emb"], a.obsm["X_emb"])
    assert m.uns["note"] == {"k": 1}
    assert m.uns["cafclassify"]["shard"]["n_shards"] == N_SHARDS


def test_merge_refuses_incomplete_or_mismatched_shards(tmp_path):
    a = _toy()
    src = tmp_path / "a.h5ad"
    a.write_h5ad(src)
    shards = [tmp_path / f"s{i}.h5ad" for i in range(N_SHARDS)]
    for i, s in enumerate(shards):
        write_shard(src, s, n_shards=N_SHARDS, index=i)
    with pytest.raises(DataError, match="complete set"):
        merge_h5ad(shards[:2], tmp_path / "m.h5ad")
    with pytest.raises(DataError, match="complete set"):
        merge_h5ad([shards[0], shards[0], shards[2]], tmp_path / "m.h5ad")
    # a shard whose genes differ
    b = ad.read_h5ad(shards[1])
    b.var_names = [f"X{j}" for j in range(b.n_vars)]
    b.write_h5ad(shards[1])
    with pytest.raises(DataError, match="different genes"):
        merge_h5ad(shards, tmp_path / "m.h5ad")
    assert not (tmp_path / "m.h5ad").exists()


def test_requalify_refuses_doublet_qc():
    obs = pd.DataFrame({"n_genes_by_counts": [1], "total_counts": [1.0], "pct_counts_mt": [0.0],
                        "pct_counts_ribo": [0.0]})
    with pytest.raises(DataError, match="Scrublet"):
        requalify_qc(obs, {"params": {"nmads": 5.0, "doublets": True}}, n_vars=100)


# --------------------------------------------------------------------------- sharded == unsharded


def _plain(x):
    """uns values read back from .h5ad (numpy arrays/scalars) as plain Python, for ==."""
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, np.generic):
        return x.item()
    return x


@pytest.fixture(scope="module")
def chains(tmp_path_factory):
    from cafclassify.datasets import simulate

    d = tmp_path_factory.mktemp("shardchain")
    sim = simulate(1200, n_genes=2000, n_batches=2, random_state=3)
    # order cells by library size: shards then have very different QC distributions
    lib = np.asarray(sim.X.sum(axis=1)).ravel()
    sim = sim[np.argsort(lib, kind="stable")].copy()
    sim.obs["batch"] = sim.obs["batch"].astype(str).astype("category")
    sim.write_h5ad(d / "sim.h5ad")
    _cli("read", d / "sim.h5ad", "-o", d / "read.h5ad", "--sample-column", "batch")
    # whole dataset (the workflow runs the gate between qc and score; UCell scores do not
    # depend on it, and the gate is compared separately below)
    _cli("qc", d / "read.h5ad", "-o", d / "qc.h5ad", "--filter")
    _cli("score", d / "qc.h5ad", "-o", d / "scored.h5ad")
    # sharded
    scored = []
    for i in range(N_SHARDS):
        _shard(d / "read.h5ad", d / f"read_{i}.h5ad", i)
        _cli("qc", d / f"read_{i}.h5ad", "-o", d / f"qc_{i}.h5ad", "--no-filter")  # as the workflow
        _cli("score", d / f"qc_{i}.h5ad", "-o", d / f"scored_{i}.h5ad")
        scored.append(d / f"scored_{i}.h5ad")
    _merge(scored, d / "merged.h5ad")
    return d


@pytest.fixture(scope="module")
def gated(chains):
    _cli("gate", chains / "qc.h5ad", "-o", chains / "gate.h5ad")
    _cli("gate", chains / "merged.h5ad", "-o", chains / "merged_gate.h5ad")
    return chains


def test_sharded_matrix_and_qc_equal_unsharded(chains):
    u = ad.read_h5ad(chains / "qc.h5ad")
    m = ad.read_h5ad(chains / "merged.h5ad")
    assert u.n_obs < 1200  # QC removed cells, so the comparison covers filtering
    assert list(m.obs_names) == list(u.obs_names)
    assert (m.X != u.X).nnz == 0 and (m.layers["counts"] != u.layers["counts"]).nnz == 0
    pd.testing.assert_frame_equal(m.obs, u.obs)  # metrics, qc_pass, qc_reason, categories
    qu, qm = u.uns["cafclassify"]["qc"], m.uns["cafclassify"]["qc"]
    assert set(qu["thresholds"]) == {"batch1", "batch2"}
    assert _plain(qm["thresholds"]) == _plain(qu["thresholds"])
    assert _plain(qm["table"]) == _plain(qu["table"]) and _plain(qm["filtered"]) == _plain(qu["filtered"])


def test_per_shard_thresholds_alone_would_differ(chains):
    """Guard: the per-shard marks disagree with the global ones (the merge must recompute)."""
    local = pd.concat([ad.read_h5ad(chains / f"qc_{i}.h5ad").obs["qc_pass"] for i in range(N_SHARDS)])
    glob = ad.read_h5ad(chains / "qc.h5ad").obs_names
    global_pass = local.index.isin(glob)
    assert (local.to_numpy() != global_pass).sum() > 0


def test_sharded_scores_equal_unsharded(chains):
    u = ad.read_h5ad(chains / "scored.h5ad")
    m = ad.read_h5ad(chains / "merged.h5ad")
    assert list(m.obs_names) == list(u.obs_names)
    su, sm = u.obsm["caf_scores"], m.obsm["caf_scores"]
    assert list(sm.columns) == list(su.columns) and len(su.columns) > 5
    np.testing.assert_array_equal(sm.to_numpy(), su.to_numpy())  # exact, not approximate


@pytest.mark.slow
def test_gate_on_merged_file_equals_unsharded(gated):
    """The gate clusters all cells: run on the merged file it gives the unsharded lineages."""
    u = ad.read_h5ad(gated / "gate.h5ad")
    m = ad.read_h5ad(gated / "merged_gate.h5ad")
    cols = [c for c in u.obs.columns if c.startswith("caf_")]
    assert "caf_lineage" in cols and u.obs["caf_lineage"].nunique() >= 4
    pd.testing.assert_frame_equal(m.obs[cols], u.obs[cols])
    pd.testing.assert_frame_equal(m.obsm["caf_lineage_scores"], u.obsm["caf_lineage_scores"])


def test_shard_record_names_the_cell_range(chains):
    with h5py.File(chains / "read_1.h5ad", "r") as f:
        rec = {k: f["uns/cafclassify/shard"][k][()] for k in ("index", "n_shards", "start", "stop")}
    assert rec == {"index": 1, "n_shards": N_SHARDS, "start": 400, "stop": 800}


@pytest.mark.skipif(not _has_cli("merge"), reason="`cafclassify shard/merge` not wired into cli.py yet")
def test_cli_merge_writes_coverage_and_provenance(chains, tmp_path):
    out, cov = tmp_path / "m.h5ad", tmp_path / "cov.csv"
    _cli("merge", *[chains / f"scored_{i}.h5ad" for i in range(N_SHARDS)], "-o", out, "--filter",
         "--coverage-csv", cov)
    table = pd.read_csv(cov)
    assert {"set", "coverage"} <= set(table.columns) and len(table) > 5
    prov = ad.read_h5ad(out).uns["cafclassify"]["provenance"]
    assert prov["step"] == "merge"
    assert any(str(k).endswith("_shard") for k in prov["history"])


# --------------------------------------------------------------------------- workflow


def _dry_run(tmp_path, max_cells) -> dict[str, int]:
    # a fresh working folder with the repository's config and example data: results/ of a
    # workflow run in the clone must not change what the dry run plans
    work = tmp_path / f"work_{max_cells}"
    (work / "config").mkdir(parents=True)
    (work / "resources").mkdir()
    for name in ("config.yaml", "datasets.tsv"):
        shutil.copy(REPO / "config" / name, work / "config" / name)
    (work / "resources" / "example").symlink_to(REPO / "resources" / "example")
    cfg = tmp_path / f"cfg_{max_cells}.yaml"
    cfg.write_text(f"shard:\n  max_cells: {max_cells}\n")
    r = subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", "--nolock", "--cores", "1",
         "--snakefile", str(REPO / "Snakefile"), "--directory", str(work),
         "--configfile", str(work / "config" / "config.yaml"), str(cfg)],
        cwd=work, capture_output=True, text=True, timeout=180,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    text = r.stdout + r.stderr
    table = text[text.index("Job stats"):]
    counts = {}
    for line in table.splitlines()[3:]:
        parts = line.split()
        if len(parts) != 2 or not parts[1].isdigit():
            break
        counts[parts[0]] = int(parts[1])
    return counts


@pytest.mark.skipif(not (REPO / "Snakefile").exists(), reason="workflow not in this checkout")
def test_dry_run_shards_large_datasets_only(tmp_path):
    # crc_example has 2850 cells (3 shards of <= 1000), breast_example 1564 (2 shards);
    # synthetic_control does not exist before the run, so it is not sharded either
    jobs = _dry_run(tmp_path, 1000)
    assert jobs["shard"] == 5 and jobs["qc_shard"] == 5 and jobs["score_shard"] == 5
    assert jobs["merge_scored_shards"] == 2 and jobs["gate_scored"] == 2
    assert jobs["qc"] == 1 and jobs["score"] == 1 and jobs["gate"] == 1  # the synthetic one
    jobs = _dry_run(tmp_path, 0)
    assert "shard" not in jobs and jobs["qc"] == 3 and jobs["score"] == 3


def test_streamed_matrices_get_a_64_bit_indptr_when_they_may_outgrow_32_bits(tmp_path):
    """anndata refuses to append past 2**31 - 1 values to a 32-bit indptr (1M cells x
    ~2,000 genes): the first block decides, from an upper bound on the final size."""
    import h5py
    from anndata.io import read_elem

    from cafclassify.io._h5matrix import _MatrixWriter, wide_indptr

    X = sp.random(900, 40, density=0.2, format="csr", dtype=np.float32, random_state=1)
    assert wide_indptr(X, 10**6).indptr.dtype == X.indptr.dtype  # small: unchanged
    wide = wide_indptr(X, 2**31)
    assert wide.indptr.dtype == np.int64 and X.indptr.dtype == np.int32  # input not modified
    for n_rows, want in ((900, np.int32), (60_000_000, np.int64)):  # 60M x 40 > 2**31
        with h5py.File(tmp_path / f"{n_rows}.h5", "w") as f:
            w = _MatrixWriter(f, "X", n_rows, 40, "gzip")
            for a in range(0, 900, 300):
                w.append(X[a:a + 300])
            assert f["X/indptr"].dtype == want
            back = read_elem(f["X"])
        assert (back != X).nnz == 0


def test_filter_with_two_processes_equals_one_process(tmp_path, monkeypatch):
    """filter_cells_h5ad(n_jobs=2) writes the counts layer in a second process: same file."""
    from cafclassify.io import _part_writer
    from cafclassify.io._filter_h5ad import filter_cells_h5ad

    started = []
    monkeypatch.setattr(_part_writer, "PARALLEL_MIN_VALUES", 0)  # a small file: parallel anyway
    real = _part_writer.PartWriter.__init__
    monkeypatch.setattr(_part_writer.PartWriter, "__init__", lambda self, *a: (started.append(a), real(self, *a))[1])

    a = _toy(150)
    a.layers["counts"] = sp.csr_matrix(a.X.copy())
    a.layers["counts"].data = np.round(a.layers["counts"].data * 3)
    a.write_h5ad(tmp_path / "in.h5ad")
    keep = np.random.default_rng(1).random(a.n_obs) < 0.7
    for jobs in (1, 2):
        filter_cells_h5ad(tmp_path / "in.h5ad", tmp_path / f"out{jobs}.h5ad", keep, chunk_size=40,
                          compression="lzf", n_jobs=jobs)
    one, two = ad.read_h5ad(tmp_path / "out1.h5ad"), ad.read_h5ad(tmp_path / "out2.h5ad")
    ref = a[keep]
    for got in (one, two):
        assert (got.X != ref.X).nnz == 0
        assert (got.layers["counts"] != ref.layers["counts"]).nnz == 0
    with h5py.File(tmp_path / "out2.h5ad") as f:
        assert f["layers/counts/data"].compression == "lzf"
        assert f["layers/counts"].attrs["encoding-type"] == "csr_matrix"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.h5ad", "out1.h5ad", "out2.h5ad"]
    assert len(started) == 1  # n_jobs=2: one part writer; n_jobs=1: none


def test_small_files_are_written_by_one_process(tmp_path, monkeypatch):
    from cafclassify.io import _filter_h5ad

    def refuse(*a, **k):
        raise AssertionError("no second process for a small file")

    monkeypatch.setattr(_filter_h5ad, "PartWriter", refuse)
    a = _toy(60)
    a.write_h5ad(tmp_path / "in.h5ad")
    _filter_h5ad.filter_cells_h5ad(tmp_path / "in.h5ad", tmp_path / "out.h5ad", np.ones(60, bool), n_jobs=2)
    assert (ad.read_h5ad(tmp_path / "out.h5ad").X != a.X).nnz == 0


def test_a_failing_part_writer_raises_and_leaves_nothing(tmp_path):
    """The second process's error reaches the caller; no part file and no output remain."""
    from cafclassify._errors import InputFileError
    from cafclassify.io._filter_h5ad import _copy_rows_to_part
    from cafclassify.io._part_writer import PartWriter

    part = tmp_path / "out.h5ad.part0"
    w = PartWriter(_copy_rows_to_part, (str(tmp_path / "missing.h5ad"), "X", np.ones(3, bool), 10, None), part)
    try:
        with h5py.File(tmp_path / "out.h5ad", "w") as g, pytest.raises((InputFileError, RuntimeError)) as exc:
            w.collect(g, "X")
    finally:
        w.close()
    assert "missing.h5ad" in str(exc.value)
    assert not part.exists()
