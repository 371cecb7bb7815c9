"""Reading R objects (.rds / .rda / .RData) without R: objects written by R itself at test time.

Rscript with SeuratObject and SingleCellExperiment (Debian's r-base-core,
r-cran-seuratobject, r-bioc-singlecellexperiment; CI installs them) writes the objects
and dumps what they hold; the tests compare every value, name and label read back in
Python with what R wrote. The SeuratObject v5 ``Assay5`` layout is tested on a committed
fixture (tests/data/seurat_v5/README.md says how it was made: Debian's SeuratObject 4.1.3
cannot write v5 objects).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

import cafclassify as cc
from cafclassify._errors import InputFileError
from cafclassify.io import sniff_format

from _rdata_fixtures import (
    RSCRIPT,
    r_embedding,
    r_lines,
    r_matrix,
    r_table,
    simulated,
    write_r_objects,
)

V5 = Path(__file__).parent / "data" / "seurat_v5"


def _r_packages_ok() -> str | None:
    if RSCRIPT is None:
        return "Rscript is not installed (CI installs Debian's r-base-core)"
    proc = subprocess.run(
        [RSCRIPT, "--vanilla", "-e", "library(SeuratObject); library(SingleCellExperiment)"],
        capture_output=True, text=True, timeout=120,
    )
    if proc.returncode != 0:
        return ("R packages SeuratObject/SingleCellExperiment are missing (CI installs Debian's "
                "r-cran-seuratobject and r-bioc-singlecellexperiment)")
    return None


@pytest.fixture(scope="module")
def robj(tmp_path_factory) -> Path:
    why = _r_packages_ok()
    if why:
        pytest.skip(why)
    return write_r_objects(tmp_path_factory.mktemp("robjects"), simulated())


def _assert_matrix_equal(X, expected: sp.csr_matrix) -> None:
    X = sp.csr_matrix(X)
    assert X.shape == expected.shape
    diff = (X.astype(np.float64) - expected).tocsr()
    diff.eliminate_zeros()
    assert diff.nnz == 0, f"{diff.nnz} values differ"
    assert X.nnz == expected.nnz  # no explicit zeros added, none lost


def _assert_obs_equal(obs: pd.DataFrame, folder: Path, name: str) -> None:
    want = r_table(folder, name)
    assert list(obs.index) == [str(i) for i in want.index]
    for col in want.columns:
        got = obs[col]
        if isinstance(got.dtype, pd.CategoricalDtype) or got.dtype == object:
            assert list(got.astype(str)) == list(want[col].astype(str)), col
            levels = folder / f"{name}_levels_{col}.txt"
            if levels.exists():  # R factor: the level order is kept
                assert list(got.cat.categories) == r_lines(folder, levels.name), col
        else:
            np.testing.assert_array_equal(got.to_numpy(float), want[col].astype(float).to_numpy())


# ---------------------------------------------------------------------------
# format detection
# ---------------------------------------------------------------------------
def test_sniff_r_files(robj):
    assert sniff_format(robj / "seurat.rds") == "rds"  # gzip
    assert sniff_format(robj / "sce.rds") == "rds"  # xz
    assert sniff_format(robj / "se.rds") == "rds"  # bzip2
    assert sniff_format(robj / "one_sce.RData") == "rdata"
    assert sniff_format(robj / "sce_and_list.rda") == "rdata"


# ---------------------------------------------------------------------------
# Seurat (v3/v4 Assay)
# ---------------------------------------------------------------------------
def test_seurat_counts_names_labels_reductions(robj):
    a = cc.read(robj / "seurat.rds", normalize=False)
    counts, genes, cells = r_matrix(robj, "seurat_counts")
    assert list(a.var_names) == genes
    assert list(a.obs_names) == cells
    _assert_matrix_equal(a.X, counts)
    assert sp.isspmatrix_csr(a.X)
    _assert_obs_equal(a.obs, robj, "seurat")
    assert list(a.obs["seurat_ident"].astype(str)) == r_lines(robj, "seurat_idents.txt")
    assert list(a.obs["seurat_ident"].cat.categories) == r_lines(robj, "seurat_idents_levels.txt")
    pca = r_embedding(robj, "seurat_pca")
    assert list(pca.index) == cells
    np.testing.assert_array_equal(a.obsm["X_pca"], pca.to_numpy(float))
    rec = a.uns["cafclassify"]["read"]
    version, default_assay = r_lines(robj, "seurat_version.txt")
    assert rec["format"] == "rds"
    assert rec["value_type"] == "counts"
    assert rec["species"] == "human" and rec["id_type"] == "symbol"
    d = rec["details"]
    assert d["r_object_class"] == "Seurat" and d["r_class_package"] == "SeuratObject"
    assert d["r_object_version"] == version
    assert d["assay"] == default_assay and d["layer"] == "counts"
    assert d["source_matrix"] == f"{default_assay}:counts"
    assert set(r_table(robj, "seurat").columns) <= set(d["metadata_columns"])


def test_seurat_normalised_layer_and_data_only_assay(robj):
    data, genes, cells = r_matrix(robj, "seurat_data")
    a = cc.read(robj / "seurat.rds", layer="data")
    assert a.uns["cafclassify"]["read"]["value_type"] == "lognorm"
    assert a.uns["cafclassify"]["read"]["details"]["source_matrix"] == "RNA:data"
    _assert_matrix_equal(a.X, data)
    b = cc.read(robj / "seurat_data_only.rds")  # no counts: the normalised data are read
    assert b.uns["cafclassify"]["read"]["details"]["layer"] == "data"
    _assert_matrix_equal(b.X, data)
    with pytest.raises(InputFileError, match=r"layer 'RNA:spliced' is not in the object.*RNA:counts, RNA:data"):
        cc.read(robj / "seurat.rds", layer="spliced")


def test_seurat_read_end_to_end_normalises_counts(robj):
    counts, _, _ = r_matrix(robj, "seurat_counts")
    a = cc.read(robj / "seurat.rds")
    _assert_matrix_equal(a.layers["counts"], counts)
    lib = np.asarray(counts.sum(axis=1)).ravel()
    expected = sp.diags(1e4 / lib) @ counts
    expected.data = np.log1p(expected.data)
    np.testing.assert_allclose(sp.csr_matrix(a.X).toarray(), expected.toarray(), rtol=1e-5)


# ---------------------------------------------------------------------------
# SingleCellExperiment / SummarizedExperiment
# ---------------------------------------------------------------------------
def test_sce_assays_coldata_rowdata_reduceddims(robj):
    a = cc.read(robj / "sce.rds", normalize=False)
    counts, ens, cells = r_matrix(robj, "sce_counts")
    assert list(a.var_names) == ens and list(a.obs_names) == cells
    _assert_matrix_equal(a.X, counts)
    _assert_obs_equal(a.obs, robj, "sce")
    symbols = r_lines(robj, "sce_symbols.txt")
    assert list(a.var["Symbol"]) == symbols
    rec = a.uns["cafclassify"]["read"]
    # Ensembl row names: the symbols come from rowData's Symbol column
    assert rec["symbol_source_column"] == "Symbol" and rec["species"] == "human"
    assert np.mean(a.var["cafclassify_symbol"].to_numpy() == np.array(symbols, dtype=object)) > 0.95
    for name in ("PCA", "UMAP"):
        emb = r_embedding(robj, f"sce_{name}")
        np.testing.assert_array_equal(a.obsm[f"X_{name}"], emb.to_numpy(float))
    d = rec["details"]
    assert d["r_object_class"] == "SingleCellExperiment"
    assert d["r_object_version"] == r_lines(robj, "sce_version.txt")[0]
    assert d["layer"] == "counts" and d["layers_present"] == ["counts", "logcounts"]
    logc, _, _ = r_matrix(robj, "sce_logcounts")
    b = cc.read(robj / "sce.rds", layer="logcounts")
    assert b.uns["cafclassify"]["read"]["value_type"] == "lognorm"
    _assert_matrix_equal(b.X, logc)


def test_summarized_experiment_bzip2(robj):
    a = cc.read(robj / "se.rds", normalize=False)
    counts, _, cells = r_matrix(robj, "sce_counts")
    genes = r_lines(robj, "in_genes.txt")  # R's row names of the plain counts
    assert list(a.var_names) == genes and list(a.obs_names) == cells
    _assert_matrix_equal(a.X, counts)
    assert a.uns["cafclassify"]["read"]["details"]["r_object_class"] == "SummarizedExperiment"
    assert list(a.obs["lineage"].cat.categories) == r_lines(robj, "sce_levels_lineage.txt")


# ---------------------------------------------------------------------------
# plain matrices, .RData files
# ---------------------------------------------------------------------------
def test_dgcmatrix_with_metadata_file_and_dense_matrix(robj):
    counts, _, cells = r_matrix(robj, "sce_counts")
    genes = r_lines(robj, "in_genes.txt")  # R's row names of the plain counts
    a = cc.read(robj / "dgc.rds", metadata=robj / "dgc_meta.csv", normalize=False)
    assert list(a.var_names) == genes and list(a.obs_names) == cells
    _assert_matrix_equal(a.X, counts)
    meta = pd.read_csv(robj / "in_meta.csv", index_col=0)
    assert list(a.obs["lineage"].astype(str)) == list(meta["lineage"])  # matched by cell name
    np.testing.assert_array_equal(a.obs["library"].to_numpy(), meta["library"].to_numpy())
    d = a.uns["cafclassify"]["read"]["details"]
    assert d["r_object_class"] == "dgCMatrix" and d["metadata_file_sha256"]
    dense, dg, dc = r_matrix(robj, "dense")
    b = cc.read(robj / "dense.rds", normalize=False)
    assert list(b.var_names) == dg and list(b.obs_names) == dc
    np.testing.assert_array_equal(np.asarray(b.X, dtype=float), dense.toarray())


def test_sparse_all_the_way(robj):
    """A 30000 x 100000 dgCMatrix (12 GB dense) is read as CSR built on R's own arrays."""
    from cafclassify.io._rdata import read_r_file

    a, info = read_r_file(robj / "big_sparse.rds", "rds")
    big, rows, cols = r_matrix(robj, "big")
    assert rows == [] and cols == []  # R stored no names: genes and cells are numbered
    assert a.var_names[0] == "gene1" and a.obs_names[-1] == "cell100000"
    assert sp.isspmatrix_csr(a.X) and info["sparse"]
    assert a.X.shape == (100000, 30000) and a.X.dtype == np.float32  # whole counts: exact
    _assert_matrix_equal(a.X, big)


