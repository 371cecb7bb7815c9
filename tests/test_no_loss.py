"""Nothing lost and no wrong cause, whatever the user types or however the run ends (issue #16).

The error messages themselves are cases of ``tests/_bad_input_cases.py`` (and rows of
``docs/errors.md``); this file checks what those cases cannot: that inputs survive
(byte for byte), that every writing command has the output guard, that fetch keeps
files it did not create, that text is never decoded with replacement characters,
that damaged model files are refused field by field, that a species given once is
used by the later steps, and that SIGINT / SIGTERM during a real write stop the run
with 130 / 143 and leave the output folder empty.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from cafclassify._errors import CafClassifyError, DownloadError, InputFileError, ModelError

from _cli_fixtures import error_lines, run_cli, write_counts_h5ad


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# =============================================================================== 1. output guard

#: every command that writes, with one of its outputs (OUT) pointed at its input (IN)
_GUARDED = {
    "read": ["read", "IN", "-o", "OUT"],
    "qc": ["qc", "IN", "--filter", "-o", "OUT"],
    "gate": ["gate", "IN", "-o", "OUT"],
    "score": ["score", "IN", "-o", "OUT"],
    "score_coverage_csv": ["score", "IN", "-o", "x.h5ad", "--coverage-csv", "OUT"],
    "train": ["train", "IN", "-o", "OUT"],
    "classify": ["classify", "IN", "-o", "OUT"],
    "classify_cells_csv": ["classify", "IN", "-o", "x.h5ad", "--cells-csv", "OUT"],
    "report": ["report", "IN", "-o", "OUT"],
    "summary_table": ["summary", "IN", "-o", "s.html", "--table", "OUT"],
    "merge": ["merge", "IN", "-o", "OUT"],
    "shard": ["shard", "IN", "--n-shards", "2", "--index", "0", "-o", "OUT"],
    "fetch": ["fetch", "IN", "OUT"],
    "log_file": ["--log-file", "OUT", "read", "IN", "-o", "x.h5ad"],
}


@pytest.mark.parametrize("how", ["same_path", "symlink", "hardlink", "relative"])
@pytest.mark.parametrize("command", sorted(_GUARDED))
def test_no_command_writes_onto_its_input(command, how, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    src = write_counts_h5ad(tmp_path / "input.h5ad")
    before = _digest(src)
    out = {"same_path": src, "relative": Path("input.h5ad")}.get(how, tmp_path / "alias.h5ad")
    if how == "symlink":
        out.symlink_to(src)
    elif how == "hardlink":
        os.link(src, out)
    argv = [{"IN": str(src), "OUT": str(out)}.get(a, a) for a in _GUARDED[command]]
    code, _, err = run_cli(argv)
    assert code == 2, err
    lines = error_lines(err)
    assert len(lines) == 1 and "replace the input" in lines[0], err
    assert str(out) in lines[0] and str(src) in lines[0], lines[0]  # both paths are named
    assert _digest(src) == before  # the user's file is untouched
    assert not (tmp_path / "x.h5ad").exists() and not (tmp_path / "s.html").exists()
    assert not [p for p in tmp_path.iterdir() if ".part" in p.name]


def test_atomic_writer_refuses_a_registered_input_whatever_path_reaches_it(tmp_path):
    from cafclassify._atomic import protect_inputs, write_text_atomic

    src = tmp_path / "in.csv"
    src.write_text("keep me\n")
    (tmp_path / "link.csv").symlink_to(src)
    protect_inputs([src])
    try:
        with pytest.raises(InputFileError, match="replace the input"):
            write_text_atomic("new\n", tmp_path / "link.csv")
    finally:
        protect_inputs([])
    assert src.read_text() == "keep me\n"
    write_text_atomic("new\n", tmp_path / "other.csv")  # other outputs are written as usual


# =============================================================================== 2. fetch


def test_fetch_onto_the_source_keeps_the_file_and_says_so(tmp_path):
    from cafclassify.io import fetch

    src = tmp_path / "data.h5ad"
    src.write_bytes(b"precious bytes")
    link = tmp_path / "link.h5ad"
    link.symlink_to(src)
    for dest in (src, link):
        with pytest.raises(DownloadError) as info:
            fetch(str(src), dest, sha256="0" * 64)
        assert "left unchanged" in info.value.message and "nothing was written" not in info.value.message
        assert src.read_bytes() == b"precious bytes"
    # with the right checksum (or none) the source is its own verified copy
    good = hashlib.sha256(b"precious bytes").hexdigest()
    assert fetch(str(src), link, sha256=good) == link
    assert src.read_bytes() == b"precious bytes" and link.is_symlink()


def test_fetch_never_removes_files_it_did_not_create(tmp_path):
    from cafclassify.io import fetch

    src = tmp_path / "src.bin"
    src.write_bytes(b"new content")
    dest = tmp_path / "out" / "data.bin"
    dest.parent.mkdir()
    dest.write_bytes(b"the user's older file")
    users_part = dest.with_name(dest.name + ".part")
    users_part.write_bytes(b"a user file that happens to end in .part")
    with pytest.raises(DownloadError) as info:
        fetch(str(src), dest, sha256="0" * 64)
    assert "left unchanged" in info.value.message
    assert dest.read_bytes() == b"the user's older file"
    assert users_part.read_bytes() == b"a user file that happens to end in .part"
    assert src.read_bytes() == b"new content"  # copied, never moved
    assert sorted(p.name for p in dest.parent.iterdir()) == ["data.bin", "data.bin.part"]
    fetch(str(src), dest)  # no checksum: copied over the old file, the source stays
    assert dest.read_bytes() == b"new content" and src.exists()


# =============================================================================== 3. encoding


def _table(genes: list[str]) -> str:
    rng = np.random.default_rng(0)
    rows = "".join(f"c{i}," + ",".join(map(str, rng.poisson(2, len(genes)))) + "\n" for i in range(20))
    return "cell," + ",".join(genes) + "\n" + rows


@pytest.mark.parametrize("encoding", ["cp1252", "latin-1", "utf-16"])
def test_text_in_another_encoding_is_refused_naming_it(encoding, tmp_path):
    from cafclassify.io import read

    p = tmp_path / "t.csv"
    p.write_bytes(_table(["COL1A1", "DCN", "GÉNE1", "PTPRC"]).encode(encoding))
    with pytest.raises(InputFileError) as info:
        read(p)
    msg = info.value.message
    assert str(p) in msg and "not UTF-8" in msg and "iconv" in msg
    assert ("UTF-16" if encoding == "utf-16" else "Windows-1252") in msg


@pytest.mark.parametrize("bom", [b"", b"\xef\xbb\xbf"], ids=["utf8", "utf8_bom"])
def test_utf8_with_or_without_bom_keeps_every_character(bom, tmp_path):
    from cafclassify.io import read

    p = tmp_path / "t.csv"
    p.write_bytes(bom + _table(["COL1A1", "DCN", "GÉNE1", "PTPRC"]).encode("utf-8"))
    a = read(p)
    assert "GÉNE1" in list(a.var_names)
    assert not any("\ufffd" in n or "\ufeff" in n for n in [*a.var_names, *a.obs_names])


# =============================================================================== 4. models


def _tiny_model(tmp_path: Path, **edits) -> Path:
    meta = {"format_version": 1, "kind": "logreg", "genes": ["COL1A1", "DCN", "LUM"],
            "classes": ["myCAF", "iCAF"], "calibration": "none", "temperature": 1.0}
    arrays = {"coef": np.zeros((2, 3)), "intercept": np.zeros(2), "feature_mean": np.zeros(3),
              "feature_scale": np.ones(3)}
    for k, v in edits.items():
        (arrays if k in arrays else meta)[k] = v
    buf = io.BytesIO()
    np.savez(buf, **{k: v for k, v in arrays.items() if v is not None})
    path = tmp_path / "m.cafmodel"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("metadata.json", json.dumps(meta))
        zf.writestr("arrays.npz", buf.getvalue())
    return path


@pytest.mark.parametrize(
    ("edits", "field"),
    [
        ({"coef": np.zeros((2, 5))}, "arrays.npz:coef"),
        ({"coef": np.zeros(6)}, "arrays.npz:coef"),
        ({"intercept": np.zeros(3)}, "arrays.npz:intercept"),
        ({"feature_scale": np.ones(2)}, "arrays.npz:feature_scale"),
        ({"coef": None}, "arrays.npz:coef"),
        ({"coef": np.full((2, 3), np.nan)}, "arrays.npz:coef"),
        ({"genes": "COL1A1,DCN,LUM"}, "genes"),
        ({"genes": [1, 2, 3]}, "genes"),
        ({"classes": ["myCAF"]}, "classes"),
        ({"classes": ["myCAF", "myCAF"]}, "classes"),
        ({"kind": "svm"}, "kind"),
        ({"temperature": "hot"}, "temperature"),
        ({"calibration": "isotonic", "n_isotonic": 0}, "n_isotonic"),
        ({"summary": [1]}, "summary"),
        ({"format_version": "1"}, "format_version"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_damaged_model_is_refused_naming_file_and_field(edits, field, tmp_path):
    from cafclassify.model import CafModel

    path = _tiny_model(tmp_path, **edits)
    with pytest.raises(ModelError) as info:
        CafModel.load(path)
    assert str(path) in info.value.message
    assert repr(field) in info.value.message, info.value.message


def test_valid_tiny_model_loads(tmp_path):
    from cafclassify.model import CafModel

    m = CafModel.load(_tiny_model(tmp_path))
    assert m.predict_proba(np.zeros((4, 3))).shape == (4, 2)


# =============================================================================== 6. species and wording


def _ambiguous_human_data(path: Path) -> Path:
    """Human fibroblast + immune markers among many unknown names: species undetectable."""
    rng = np.random.default_rng(3)
    genes = ["COL1A1", "COL1A2", "DCN", "LUM", "PDGFRA", "PTPRC", "CD3E", "EPCAM"]
    genes += [f"XG{i}" for i in range(80)]
    X = rng.poisson(2, size=(60, len(genes))).astype(np.float32)
    ad.AnnData(X=sp.csr_matrix(X), obs=pd.DataFrame(index=[f"c{i}" for i in range(60)]),
               var=pd.DataFrame(index=genes)).write_h5ad(path)
    return path


def test_species_given_to_read_is_recorded_and_used_by_gate(tmp_path):
    raw = _ambiguous_human_data(tmp_path / "raw.h5ad")
    code, _, err = run_cli(["read", str(raw), "-o", str(tmp_path / "undetected.h5ad")])
    assert code == 0, err
    code, _, err = run_cli(["gate", str(tmp_path / "undetected.h5ad"), "-o", str(tmp_path / "g0.h5ad")])
    assert code == 2 and "--species human" in err, err  # the hint is a CLI option
    code, _, err = run_cli(["read", str(raw), "--species", "human", "-o", str(tmp_path / "r.h5ad")])
    assert code == 0, err
    assert ad.read_h5ad(tmp_path / "r.h5ad").uns["cafclassify"]["read"]["species"] == "human"
    code, _, err = run_cli(["gate", str(tmp_path / "r.h5ad"), "-o", str(tmp_path / "g.h5ad")])
    assert code == 0, err
    assert "caf_lineage" in ad.read_h5ad(tmp_path / "g.h5ad").obs


def test_gate_accepts_species_and_records_it_for_later_steps(tmp_path):
    raw = _ambiguous_human_data(tmp_path / "raw.h5ad")
    assert run_cli(["read", str(raw), "-o", str(tmp_path / "r.h5ad")])[0] == 0
    code, _, err = run_cli(["gate", str(tmp_path / "r.h5ad"), "--species", "human",
                            "-o", str(tmp_path / "g.h5ad")])
    assert code == 0, err
    rec = ad.read_h5ad(tmp_path / "g.h5ad").uns["cafclassify"]["read"]
    assert rec["species"] == "human" and "gate" in rec["species_source"]
    code, _, err = run_cli(["score", str(tmp_path / "g.h5ad"), "-o", str(tmp_path / "s.h5ad")])
    assert code == 0, err  # score follows the recorded species without being told again


def test_api_messages_keep_api_arguments(tmp_path):
    """The same error read through the API names the argument, not the option."""
    import cafclassify as cc

    raw = _ambiguous_human_data(tmp_path / "raw.h5ad")
    a = cc.read(raw)
    with pytest.raises(CafClassifyError) as info:
        cc.score(a)
    assert "species='human'" in info.value.message and "--species" not in info.value.message


def test_api_to_cli_rewrites_only_options_of_the_step():
    from cafclassify._errors import api_to_cli
    from cafclassify.cli import _step_options, build_parser

    read = _step_options(build_parser(), "read")
    text = ("pass species='human', symbol_column='gene name', leave format=None, "
            "normalize=False, layer='raw'; target_sum=1e4 stays; adata.layers['counts'] stays")
    assert api_to_cli(text, read) == (
        "pass --species human, --symbol-column 'gene name', leave --format unset, "
        "--no-normalize, --layer raw; target_sum=1e4 stays; adata.layers['counts'] stays")


# =============================================================================== 5. signals


def _big_input(path: Path, n_cells: int = 60_000, n_genes: int = 2_000, nnz_per_cell: int = 160) -> Path:
    """Counts whose gzip write takes a few seconds (built directly as CSR: fast)."""
    rng = np.random.default_rng(0)
    indices = np.sort(rng.integers(0, n_genes, size=(n_cells, nnz_per_cell)), axis=1)
    keep = np.ones_like(indices, dtype=bool)
    keep[:, 1:] = indices[:, 1:] != indices[:, :-1]
    counts = keep.sum(1)
    X = sp.csr_matrix((rng.integers(1, 20, size=int(counts.sum())).astype(np.float32),
                       indices[keep], np.concatenate([[0], np.cumsum(counts)])),
                      shape=(n_cells, n_genes))
    genes = ["COL1A1", "DCN", "PTPRC", *[f"GENE{i}" for i in range(n_genes - 3)]]
    ad.AnnData(X=X, obs=pd.DataFrame(index=[f"c{i}" for i in range(n_cells)]),
               var=pd.DataFrame(index=genes)).write_h5ad(path)  # uncompressed: quick to read
    return path


@pytest.fixture(scope="module")
def big_input(tmp_path_factory) -> Path:
    return _big_input(tmp_path_factory.mktemp("big") / "big.h5ad")


#: runs the CLI with the second-writer threshold lowered, so that this small input is
#: written by two processes (PartWriter) as a large one would be
_TWO_WRITERS = ("import sys; from cafclassify.io import _part_writer; _part_writer.PARALLEL_MIN_VALUES = 0; "
                "from cafclassify.cli import main; sys.exit(main(sys.argv[1:]))")


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
@pytest.mark.parametrize(
    ("sig", "two_writers", "code"),
    [(signal.SIGINT, False, 130), (signal.SIGTERM, True, 143)],
    ids=["sigint_in_memory_write", "sigterm_streamed_write_with_part_writer"],
)
def test_signal_during_a_real_write_stops_cleanly(sig, two_writers, code, big_input, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    args = ["read", str(big_input), "-o", str(out / "big.h5ad")]
    if two_writers:
        cmd = [sys.executable, "-c", _TWO_WRITERS, "--threads", "2", "--backed", "yes", *args]
        wanted = ".counts"  # the part file of the second writer process
    else:
        cmd = [str(Path(sys.executable).with_name("cafclassify")), *args]
        wanted = ".part"
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    deadline = time.monotonic() + 120
    while not any(wanted in p.name for p in out.iterdir()):
        assert proc.poll() is None, proc.communicate()[1]
        assert time.monotonic() < deadline, f"no temporary {wanted} file appeared"
        time.sleep(0.02)
    time.sleep(0.3)  # well inside the write
    assert proc.poll() is None, "the write ended before the signal: make the input larger"
    sent = time.monotonic()
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    waited = time.monotonic() - sent
    assert proc.returncode == code, err
    last = err.strip().splitlines()[-1]
    assert last == (f"cafclassify read: stopped by {signal.Signals(sig).name}; temporary files "
                    "removed, no partial outputs were left behind."), err
    assert "Traceback" not in err and "Exception ignored" not in err, err
    assert list(out.iterdir()) == []  # no output, no *.part.h5ad, no part files of helpers
    assert waited < 30


def test_interrupt_surfacing_as_another_error_is_still_an_interrupt():
    """A signal inside compiled code (numba) can surface as ``SystemError: ... returned a
    result with an exception set`` with the interrupt in its chain: that is a stop, not a bug."""
    import signal

    from cafclassify._signals import Interrupted, interrupt_behind

    try:
        try:
            raise Interrupted(signal.SIGTERM)
        except Interrupted as inner:
            raise SystemError("CPUDispatcher(...) returned a result with an exception set") from inner
    except SystemError as exc:
        found = interrupt_behind(exc)
    assert found is not None and found.exit_code == 143
    assert interrupt_behind(ValueError("unrelated")) is None
