"""Out-of-core steps: matrices stay on disk, per-cell results equal the in-memory run.

* :func:`cafclassify.io._lazy.open_lazy` keeps X *and* the layers on disk (anndata's
  ``backed="r"`` reads every layer into memory);
* :func:`cafclassify.io._lazy.write_annotated` writes new annotations with the source
  file's matrices copied unchanged, atomically, and never over its input;
* ``cafclassify --backed yes gate/score/classify`` give the same per-cell results
  (lineages, scores, subtypes, probabilities) as the in-memory steps, and
  ``--backed auto`` switches by cell count.
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import anndata as ad
import numpy as np
import pytest
import scipy.sparse as sp

from cafclassify import _keys as K
from cafclassify._errors import InputFileError
from cafclassify.io import _part_writer
from cafclassify.io._lazy import is_lazy, lazy_layer, lazy_layer_names, open_lazy, write_annotated

SIM_KW = dict(
    n_cells=1200, n_genes=2000, random_state=5,
    lineage_fractions={"fibroblast": 0.45, "immune": 0.2, "epithelial": 0.2,
                       "endothelial": 0.08, "mural": 0.07},
)


def _run(argv: list[str], threads: int = 1) -> str:
    from cafclassify.cli import main

    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(["--threads", str(threads), *argv])
    assert code == 0, err.getvalue()[-3000:]
    return err.getvalue()


@pytest.fixture(scope="module")
def read_file(tmp_path_factory) -> Path:
    import cafclassify as cc

    work = tmp_path_factory.mktemp("backed")
    cc.simulate(**SIM_KW).write_h5ad(work / "sim.h5ad")
    _run(["read", str(work / "sim.h5ad"), "-o", str(work / "read.h5ad")])
    return work / "read.h5ad"


# ------------------------------------------------------------------------- open_lazy


def test_open_lazy_keeps_x_and_layers_on_disk(read_file):
    mem = ad.read_h5ad(read_file)
    assert K.LAYER_COUNTS in mem.layers  # the file has a counts layer
    lazy = open_lazy(read_file)
    try:
        assert is_lazy(lazy)
        assert len(lazy.layers) == 0  # nothing loaded ...
        assert lazy_layer_names(lazy) == [K.LAYER_COUNTS]  # ... but it is there
        counts = lazy_layer(lazy, K.LAYER_COUNTS)
        assert not sp.issparse(counts)  # an on-disk dataset, not a matrix
        block = counts[100:350]
        assert (block != mem.layers[K.LAYER_COUNTS][100:350]).nnz == 0
        assert lazy.obs.equals(mem.obs)
        assert (lazy.X[:50] != mem.X[:50]).nnz == 0
    finally:
        lazy.file.close()


def test_lazy_layer_names_the_missing_layer(read_file):
    from cafclassify._errors import DataError

    lazy = open_lazy(read_file)
    try:
        with pytest.raises(DataError, match="'spliced' not found.*counts"):
            lazy_layer(lazy, "spliced")
    finally:
        lazy.file.close()


def test_open_lazy_refuses_a_non_h5ad_file(tmp_path):
    bad = tmp_path / "x.h5ad"
    bad.write_text("not hdf5")
    with pytest.raises(InputFileError, match="cannot be opened as an .h5ad"):
        open_lazy(bad)


# ------------------------------------------------------------------- write_annotated


def test_write_annotated_copies_matrices_and_writes_new_annotations(read_file, tmp_path):
    lazy = open_lazy(read_file)
    lazy.obs["flag"] = np.arange(lazy.n_obs) % 3 == 0
    lazy.obsm["extra"] = np.ones((lazy.n_obs, 2))
    lazy.uns["note"] = "added"
    out = write_annotated(lazy, tmp_path / "out.h5ad")
    lazy.file.close()
    src, new = ad.read_h5ad(read_file), ad.read_h5ad(out)
    assert (new.X != src.X).nnz == 0 and new.X.dtype == src.X.dtype
    assert (new.layers[K.LAYER_COUNTS] != src.layers[K.LAYER_COUNTS]).nnz == 0
    assert new.obs["flag"].sum() == (np.arange(src.n_obs) % 3 == 0).sum()
    assert new.uns["note"] == "added"
    assert "flag" not in src.obs  # the input is unchanged
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.h5ad"]  # no temp files left


def test_write_annotated_never_overwrites_its_input(read_file):
    lazy = open_lazy(read_file)
    try:
        with pytest.raises(InputFileError, match="output file is the input file"):
            write_annotated(lazy, read_file)
    finally:
        lazy.file.close()


def test_write_annotated_leaves_nothing_when_interrupted(read_file, tmp_path, monkeypatch):
    import h5py

    lazy = open_lazy(read_file)
    (tmp_path / "out.h5ad").write_bytes(b"previous")

    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(h5py.Group, "copy", boom)
    with pytest.raises(KeyboardInterrupt):
        write_annotated(lazy, tmp_path / "out.h5ad")
    lazy.file.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.h5ad"]
    assert (tmp_path / "out.h5ad").read_bytes() == b"previous"


# --------------------------------------------------------------- backed CLI steps


@pytest.fixture(scope="module")
def chains(read_file):
    work = read_file.parent
    sim = work / "sim.h5ad"
    out = {}
    started = []
    real_init = _part_writer.PartWriter.__init__

    def counting_init(self, *args):
        started.append(args[0].__name__)
        real_init(self, *args)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(_part_writer, "PARALLEL_MIN_VALUES", 0)  # a second writer even for a small file
        mp.setattr(_part_writer.PartWriter, "__init__", counting_init)
        for mode in ("no", "yes"):
            d = work / mode
            d.mkdir()
            # out of core with 2 threads: read and qc --filter write the counts layer in a
            # second process (PartWriter); the result must not change
            threads = 2 if mode == "yes" else 1
            _run(["--backed", mode, "read", str(sim), "-o", str(d / "read.h5ad")], threads)
            _run(["--backed", mode, "qc", str(d / "read.h5ad"), "-o", str(d / "qc.h5ad"), "--filter",
                  "--nmads", "2.5"], threads)
            log = _run(["--backed", mode, "gate", str(d / "qc.h5ad"), "-o", str(d / "gate.h5ad")])
            _run(["--backed", mode, "score", str(d / "gate.h5ad"), "-o", str(d / "score.h5ad")])
            _run(["--backed", mode, "classify", str(d / "score.h5ad"), "-o", str(d / "cls.h5ad"),
                  "--cells-csv", str(d / "cells.csv")])
            out[mode] = (d, log)
    # the backed read and qc --filter each wrote their counts layer in a second process
    assert sorted(started) == ["_copy_rows_to_part", "_counts_part"]
    return out


def test_backed_read_streams_and_qc_filters_out_of_core(chains):
    mem = ad.read_h5ad(chains["no"][0] / "qc.h5ad")
    disk = ad.read_h5ad(chains["yes"][0] / "qc.h5ad")
    rec = ad.read_h5ad(chains["yes"][0] / "read.h5ad").uns[K.UNS][K.UNS_READ]
    assert rec["streamed"] is True and rec["n_blocks"] >= 1
    assert 0 < disk.n_obs < SIM_KW["n_cells"]  # nmads=2.5 removes some cells ...
    assert list(disk.obs_names) == list(mem.obs_names)  # ... the same ones


def test_backed_steps_say_they_keep_the_matrix_on_disk(chains):
    assert "matrices kept on disk" in chains["yes"][1]
    assert "matrices kept on disk" not in chains["no"][1]


@pytest.mark.parametrize("step", ["read", "qc", "gate", "score", "cls"])
def test_backed_steps_equal_in_memory_steps(chains, step):
    a = ad.read_h5ad(chains["no"][0] / f"{step}.h5ad")
    b = ad.read_h5ad(chains["yes"][0] / f"{step}.h5ad")
    assert list(a.obs.columns) == list(b.obs.columns)
    for col in a.obs.columns:
        assert np.array_equal(a.obs[col].astype(str).to_numpy(), b.obs[col].astype(str).to_numpy()), col
    assert sorted(a.obsm) == sorted(b.obsm)
    for key in a.obsm:
        x = np.asarray(a.obsm[key], dtype=float)
        y = np.asarray(b.obsm[key], dtype=float)
        assert np.array_equal(x, y, equal_nan=True), key
    assert (a.X != b.X).nnz == 0
    assert (a.layers[K.LAYER_COUNTS] != b.layers[K.LAYER_COUNTS]).nnz == 0
    assert a.var.equals(b.var)


def test_open_lazy_opens_files_with_raw(tmp_path):
    a = ad.AnnData(sp.random(40, 12, density=0.3, format="csr", dtype=np.float32, random_state=0))
    a.raw = a.copy()
    a.write_h5ad(tmp_path / "raw.h5ad")
    lazy = open_lazy(tmp_path / "raw.h5ad")
    write_annotated(lazy, tmp_path / "out.h5ad")
    lazy.file.close()
    assert (ad.read_h5ad(tmp_path / "out.h5ad").raw.X != a.raw.X).nnz == 0


def test_compression_option_is_applied(read_file, tmp_path):
    import h5py

    for comp in ("lzf", "none"):
        _run(["--backed", "no", "--compression", comp, "qc", str(read_file), "-o", str(tmp_path / f"{comp}.h5ad")])
        with h5py.File(tmp_path / f"{comp}.h5ad") as f:
            assert f["X/data"].compression == (None if comp == "none" else comp)


def test_backed_chain_assigns_subtypes(chains):
    b = ad.read_h5ad(chains["yes"][0] / "cls.h5ad")
    called = b.obs[K.OBS_SUBTYPE].astype(str)
    assert (b.obs[K.OBS_LINEAGE] == "fibroblast").sum() > 200
    assert called[b.obs[K.OBS_LINEAGE] == "fibroblast"].ne("unassigned").mean() > 0.5


def test_backed_auto_switches_on_the_cell_count(read_file, tmp_path):
    log = _run(["--backed-min-cells", "1000", "gate", str(read_file), "-o", str(tmp_path / "a.h5ad")])
    assert "matrices kept on disk" in log  # 1,200 cells >= 1,000
    log = _run(["--backed-min-cells", "5000", "gate", str(read_file), "-o", str(tmp_path / "b.h5ad")])
    assert "matrices kept on disk" not in log


def test_files_with_64_bit_indptr_run_out_of_core(read_file, chains, tmp_path):
    """Atlas-sized files (> 2**31 stored values) carry a 64-bit indptr: same results."""
    import shutil

    import h5py

    wide = tmp_path / "wide.h5ad"
    shutil.copy(chains["yes"][0] / "qc.h5ad", wide)
    with h5py.File(wide, "a") as f:
        for key in ("X", f"layers/{K.LAYER_COUNTS}"):
            ptr = f[f"{key}/indptr"][()].astype(np.int64)
            del f[f"{key}/indptr"]
            f.create_dataset(f"{key}/indptr", data=ptr)
        assert f["X/indptr"].dtype == np.int64
    _run(["--backed", "yes", "qc", str(wide), "-o", str(tmp_path / "qc.h5ad"), "--filter"])
    _run(["--backed", "yes", "gate", str(wide), "-o", str(tmp_path / "gate.h5ad")])
    _run(["--backed", "yes", "score", str(tmp_path / "gate.h5ad"), "-o", str(tmp_path / "score.h5ad")])
    ref = ad.read_h5ad(chains["yes"][0] / "score.h5ad")
    got = ad.read_h5ad(tmp_path / "score.h5ad")
    assert np.array_equal(got.obs[K.OBS_LINEAGE].astype(str), ref.obs[K.OBS_LINEAGE].astype(str))
    assert np.array_equal(got.obsm["caf_scores"].to_numpy(), ref.obsm["caf_scores"].to_numpy())


@pytest.mark.parametrize("case", ["contiguous", "dense_window", "sparse_window", "mixed", "repeats", "empty"])
def test_take_rows_equals_indexing_on_disk(read_file, case, monkeypatch):
    from cafclassify import _utils

    monkeypatch.setattr(_utils, "TAKE_BLOCK", 100)  # several windows on a small file
    mem = ad.read_h5ad(read_file).X
    rng = np.random.default_rng(3)
    rows = {
        "contiguous": np.arange(130, 420),
        "dense_window": rng.choice(np.arange(200, 300), 80, replace=False),  # >= half of a window
        "sparse_window": rng.choice(mem.shape[0], 25, replace=False),  # a few rows per window
        "mixed": np.r_[np.arange(0, 90), rng.choice(np.arange(400, 1100), 30, replace=False)],
        "repeats": np.r_[np.arange(50, 60), [55, 3, 3, 999]],
        "empty": np.array([], dtype=int),
    }[case]
    lazy = open_lazy(read_file)
    try:
        got = _utils.take_rows(lazy.X, rows)
    finally:
        lazy.file.close()
    assert got.shape == (rows.size, mem.shape[1])
    assert (sp.csr_matrix(got) != mem[rows]).nnz == 0


def test_layer_of_a_backed_object_is_read_from_disk(read_file):
    """score(layer="counts") on open_lazy(): the shared matrix accessor finds on-disk layers."""
    import cafclassify as cc

    mem = ad.read_h5ad(read_file)
    cc.score(mem, layer=K.LAYER_COUNTS)
    lazy = open_lazy(read_file)
    try:
        cc.score(lazy, layer=K.LAYER_COUNTS)
        got = lazy.obsm["caf_scores"]
    finally:
        lazy.file.close()
    assert np.array_equal(got.to_numpy(), mem.obsm["caf_scores"].to_numpy())


def test_no_part_files_are_left_next_to_the_outputs(chains):
    names = [p.name for p in chains["yes"][0].iterdir()]
    assert not [n for n in names if ".part" in n or n.endswith(".counts")], names


def test_gathered_rows_equal_the_rows_on_disk(read_file):
    from cafclassify._utils import GatheredRows, take_rows

    mem = ad.read_h5ad(read_file).X
    rows = np.random.default_rng(0).choice(mem.shape[0], 300, replace=False)
    lazy = open_lazy(read_file)
    try:
        g = GatheredRows(lazy.X, rows)
        assert g.nbytes > 0
        some = rows[::-1][:50]  # any order, a subset
        assert (take_rows(g, some) != mem[some]).nnz == 0
        outside = np.setdiff1d(np.arange(mem.shape[0]), rows)[:7]  # not gathered: read from disk
        assert (take_rows(g, np.r_[some[:3], outside]) != mem[np.r_[some[:3], outside]]).nnz == 0
        assert take_rows(g, np.array([], dtype=int)).shape == (0, mem.shape[1])
        # all the gathered rows, in order: log-normalised from the gathered block itself
        # (no copy of it first), into arrays of their own; the block is not modified
        from cafclassify.tl import _fibroblasts as F

        assert g.holds_exactly(np.sort(rows)) and not g.holds_exactly(rows[::-1])
        before = g.block.copy()
        for counts in (True, False):
            got = F._lognorm(g.block, counts, copy=True)
            assert (got != F._lognorm(sp.csr_matrix(mem[np.sort(rows)]), counts)).nnz == 0
            assert not np.shares_memory(got.data, g.block.data)
            assert not np.shares_memory(got.indices, g.block.indices)
        assert (g.block != before).nnz == 0
    finally:
        lazy.file.close()


def test_training_on_a_backed_file_reads_fibroblasts_once_or_per_use_alike(chains, monkeypatch, caplog):
    """The fibroblasts are gathered into memory once (default) or re-read per use: same result."""
    import logging

    import cafclassify as cc
    from cafclassify.tl import _fibroblasts as _classify

    path = chains["yes"][0] / "score.h5ad"
    results = {}
    for limit in (_classify.GATHER_MAX_BYTES, 0):
        monkeypatch.setattr(_classify, "GATHER_MAX_BYTES", limit)
        lazy = open_lazy(path)
        try:
            with caplog.at_level(logging.INFO, logger="cafclassify"):
                caplog.clear()
                cc.classify(lazy)
            results[limit] = (lazy.obs[K.OBS_SUBTYPE].astype(str).to_numpy(),
                              lazy.obsm[K.OBSM_SUBTYPE_PROBA].to_numpy())
            gathered = "from disk once" in caplog.text
        finally:
            lazy.file.close()
        assert gathered == (limit > 0)
    (a_lab, a_p), (b_lab, b_p) = results.values()
    assert np.array_equal(a_lab, b_lab)
    assert np.array_equal(a_p, b_p, equal_nan=True)


def test_gate_collects_its_subsample_while_scoring(read_file):
    """The clustering subsample read during the scoring pass equals the rows read directly."""
    from cafclassify._utils import stack_rows
    from cafclassify.genesets import load_signatures, match_signatures
    from cafclassify.tl._gate_embed import _graph_subsample
    from cafclassify.tl._gate_null import _null_scores

    mem = ad.read_h5ad(read_file)
    lib = load_signatures("caf_v1").subset(names=["fibroblast", "immune"])
    matched = match_signatures(lib, mem, min_genes=2)
    lazy = open_lazy(read_file)
    try:
        for cap in (100, 5000):  # a subsample, and all cells
            idx = _graph_subsample(mem.n_obs, cap, 0)
            parts: list = []
            _null_scores(lazy.X, matched, method="ucell", n_null=5, rng=np.random.default_rng(0),
                         max_rank=1500, collect=idx, collected=parts)
            assert (stack_rows(parts) != mem.X[idx]).nnz == 0
    finally:
        lazy.file.close()


def test_gene_sd_from_sums_equals_a_pass_over_the_matrix(read_file):
    from cafclassify.tl._gate_refine import _gene_sd, col_sums, log_block

    X = ad.read_h5ad(read_file).layers[K.LAYER_COUNTS]
    genes = np.arange(0, X.shape[1], 7)
    one_pass = _gene_sd(X, genes, "counts")
    half = X.shape[0] // 2  # sums accumulated over two blocks, as the gate does
    s = [a + b for a, b in zip(col_sums(log_block(X[:half], "counts"), X.shape[1]),
                               col_sums(log_block(X[half:], "counts"), X.shape[1]), strict=True)]
    np.testing.assert_allclose(_gene_sd(X, genes, "counts", tuple(s)), one_pass, rtol=1e-10)
    dense = col_sums(log_block(X[:50].toarray(), "counts"), X.shape[1])
    sparse = col_sums(log_block(X[:50], "counts"), X.shape[1])
    np.testing.assert_allclose(dense, sparse, rtol=1e-12)  # same values, other summation order
