"""Tests for the command line (cafclassify.cli): options, errors, provenance, atomic outputs, tables."""

from __future__ import annotations

import datetime as dt
import hashlib
import importlib.util
import os
import subprocess
import sys

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from cafclassify import _keys as K
from cafclassify import cli
from cafclassify._errors import ConfigError
from cafclassify.cli import main
from cafclassify.get import cell_table, proportion_table
from cafclassify.pp import pool

STEPS = [
    "fetch",
    "read",
    "qc",
    "gate",
    "score",
    "train",
    "classify",
    "report",
    "summary",
    "methods",
    "signatures",
    "simulate",
]


def _has(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


def _sha(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


@pytest.fixture
def counts_h5ad(tmp_path):
    """A small raw-count dataset with human symbols (incl. mitochondrial genes) and two samples."""
    rng = np.random.default_rng(0)
    n_cells, n_genes = 120, 200
    genes = [f"MT-{i}" for i in ("ND1", "CO1", "CYB")] + [f"GENE{i}" for i in range(n_genes - 3)]
    genes[3:8] = ["COL1A1", "DCN", "PDGFRA", "ACTA2", "PTPRC"]
    X = sp.csr_matrix(rng.poisson(1.0, size=(n_cells, n_genes)).astype(np.float32))
    obs = pd.DataFrame(
        {"patient": np.repeat(["p1", "p2"], n_cells // 2), "author_label": "x"},
        index=[f"cell{i:04d}" for i in range(n_cells)],
    )
    a = ad.AnnData(X=X, obs=obs, var=pd.DataFrame(index=genes))
    path = tmp_path / "counts.h5ad"
    a.write_h5ad(path)
    return path


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


# ----------------------------------------------------------------------------- parser


def test_help_lists_every_step(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    for step in STEPS:
        assert f"    {step} " in out, step


def test_console_script_is_installed():
    exe = os.path.join(os.path.dirname(sys.executable), "cafclassify")
    proc = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0
    assert proc.stdout.startswith("cafclassify ")


def test_unknown_option_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as info:
        main(["qc", "in.h5ad", "-o", "out.h5ad", "--no-such-option"])
    assert info.value.code == 2
    assert "unrecognized arguments" in capsys.readouterr().err


def test_global_options_work_before_and_after_the_step(capsys, tmp_path):
    missing = tmp_path / "missing.h5ad"
    for argv in (
        ["--debug", "qc", str(missing), "-o", str(tmp_path / "o.h5ad")],
        ["qc", str(missing), "-o", str(tmp_path / "o.h5ad"), "--debug"],
    ):
        code, _, err = run(capsys, *argv)
        assert code == 2
        assert "Traceback" in err  # --debug took effect in both positions


# ----------------------------------------------------------------------------- errors


def test_user_error_is_one_paragraph_exit_2_no_traceback(capsys, tmp_path):
    missing = tmp_path / "nope.h5ad"
    code, out, err = run(capsys, "qc", str(missing), "-o", str(tmp_path / "o.h5ad"))
    assert code == 2
    assert "Traceback" not in err
    line = [ln for ln in err.splitlines() if ln.startswith("cafclassify qc: error:")]
    assert len(line) == 1
    assert str(missing) in line[0]
    assert "does not exist" in line[0]
    assert not (tmp_path / "o.h5ad").exists()


def test_unexpected_exception_exit_1_with_debug_hint(capsys, tmp_path, monkeypatch, counts_h5ad):
    import cafclassify.pp

    def boom(*args, **kwargs):
        raise RuntimeError("kaboom")

    monkeypatch.setattr(cafclassify.pp, "qc", boom)
    out_path = tmp_path / "o.h5ad"
    code, _, err = run(capsys, "qc", str(counts_h5ad), "-o", str(out_path))
    assert code == 1
    assert "kaboom" in err
    assert "--debug" in err
    assert "Traceback" not in err
    code, _, err = run(capsys, "qc", str(counts_h5ad), "-o", str(out_path), "--debug")
    assert code == 1
    assert "Traceback" in err and "RuntimeError: kaboom" in err
    assert not out_path.exists()


def test_corrupt_input_leaves_no_output_or_temp_files(capsys, tmp_path):
    bad = tmp_path / "bad.h5ad"
    bad.write_bytes(b"this is not an HDF5 file at all\n" * 10)
    outdir = tmp_path / "out"
    code, _, err = run(capsys, "read", str(bad), "-o", str(outdir / "r.h5ad"))
    assert code == 2
    assert err.count("cafclassify read: error:") == 1
    assert not outdir.exists() or list(outdir.iterdir()) == []


# ----------------------------------------------------------------------------- fetch


def test_fetch_command_copies_verifies_and_prints_hash(capsys, tmp_path):
    src = tmp_path / "src.bin"
    src.write_bytes(b"\x00\x01data" * 1000)
    dest = tmp_path / "d" / "copy.bin"
    code, out, _ = run(capsys, "fetch", src.as_uri(), str(dest), "--sha256", _sha(src))
    assert code == 0
    assert dest.read_bytes() == src.read_bytes()
    assert out.split()[0] == _sha(src)

    bad_dest = tmp_path / "d" / "bad.bin"
    code, _, err = run(capsys, "fetch", str(src), str(bad_dest), "--sha256", "a" * 64)
    assert code == 2
    assert "checksum mismatch" in err and "a" * 64 in err and _sha(src) in err
    assert not bad_dest.exists()


# ----------------------------------------------------------------------------- read/qc + provenance


def test_read_writes_provenance(capsys, tmp_path, counts_h5ad):
    out_path = tmp_path / "read.h5ad"
    code, _, err = run(
        capsys,
        "read",
        str(counts_h5ad),
        "-o",
        str(out_path),
        "--sample-column",
        "patient",
        "--sha256",
        _sha(counts_h5ad),
    )
    assert code == 0, err
    a = ad.read_h5ad(out_path)
    prov = a.uns[K.UNS][K.UNS_PROVENANCE]
    assert prov["step"] == "read"
    assert prov["package_version"] == cli._versions()["cafclassify"]
    assert prov["command"].startswith("cafclassify read ")
    assert "--sample-column patient" in prov["command"]
    assert list(prov["input_sha256"]) == [_sha(counts_h5ad)]
    assert list(prov["inputs"]) == [str(counts_h5ad)]
    assert prov["parameters"]["sample_column"] == "patient"
    assert prov["seed"] == 0
    when = dt.datetime.fromisoformat(prov["run_date_utc"])
    assert when.utcoffset() == dt.timedelta(0)
    assert abs((dt.datetime.now(dt.timezone.utc) - when).total_seconds()) < 600
    for pkg in ("python", "scanpy", "anndata"):
        assert prov["versions"][pkg]
    # counts were normalised and kept
    assert K.LAYER_COUNTS in a.layers
    assert not np.allclose(a.X.toarray(), a.layers[K.LAYER_COUNTS].toarray())


def test_read_refuses_wrong_checksum(capsys, tmp_path, counts_h5ad):
    out_path = tmp_path / "read.h5ad"
    code, _, err = run(capsys, "read", str(counts_h5ad), "-o", str(out_path), "--sha256", "0" * 64)
    assert code == 2
    assert "checksum mismatch" in err
    assert not out_path.exists()


def test_read_refuses_unknown_label_column(capsys, tmp_path, counts_h5ad):
    code, _, err = run(
        capsys, "read", str(counts_h5ad), "-o", str(tmp_path / "r.h5ad"), "--label-column", "nope"
    )
    assert code == 2
    assert "'nope'" in err


def test_qc_keeps_provenance_history_and_filters(capsys, tmp_path, counts_h5ad):
    r = tmp_path / "read.h5ad"
    q = tmp_path / "qc.h5ad"
    assert run(capsys, "read", str(counts_h5ad), "-o", str(r))[0] == 0
    code, _, err = run(
        capsys,
        "qc",
        str(r),
        "-o",
        str(q),
        "--sample-key",
        "patient",
        "--filter",
        "--min-genes",
        "120",
    )
    assert code == 0, err
    a = ad.read_h5ad(q)
    prov = a.uns[K.UNS][K.UNS_PROVENANCE]
    assert prov["step"] == "qc"
    assert list(prov["input_sha256"]) == [_sha(r)]
    assert prov["history"]["01_read"]["step"] == "read"
    assert list(prov["history"]["01_read"]["input_sha256"]) == [_sha(counts_h5ad)]
    # --filter removed exactly the cells that qc marks as failing with --no-filter
    marked = tmp_path / "marked.h5ad"
    args = ["--sample-key", "patient", "--min-genes", "120"]
    assert run(capsys, "qc", str(r), "-o", str(marked), *args, "--no-filter")[0] == 0
    m = ad.read_h5ad(marked)
    assert m.n_obs == ad.read_h5ad(r).n_obs
    assert 0 < int((~m.obs[K.OBS_QC_PASS]).sum()) < m.n_obs  # the fixture has failing cells
    assert a.obs[K.OBS_QC_PASS].all()
    # with no option, qc filters like the workflow's default (qc: filter: true)
    default = tmp_path / "default.h5ad"
    assert run(capsys, "qc", str(r), "-o", str(default), *args)[0] == 0
    assert ad.read_h5ad(default).n_obs == a.n_obs
    assert list(a.obs_names) == list(m.obs_names[m.obs[K.OBS_QC_PASS].to_numpy()])


def test_threads_and_log_file(capsys, tmp_path, counts_h5ad, monkeypatch):
    for var in cli._THREAD_ENV:
        monkeypatch.delenv(var, raising=False)
    log = tmp_path / "logs" / "read.log"
    code, _, _ = run(
        capsys,
        "read",
        str(counts_h5ad),
        "-o",
        str(tmp_path / "r.h5ad"),
        "--threads",
        "1",
        "--log-file",
        str(log),
    )
    assert code == 0
    assert os.environ["OMP_NUM_THREADS"] == "1"
    if "numba" in sys.modules:  # in-process: numba's pool may exist, set directly
        import numba

        assert numba.get_num_threads() == 1
        numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
    else:
        assert os.environ["NUMBA_NUM_THREADS"] == "1"
    text = log.read_text()
    assert "wrote" in text and "r.h5ad" in text
    assert "INFO" in text


# ----------------------------------------------------------------------------- tables


def _annotated():
    """Hand-built classified AnnData with known counts per sample."""
    rows = []
    # sample A: 3 fibroblasts (2 myCAF, 1 iCAF), 1 unassigned fibroblast, 2 immune
    rows += [("A", "fibroblast", "myCAF")] * 2 + [("A", "fibroblast", "iCAF")]
    rows += [("A", "fibroblast", K.UNASSIGNED)] + [("A", "immune", K.NOT_FIBROBLAST)] * 2
    # sample B: 1 iCAF, 3 epithelial
    rows += [("B", "fibroblast", "iCAF")] + [("B", "epithelial", K.NOT_FIBROBLAST)] * 3
    obs = pd.DataFrame(rows, columns=["patient", K.OBS_LINEAGE, K.OBS_SUBTYPE])
    obs.index = [f"bc{i}" for i in range(len(obs))]
    obs[K.OBS_LINEAGE] = pd.Categorical(obs[K.OBS_LINEAGE], categories=list(K.LINEAGES))
    obs[K.OBS_SUBTYPE] = pd.Categorical(
        obs[K.OBS_SUBTYPE], categories=["myCAF", "iCAF", "apCAF", K.UNASSIGNED, K.NOT_FIBROBLAST]
    )
    obs[K.OBS_SUBTYPE_CONF] = np.linspace(0.2, 0.9, len(obs))
    obs[K.OBS_LTBP2] = [True, False] * (len(obs) // 2)
    a = ad.AnnData(X=sp.csr_matrix((len(obs), 3), dtype=np.float32), obs=obs)
    proba = np.tile([0.5, 0.3, 0.2], (len(obs), 1))
    a.obsm[K.OBSM_SUBTYPE_PROBA] = pd.DataFrame(
        proba, index=a.obs_names, columns=["myCAF", "iCAF", "apCAF"]
    )
    return a


def test_cell_table_columns_and_values():
    a = _annotated()
    t = cell_table(a, sample_key="patient")
    assert list(t["barcode"]) == list(a.obs_names)
    assert list(t["sample"]) == list(a.obs["patient"])
    assert list(t["subtype"]) == list(a.obs[K.OBS_SUBTYPE].astype(str))
    np.testing.assert_allclose(t["confidence"], a.obs[K.OBS_SUBTYPE_CONF])
    assert [c for c in t.columns if c.startswith("proba_")] == [
        "proba_myCAF",
        "proba_iCAF",
        "proba_apCAF",
    ]
    assert "ltbp2_positive" in t.columns
    assert "senescent_flag" not in t.columns  # not written -> not invented
    with pytest.raises(ConfigError, match="sample_key 'nope'"):
        cell_table(a, sample_key="nope")
    t_all = cell_table(a)
    assert set(t_all["sample"]) == {"all"}


def test_proportion_table_denominators():
    t = proportion_table(_annotated(), sample_key="patient")
    sub = t[t.level == "subtype"].set_index(["sample", "label"])
    # sample A subtype denominator = its 4 fibroblast-lineage cells (not_fibroblast excluded)
    assert sub.loc[("A", "myCAF"), "n_cells"] == 2
    assert sub.loc[("A", "myCAF"), "n_total"] == 4
    assert sub.loc[("A", "myCAF"), "fraction"] == pytest.approx(0.5)
    assert sub.loc[("B", "iCAF"), "fraction"] == pytest.approx(1.0)
    # 95 % Wilson interval of 2 of 4, from its formula: centre 0.5, half-width
    # z sqrt(p(1 - p)/n + z^2/4n^2) / (1 + z^2/n)
    z = 1.959963984540054
    half = z * np.sqrt(0.25 / 4 + z**2 / 64) / (1 + z**2 / 4)
    assert sub.loc[("A", "myCAF"), ["ci95_low", "ci95_high"]].tolist() == pytest.approx([0.5 - half, 0.5 + half])
    assert sub.loc[("B", "iCAF"), "ci95_high"] == pytest.approx(1.0) and sub.loc[("B", "iCAF"), "ci95_low"] < 1
    assert sub.loc[("B", "apCAF"), "n_cells"] == 0  # empty categories are listed with 0
    assert sub.loc[("B", "apCAF"), "ci95_low"] == 0 and sub.loc[("B", "apCAF"), "ci95_high"] > 0
    assert K.NOT_FIBROBLAST not in set(t[t.level == "subtype"]["label"])
    lin = t[t.level == "lineage"].set_index(["sample", "label"])
    assert lin.loc[("A", "immune"), "fraction"] == pytest.approx(2 / 6)
    for (_s, _lvl), grp in t.groupby(["sample", "level"]):
        assert grp["fraction"].sum() == pytest.approx(1.0)


def test_fraction_interval_is_scipys_wilson_interval():
    from scipy.stats import binomtest

    from cafclassify.get._tables import fraction_interval

    rng = np.random.default_rng(0)
    total = np.r_[rng.integers(1, 3000, 200), 1, 7, 7]
    n = np.r_[rng.integers(0, total[:200] + 1), 0, 0, 7]  # with 0 of N and N of N
    low, high = fraction_interval(n, total)
    ref = [binomtest(int(k), int(t)).proportion_ci(method="wilson") for k, t in zip(n, total, strict=True)]
    assert low == pytest.approx([r.low for r in ref], abs=1e-12)
    assert high == pytest.approx([r.high for r in ref], abs=1e-12)
    assert low[-2] == 0.0 and high[-1] == 1.0
    assert np.isnan(fraction_interval(0, 0)).all()  # no cells: no interval
    assert fraction_interval(6, 50, confidence=0.99)[0] < fraction_interval(6, 50)[0]


def test_pool_intersects_features():
    def make(cols, genes, n):
        a = ad.AnnData(
            X=sp.csr_matrix(np.ones((n, len(genes)), dtype=np.float32)),
            var=pd.DataFrame(index=genes),
        )
        a.obs_names = [f"c{i}" for i in range(n)]
        a.obsm[K.OBSM_SCORES] = pd.DataFrame(
            np.ones((n, len(cols))), index=a.obs_names, columns=cols
        )
        return a

    a = make(["myCAF", "iCAF", "vCAF"], ["G1", "G2", "G3"], 4)
    b = make(["iCAF", "myCAF"], ["G2", "G3", "G4"], 3)
    pooled = pool([a, b], ["a", "b"], batch_key="dataset")
    assert list(a.obsm[K.OBSM_SCORES].columns) == ["myCAF", "iCAF", "vCAF"]  # inputs untouched
    assert pooled.n_obs == 7
    assert list(pooled.var_names) == ["G2", "G3"]
    assert list(pooled.obsm[K.OBSM_SCORES].columns) == ["myCAF", "iCAF"]
    assert list(pooled.obs["dataset"].value_counts().sort_index()) == [4, 3]
    assert pooled.obs_names.is_unique


# ----------------------------------------------------------------------------- listing commands


@pytest.mark.skipif(not _has("cafclassify.scoring"), reason="cafclassify.scoring not available")
def test_methods_lists_registry(capsys):
    from cafclassify.scoring import list_methods

    code, out, _ = run(capsys, "methods", "--format", "tsv")
    assert code == 0
    table = pd.read_csv(__import__("io").StringIO(out), sep="\t")
    assert list(table["method"]) == list(list_methods()["method"])


@pytest.mark.skipif(not _has("cafclassify.genesets"), reason="cafclassify.genesets not available")
def test_signatures_list_show_and_gmt_export_roundtrip(capsys, tmp_path):
    from cafclassify.genesets import load_signatures

    lib = load_signatures("caf_v1")
    code, out, _ = run(capsys, "signatures", "--format", "tsv")
    assert code == 0
    listed = pd.read_csv(__import__("io").StringIO(out.split("\n", 1)[1]), sep="\t")
    assert set(listed["set"]) == set(lib.sets)

    name = next(iter(lib.sets))
    code, out, _ = run(capsys, "signatures", "--show", name)
    assert code == 0 and lib.sets[name].genes[0] in out

    code, _, err = run(capsys, "signatures", "--show", "no_such_set")
    assert code == 2 and "no_such_set" in err

    gmt = tmp_path / "caf.gmt"
    assert run(capsys, "signatures", "--export", str(gmt))[0] == 0
    back = load_signatures(str(gmt))
    for set_name, gs in lib.sets.items():  # lossless: negative genes, groups, thresholds too
        b = back.sets[set_name]
        assert (b.genes, b.weights, b.group, b.min_coverage) == (gs.genes, gs.weights, gs.group,
                                                                 gs.min_coverage)


# ----------------------------------------------------------------------------- classify fallback


@pytest.fixture
def no_fibroblast_h5ad(tmp_path):
    """Gated data with no fibroblasts: nothing to subtype."""
    rng = np.random.default_rng(1)
    n = 60
    a = ad.AnnData(
        X=sp.csr_matrix(rng.poisson(1.0, size=(n, 30)).astype(np.float32)),
        var=pd.DataFrame(index=[f"G{i}" for i in range(30)]),
    )
    a.obs_names = [f"c{i}" for i in range(n)]
    a.obs[K.OBS_LINEAGE] = pd.Categorical(["immune"] * n, categories=list(K.LINEAGES))
    a.obsm[K.OBSM_SCORES] = pd.DataFrame(
        rng.random((n, 2)), index=a.obs_names, columns=["myCAF", "iCAF"]
    )
    path = tmp_path / "scored.h5ad"
    a.write_h5ad(path)
    return path


@pytest.mark.skipif(not _has("cafclassify.tl"), reason="cafclassify.tl not available")
def test_classify_insufficient_data_error_or_skip(capsys, tmp_path, no_fibroblast_h5ad):
    out = tmp_path / "classified.h5ad"
    code, _, err = run(capsys, "classify", str(no_fibroblast_h5ad), "-o", str(out),
                       "--on-insufficient", "error")
    assert code == 2
    assert "fibroblast" in err
    assert not out.exists()

    cells, props = tmp_path / "cells.csv", tmp_path / "props.csv"
    code, _, err = run(
        capsys,
        "classify",
        str(no_fibroblast_h5ad),
        "-o",
        str(out),
        "--cells-csv",  # skip is the default, as in the workflow
        str(cells),
        "--proportions-csv",
        str(props),
    )
    assert code == 0, err
    assert "skipped" in err
    a = ad.read_h5ad(out)
    section = a.uns[K.UNS][K.UNS_CLASSIFY]
    assert section["status"] == "skipped"
    assert "fibroblast" in section["reason"]
    assert K.OBS_SUBTYPE not in a.obs.columns  # nothing invented
    assert a.uns[K.UNS][K.UNS_PROVENANCE]["step"] == "classify"
    table = pd.read_csv(cells)
    assert "subtype" not in table.columns and len(table) == a.n_obs
    p = pd.read_csv(props)
    assert set(p["level"]) == {"lineage"}
    assert set(p["sample"]) == {"all"}  # no sample column: one sample

    # a conventional sample column, no --sample-key: the CSVs split samples as the report does
    a = ad.read_h5ad(no_fibroblast_h5ad)
    a.obs["orig.ident"] = pd.Categorical(["P1", "P2"] * (a.n_obs // 2) + ["P1"] * (a.n_obs % 2))
    a.write_h5ad(tmp_path / "with_samples.h5ad")
    code, _, err = run(capsys, "classify", str(tmp_path / "with_samples.h5ad"), "-o", str(tmp_path / "s.h5ad"),
                       "--cells-csv", str(cells), "--proportions-csv", str(props))
    assert code == 0, err
    from cafclassify.get import recorded_sample_key

    assert recorded_sample_key(ad.read_h5ad(tmp_path / "s.h5ad"), conventional=True) == "orig.ident"
    assert set(pd.read_csv(props)["sample"]) == {"P1", "P2"}
    assert set(pd.read_csv(cells)["sample"]) == {"P1", "P2"}


@pytest.mark.skipif(not _has("cafclassify.tl"), reason="cafclassify.tl not available")
def test_skipped_classify_keeps_the_perivascular_calls_the_cli_options_ask_for(capsys, tmp_path,
                                                                              no_fibroblast_h5ad):
    """No fibroblast to train on, but mural cells: --perivascular vcaf (the default) keeps their
    vCAF call; --perivascular separate and normal tissue (--tissue-key) have no call to keep."""
    a = ad.read_h5ad(no_fibroblast_h5ad)
    a.obs[K.OBS_LINEAGE] = pd.Categorical(["immune"] * 40 + ["mural"] * 20, categories=list(K.LINEAGES))
    a.obs["tissue"] = ["tumour"] * 50 + ["normal"] * 10
    a.write_h5ad(tmp_path / "mural.h5ad")
    props = tmp_path / "props.csv"
    out = tmp_path / "v.h5ad"
    code, _, err = run(capsys, "classify", str(tmp_path / "mural.h5ad"), "-o", str(out), "--proportions-csv",
                       str(props), "--tissue-key", "tissue")
    assert code == 0, err
    b = ad.read_h5ad(out)
    assert b.uns[K.UNS][K.UNS_CLASSIFY]["status"] == "skipped"
    assert b.obs[K.OBS_SUBTYPE].astype(str).value_counts().to_dict() == {
        K.NOT_FIBROBLAST: 40, "vCAF": 10, "mural": 10}  # normal tissue stays mural
    p = pd.read_csv(props)
    assert p.loc[(p["level"] == "subtype") & (p["label"] == "vCAF"), "n_cells"].tolist() == [10]
    code, _, err = run(capsys, "classify", str(tmp_path / "mural.h5ad"), "-o", str(tmp_path / "s.h5ad"),
                       "--perivascular", "separate")
    assert code == 0, err
    assert K.OBS_SUBTYPE not in ad.read_h5ad(tmp_path / "s.h5ad").obs


def test_min_coverage_option_parsing():
    parser = cli.build_parser()
    args = parser.parse_args(["score", "x.h5ad", "-o", "y.h5ad", "--min-coverage", "library"])
    assert args.min_coverage == "library"
    args = parser.parse_args(["score", "x.h5ad", "-o", "y.h5ad", "--min-coverage", "0.3"])
    assert args.min_coverage == pytest.approx(0.3)
    with pytest.raises(SystemExit):
        parser.parse_args(["score", "x.h5ad", "-o", "y.h5ad", "--min-coverage", "1.5"])


def test_steps_by_hand_default_to_the_workflow_config():
    from pathlib import Path

    import yaml

    config = yaml.safe_load((Path(__file__).resolve().parents[1] / "config" / "config.yaml").read_text())
    parser = cli.build_parser()
    qc = parser.parse_args(["qc", "x.h5ad", "-o", "y.h5ad"])
    assert qc.filter is config["qc"]["filter"] is True
    assert parser.parse_args(["qc", "x.h5ad", "-o", "y.h5ad", "--no-filter"]).filter is False
    score = parser.parse_args(["score", "x.h5ad", "-o", "y.h5ad"])
    assert config["score"]["min_coverage"] is None and score.min_coverage == "library"  # null = library
    cls = parser.parse_args(["classify", "x.h5ad", "-o", "y.h5ad"])
    assert cls.on_insufficient == config["classify"]["on_insufficient"] == "skip"
    # the class prior: not given = the library's default, which the workflow config repeats
    import inspect

    from cafclassify.tl._classify import classify

    assert cls.prior is None
    assert inspect.signature(classify).parameters["prior"].default == config["classify"]["prior"] == "estimate"
    assert parser.parse_args(["classify", "x.h5ad", "-o", "y.h5ad", "--prior", "uniform"]).prior == "uniform"


def test_call_drops_unset_options_and_keeps_explicit_none():
    seen = {}

    def f(adata, *, a=1, b="lib-default", c=3):
        seen.update(a=a, b=b, c=c)

    cli._call(f, None, a=None, b=cli._EXPLICIT_NONE, c=7, unknown=5)
    assert seen == {"a": 1, "b": None, "c": 7}


def test_summary_dataset_names(tmp_path):
    paths = [tmp_path / "a" / "classified.h5ad", tmp_path / "b" / "classified.h5ad"]
    assert cli._dataset_names(paths, None) == ["a", "b"]
    assert cli._dataset_names(paths, ["x", "y"]) == ["x", "y"]
    with pytest.raises(ConfigError):
        cli._dataset_names(paths, ["x"])
    with pytest.raises(ConfigError):
        cli._dataset_names(paths, ["x", "x"])
