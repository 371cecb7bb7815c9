"""The catalogue of bad inputs (``tests/test_bad_inputs.py`` runs it, ``docs/errors.md`` is
written from it): each case builds a small broken input in a temporary folder and returns the
command line that must refuse it, and the outputs that must not appear."""

from __future__ import annotations

import gzip
import json
import os
import pickle
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scipy.io
import scipy.sparse as sp

from cafclassify import _keys as K

from _cli_fixtures import REPO, Shared, write_counts_h5ad

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


def out_path(tmp: Path, name: str = "out.h5ad") -> Path:
    return tmp / "out" / name


# ---- files that cannot be read ------------------------------------------------------


@case("empty_file", "empty input file", "empty", names=lambda t: "empty.h5ad")
def _(tmp, shared):
    (tmp / "empty.h5ad").write_bytes(b"")
    return ["read", str(tmp / "empty.h5ad"), "-o", str(out_path(tmp))], [out_path(tmp)]


@case("truncated_h5ad", "truncated .h5ad (download cut short)", "truncated",
      names=lambda t: "truncated.h5ad")
def _(tmp, shared):
    good = write_counts_h5ad(tmp / "good.h5ad", n_cells=200, n_genes=300)
    data = good.read_bytes()
    (tmp / "truncated.h5ad").write_bytes(data[: len(data) // 2])
    return ["read", str(tmp / "truncated.h5ad"), "-o", str(out_path(tmp))], [out_path(tmp)]


@case("corrupted_hdf5", "HDF5 signature followed by garbage", "corrupted",
      names=lambda t: "corrupt.h5ad")
def _(tmp, shared):
    rng = np.random.default_rng(1)
    (tmp / "corrupt.h5ad").write_bytes(b"\x89HDF\r\n\x1a\n" + rng.bytes(4096))
    return ["read", str(tmp / "corrupt.h5ad"), "-o", str(out_path(tmp))], [out_path(tmp)]


@case("extension_lies", "a ZIP archive named .h5ad", "zip archive", names=lambda t: "archive.h5ad")
def _(tmp, shared):
    with zipfile.ZipFile(tmp / "archive.h5ad", "w") as zf:
        zf.writestr("readme.txt", "not single-cell data\n")
    return ["read", str(tmp / "archive.h5ad"), "-o", str(out_path(tmp))], [out_path(tmp)]


@case("format_option_contradicts_content", "--format h5ad given for a CSV file",
      "--format h5ad was given but the content is csv", names=lambda t: "table.h5ad")
def _(tmp, shared):
    (tmp / "table.h5ad").write_text("cell,COL1A1,DCN\nc1,1,2\nc2,3,4\n")
    return ["read", str(tmp / "table.h5ad"), "--format", "h5ad", "-o", str(out_path(tmp))], [out_path(tmp)]


@case("missing_input", "input path does not exist", "does not exist", names=lambda t: "nope.h5ad")
def _(tmp, shared):
    return ["read", str(tmp / "nope.h5ad"), "-o", str(out_path(tmp))], [out_path(tmp)]


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
    return ["read", str(folder), "-o", str(out_path(tmp))], [out_path(tmp)]


@case("10x_mismatched_barcodes", "10x barcodes file from another sample (wrong length)",
      "barcodes", names=lambda t: "tenx")
def _(tmp, shared):
    folder = _write_10x(tmp / "tenx", n_barcodes=25)
    return ["read", str(folder), "-o", str(out_path(tmp))], [out_path(tmp)]


# ---- text tables --------------------------------------------------------------------

CSV_HEADER = "cell,COL1A1,DCN,PDGFRA,PTPRC,EPCAM,GENE1\n"


def _csv(tmp: Path, rows: list[str], name="table.csv") -> Path:
    p = tmp / name
    p.write_text(CSV_HEADER + "".join(r + "\n" for r in rows))
    return p


def good_csv_rows(n=30, seed=3):
    rng = np.random.default_rng(seed)
    return [f"cell{i}," + ",".join(str(v) for v in rng.poisson(2, 6)) for i in range(n)]


@case("csv_ragged_row", "CSV with a row that has an extra field", "fields",
      names=lambda t: "table.csv")
def _(tmp, shared):
    rows = good_csv_rows()
    rows[5] = rows[5] + ",7"
    p = _csv(tmp, rows)
    return ["read", str(p), "-o", str(out_path(tmp))], [out_path(tmp)]


@case("csv_non_numeric", "CSV with a non-numeric value", "abc", names=lambda t: "table.csv")
def _(tmp, shared):
    rows = good_csv_rows()
    rows[7] = "cell7,1,2,abc,0,0,1"
    p = _csv(tmp, rows)
    return ["read", str(p), "-o", str(out_path(tmp))], [out_path(tmp)]


@case("csv_nan", "CSV with a NaN value", "missing values", "cell3", names=lambda t: "table.csv")
def _(tmp, shared):
    rows = good_csv_rows()
    rows[3] = "cell3,1,NaN,3,0,0,1"
    p = _csv(tmp, rows)
    return ["read", str(p), "-o", str(out_path(tmp))], [out_path(tmp)]


@case("csv_inf", "CSV with an infinite value", "infinite", names=lambda t: "table.csv")
def _(tmp, shared):
    rows = good_csv_rows()
    rows[4] = "cell4,1,inf,3,0,0,1"
    p = _csv(tmp, rows)
    return ["read", str(p), "-o", str(out_path(tmp))], [out_path(tmp)]


@case("csv_negative_scaled", "CSV with z-scored (negative) values", "scaled",
      names=lambda t: "table.csv")
def _(tmp, shared):
    rng = np.random.default_rng(4)
    z = rng.normal(size=(30, 6))
    z = (z - z.mean(0)) / z.std(0)
    rows = [f"cell{i}," + ",".join(f"{v:.4f}" for v in z[i]) for i in range(30)]
    p = _csv(tmp, rows)
    return ["read", str(p), "-o", str(out_path(tmp))], [out_path(tmp)]


@case("csv_latin1", "Latin-1 encoded CSV (accented gene name): refused, never garbled",
      "not UTF-8", "Latin-1", "iconv -f latin1 -t utf-8", names=lambda t: "latin1.csv")
def _(tmp, shared):
    p = tmp / "latin1.csv"
    p.write_bytes((CSV_HEADER.replace("GENE1", "GÉNE1") + "".join(r + "\n" for r in good_csv_rows()))
                  .encode("latin-1"))
    return ["read", str(p), "-o", str(out_path(tmp))], [out_path(tmp)]


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
    return ["read", str(tmp / "table.csv.gz"), "-o", str(out_path(tmp))], [out_path(tmp)]


@case("csv_negative_integer", "count CSV with one negative integer", "not valid counts",
      "cannot be negative", names=lambda t: "table.csv")
def _(tmp, shared):
    rows = good_csv_rows()
    rows[4] = "cell4,1,2,-1,0,3,1"
    p = _csv(tmp, rows)
    return ["read", str(p), "-o", str(out_path(tmp))], [out_path(tmp)]


@case("h5ad_zscored", "h5ad whose X was scaled (sc.pp.scale)", "scaled",
      names=lambda t: "scaled.h5ad")
def _(tmp, shared):
    rng = np.random.default_rng(5)
    X = np.log1p(rng.poisson(1.5, size=(80, 60)).astype(float))
    X = (X - X.mean(0)) / (X.std(0) + 1e-9)
    p = write_counts_h5ad(tmp / "scaled.h5ad", n_cells=80, n_genes=60, values=X)
    return ["read", str(p), "-o", str(out_path(tmp))], [out_path(tmp)]


@case("zero_genes", "h5ad with cells but no genes", "0 genes", names=lambda t: "nogenes.h5ad")
def _(tmp, shared):
    a = ad.AnnData(X=sp.csr_matrix((10, 0), dtype=np.float32),
                   obs=pd.DataFrame(index=[f"c{i}" for i in range(10)]))
    a.write_h5ad(tmp / "nogenes.h5ad")
    return ["read", str(tmp / "nogenes.h5ad"), "-o", str(out_path(tmp))], [out_path(tmp)]


# ---- gene identity ------------------------------------------------------------------


@case("mouse_ensembl_no_symbols", "mouse Ensembl IDs and no gene-symbol column",
      "mouse ensembl", "symbol", names=lambda t: "mouse_ens.h5ad")
def _(tmp, shared):
    genes = [f"ENSMUSG{i:011d}" for i in range(40)]
    p = write_counts_h5ad(tmp / "mouse_ens.h5ad", genes=genes)
    return ["read", str(p), "-o", str(out_path(tmp))], [out_path(tmp)]


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
    return ["score", str(p), "-o", str(out_path(tmp))], [out_path(tmp)]


@case("blood_no_fibroblast_markers", "blood cells: no fibroblast marker expressed, species unclear",
      "none of the", "fibroblast marker genes", "no fibroblasts here", "immune",
      names=lambda t: "adata.var_names")
def _(tmp, shared):
    genes = ["PTPRC", "CD3E", "CD3D", "CD19", "MS4A1", "CD14", "LYZ", "NKG7", "GNLY", "CD8A",
             "HBB", "S100A8"] + [f"GENE{i}" for i in range(60)]
    p = write_counts_h5ad(tmp / "blood.h5ad", genes=genes, n_cells=80)
    import cafclassify as cc

    cc.read(p).write_h5ad(tmp / "blood_read.h5ad")
    return ["gate", str(tmp / "blood_read.h5ad"), "-o", str(out_path(tmp))], [out_path(tmp)]


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
            "-o", str(out_path(tmp))], [out_path(tmp)]


@case("no_fibroblasts", "no cell gated as fibroblast (blood-like: the fibroblast-gated cells removed)",
      "no cells are labelled 'fibroblast'", names=lambda t: "caf_lineage")
def _(tmp, shared):
    a = ad.read_h5ad(shared.scored())
    blood = a[a.obs[K.OBS_LINEAGE].astype(str) != "fibroblast"].copy()
    blood.write_h5ad(tmp / "blood.h5ad")
    # --on-insufficient error: the default (skip, as the workflow) records the reason instead
    return ["classify", str(tmp / "blood.h5ad"), "-o", str(out_path(tmp)), "--on-insufficient", "error",
            "--cells-csv", str(tmp / "out" / "cells.csv")], [out_path(tmp), tmp / "out" / "cells.csv"]


@case("only_5_fibroblasts", "only 5 fibroblasts: subtyping refused", "seed", names=lambda t: "adata")
def _(tmp, shared):
    a = ad.read_h5ad(shared.scored())
    lin = a.obs[K.OBS_LINEAGE].astype(str).to_numpy()
    fib = np.flatnonzero(lin == "fibroblast")[:5]
    keep = np.sort(np.concatenate([np.flatnonzero(lin != "fibroblast"), fib]))
    a[keep].copy().write_h5ad(tmp / "five.h5ad")
    return ["classify", str(tmp / "five.h5ad"), "-o", str(out_path(tmp)), "--on-insufficient", "error"], [out_path(tmp)]


# ---- signatures -----------------------------------------------------------------------


@case("signature_unknown_genes", "gene-set file whose genes are all absent from the data",
      "none of the", names=lambda t: "unknown")
def _(tmp, shared):
    gmt = tmp / "unknown.gmt"
    gmt.write_text("setA\tmy set\tNOTAGENE1\tNOTAGENE2\tNOTAGENE3\n"
                   "setB\tmy set\tFAKE1\tFAKE2\tFAKE3\n")
    return ["score", str(shared.scored()), "--signatures", str(gmt), "-o", str(out_path(tmp))], [out_path(tmp)]


@case("gmt_malformed", "GMT file with a line that has no genes / no tabs", "line 2",
      names=lambda t: "bad.gmt")
def _(tmp, shared):
    gmt = tmp / "bad.gmt"
    gmt.write_text("setA\tdesc\tCOL1A1\tDCN\tLUM\nthis line has spaces not tabs COL1A1 DCN\n")
    return ["score", str(shared.scored()), "--signatures", str(gmt), "-o", str(out_path(tmp))], [out_path(tmp)]


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
    return ["classify", str(shared.scored()), "--model", str(m), "-o", str(out_path(tmp))], [out_path(tmp)]


@case("model_low_gene_overlap", "model whose genes barely overlap the data", "model genes",
      names=lambda t: "renamed.cafmodel")
def _(tmp, shared):
    def rename(meta):
        meta["genes"] = [g if i % 20 == 0 else f"XYZ{i}" for i, g in enumerate(meta["genes"])]

    m = _rewrite_model(shared.model(), tmp / "renamed.cafmodel", rename)
    return ["classify", str(shared.scored()), "--model", str(m), "-o", str(out_path(tmp))], [out_path(tmp)]


def _rewrite_member(src: Path, dst: Path, name: str, data: bytes) -> Path:
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for member in zin.namelist():
            zout.writestr(member, data if member == name else zin.read(member))
    return dst


@case("model_metadata_not_object", "model whose metadata.json is a list, not an object",
      "metadata.json", "not an object", names=lambda t: "listmeta.cafmodel")
def _(tmp, shared):
    m = _rewrite_member(shared.model(), tmp / "listmeta.cafmodel", "metadata.json", b"[1, 2, 3]")
    return ["classify", str(shared.scored()), "--model", str(m), "-o", str(out_path(tmp))], [out_path(tmp)]


@case("model_coef_shape_mismatch", "model whose gene list is longer than its coefficient matrix",
      "'arrays.npz:", "shape", names=lambda t: "shape.cafmodel")
def _(tmp, shared):
    m = _rewrite_model(shared.model(), tmp / "shape.cafmodel",
                       lambda meta: meta.update(genes=[*meta["genes"], "EXTRA1", "EXTRA2"]))
    return ["classify", str(shared.scored()), "--model", str(m), "-o", str(out_path(tmp))], [out_path(tmp)]


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch PWNED",))


@case("model_pickle_payload", "a pickle file passed as a model (never unpickled)",
      "not a cafclassify model file", names=lambda t: "evil.cafmodel")
def _(tmp, shared):
    (tmp / "evil.cafmodel").write_bytes(pickle.dumps(_Evil()))
    return ["classify", str(shared.scored()), "--model", str(tmp / "evil.cafmodel"),
            "-o", str(out_path(tmp))], [out_path(tmp)]


SERVER_URL: list[str] = []  # set while the cases run (pytest fixture / script)


@case("url_404", "URL that answers 404", "404", names=lambda t: "/missing.h5ad")
def _(tmp, shared):
    dest = tmp / "out" / "missing.h5ad"
    return ["fetch", f"{SERVER_URL[0]}/missing.h5ad", str(dest), "--allow-http",
            "--retries", "0"], [dest]


@case("url_html", "URL that returns an HTML page instead of data", "web page",
      names=lambda t: "/landing.h5ad")
def _(tmp, shared):
    dest = tmp / "out" / "landing.h5ad"
    return ["fetch", f"{SERVER_URL[0]}/landing.h5ad", str(dest), "--allow-http",
            "--retries", "0"], [dest]


@case("checksum_mismatch", "download whose SHA-256 differs from the expected one",
      "checksum mismatch", names=lambda t: "/data.h5ad")
def _(tmp, shared):
    dest = tmp / "out" / "data.h5ad"
    return ["fetch", f"{SERVER_URL[0]}/data.h5ad", str(dest), "--allow-http", "--retries", "0",
            "--sha256", "0" * 64], [dest]


@case("http_refused", "plain http:// URL without --allow-http", "unencrypted http",
      names=lambda t: "/data.h5ad")
def _(tmp, shared):
    dest = tmp / "out" / "data.h5ad"
    return ["fetch", f"{SERVER_URL[0]}/data.h5ad", str(dest)], [dest]


@case("local_checksum_mismatch", "local input whose SHA-256 differs (read --sha256)",
      "checksum mismatch", names=lambda t: "counts.h5ad")
def _(tmp, shared):
    p = write_counts_h5ad(tmp / "counts.h5ad")
    return ["read", str(p), "--sha256", "f" * 64, "-o", str(out_path(tmp))], [out_path(tmp)]


# ---- R objects (files written by R: tests/data/r_objects/make_bad_objects.R) ----------
R_OBJECTS = REPO / "tests" / "data" / "r_objects"


def _copy_r(tmp: Path, name: str) -> Path:
    (tmp / name).write_bytes((R_OBJECTS / name).read_bytes())
    return tmp / name


@case("rds_holds_a_list", ".rds file holding an R list, not a single-cell object",
      "holds an R list of 2 element(s) (counts, genes)", names=lambda t: "list.rds")
def _(tmp, shared):
    return ["read", str(_copy_r(tmp, "list.rds")), "-o", str(out_path(tmp))], [out_path(tmp)]


@case("rds_holds_a_character_vector", ".rds file holding a character vector",
      "holds a character vector of length 3", names=lambda t: "character.rds")
def _(tmp, shared):
    return ["read", str(_copy_r(tmp, "character.rds")), "-o", str(out_path(tmp))], [out_path(tmp)]


@case("rdata_two_single_cell_objects", ".RData with two SingleCellExperiment objects, none named",
      "2 single-cell objects", "--r-object NAME", names=lambda t: "two_sce.RData")
def _(tmp, shared):
    return ["read", str(_copy_r(tmp, "two_sce.RData")), "-o", str(out_path(tmp))], [out_path(tmp)]


@case("rdata_unknown_object_name", "--r-object naming an object the .RData does not hold",
      "no object named 'tumor'", "tumour", names=lambda t: "two_sce.RData")
def _(tmp, shared):
    p = _copy_r(tmp, "two_sce.RData")
    return ["read", str(p), "--r-object", "tumor", "-o", str(out_path(tmp))], [out_path(tmp)]


@case("truncated_rdata", "truncated .RData (download cut short)", "cannot read the R data file",
      "truncated", names=lambda t: "cut.RData")
def _(tmp, shared):
    data = gzip.decompress((R_OBJECTS / "two_sce.RData").read_bytes())  # save(compress=FALSE)
    p = tmp / "cut.RData"
    p.write_bytes(data[: len(data) // 2])
    return ["read", str(p), "--r-object", "tumour", "-o", str(out_path(tmp))], [out_path(tmp)]


# ---- step errors must name the input file -------------------------------------------

#: cases whose error comes from an in-memory API function, which can only name the object
#: (``adata``, ``obs['caf_lineage']``): the CLI adds the file it was processing.
STEP_ERROR_INPUTS = {
    "zebrafish_symbols": "zebrafish.h5ad",
    "zero_cells_after_qc": "read.h5ad",
    "no_fibroblasts": "blood.h5ad",
    "only_5_fibroblasts": "five.h5ad",
}