def test_rdata_picks_the_single_cell_object_or_the_named_one(robj):
    counts, _, _ = r_matrix(robj, "sce_counts")
    for f in ("one_sce.RData", "sce_and_list.rda"):
        a = cc.read(robj / f, normalize=False)
        _assert_matrix_equal(a.X, counts)
        assert a.uns["cafclassify"]["read"]["details"]["r_object_name"] == "sce"
    b = cc.read(robj / "two_sce.RData", r_object="sce2", normalize=False)
    assert b.uns["cafclassify"]["read"]["details"]["r_object_name"] == "sce2"
    _assert_matrix_equal(b.X, counts)


# ---------------------------------------------------------------------------
# SeuratObject v5 (Assay5 with split layers): committed fixture
# ---------------------------------------------------------------------------
def test_seurat_v5_assay5_split_layers_fixture():
    a = cc.read(V5 / "seurat_v5.rds", normalize=False)
    want = pd.read_csv(V5 / "expected_counts.csv", index_col=0)  # cells x genes
    assert list(a.obs_names) == list(want.index)
    assert list(a.var_names) == list(want.columns)
    np.testing.assert_array_equal(sp.csr_matrix(a.X).toarray(), want.to_numpy(float))
    meta = pd.read_csv(V5 / "expected_meta.csv", index_col=0)
    assert list(a.obs["celltype"].astype(str)) == list(meta["celltype"])
    assert list(a.obs["sample"].astype(str)) == list(meta["sample"])
    assert list(a.obs["celltype"].cat.categories) == ["epithelial", "CAF", "T cell"]  # R levels
    np.testing.assert_array_equal(a.obs["nCount_RNA"].to_numpy(), meta["nCount_RNA"].to_numpy())
    assert list(a.var["feature_type"]) == ["Gene Expression"] * a.n_vars  # Assay5 meta.data
    d = a.uns["cafclassify"]["read"]["details"]
    assert d["seurat_assay_version"] == "v5 (Assay5)"
    assert d["layer_parts"] == ["counts.s1", "counts.s2"]
    assert d["r_object_version"].startswith("5.")
    emb = pd.read_csv(V5 / "expected_umap.csv", index_col=0, float_precision="round_trip")
    np.testing.assert_array_equal(a.obsm["X_umap"], emb.to_numpy(float))
    b = cc.read(V5 / "seurat_v5.rds", layer="data", normalize=False)
    want_data = pd.read_csv(V5 / "expected_data.csv", index_col=0, float_precision="round_trip")
    np.testing.assert_array_equal(sp.csr_matrix(b.X).toarray(), want_data.to_numpy(float))


