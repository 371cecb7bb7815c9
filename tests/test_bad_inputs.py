"""Catalogue of bad inputs: each gives one clear error paragraph, exit 2, no traceback, no partial output.

Every case builds a small broken input in a temporary folder, runs the command line
(``cafclassify.cli.main``, in-process) and checks that

* the exit status is 2 (user error),
* stderr holds exactly one ``cafclassify <step>: error: ...`` line that names the file,
  says what is wrong (an expected phrase) and what to do (``What to do:``),
* there is no Python traceback (unless ``--debug`` is given),
* nothing was written to the output folder (no final file, no temporary file).

A few inputs are *not* errors (duplicate barcodes/genes, already log-normalised data,
a subtype without seed cells): those cases check that the run succeeds and reports
what it did.

``docs/errors.md`` is generated from the same case table by running this file as a
script (``python tests/test_bad_inputs.py --write-docs docs/errors.md``), so the
catalogue shows the messages users really get.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import http.server
import io
import json
import os
import pickle
import re
import sys
import tempfile
import threading
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.io
import scipy.sparse as sp

from cafclassify import _keys as K
from cafclassify.cli import main

REPO = Path(__file__).resolve().parents[1]
SCHEMAS = REPO / "workflow" / "schemas"


# =============================================================================== running


def run_cli(argv: list[str]) -> tuple[int, str, str]:
    """Run ``cafclassify <argv>`` in-process; return (exit status, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(["--threads", "1", *argv])
        except SystemExit as exc:  # argparse usage errors
            code = int(exc.code or 0)
    return code, out.getvalue(), err.getvalue()


def assert_cli_wording(msg: str) -> None:
    """A CLI error gives options (``--species human``), never API syntax (``species='human'``)."""
    import argparse

    from cafclassify.cli import build_parser

    step = re.match(r"^cafclassify (\S+): ", msg).group(1)
    subparsers = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    options = {a.dest for a in subparsers.choices[step]._actions if a.option_strings}
    fix = msg.split("What to do:", 1)[-1]
    # the fix never; the problem only when it quotes a value ("min_genes=10" reports a threshold)
    found = [*re.finditer(r"(?<![\w.\-])([a-z][a-z0-9_]*)=", fix),
             *re.finditer(r"(?<![\w.\-])([a-z][a-z0-9_]*)=['\"]", msg)]
    api = [m.group(1) for m in found if m.group(1) in options or f"no_{m.group(1)}" in options]
    assert not api, f"API argument(s) {api} in a CLI message: {msg}"


def error_lines(stderr: str) -> list[str]:
    return [ln for ln in stderr.splitlines() if re.match(r"^cafclassify \S+: error: ", ln)]


def files_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


# =============================================================================== shared data


def _quiet_threads() -> None:
    """One BLAS thread: on a loaded 2-core machine threaded BLAS makes training ~10x slower."""
    with contextlib.suppress(ImportError):
        from threadpoolctl import threadpool_limits

        threadpool_limits(1)


def write_counts_h5ad(path: Path, *, n_cells=60, n_genes=40, genes=None, barcodes=None, seed=0,
                      values=None) -> Path:
    rng = np.random.default_rng(seed)
    if genes is None:
        genes = ["COL1A1", "DCN", "PDGFRA", "ACTA2", "PTPRC", "EPCAM", "PECAM1"]
        genes += [f"GENE{i}" for i in range(n_genes - len(genes))]
    if barcodes is None:
        barcodes = [f"cell{i:04d}" for i in range(n_cells)]
    X = values if values is not None else rng.poisson(2.0, size=(len(barcodes), len(genes)))
    X = sp.csr_matrix(np.asarray(X, dtype=np.float32))
    a = ad.AnnData(X=X, obs=pd.DataFrame(index=list(barcodes)), var=pd.DataFrame(index=list(genes)))
    a.write_h5ad(path)
    return path


class Shared:
    """Inputs that need the real pipeline (gated + scored data, a trained model); built once."""

    def __init__(self, root: Path):
        self.root = root
        self._scored: Path | None = None
        self._model: Path | None = None

    def scored(self) -> Path:
        """Simulated tumour data, read + gated + scored with the API (500 cells x 1500 genes)."""
        if self._scored is None:
            _quiet_threads()
            import cafclassify as cc

            sim = cc.simulate(
                500, n_genes=1500, random_state=0,
                lineage_fractions={"fibroblast": 0.5, "immune": 0.2, "epithelial": 0.2,
                                   "endothelial": 0.05, "mural": 0.05},
            )
            raw = self.root / "sim.h5ad"
            sim.write_h5ad(raw)
            a = cc.read(raw)
            cc.gate(a)
            cc.score(a)
            self._scored = self.root / "scored.h5ad"
            a.write_h5ad(self._scored)
        return self._scored

    def model(self) -> Path:
        if self._model is None:
            _quiet_threads()
            import cafclassify as cc

            a = ad.read_h5ad(self.scored())
            m = cc.train(a, random_state=0)
            self._model = self.root / "model.cafmodel"
            m.save(self._model)
        return self._model


# =============================================================================== the cases


@dataclass
class Case:
    id: str
    title: str
    build: Callable[[Path, Shared], tuple[list[str], list[Path]]]
    phrases: tuple[str, ...]
    names: Callable[[Path], str]  # the file/object the message must name
    code: int = 2


CASES: list[Case] = []


def case(id: str, title: str, *phrases: str, names: Callable[[Path], str], code: int = 2):
    def deco(func):
        CASES.append(Case(id, title, func, tuple(phrases), names, code))
        return func

    return deco


def _out(tmp: Path, name: str = "out.h5ad") -> Path:
    return tmp / "out" / name


# ---- files that cannot be read ------------------------------------------------------


@case("empty_file", "empty input file", "empty", names=lambda t: "empty.h5ad")
def _(tmp, shared):
    (tmp / "empty.h5ad").write_bytes(b"")
    return ["read", str(tmp / "empty.h5ad"), "-o", str(_out(tmp))], [_out(tmp)]


@case("truncated_h5ad", "truncated .h5ad (download cut short)", "truncated",
      names=lambda t: "truncated.h5ad")
def _(tmp, shared):
    good = write_counts_h5ad(tmp / "good.h5ad", n_cells=200, n_genes=300)
    data = good.read_bytes()
    (tmp / "truncated.h5ad").write_bytes(data[: len(data) // 2])
    return ["read", str(tmp / "truncated.h5ad"), "-o", str(_out(tmp))], [_out(tmp)]


@case("corrupted_hdf5", "HDF5 signature followed by garbage", "corrupted",
      names=lambda t: "corrupt.h5ad")
def _(tmp, shared):
    rng = np.random.default_rng(1)
    (tmp / "corrupt.h5ad").write_bytes(b"\x89HDF\r\n\x1a\n" + rng.bytes(4096))
    return ["read", str(tmp / "corrupt.h5ad"), "-o", str(_out(tmp))], [_out(tmp)]


@case("extension_lies", "a ZIP archive named .h5ad", "zip archive", names=lambda t: "archive.h5ad")
def _(tmp, shared):
    with zipfile.ZipFile(tmp / "archive.h5ad", "w") as zf:
        zf.writestr("readme.txt", "not single-cell data\n")
    return ["read", str(tmp / "archive.h5ad"), "-o", str(_out(tmp))], [_out(tmp)]


@case("format_option_contradicts_content", "--format h5ad given for a CSV file",
      "--format h5ad was given but the content is csv", names=lambda t: "table.h5ad")
def _(tmp, shared):
    (tmp / "table.h5ad").write_text("cell,COL1A1,DCN\nc1,1,2\nc2,3,4\n")
    return ["read", str(tmp / "table.h5ad"), "--format", "h5ad", "-o", str(_out(tmp))], [_out(tmp)]


@case("missing_input", "input path does not exist", "does not exist", names=lambda t: "nope.h5ad")
def _(tmp, shared):
    return ["read", str(tmp / "nope.h5ad"), "-o", str(_out(tmp))], [_out(tmp)]


# ---- 10x folders --------------------------------------------------------------------


def _write_10x(folder: Path, n_genes=30, n_cells=20, *, features=True, n_barcodes=None) -> Path:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(2)
    m = sp.random(n_genes, n_cells, density=0.3, random_state=rng, format="coo")
    m.data = np.ceil(m.data * 10)
    with gzip.open(folder / "matrix.mtx.gz", "wb") as fh:
        scipy.io.mmwrite(fh, m)
    if features:
        genes = ["COL1A1", "DCN", "PTPRC"] + [f"GENE{i}" for i in range(n_genes - 3)]
        rows = [f"ENSG{i:011d}\t{g}\tGene Expression" for i, g in enumerate(genes)]
        with gzip.open(folder / "features.tsv.gz", "wt") as fh:
            fh.write("\n".join(rows) + "\n")
    nb = n_cells if n_barcodes is None else n_barcodes
    with gzip.open(folder / "barcodes.tsv.gz", "wt") as fh:
        fh.write("\n".join(f"AAACCTGAGC{i:06d}-1" for i in range(nb)) + "\n")
    return folder


@case("10x_missing_features", "10x folder without features.tsv.gz", "features",
      names=lambda t: "tenx")
def _(tmp, shared):
    folder = _write_10x(tmp / "tenx", features=False)
    return ["read", str(folder), "-o", str(_out(tmp))], [_out(tmp)]


@case("10x_mismatched_barcodes", "10x barcodes file from another sample (wrong length)",
      "barcodes", names=lambda t: "tenx")
def _(tmp, shared):
    folder = _write_10x(tmp / "tenx", n_barcodes=25)
    return ["read", str(folder), "-o", str(_out(tmp))], [_out(tmp)]


# ---- text tables --------------------------------------------------------------------

_HEADER = "cell,COL1A1,DCN,PDGFRA,PTPRC,EPCAM,GENE1\n"


def _csv(tmp: Path, rows: list[str], name="table.csv") -> Path:
    p = tmp / name
    p.write_text(_HEADER + "".join(r + "\n" for r in rows))
    return p


def _good_rows(n=30, seed=3):
    rng = np.random.default_rng(seed)
    return [f"cell{i}," + ",".join(str(v) for v in rng.poisson(2, 6)) for i in range(n)]


@case("csv_ragged_row", "CSV with a row that has an extra field", "fields",
      names=lambda t: "table.csv")
def _(tmp, shared):
    rows = _good_rows()
    rows[5] = rows[5] + ",7"
    p = _csv(tmp, rows)
    return ["read", str(p), "-o", str(_out(tmp))], [_out(tmp)]


@case("csv_non_numeric", "CSV with a non-numeric value", "abc", names=lambda t: "table.csv")
def _(tmp, shared):
    rows = _good_rows()
    rows[7] = "cell7,1,2,abc,0,0,1"
    p = _csv(tmp, rows)
    return ["read", str(p), "-o", str(_out(tmp))], [_out(tmp)]


@case("csv_nan", "CSV with a NaN value", "missing values", "cell3", names=lambda t: "table.csv")
def _(tmp, shared):
    rows = _good_rows()
    rows[3] = "cell3,1,NaN,3,0,0,1"
    p = _csv(tmp, rows)
    return ["read", str(p), "-o", str(_out(tmp))], [_out(tmp)]


@case("csv_inf", "CSV with an infinite value", "infinite", names=lambda t: "table.csv")
def _(tmp, shared):
    rows = _good_rows()
    rows[4] = "cell4,1,inf,3,0,0,1"
    p = _csv(tmp, rows)
    return ["read", str(p), "-o", str(_out(tmp))], [_out(tmp)]


@case("csv_negative_scaled", "CSV with z-scored (negative) values", "scaled",
      names=lambda t: "table.csv")
def _(tmp, shared):
    rng = np.random.default_rng(4)
    z = rng.normal(size=(30, 6))
    z = (z - z.mean(0)) / z.std(0)
    rows = [f"cell{i}," + ",".join(f"{v:.4f}" for v in z[i]) for i in range(30)]
    p = _csv(tmp, rows)
    return ["read", str(p), "-o", str(_out(tmp))], [_out(tmp)]


@case("csv_latin1", "Latin-1 encoded CSV (accented gene name): refused, never garbled",
      "not UTF-8", "Latin-1", "iconv -f latin1 -t utf-8", names=lambda t: "latin1.csv")
def _(tmp, shared):
    p = tmp / "latin1.csv"
    p.write_bytes((_HEADER.replace("GENE1", "GÉNE1") + "".join(r + "\n" for r in _good_rows()))
                  .encode("latin-1"))
    return ["read", str(p), "-o", str(_out(tmp))], [_out(tmp)]


@case("csv_gzip_corrupt", "gzipped CSV damaged in the middle (garbage before the CRC check)",
      "gzip compression is corrupt or truncated", names=lambda t: "table.csv.gz")
def _(tmp, shared):
    rng = np.random.default_rng(8)
    text = "cell," + ",".join(f"G{j}" for j in range(200)) + "\n" + "".join(
        f"cell{i}," + ",".join(map(str, rng.poisson(2, 200))) + "\n" for i in range(3000))
    data = bytearray(gzip.compress(text.encode(), mtime=0))
    for k in range(len(data) // 2, len(data) // 2 + 50):
        data[k] ^= 0x55
    (tmp / "table.csv.gz").write_bytes(bytes(data))
    return ["read", str(tmp / "table.csv.gz"), "-o", str(_out(tmp))], [_out(tmp)]


@case("csv_negative_integer", "count CSV with one negative integer", "not valid counts",
      "cannot be negative", names=lambda t: "table.csv")
def _(tmp, shared):
    rows = _good_rows()
    rows[4] = "cell4,1,2,-1,0,3,1"
    p = _csv(tmp, rows)
    return ["read", str(p), "-o", str(_out(tmp))], [_out(tmp)]


@case("h5ad_zscored", "h5ad whose X was scaled (sc.pp.scale)", "scaled",
      names=lambda t: "scaled.h5ad")
def _(tmp, shared):
    rng = np.random.default_rng(5)
    X = np.log1p(rng.poisson(1.5, size=(80, 60)).astype(float))
    X = (X - X.mean(0)) / (X.std(0) + 1e-9)
    p = write_counts_h5ad(tmp / "scaled.h5ad", n_cells=80, n_genes=60, values=X)
    return ["read", str(p), "-o", str(_out(tmp))], [_out(tmp)]


@case("zero_genes", "h5ad with cells but no genes", "0 genes", names=lambda t: "nogenes.h5ad")
def _(tmp, shared):
    a = ad.AnnData(X=sp.csr_matrix((10, 0), dtype=np.float32),
                   obs=pd.DataFrame(index=[f"c{i}" for i in range(10)]))
    a.write_h5ad(tmp / "nogenes.h5ad")
    return ["read", str(tmp / "nogenes.h5ad"), "-o", str(_out(tmp))], [_out(tmp)]


# ---- gene identity ------------------------------------------------------------------


@case("mouse_ensembl_no_symbols", "mouse Ensembl IDs and no gene-symbol column",
      "mouse ensembl", "symbol", names=lambda t: "mouse_ens.h5ad")
def _(tmp, shared):
    genes = [f"ENSMUSG{i:011d}" for i in range(40)]
    p = write_counts_h5ad(tmp / "mouse_ens.h5ad", genes=genes)
    return ["read", str(p), "-o", str(_out(tmp))], [_out(tmp)]


@case("zebrafish_symbols", "zebrafish gene symbols (col1a1a, dcn, ptprc): no markers match",
      "human or mouse", "no markers", names=lambda t: "adata.var_names")
def _(tmp, shared):
    genes = ["col1a1a", "col1a2", "dcn", "ptprc", "epcam", "pdgfra", "acta2", "tagln",
             "pecam1", "kdrl", "fn1a", "postna", "mmp2", "lum", "col3a1a"]
    genes += [f"si:ch211-{i}" for i in range(60)]
    rng = np.random.default_rng(6)
    X = np.log1p(rng.poisson(1.0, size=(50, len(genes))).astype(float) * 1.3)
    a = ad.AnnData(X=sp.csr_matrix(X.astype(np.float32)),
                   obs=pd.DataFrame(index=[f"c{i}" for i in range(50)]),
                   var=pd.DataFrame(index=genes))
    p = tmp / "zebrafish.h5ad"
    a.write_h5ad(p)
    return ["score", str(p), "-o", str(_out(tmp))], [_out(tmp)]


@case("blood_no_fibroblast_markers", "blood cells: no fibroblast marker expressed, species unclear",
      "none of the", "fibroblast marker genes", "no fibroblasts here", "immune",
      names=lambda t: "adata.var_names")
def _(tmp, shared):
    genes = ["PTPRC", "CD3E", "CD3D", "CD19", "MS4A1", "CD14", "LYZ", "NKG7", "GNLY", "CD8A",
             "HBB", "S100A8"] + [f"GENE{i}" for i in range(60)]
    p = write_counts_h5ad(tmp / "blood.h5ad", genes=genes, n_cells=80)
    import cafclassify as cc

    cc.read(p).write_h5ad(tmp / "blood_read.h5ad")
    return ["gate", str(tmp / "blood_read.h5ad"), "-o", str(_out(tmp))], [_out(tmp)]


# ---- outputs that would replace an input ---------------------------------------------


@case("output_is_input", "-o names the input file itself", "is the input", "replace the input",
      names=lambda t: "counts.h5ad")
def _(tmp, shared):
    p = write_counts_h5ad(tmp / "counts.h5ad")
    return ["read", str(p), "-o", str(p)], []


@case("output_is_link_to_input", "qc -o is a symbolic link to the input", "is the input",
      "through a link", names=lambda t: "link.h5ad")
def _(tmp, shared):
    p = write_counts_h5ad(tmp / "counts.h5ad")
    (tmp / "link.h5ad").symlink_to(p)
    return ["qc", str(p), "--filter", "-o", str(tmp / "link.h5ad")], []


@case("fetch_onto_source", "fetch a local file onto itself with a wrong checksum", "is the source",
      names=lambda t: "counts.h5ad")
def _(tmp, shared):
    p = write_counts_h5ad(tmp / "counts.h5ad")
    return ["fetch", str(p), str(p), "--sha256", "0" * 64], []


# ---- QC and biology -------------------------------------------------------------------


@case("zero_cells_after_qc", "no cell passes QC (--min-genes above every cell)",
      "no cell passes qc", names=lambda t: "adata")
def _(tmp, shared):
    p = write_counts_h5ad(tmp / "counts.h5ad", n_cells=60, n_genes=40)
    import cafclassify as cc

    a = cc.read(p)
    a.write_h5ad(tmp / "read.h5ad")
    return ["qc", str(tmp / "read.h5ad"), "--min-genes", "100000", "--filter",
            "-o", str(_out(tmp))], [_out(tmp)]


@case("no_fibroblasts", "no cell gated as fibroblast (blood-like: the fibroblast-gated cells removed)",
      "no cells are labelled 'fibroblast'", names=lambda t: "caf_lineage")
def _(tmp, shared):
    a = ad.read_h5ad(shared.scored())
    blood = a[a.obs[K.OBS_LINEAGE].astype(str) != "fibroblast"].copy()
    blood.write_h5ad(tmp / "blood.h5ad")
    # --on-insufficient error: the default (skip, as the workflow) records the reason instead
    return ["classify", str(tmp / "blood.h5ad"), "-o", str(_out(tmp)), "--on-insufficient", "error",
            "--cells-csv", str(tmp / "out" / "cells.csv")], [_out(tmp), tmp / "out" / "cells.csv"]


@case("only_5_fibroblasts", "only 5 fibroblasts: subtyping refused", "seed", names=lambda t: "adata")
def _(tmp, shared):
    a = ad.read_h5ad(shared.scored())
    lin = a.obs[K.OBS_LINEAGE].astype(str).to_numpy()
    fib = np.flatnonzero(lin == "fibroblast")[:5]
    keep = np.sort(np.concatenate([np.flatnonzero(lin != "fibroblast"), fib]))
    a[keep].copy().write_h5ad(tmp / "five.h5ad")
    return ["classify", str(tmp / "five.h5ad"), "-o", str(_out(tmp)), "--on-insufficient", "error"], [_out(tmp)]


# ---- signatures -----------------------------------------------------------------------


@case("signature_unknown_genes", "gene-set file whose genes are all absent from the data",
      "none of the", names=lambda t: "unknown")
def _(tmp, shared):
    gmt = tmp / "unknown.gmt"
    gmt.write_text("setA\tmy set\tNOTAGENE1\tNOTAGENE2\tNOTAGENE3\n"
                   "setB\tmy set\tFAKE1\tFAKE2\tFAKE3\n")
    return ["score", str(shared.scored()), "--signatures", str(gmt), "-o", str(_out(tmp))], [_out(tmp)]


@case("gmt_malformed", "GMT file with a line that has no genes / no tabs", "line 2",
      names=lambda t: "bad.gmt")
def _(tmp, shared):
    gmt = tmp / "bad.gmt"
    gmt.write_text("setA\tdesc\tCOL1A1\tDCN\tLUM\nthis line has spaces not tabs COL1A1 DCN\n")
    return ["score", str(shared.scored()), "--signatures", str(gmt), "-o", str(_out(tmp))], [_out(tmp)]


# ---- outputs --------------------------------------------------------------------------


@case("unwritable_output", "output folder cannot be created (its parent is a regular file)",
      "cannot create the output folder", names=lambda t: "not_a_folder")
def _(tmp, shared):
    p = write_counts_h5ad(tmp / "counts.h5ad")
    (tmp / "not_a_folder").write_text("I am a file\n")
    out = tmp / "not_a_folder" / "sub" / "out.h5ad"
    return ["read", str(p), "-o", str(out)], [out]


@case("output_is_a_folder", "output path is an existing folder", "cannot write the output file",
      names=lambda t: "out_dir.h5ad")
def _(tmp, shared):
    p = write_counts_h5ad(tmp / "counts.h5ad")
    (tmp / "out" / "out_dir.h5ad").mkdir(parents=True)
    return ["read", str(p), "-o", str(tmp / "out" / "out_dir.h5ad")], []


# ---- models ---------------------------------------------------------------------------


def _rewrite_model(src: Path, dst: Path, edit: Callable[[dict], None]) -> Path:
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for name in zin.namelist():
            data = zin.read(name)
            if name == "metadata.json":
                meta = json.loads(data)
                edit(meta)
                data = json.dumps(meta).encode()
            zout.writestr(name, data)
    return dst


@case("model_newer_format", "model file from a newer format version", "format_version 99",
      names=lambda t: "future.cafmodel")
def _(tmp, shared):
    m = _rewrite_model(shared.model(), tmp / "future.cafmodel",
                       lambda meta: meta.update(format_version=99))
    return ["classify", str(shared.scored()), "--model", str(m), "-o", str(_out(tmp))], [_out(tmp)]


@case("model_low_gene_overlap", "model whose genes barely overlap the data", "model genes",
      names=lambda t: "renamed.cafmodel")
def _(tmp, shared):
    def rename(meta):
        meta["genes"] = [g if i % 20 == 0 else f"XYZ{i}" for i, g in enumerate(meta["genes"])]

    m = _rewrite_model(shared.model(), tmp / "renamed.cafmodel", rename)
    return ["classify", str(shared.scored()), "--model", str(m), "-o", str(_out(tmp))], [_out(tmp)]


def _rewrite_member(src: Path, dst: Path, name: str, data: bytes) -> Path:
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for member in zin.namelist():
            zout.writestr(member, data if member == name else zin.read(member))
    return dst


@case("model_metadata_not_object", "model whose metadata.json is a list, not an object",
      "metadata.json", "not an object", names=lambda t: "listmeta.cafmodel")
def _(tmp, shared):
    m = _rewrite_member(shared.model(), tmp / "listmeta.cafmodel", "metadata.json", b"[1, 2, 3]")
    return ["classify", str(shared.scored()), "--model", str(m), "-o", str(_out(tmp))], [_out(tmp)]


@case("model_coef_shape_mismatch", "model whose gene list is longer than its coefficient matrix",
      "'arrays.npz:", "shape", names=lambda t: "shape.cafmodel")
def _(tmp, shared):
    m = _rewrite_model(shared.model(), tmp / "shape.cafmodel",
                       lambda meta: meta.update(genes=[*meta["genes"], "EXTRA1", "EXTRA2"]))
    return ["classify", str(shared.scored()), "--model", str(m), "-o", str(_out(tmp))], [_out(tmp)]


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch PWNED",))


@case("model_pickle_payload", "a pickle file passed as a model (never unpickled)",
      "not a cafclassify model file", names=lambda t: "evil.cafmodel")
def _(tmp, shared):
    (tmp / "evil.cafmodel").write_bytes(pickle.dumps(_Evil()))
    return ["classify", str(shared.scored()), "--model", str(tmp / "evil.cafmodel"),
            "-o", str(_out(tmp))], [_out(tmp)]


# ---- downloads (local server on 127.0.0.1, never the internet) -------------------------

PAYLOAD = b"\x89HDF\r\n\x1a\n" + bytes(range(256)) * 64


class _Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):
        if self.path == "/data.h5ad":
            body, ctype = PAYLOAD, "application/octet-stream"
        elif self.path == "/landing.h5ad":
            body, ctype = b"<!DOCTYPE html><html><body>Sign in</body></html>", "text/html"
        else:
            self.send_error(404, "Not Found")
            return
        self.send_response(200)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@contextlib.contextmanager
def local_server():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


_SERVER_URL: list[str] = []  # set while the cases run (pytest fixture / script)


@case("url_404", "URL that answers 404", "404", names=lambda t: "/missing.h5ad")
def _(tmp, shared):
    dest = tmp / "out" / "missing.h5ad"
    return ["fetch", f"{_SERVER_URL[0]}/missing.h5ad", str(dest), "--allow-http",
            "--retries", "0"], [dest]


@case("url_html", "URL that returns an HTML page instead of data", "web page",
      names=lambda t: "/landing.h5ad")
def _(tmp, shared):
    dest = tmp / "out" / "landing.h5ad"
    return ["fetch", f"{_SERVER_URL[0]}/landing.h5ad", str(dest), "--allow-http",
            "--retries", "0"], [dest]


@case("checksum_mismatch", "download whose SHA-256 differs from the expected one",
      "checksum mismatch", names=lambda t: "/data.h5ad")
def _(tmp, shared):
    dest = tmp / "out" / "data.h5ad"
    return ["fetch", f"{_SERVER_URL[0]}/data.h5ad", str(dest), "--allow-http", "--retries", "0",
            "--sha256", "0" * 64], [dest]


@case("http_refused", "plain http:// URL without --allow-http", "unencrypted http",
      names=lambda t: "/data.h5ad")
def _(tmp, shared):
    dest = tmp / "out" / "data.h5ad"
    return ["fetch", f"{_SERVER_URL[0]}/data.h5ad", str(dest)], [dest]


@case("local_checksum_mismatch", "local input whose SHA-256 differs (read --sha256)",
      "checksum mismatch", names=lambda t: "counts.h5ad")
def _(tmp, shared):
    p = write_counts_h5ad(tmp / "counts.h5ad")
    return ["read", str(p), "--sha256", "f" * 64, "-o", str(_out(tmp))], [_out(tmp)]


# ---- R objects (files written by R: tests/data/r_objects/make_bad_objects.R) ----------
R_OBJECTS = REPO / "tests" / "data" / "r_objects"


def _copy_r(tmp: Path, name: str) -> Path:
    (tmp / name).write_bytes((R_OBJECTS / name).read_bytes())
    return tmp / name


@case("rds_holds_a_list", ".rds file holding an R list, not a single-cell object",
      "holds an R list of 2 element(s) (counts, genes)", names=lambda t: "list.rds")
def _(tmp, shared):
    return ["read", str(_copy_r(tmp, "list.rds")), "-o", str(_out(tmp))], [_out(tmp)]


@case("rds_holds_a_character_vector", ".rds file holding a character vector",
      "holds a character vector of length 3", names=lambda t: "character.rds")
def _(tmp, shared):
    return ["read", str(_copy_r(tmp, "character.rds")), "-o", str(_out(tmp))], [_out(tmp)]


@case("rdata_two_single_cell_objects", ".RData with two SingleCellExperiment objects, none named",
      "2 single-cell objects", "--r-object NAME", names=lambda t: "two_sce.RData")
def _(tmp, shared):
    return ["read", str(_copy_r(tmp, "two_sce.RData")), "-o", str(_out(tmp))], [_out(tmp)]


@case("rdata_unknown_object_name", "--r-object naming an object the .RData does not hold",
      "no object named 'tumor'", "tumour", names=lambda t: "two_sce.RData")
def _(tmp, shared):
    p = _copy_r(tmp, "two_sce.RData")
    return ["read", str(p), "--r-object", "tumor", "-o", str(_out(tmp))], [_out(tmp)]


@case("truncated_rdata", "truncated .RData (download cut short)", "cannot read the R data file",
      "truncated", names=lambda t: "cut.RData")
def _(tmp, shared):
    data = gzip.decompress((R_OBJECTS / "two_sce.RData").read_bytes())  # save(compress=FALSE)
    p = tmp / "cut.RData"
    p.write_bytes(data[: len(data) // 2])
    return ["read", str(p), "--r-object", "tumour", "-o", str(_out(tmp))], [_out(tmp)]


# =============================================================================== fixtures


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    return Shared(tmp_path_factory.mktemp("shared_inputs"))


@pytest.fixture(scope="module")
def server():
    with local_server() as url:
        _SERVER_URL[:] = [url]
        yield url
        _SERVER_URL.clear()


@pytest.fixture(autouse=True)
def _no_backoff(monkeypatch):
    from cafclassify.io import _fetch

    monkeypatch.setattr(_fetch, "_BACKOFF_SECONDS", 0.0)


def run_case(c: Case, tmp: Path, shared: Shared) -> tuple[int, str, list[Path], list[Path]]:
    """Build and run one case; return (status, stderr, expected-absent outputs, files before)."""
    argv, outputs = c.build(tmp, shared)
    before = files_under(tmp)
    code, _, err = run_cli(argv)
    return code, err, outputs, before


# =============================================================================== tests


def test_catalogue_has_at_least_25_error_cases():
    assert len(CASES) >= 25
    assert len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("c", CASES, ids=[c.id for c in CASES])
def test_bad_input_gives_one_clear_paragraph(c, tmp_path, shared, server, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the pickle payload would `touch PWNED` here if executed
    code, err, outputs, before = run_case(c, tmp_path, shared)
    assert code == c.code, err
    assert "Traceback" not in err
    lines = error_lines(err)
    assert len(lines) == 1, err
    msg = lines[0]
    assert c.names(tmp_path) in msg, msg
    if c.id in STEP_ERROR_INPUTS:  # API errors: the CLI names the input file first
        assert f"error: {tmp_path / STEP_ERROR_INPUTS[c.id]}: " in msg, msg
    for phrase in c.phrases:
        assert phrase.lower() in msg.lower(), (phrase, msg)
    assert "What to do:" in msg, msg
    fix = msg.split("What to do:", 1)[1].strip()
    assert len(fix) > 15, msg
    assert_cli_wording(msg)
    # nothing written: no final output, no temporary file, no new file anywhere in tmp
    for out in outputs:
        assert not out.exists(), out
    assert files_under(tmp_path) == before, set(files_under(tmp_path)) - set(before)
    assert not (tmp_path / "PWNED").exists()


def test_docs_catalogue_lists_every_case():
    """docs/errors.md is generated from CASES; regenerate it when a case is added."""
    text = (REPO / "docs" / "errors.md").read_text(encoding="utf-8")
    missing = [c.id for c in CASES if f"| `{c.id}` |" not in text]
    assert not missing, f"run: python tests/test_bad_inputs.py --write-docs docs/errors.md ({missing})"


def test_debug_shows_the_traceback(tmp_path):
    missing = tmp_path / "nope.h5ad"
    code, _, err = run_cli(["read", str(missing), "-o", str(tmp_path / "o.h5ad")])
    assert code == 2 and "Traceback" not in err
    code, _, err = run_cli(["--debug", "read", str(missing), "-o", str(tmp_path / "o.h5ad")])
    assert code == 2
    assert "Traceback" in err
    assert len(error_lines(err)) == 1


# ---- inputs that are handled, not refused ---------------------------------------------


def test_duplicate_barcodes_are_made_unique_and_reported(tmp_path):
    barcodes = [f"cell{i:03d}" for i in range(60)]
    barcodes[10] = barcodes[11] = barcodes[12] = "cell000"
    p = write_counts_h5ad(tmp_path / "dup.h5ad", barcodes=barcodes)
    out = tmp_path / "r.h5ad"
    code, _, err = run_cli(["read", str(p), "-o", str(out)])
    assert code == 0, err
    assert "3 duplicate cell barcodes made unique" in err
    r = ad.read_h5ad(out)
    assert r.obs_names.is_unique and r.n_obs == 60
    rec = r.uns[K.UNS][K.UNS_READ]
    assert rec["n_duplicate_barcodes"] == 3
    assert list(rec["duplicate_barcodes"]) == ["cell000"]


def test_duplicate_gene_names_are_made_unique_keep_symbol_and_reported(tmp_path):
    genes = ["COL1A1", "DCN", "PDGFRA", "ACTA2", "PTPRC"] + [f"GENE{i}" for i in range(35)]
    genes[20] = genes[21] = "DCN"
    p = write_counts_h5ad(tmp_path / "dupg.h5ad", genes=genes)
    out = tmp_path / "r.h5ad"
    code, _, err = run_cli(["read", str(p), "-o", str(out)])
    assert code == 0, err
    assert "2 duplicate gene names made unique" in err
    r = ad.read_h5ad(out)
    assert r.var_names.is_unique and r.n_vars == 40
    rec = r.uns[K.UNS][K.UNS_READ]
    assert rec["n_duplicate_genes"] == 2
    assert list(rec["duplicate_genes"]) == ["DCN"]
    # the renamed copies keep the real symbol, so signature matching still sees DCN
    assert (r.var[K.VAR_SYMBOL] == "DCN").sum() == 3


def test_extension_does_not_decide_the_format(tmp_path):
    """A CSV named .h5ad is read as what it is (content wins over the name)."""
    p = tmp_path / "actually_csv.h5ad"
    p.write_text(_HEADER + "".join(r + "\n" for r in _good_rows()))
    out = tmp_path / "r.h5ad"
    code, _, err = run_cli(["read", str(p), "-o", str(out)])
    assert code == 0, err
    rec = ad.read_h5ad(out).uns[K.UNS][K.UNS_READ]
    assert rec["format"] == "csv"


def test_already_lognormalised_input_is_not_normalised_again(tmp_path):
    rng = np.random.default_rng(7)
    counts = rng.poisson(2.0, size=(60, 40)).astype(float)
    lib = counts.sum(1, keepdims=True)
    lognorm = np.log1p(counts / lib * 1e4)
    p = write_counts_h5ad(tmp_path / "lognorm.h5ad", values=lognorm)
    out = tmp_path / "r.h5ad"
    code, _, err = run_cli(["read", str(p), "-o", str(out)])
    assert code == 0, err
    r = ad.read_h5ad(out)
    assert r.uns[K.UNS][K.UNS_READ]["value_type"] == "lognorm"
    assert K.LAYER_COUNTS not in r.layers
    np.testing.assert_allclose(r.X.toarray(), lognorm.astype(np.float32), rtol=1e-6)


def test_log2_tpm_and_tpm_inputs_read_as_ln_cp10k(tmp_path):
    """log2(1 + TPM) and plain TPM tables become what the counts would: ln(1 + CP10k)."""
    rng = np.random.default_rng(7)
    counts = rng.poisson(rng.gamma(0.5, 4.0, size=40), size=(60, 40)).astype(float) + 1
    lib = counts.sum(1, keepdims=True)
    expected = np.log1p(counts / lib * 1e4).astype(np.float32)
    for name, values, vtype in (("log2tpm", np.log2(1 + counts / lib * 1e6), "lognorm"),
                                ("tpm", counts / lib * 1e6, "linear")):
        p = write_counts_h5ad(tmp_path / f"{name}.h5ad", values=values)
        out = tmp_path / f"r_{name}.h5ad"
        code, _, err = run_cli(["read", str(p), "-o", str(out)])
        assert code == 0, err
        r = ad.read_h5ad(out)
        assert r.uns[K.UNS][K.UNS_READ]["value_type"] == vtype
        np.testing.assert_allclose(r.X.toarray(), expected, rtol=1e-4, atol=1e-4)


def test_subtype_without_seed_cells_is_reported_absent(shared):
    """A dataset with no dCAF: training succeeds, dCAF is reported absent, never called."""
    _quiet_threads()
    import cafclassify as cc

    sim = cc.simulate(
        500, n_genes=1500, random_state=1,
        lineage_fractions={"fibroblast": 0.6, "epithelial": 0.2, "immune": 0.2},
        subtype_fractions={"myCAF": 0.35, "iCAF": 0.35, "vCAF": 0.15, "apCAF": 0.15},
    )
    raw = shared.root / "no_dcaf.h5ad"
    sim.write_h5ad(raw)
    a = cc.read(raw)
    cc.gate(a)
    cc.score(a)
    model = cc.train(a, random_state=0)
    absent = list(model.summary["absent_classes"])
    assert "dCAF" in absent
    assert "dCAF" not in model.classes
    cc.classify(a, model)
    assert (a.obs[K.OBS_SUBTYPE].astype(str) == "dCAF").sum() == 0
    assert "dCAF" in list(a.uns[K.UNS][K.UNS_CLASSIFY]["absent_classes"])


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


# ---- step errors must name the input file -------------------------------------------

#: cases whose error comes from an in-memory API function, which can only name the object
#: (``adata``, ``obs['caf_lineage']``): the CLI adds the file it was processing.
STEP_ERROR_INPUTS = {
    "zebrafish_symbols": "zebrafish.h5ad",
    "zero_cells_after_qc": "read.h5ad",
    "no_fibroblasts": "blood.h5ad",
    "only_5_fibroblasts": "five.h5ad",
}


def test_name_input_file_helper(tmp_path):
    from cafclassify._errors import DataError, InputFileError
    from cafclassify._validate import name_input_file

    f = write_counts_h5ad(tmp_path / "in.h5ad")
    exc = DataError("no cells are labelled 'fibroblast'.", path="obs['caf_lineage']",
                    fix="check the gate.")
    new = name_input_file(exc, str(f))
    assert type(new) is DataError and new.exit_code == 2 and new.fix == exc.fix
    assert new.message.startswith(f"{f}: obs['caf_lineage']: no cells are labelled")
    # errors that already name a file (or URL) are left alone
    named = InputFileError("broken.", path=f, fix="x")
    assert name_input_file(named, str(tmp_path / "other.h5ad")) is named
    url = InputFileError("404.", path="https://example.org/x", fix="x")
    assert name_input_file(url, str(f)) is url
    # no path at all: the file is added; several inputs are all named
    bare = DataError("bad.", fix="y")
    assert name_input_file(bare, [f, f]).message.startswith(f"{f}, {f}: bad.")
    assert name_input_file(bare, None) is bare
    # a path that does not exist (yet) is still a path: output-folder errors stay as they are
    out = InputFileError("cannot create the output folder.", path=tmp_path / "no" / "sub", fix="x")
    assert name_input_file(out, str(f)) is out
    missing = InputFileError("model file not found.", path="model.cafmodel", fix="x")
    assert name_input_file(missing, str(f)) is missing
    lib = DataError("no set matched.", path="signature library 'caf_v1'", fix="x")
    assert name_input_file(lib, str(f)).path == str(f)


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


# =============================================================================== safety

_MARKER: list[str] = []


class _Tripwire:
    """Records (instead of doing harm) if anything ever reconstructs it."""

    def __init__(self):
        self.armed = True

    def __setstate__(self, state):
        _MARKER.append("setstate")
        self.__dict__.update(state)

    def __reduce__(self):
        return (_trip, ("unpickled",))


def _trip(what: str) -> None:
    _MARKER.append(what)


def _model_zip(path: Path, meta: dict, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("metadata.json", json.dumps(meta))
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def _meta(**kw) -> dict:
    meta = {"format_version": 1, "kind": "logreg", "genes": ["COL1A1", "DCN"],
            "classes": ["myCAF", "iCAF"], "calibration": "none"}
    meta.update(kw)
    return meta


def test_model_arrays_holding_a_pickle_are_refused_without_unpickling(tmp_path):
    from cafclassify._errors import ModelError
    from cafclassify.model import CafModel

    buf = io.BytesIO()
    evil = np.empty(1, dtype=object)
    evil[0] = _Tripwire()
    np.savez(buf, coef=evil, intercept=np.zeros(2), feature_mean=np.zeros(2),
             feature_scale=np.ones(2))
    path = _model_zip(tmp_path / "evil_arrays.cafmodel", _meta(), {"arrays.npz": buf.getvalue()})
    # the payload is live: a loader that allowed pickles would run it
    _MARKER.clear()
    with np.load(io.BytesIO(buf.getvalue()), allow_pickle=True) as z:
        z["coef"]
    assert _MARKER == ["unpickled"]
    _MARKER.clear()
    with pytest.raises(ModelError) as info:
        CafModel.load(path)
    assert _MARKER == []
    assert str(path) in info.value.message and "What to do" in info.value.message


def test_model_with_an_untrusted_skops_type_is_refused(tmp_path):
    import skops.io as sio

    from cafclassify._errors import ModelError
    from cafclassify.model import CafModel

    buf = io.BytesIO()
    np.savez(buf, feature_mean=np.zeros(2), feature_scale=np.ones(2))
    path = _model_zip(tmp_path / "evil_hgb.cafmodel", _meta(kind="hgb"),
                      {"arrays.npz": buf.getvalue(), "estimator.skops": sio.dumps(_Tripwire())})
    _MARKER.clear()
    with pytest.raises(ModelError, match="allow-list") as info:
        CafModel.load(path)
    assert "_Tripwire" in info.value.message
    assert _MARKER == []


def test_a_raw_pickle_model_is_never_unpickled(tmp_path, monkeypatch):
    """Even a pickle of a real CafModel is refused: the loader never calls pickle."""
    from cafclassify._errors import ModelError
    from cafclassify.model import CafModel

    path = tmp_path / "pickled.cafmodel"
    path.write_bytes(pickle.dumps(_Tripwire()))
    _MARKER.clear()
    pickle.loads(path.read_bytes())  # the payload is live ...
    assert _MARKER == ["unpickled"]

    def forbidden(*args, **kwargs):
        raise AssertionError("pickle.load(s) was called")

    monkeypatch.setattr(pickle, "load", forbidden)
    monkeypatch.setattr(pickle, "loads", forbidden)
    _MARKER.clear()
    with pytest.raises(ModelError, match="not a cafclassify model file"):
        CafModel.load(path)
    assert _MARKER == []


def _shell_commands() -> list[tuple[str, str]]:
    """(rule file, shell command) for every `shell:` directive of the workflow."""
    out = []
    for smk in sorted((REPO / "workflow" / "rules").glob("*.smk")):
        text = smk.read_text()
        for m in re.finditer(r"^\s+shell:\n((?:\s+\"[^\n]*\"\n)+)", text, flags=re.M):
            parts = re.findall(r"\"([^\n]*)\"", m.group(1))
            out.append((smk.name, "".join(parts)))
    return out


def test_workflow_shell_commands_quote_every_value():
    """Paths and names are {x:q}-quoted; option strings are built with shlex (cli_opts)."""
    commands = _shell_commands()
    assert len(commands) >= 8  # read, qc, gate, score, train, classify, report, summary, fetch
    allowed_unquoted = {"threads", "params.opts", "params.links"}
    for name, cmd in commands:
        for field in re.findall(r"\{([^{}]+)\}", cmd):
            assert field.endswith(":q") or field in allowed_unquoted, (name, field, cmd)
    rules = "\n".join(p.read_text() for p in (REPO / "workflow" / "rules").glob("*.smk"))
    for m in re.finditer(r"^\s+opts=(.*)$", rules, flags=re.M):
        value = m.group(1)
        if "cli_opts(" in value:
            continue
        # a named helper (`opts=helper` or `opts=lambda wc: helper(wc)`): it must return
        # cli_opts, or step_opts (which returns cli_opts, checked as a helper too)
        helpers = [re.search(rf"^def {name}\(.*?(?=^\S)", rules + "\n.", flags=re.M | re.S)
                   for name in re.findall(r"[A-Za-z_]\w*", value) if name not in ("lambda", "wc")]
        helpers = [h.group(0) for h in helpers if h is not None]
        assert helpers and all(("return cli_opts(" in h) or ("return step_opts(" in h) for h in helpers), m.group(0)
    step = re.search(r"^def step_opts\(.*?(?=^\S)", rules + "\n.", flags=re.M | re.S)
    assert step is None or "return cli_opts(" in step.group(0)
    for m in re.finditer(r"^\s+links=(.*)$", rules, flags=re.M):
        assert "shlex.join(" in m.group(1), m.group(0)


def test_cli_opts_quotes_hostile_values():
    import shlex

    src = (REPO / "workflow" / "rules" / "common.smk").read_text()
    block = re.search(r"^def cli_opts\(.*?(?=^\S)", src, flags=re.M | re.S).group(0)
    ns: dict = {"shlex": shlex}
    exec(block, ns)
    cli_opts = ns["cli_opts"]
    hostile = "x; rm -rf ~ && $(whoami) `id` 'q' \"dq\" | tee /tmp/p\nnext"
    rendered = cli_opts(title=hostile, seed=3, smooth=True, sample_key=None, threshold="")
    assert shlex.split(rendered) == ["--title", hostile, "--seed", "3", "--smooth"]


def test_download_with_matching_checksum_over_allowed_http(tmp_path, server):
    from cafclassify.io import fetch

    dest = tmp_path / "ok" / "data.h5ad"
    want = hashlib.sha256(PAYLOAD).hexdigest()
    assert fetch(f"{server}/data.h5ad", dest, sha256=want, allow_http=True, retries=0) == dest
    assert dest.read_bytes() == PAYLOAD
    assert files_under(tmp_path / "ok") == [dest]  # no .part file left


# =============================================================================== docs


def _disk_full_row() -> tuple[Case, int, str]:
    """The message for a disk that fills up while the output is written (simulated)."""
    c = Case("disk_full", "the disk fills up while the output is written (simulated ENOSPC)",
             lambda t, s: ([], []), ("no space left",), lambda t: "out.h5ad")
    real = ad.AnnData.write_h5ad

    def full(self, filename, *args, **kwargs):
        raise OSError(28, "No space left on device")

    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        src = write_counts_h5ad(tmp / "counts.h5ad")
        ad.AnnData.write_h5ad = full
        try:
            code, _, err = run_cli(["read", str(src), "-o", str(_out(tmp))])
        finally:
            ad.AnnData.write_h5ad = real
        msg = error_lines(err)[0].replace(str(tmp), "<tmp>")
    return c, code, msg


def write_docs(path: Path) -> None:
    """Run every case and write the catalogue (case -> exact message) as Markdown."""
    rows = []
    with tempfile.TemporaryDirectory() as shared_dir, local_server() as url:
        _SERVER_URL[:] = [url]
        from cafclassify.io import _fetch

        _fetch._BACKOFF_SECONDS = 0.0
        shared = Shared(Path(shared_dir))
        for c in CASES:
            with tempfile.TemporaryDirectory() as d:
                tmp = Path(d)
                cwd = os.getcwd()
                os.chdir(tmp)
                try:
                    code, err, _, _ = run_case(c, tmp, shared)
                finally:
                    os.chdir(cwd)
                lines = error_lines(err) or [err.strip().splitlines()[-1] if err.strip() else ""]
                msg = lines[0]
                for real, placeholder in ((str(tmp.resolve()), "<tmp>"), (str(tmp), "<tmp>"),
                                          (str(Path(shared_dir).resolve()), "<shared>"),
                                          (shared_dir, "<shared>"), (url, "http://127.0.0.1:<port>")):
                    msg = msg.replace(real, placeholder)
                rows.append((c, code, msg))
        rows.append(_disk_full_row())
    out = [
        "# Error catalogue",
        "",
        "What cafclassify says when an input is wrong. Each row is a case of",
        "`tests/test_bad_inputs.py`; the message column is the exact stderr line, produced",
        "by running the case (`python tests/test_bad_inputs.py --write-docs docs/errors.md`),",
        "with temporary folders shown as `<tmp>`. Every one of these exits with status 2,",
        "prints no traceback (add `--debug` to see one), and leaves no output file and no",
        "temporary file behind.",
        "",
        "| case | input | exit | message |",
        "|---|---|---|---|",
    ]
    for c, code, msg in rows:
        out.append(f"| `{c.id}` | {c.title} | {code} | {msg.replace('|', '&#124;')} |")
    out += [
        "",
        "## Inputs that are handled, not refused",
        "",
        "| input | what happens |",
        "|---|---|",
        "| duplicate cell barcodes | made unique with suffixes `-1`, `-2`, ...; a WARNING names "
        "them; `uns['cafclassify']['read']` records `n_duplicate_barcodes` and the names |",
        "| duplicate gene names | made unique the same way; the copies keep their symbol in "
        "`var['cafclassify_symbol']`; recorded as `n_duplicate_genes` |",
        "| a file whose extension lies (CSV named `.h5ad`) | the format is detected from the "
        "content and recorded in `uns['cafclassify']['read']['format']` |",
        "| already log-normalised values | used as they are (`value_type: lognorm`), not "
        "normalised twice; values of another log base or scale that the numbers identify "
        "(`log2(1 + TPM)`, `ln(1 + CPM)`, `log10`: the right base's inverse gives every cell "
        "the same total) are rewritten as `ln(1 + CP10k)`, the scale every step assumes, and "
        "the record says so (`normalization`, `value_type_evidence.log_scale`); in an AnnData "
        "built by hand and passed to `gate` they are used as they are, with a WARNING |",
        "| an `.h5ad` whose X holds a subset of `adata.raw`'s genes (scanpy's highly "
        "variable genes) | `adata.raw` is read (the signatures need every gene), with a "
        "WARNING and `details.source_matrix_reason` in the record; `--layer X` reads X |",
        "| TPM / CPM, or fractions of each cell's counts (linear normalised values: every cell "
        "has the same total) | detected as "
        "`linear`, rescaled to 10,000 per cell and log1p-transformed; a gene subset of them "
        "(totals vary) cannot be told from estimated counts and is refused with the "
        "`--value-type` fix |",
        "| a subtype with no confident seed cells | trained without it; listed in "
        "`absent_classes` (model summary and `uns['cafclassify']['classify']`), never called |",
        "| gene sets with too little coverage | skipped with a WARNING naming the missing "
        "genes; the coverage table is in `uns['cafclassify']['score']` |",
        "| an `.RData`/`.rda` file holding one single-cell object among other objects | that "
        "object is read; its name, class and version are recorded in "
        "`uns['cafclassify']['read']['details']` |",
        "",
        "## Runs that are stopped, outputs that would replace inputs",
        "",
        "SIGINT (Ctrl-C) and SIGTERM (what a cluster scheduler sends at its time limit) stop",
        "a step within moments, also in the middle of an `.h5ad` write; every temporary file",
        "(`.<name>.*.part.h5ad` and the part files of a second writer process) is removed,",
        "nothing is published under the output name, and the exit status is 130 / 143 with",
        "one line (`tests/test_no_loss.py`):",
        "",
        "```",
        "cafclassify read: stopped by SIGTERM; temporary files removed, no partial outputs "
        "were left behind.",
        "```",
        "",
        "No command writes onto one of its inputs: an output (`-o`, `--cells-csv`, `--table`,",
        "`--log-file`, the `fetch` destination, ...) that is an input, by the same path, a",
        "symbolic or a hard link, is refused before any work (exit 2; rows `output_is_input`,",
        "`output_is_link_to_input`, `fetch_onto_source` above), and the atomic writer checks",
        "it again at write time. `fetch` copies a local source (never moves it) and never",
        "removes a file it did not create. Messages of the command line name options",
        "(`--species human`); the same errors raised by the Python API name arguments",
        "(`species='human'`).",
        "",
        "## Workflow configuration",
        "",
        "`workflow/rules/common.smk` validates `config/config.yaml` and the dataset sheet",
        "against `workflow/schemas/*.schema.yaml` before any job runs: wrong types, unknown",
        "keys, unknown method names and dataset ids with spaces or shell characters",
        "(`my data`, `x;rm -rf ~`, `$(whoami)`, ...) are refused with one paragraph such as",
        "",
        "```",
        "The dataset sheet config/datasets.tsv is invalid: data row 1: id: '$(whoami)' does not",
        "match '^[A-Za-z0-9][A-Za-z0-9_.-]*$'. Fix the value (allowed values and defaults are",
        "documented in workflow/schemas/ and config/README.md) and rerun.",
        "```",
        "",
        "Dataset ids therefore never reach a shell command unquoted; every other value is",
        "passed through `shlex.join` (`cli_opts` in `common.smk`).",
        "",
    ]
    path.write_text("\n".join(out), encoding="utf-8")


if __name__ == "__main__":  # pragma: no cover - documentation generator
    if len(sys.argv) == 3 and sys.argv[1] == "--write-docs":
        write_docs(Path(sys.argv[2]))
        print(f"wrote {sys.argv[2]} ({len(CASES)} cases)")
    else:
        print(f"usage: python {sys.argv[0]} --write-docs docs/errors.md")
        sys.exit(2)