# ---------------------------------------------------------------------------
# bad inputs: clear errors saying what the file holds
# ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "kwargs", "expected"),
    [
        ("list.rds", {}, r"holds an R list of 2 element\(s\) \(counts, meta\), not a single-cell"),
        ("chr.rds", {}, r"holds a character vector of length 3, not a single-cell object"),
        ("dataframe.rds", {}, r"holds a data.frame with 4 column\(s\)"),
        ("two_sce.RData", {}, r"holds 2 single-cell objects \(sce: .*SingleCellExperiment.*sce2.*--r-object NAME"),
        ("two_sce.RData", {"r_object": "sce3"}, r"no object named 'sce3' \(it holds sce: "),
        ("sce_and_list.rda", {"r_object": "other"}, r"'other' is an R list"),
        ("no_cells.RData", {}, r"holds no single-cell object \(it holds x: an integer vector"),
        ("seurat.rds", {"r_object": "s"}, r"an .rds file holds one unnamed object"),
    ],
)
def test_unexpected_r_objects_are_refused(robj, name, kwargs, expected):
    with pytest.raises(InputFileError, match=expected):
        cc.read(robj / name, **kwargs)


def test_truncated_r_file_is_refused(robj, tmp_path):
    for name in ("seurat.rds", "one_sce.RData"):
        data = (robj / name).read_bytes()
        bad = tmp_path / name
        bad.write_bytes(data[: len(data) // 2])
        with pytest.raises(InputFileError, match=r"cannot read the R data file .*truncated"):
            cc.read(bad)


def test_metadata_file_missing_cells_is_refused(robj, tmp_path):
    meta = pd.read_csv(robj / "dgc_meta.csv", index_col=0)
    short = tmp_path / "short_meta.tsv"
    meta.iloc[:-5].to_csv(short, sep="\t")
    with pytest.raises(InputFileError, match=r"5 of the 300 cells of dgc.rds are not in the metadata"):
        cc.read(robj / "dgc.rds", metadata=short)


def test_r_options_refused_for_other_formats(tmp_path):
    import anndata as ad

    p = tmp_path / "x.h5ad"
    ad.AnnData(sp.csr_matrix(np.ones((3, 2), dtype=np.float32))).write_h5ad(p)
    with pytest.raises(InputFileError, match="only apply to R object files"):
        cc.read(p, r_object="x")


def test_cli_reads_rdata_with_r_object(robj, tmp_path):
    out = tmp_path / "out.h5ad"
    proc = subprocess.run(
        [sys.executable, "-m", "cafclassify.cli", "read", str(robj / "two_sce.RData"), "-o", str(out)],
        capture_output=True, text=True,
    )
    assert proc.returncode == 2
    assert "--r-object NAME" in proc.stderr and "Traceback" not in proc.stderr
    proc = subprocess.run(
        [sys.executable, "-m", "cafclassify.cli", "read", str(robj / "two_sce.RData"),
         "--r-object", "sce2", "-o", str(out)],
        capture_output=True, text=True,
    )
    assert proc.returncode == 0, proc.stderr
    import anndata as ad

    back = ad.read_h5ad(out)
    counts, _, _ = r_matrix(robj, "sce_counts")
    _assert_matrix_equal(back.layers["counts"], counts)
    assert back.uns["cafclassify"]["read"]["details"]["r_object_name"] == "sce2"


# ---------------------------------------------------------------------------
# the workflow, from config/datasets.tsv rows, with no R at run time
# ---------------------------------------------------------------------------
def _no_r_path(tmp_path: Path) -> tuple[dict, Path]:
    """Environment whose PATH starts with fake R/Rscript that leave a marker if ever run."""
    import os

    fake = tmp_path / "fake_r_bin"
    fake.mkdir()
    marker = tmp_path / "r_was_called"
    for exe in ("R", "Rscript"):
        (fake / exe).write_text(f"#!/bin/sh\ntouch {marker}\nexit 1\n")
        (fake / exe).chmod(0o755)
    env = dict(os.environ)
    env["PATH"] = f"{fake}{os.pathsep}{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env, marker


def _snakemake(work: Path, env: dict, *args: str) -> subprocess.CompletedProcess:
    repo = Path(__file__).resolve().parents[1]
    return subprocess.run(
        [str(Path(sys.executable).with_name("snakemake")), "--snakefile", str(repo / "Snakefile"),
         "--directory", str(work), "--configfile", str(work / "config" / "config.yaml"), *args],
        capture_output=True, text=True, timeout=900, env=env, cwd=work,
    )


def test_workflow_dry_run_passes_r_object_from_the_sheet(robj, tmp_path):
    work = tmp_path / "work"
    (work / "config").mkdir(parents=True)
    (work / "two_sce.RData").write_bytes((robj / "two_sce.RData").read_bytes())
    (work / "config" / "datasets.tsv").write_text(
        "id\tpath_or_url\tformat\tr_object\n" "pick\ttwo_sce.RData\trdata\tsce2\n"
    )
    (work / "config" / "config.yaml").write_text("datasets: config/datasets.tsv\n")
    env, _ = _no_r_path(tmp_path)
    proc = _snakemake(work, env, "-n", "-p", "--cores", "1", "results/pick/read.h5ad")
    assert proc.returncode == 0, proc.stderr + proc.stdout
    assert "--format rdata --r-object sce2" in proc.stdout


@pytest.mark.slow
def test_workflow_runs_on_seurat_and_sce_rds_written_by_r(robj, tmp_path):
    """A Seurat .rds and an SCE .rds written by R go through the whole workflow without R."""
    if not Path(sys.executable).with_name("snakemake").exists():
        pytest.skip("snakemake not installed")
    import anndata as ad

    work = tmp_path / "work"
    (work / "config").mkdir(parents=True)
    (work / "data").mkdir()
    for name in ("seurat.rds", "sce.rds"):
        (work / "data" / name).write_bytes((robj / name).read_bytes())
    (work / "config" / "datasets.tsv").write_text(
        "id\tpath_or_url\tsha256\tformat\tspecies\tsample_column\tlabel_column\tnotes\n"
        "seu\tdata/seurat.rds\t\trds\t\tbatch\tlineage\tSeurat object written by R\n"
        "sce\tdata/sce.rds\t\t\thuman\t\tsubtype\tSingleCellExperiment written by R\n"
    )
    (work / "config" / "config.yaml").write_text("datasets: config/datasets.tsv\n")
    env, marker = _no_r_path(tmp_path)
    proc = _snakemake(work, env, "--cores", "2")
    logs = "\n".join(f"--- {p}\n{p.read_text()[-1500:]}" for p in sorted((work / "logs").rglob("*.log"))) \
        if (work / "logs").exists() else ""
    assert proc.returncode == 0, proc.stderr[-3000:] + logs
    assert not marker.exists(), "R was called at run time"
    meta = pd.read_csv(robj / "in_meta.csv", index_col=0)
    for ds, r_class in (("seu", "Seurat"), ("sce", "SingleCellExperiment")):
        res = work / "results" / ds
        for name in ("classified.h5ad", "cells.csv", "report.html"):
            assert (res / name).stat().st_size > 0, (ds, name)
        out = ad.read_h5ad(res / "classified.h5ad", backed="r")
        rec = out.uns["cafclassify"]["provenance"]["history"]
        read_rec = ad.read_h5ad(res / "read.h5ad", backed="r").uns["cafclassify"]["read"]
        assert read_rec["details"]["r_object_class"] == r_class
        assert [k.split("_", 1)[1] for k in rec][0] == "read"
        # the author labels came along with every cell
        cells = out.obs_names
        label = "lineage" if ds == "seu" else "subtype"
        assert list(out.obs[label].astype(str)) == list(meta.loc[cells, label])
