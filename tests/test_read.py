"""cafclassify.read: every format written by hand, malformed inputs, the real files."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import shutil
from pathlib import Path

import anndata as ad
import h5py
import numpy as np
import pandas as pd
import pytest
import scipy.io
import scipy.sparse as sp

import cafclassify
from cafclassify import _keys as K
from cafclassify._errors import InputFileError
from cafclassify.io import read, read_backed, sniff_format
from cafclassify.io._stream import read_to_h5ad

from _tenx_fixtures import write_10x_h5_v2 as _write_10x_h5_v2
from _tenx_fixtures import write_10x_h5_v3 as _write_10x_h5_v3

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"

GENES = (
    "ACTB GAPDH COL1A1 COL1A2 COL3A1 DCN LUM FAP PDGFRA PDGFRB ACTA2 TAGLN MYH11 RGS5 "
    "PECAM1 VWF CDH5 EPCAM KRT8 KRT18 KRT19 PTPRC CD3E CD4 CD8A MS4A1 CD79A CD14 LYZ "
    "CD68 C1QA IL6 CXCL12 CXCL8 CCL2 CFD HLA-DRA CD74 POSTN MMP11 CTHRC1 SFRP2 TWIST1 "
    "THY1 VIM FN1 SPARC TNC LTBP2 MYL9 CNN1 DES MKI67 TOP2A PCNA B2M MALAT1 EEF1A1 "
    "TPT1 FTL FTH1 S100A6 IGFBP7 MGP APOD PI16 DPT CCDC80 SERPINF1 TIMP1 TIMP3 CST3 "
    "MT-CO1 MT-CO2 MT-ND1 MT-ATP6 RPL3 RPL7A RPS4X RPS6 RPLP0 RPSA"
).split()


def _counts_adata(n_cells=40, seed=0) -> ad.AnnData:
    rng = np.random.default_rng(seed)
    mu = rng.gamma(0.8, 3.0, size=len(GENES))
    lib = rng.lognormal(0, 0.3, size=(n_cells, 1))
    X = rng.poisson(mu * lib).astype(np.float32)
    X[:, 0] += 1  # no empty cell
    obs = pd.DataFrame(
        {"sample": np.repeat(["s1", "s2"], n_cells // 2)},
        index=[f"CELL{i:04d}_AACGTTGCAACG" for i in range(n_cells)],
    )
    return ad.AnnData(X=sp.csr_matrix(X), obs=obs, var=pd.DataFrame(index=GENES))


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _write_mtx_folder(
    folder: Path, adata: ad.AnnData, *, gz=True, legacy=False, prefix="", n_feature_cols=3,
    extra_feature_rows=0,
) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    opener = (lambda p: gzip.open(p, "wt")) if gz else (lambda p: open(p, "w"))
    sfx = ".gz" if gz else ""
    mat = sp.coo_matrix(adata.X.T)  # genes x cells
    with opener(folder / f"{prefix}matrix.mtx{sfx}") as fh:
        buf = io.BytesIO()
        scipy.io.mmwrite(buf, mat, field="integer")
        fh.write(buf.getvalue().decode())
    feat_name = "genes.tsv" if legacy else "features.tsv"
    with opener(folder / f"{prefix}{feat_name}{sfx}") as fh:
        for i, g in enumerate(adata.var_names):
            cols = [f"ENSG{i:011d}", g, "Gene Expression"][:n_feature_cols]
            fh.write("\t".join(cols) + "\n")
        for j in range(extra_feature_rows):
            fh.write(f"ENSG9{j:010d}\tEXTRA{j}\tGene Expression\n")
    with opener(folder / f"{prefix}barcodes.tsv{sfx}") as fh:
        for b in adata.obs_names:
            fh.write(b + "\n")
    return folder


def _write_table(path: Path, adata: ad.AnnData, *, genes_in_rows=True, sep=",", gz=False,
                 r_style=False) -> Path:
    dense = np.asarray(adata.X.todense()).astype(int)
    df = pd.DataFrame(dense, index=adata.obs_names, columns=adata.var_names)
    if genes_in_rows:
        df = df.T
    text = df.to_csv(sep=sep, index_label="gene" if genes_in_rows else "cell")
    if r_style:  # R write.table: header without the corner field
        lines = text.splitlines()
        lines[0] = sep.join(lines[0].split(sep)[1:])
        text = "\n".join(lines) + "\n"
    if gz:
        with gzip.open(path, "wt") as fh:
            fh.write(text)
    else:
        path.write_text(text)
    return path


def _dense(X):
    return np.asarray(X.todense()) if sp.issparse(X) else np.asarray(X)


def _assert_counts_read(a: ad.AnnData, ref: ad.AnnData, fmt: str, tmp: Path | None = None):
    """Same cells, genes and counts; normalised X; provenance recorded (and h5ad-writable)."""
    assert list(a.obs_names) == list(ref.obs_names)
    assert list(a.var_names) == list(ref.var_names)
    np.testing.assert_array_equal(_dense(a.layers[K.LAYER_COUNTS]), _dense(ref.X))
    expected = np.log1p(_dense(ref.X) / _dense(ref.X).sum(1, keepdims=True) * 1e4)
    np.testing.assert_allclose(_dense(a.X), expected, rtol=1e-4, atol=1e-5)
    rec = a.uns[K.UNS][K.UNS_READ]
    assert rec["format"] == fmt
    assert rec["value_type"] == "counts"
    assert rec["n_cells"] == ref.n_obs and rec["n_genes"] == ref.n_vars
    assert rec["species"] == "human"
    assert rec["id_type"] == "symbol"
    assert list(a.var[K.VAR_SYMBOL]) == list(ref.var_names)
    if tmp is not None:
        a.write_h5ad(tmp / f"written_{fmt}.h5ad")
        back = ad.read_h5ad(tmp / f"written_{fmt}.h5ad")
        assert back.uns[K.UNS][K.UNS_READ]["sha256"] == rec["sha256"]


@pytest.fixture
def ref():
    return _counts_adata()


# ---------------------------------------------------------------------------
# formats
# ---------------------------------------------------------------------------
def test_h5ad_counts_normalised_and_file_untouched(tmp_path, ref):
    p = tmp_path / "x.h5ad"
    ref.write_h5ad(p)
    before, mtime = _sha(p), p.stat().st_mtime_ns
    a = read(p, sample_column="sample")
    _assert_counts_read(a, ref, "h5ad")
    rec = a.uns[K.UNS][K.UNS_READ]
    assert rec["sha256"] == before
    assert rec["sample_column"] == "sample" and rec["n_samples"] == 2
    assert _sha(p) == before and p.stat().st_mtime_ns == mtime
    assert sp.issparse(a.X) and sp.issparse(a.layers[K.LAYER_COUNTS])


def test_h5ad_normalize_false_keeps_counts(tmp_path, ref):
    p = tmp_path / "x.h5ad"
    ref.write_h5ad(p)
    a = read(p, normalize=False)
    np.testing.assert_array_equal(_dense(a.X), _dense(ref.X))
    assert K.LAYER_COUNTS not in a.layers
    assert a.uns[K.UNS][K.UNS_READ]["value_type"] == "counts"


def test_h5ad_result_is_writable(tmp_path, ref):
    p = tmp_path / "x.h5ad"
    ref.write_h5ad(p)
    a = read(p)
    a.write_h5ad(tmp_path / "out.h5ad")
    back = ad.read_h5ad(tmp_path / "out.h5ad")
    assert back.uns[K.UNS][K.UNS_READ]["sha256"] == _sha(p)


@pytest.mark.parametrize("gz", [True, False])
def test_10x_mtx_folder(tmp_path, ref, gz):
    folder = _write_mtx_folder(tmp_path / "mtx", ref, gz=gz)
    a = read(folder)
    _assert_counts_read(a, ref, "10x_mtx", tmp_path)
    rec = a.uns[K.UNS][K.UNS_READ]
    files = sorted(p for p in folder.iterdir())
    h = hashlib.sha256(b"".join(p.read_bytes() for p in files)).hexdigest()
    assert rec["sha256"] == h
    assert rec["hashed_files"] == [p.name for p in files]


def test_10x_mtx_path_to_matrix_file_legacy_genes_and_prefix(tmp_path, ref):
    folder = _write_mtx_folder(tmp_path / "old", ref, gz=False, legacy=True, n_feature_cols=2)
    a = read(folder / "matrix.mtx")
    _assert_counts_read(a, ref, "10x_mtx")
    assert a.uns[K.UNS][K.UNS_READ]["details"]["legacy_genes_tsv"] is True
    geo = _write_mtx_folder(tmp_path / "geo", ref, prefix="GSM1_")
    _write_mtx_folder(geo, _counts_adata(seed=5), prefix="GSM2_")
    b = read(geo / "GSM1_matrix.mtx.gz")
    _assert_counts_read(b, ref, "10x_mtx")
    with pytest.raises(InputFileError, match="2 matrix files"):
        read(geo)


def test_10x_mtx_single_column_features_and_transposed_matrix(tmp_path, ref):
    folder = _write_mtx_folder(tmp_path / "one", ref, n_feature_cols=1)
    a = read(folder)
    assert a.n_vars == ref.n_vars
    assert a.var_names[0].startswith("ENSG")  # only IDs available
    # a matrix stored cells x genes (seen on GEO) is recognised from the dimensions
    t = tmp_path / "t"
    _write_mtx_folder(t, ref)
    with gzip.open(t / "matrix.mtx.gz", "wt") as fh:
        buf = io.BytesIO()
        scipy.io.mmwrite(buf, sp.coo_matrix(ref.X), field="integer")
        fh.write(buf.getvalue().decode())
    b = read(t)
    np.testing.assert_array_equal(_dense(b.layers["counts"]), _dense(ref.X))
    assert b.uns[K.UNS][K.UNS_READ]["details"]["matrix_orientation"] == "cells_x_genes"


def test_10x_h5_v3_keeps_gene_expression_only(tmp_path, ref):
    p = _write_10x_h5_v3(tmp_path / "filtered_feature_bc_matrix.h5", ref, antibody=3)
    a = read(p)
    _assert_counts_read(a, ref, "10x_h5", tmp_path)
    det = a.uns[K.UNS][K.UNS_READ]["details"]
    assert det["layout"] == "cellranger_v3"
    assert det["n_features_not_gene_expression"] == 3


def test_10x_h5_v2(tmp_path, ref):
    p = _write_10x_h5_v2(tmp_path / "v2.h5", ref)
    a = read(p)
    _assert_counts_read(a, ref, "10x_h5")
    assert a.uns[K.UNS][K.UNS_READ]["details"]["layout"] == "cellranger_v2"


@pytest.mark.parametrize(
    ("name", "genes_in_rows", "sep", "gz", "r_style", "fmt"),
    [
        ("g.csv", True, ",", False, False, "csv"),
        ("c.csv", False, ",", False, False, "csv"),
        ("g.tsv.gz", True, "\t", True, False, "tsv"),
        ("r.txt", True, "\t", False, True, "tsv"),
    ],
)
def test_tables_both_orientations(tmp_path, ref, name, genes_in_rows, sep, gz, r_style, fmt):
    p = _write_table(tmp_path / name, ref, genes_in_rows=genes_in_rows, sep=sep, gz=gz,
                     r_style=r_style)
    a = read(p)
    _assert_counts_read(a, ref, fmt, tmp_path)
    rec = a.uns[K.UNS][K.UNS_READ]
    assert rec["orientation"] == ("genes_x_cells" if genes_in_rows else "cells_x_genes")
    assert "gene symbols" in rec["details"]["orientation_evidence"]


def test_table_orientation_ambiguous_refused_and_override(tmp_path, ref):
    b = ref.copy()
    b.var_names = [f"feat{i}" for i in range(b.n_vars)]
    b.obs_names = [f"c{i}" for i in range(b.n_obs)]
    p = _write_table(tmp_path / "amb.csv", b, genes_in_rows=True)
    with pytest.raises(InputFileError, match="orientation=") as exc:
        read(p)
    assert str(p) in str(exc.value)
    a = read(p, orientation="genes_x_cells")
    assert a.n_obs == ref.n_obs and a.n_vars == ref.n_vars
    assert a.uns[K.UNS][K.UNS_READ]["species"] == "unknown"


def test_loom(tmp_path, ref):
    p = tmp_path / "x.loom"
    b = ref.copy()
    b.obs = pd.DataFrame(index=b.obs_names)
    b.write_loom(p)
    a = read(p)
    _assert_counts_read(a, ref, "loom", tmp_path)


def test_content_beats_extension(tmp_path, ref, caplog):
    # an h5ad named .csv, a gzipped TSV named .txt, a plain CSV named .csv.gz
    p1 = tmp_path / "lies.csv"
    ref.write_h5ad(p1)
    assert sniff_format(p1) == "h5ad"
    _assert_counts_read(read(p1), ref, "h5ad")
    p2 = _write_table(tmp_path / "t.txt", ref, sep="\t", gz=True)
    _assert_counts_read(read(p2), ref, "tsv")
    p3 = _write_table(tmp_path / "plain.csv.gz", ref, sep=",", gz=False)
    _assert_counts_read(read(p3), ref, "csv")
    p4 = _write_10x_h5_v3(tmp_path / "cellranger.h5ad", ref)
    assert sniff_format(p4) == "10x_h5"
    assert "content is 10x_h5" in caplog.text


def test_explicit_format_conflicting_with_content(tmp_path, ref):
    p = tmp_path / "x.h5ad"
    ref.write_h5ad(p)
    with pytest.raises(InputFileError, match="format='csv' was given but the content is h5ad"):
        read(p, format="csv")
    with pytest.raises(InputFileError, match="not understood"):
        read(p, format="sav")
    with pytest.raises(InputFileError, match="format='rds' was given but the content is h5ad"):
        read(p, format="rds")


# ---------------------------------------------------------------------------
# duplicates, value types, layers
# ---------------------------------------------------------------------------
def test_duplicate_genes_and_barcodes_made_unique_and_recorded(tmp_path, ref):
    b = ref.copy()
    names = list(b.var_names)
    names[1] = "ACTB"  # GAPDH -> a second ACTB
    b.var_names = names
    obs = list(b.obs_names)
    obs[3] = obs[2]
    b.obs_names = obs
    p = tmp_path / "d.h5ad"
    b.write_h5ad(p)
    a = read(p)
    rec = a.uns[K.UNS][K.UNS_READ]
    assert rec["n_duplicate_genes"] == 1 and list(rec["duplicate_genes"]) == ["ACTB"]
    assert rec["n_duplicate_barcodes"] == 1
    assert a.var_names.is_unique and a.obs_names.is_unique
    assert a.var_names[1] == "ACTB-1"
    assert a.var[K.VAR_SYMBOL].iloc[1] == "ACTB"  # the symbol is the original name


def test_lognorm_h5ad_used_as_is_and_raw_layer_option(tmp_path, ref):
    b = ref.copy()
    b.layers["counts"] = b.X.copy()
    b.raw = b.copy()
    import scanpy as sc

    sc.pp.normalize_total(b, target_sum=1e4)
    sc.pp.log1p(b)
    lognorm = _dense(b.X).copy()
    b.X = lognorm.copy()
    sc.pp.scale(b)  # X is now z-scored
    p = tmp_path / "scaled.h5ad"
    b.write_h5ad(p)
    with pytest.raises(InputFileError, match="scaled") as exc:
        read(p)
    assert "layer='raw'" in exc.value.fix and "counts" in exc.value.fix
    a = read(p, layer="counts")
    np.testing.assert_allclose(_dense(a.X), lognorm, rtol=1e-4, atol=1e-5)
    r = read(p, layer="raw")
    assert r.uns[K.UNS][K.UNS_READ]["details"]["source_matrix"] == "raw.X"
    with pytest.raises(InputFileError, match="layer 'nope'"):
        read(p, layer="nope")
    b2 = ad.AnnData(X=sp.csr_matrix(lognorm), var=ref.var.copy(), obs=ref.obs.copy())
    p2 = tmp_path / "ln.h5ad"
    b2.write_h5ad(p2)
    c = read(p2)
    assert c.uns[K.UNS][K.UNS_READ]["value_type"] == "lognorm"
    assert K.LAYER_COUNTS not in c.layers
    np.testing.assert_array_equal(_dense(c.X), lognorm)


@pytest.mark.parametrize("streamed", [False, True])
def test_raw_read_when_x_holds_a_gene_subset(tmp_path, ref, caplog, streamed):
    """scanpy's layout: the whole log-normalised matrix in adata.raw, X cut to the highly
    variable genes. The signatures need every gene: raw is read, logged and recorded."""
    import scanpy as sc

    b = ref.copy()
    sc.pp.normalize_total(b, target_sum=1e4)
    sc.pp.log1p(b)
    full = _dense(b.X).copy()
    b.raw = b
    b = b[:, 10:40].copy()  # X: 30 of the 85 genes
    p = tmp_path / "hvg.h5ad"
    b.write_h5ad(p)

    def rd(**kw):
        if not streamed:
            return read(p, **kw)
        out = tmp_path / f"out_{len(kw)}.h5ad"
        read_to_h5ad(p, out, chunk_size=17, **kw)
        return ad.read_h5ad(out)

    with caplog.at_level("WARNING"):
        a = rd()
    assert a.n_vars == ref.n_vars
    np.testing.assert_allclose(_dense(a.X), full, rtol=1e-5, atol=1e-6)
    details = a.uns[K.UNS][K.UNS_READ]["details"]
    assert details["source_matrix"] == "raw.X"
    assert f"X holds 30 of the {ref.n_vars} genes of adata.raw" in details["source_matrix_reason"]
    assert "layer='X'" in caplog.text
    x = rd(layer="X")  # X when asked for
    assert x.n_vars == 30
    np.testing.assert_allclose(_dense(x.X), full[:, 10:40], rtol=1e-5, atol=1e-6)
    assert "source_matrix_reason" not in x.uns[K.UNS][K.UNS_READ]["details"]


def test_linear_values_read_when_totals_equal_else_need_value_type(tmp_path, ref):
    X = _dense(ref.X)
    tpm = X / X.sum(1, keepdims=True) * 1e6
    expected = np.log1p(X / X.sum(1, keepdims=True) * 1e4)
    b = ad.AnnData(X=tpm.astype(np.float32), var=ref.var.copy(), obs=ref.obs.copy())
    p = tmp_path / "tpm.h5ad"
    b.write_h5ad(p)
    a = read(p)  # every cell sums to 1e6: TPM/CPM, told from the numbers
    np.testing.assert_allclose(_dense(a.X), expected, rtol=1e-4, atol=1e-5)
    assert a.uns[K.UNS][K.UNS_READ]["value_type_detected"] == "linear"
    assert K.LAYER_COUNTS not in a.layers
    # the same as fractions of each cell's total (values <= 1): linear, not log values
    p_frac = tmp_path / "fractions.h5ad"
    ad.AnnData(X=(tpm / 1e6).astype(np.float32), var=ref.var.copy(), obs=ref.obs.copy()).write_h5ad(p_frac)
    np.testing.assert_allclose(_dense(read(p_frac).X), expected, rtol=1e-4, atol=1e-5)
    # the same values cut to ten genes: totals vary, as estimated counts' do
    sub = b[:, :10].copy()
    p2 = tmp_path / "tpm_subset.h5ad"
    sub.write_h5ad(p2)
    with pytest.raises(InputFileError, match="cannot tell what the values are") as exc:
        read(p2)
    assert "value_type='linear'" in exc.value.fix
    a = read(p2, value_type="linear")
    Xs = X[:, :10]
    np.testing.assert_allclose(
        _dense(a.X), np.log1p(Xs / Xs.sum(1, keepdims=True) * 1e4), rtol=1e-4, atol=1e-5
    )
    assert a.uns[K.UNS][K.UNS_READ]["value_type_detected"] == "unknown"
    with pytest.raises(InputFileError, match="value_type='tpm'"):
        read(p, value_type="tpm")


@pytest.mark.parametrize("streamed", [False, True])
def test_log2_tpm_rewritten_as_ln_cp10k(tmp_path, ref, streamed):
    """log2(1 + TPM) values are read as the counts would be: ln(1 + CP10k)."""
    X = _dense(ref.X)
    log2tpm = np.log2(1 + X / X.sum(1, keepdims=True) * 1e6).astype(np.float32)
    b = ad.AnnData(X=sp.csr_matrix(log2tpm), var=ref.var.copy(), obs=ref.obs.copy())
    p = tmp_path / "log2tpm.h5ad"
    b.write_h5ad(p)
    if streamed:
        read_to_h5ad(p, tmp_path / "out.h5ad", chunk_size=17)  # three blocks of cells
        a = ad.read_h5ad(tmp_path / "out.h5ad")
    else:
        a = read(p)
    np.testing.assert_allclose(_dense(a.X), np.log1p(X / X.sum(1, keepdims=True) * 1e4),
                               rtol=1e-4, atol=1e-4)
    rec = a.uns[K.UNS][K.UNS_READ]
    assert rec["value_type"] == "lognorm"
    assert rec["value_type_evidence"]["log_scale"]["base"] == "2"
    assert rec["normalization"].startswith("log2(1 + x) values of 1,000,000 per cell rewritten")
    assert _dense(ad.read_h5ad(p).X) == pytest.approx(log2tpm)  # the input is not modified


def test_read_backed(tmp_path, ref):
    p = tmp_path / "b.h5ad"
    ref.write_h5ad(p)
    before = _sha(p)
    a = read_backed(p)
    assert a.isbacked
    rec = a.uns[K.UNS][K.UNS_READ]
    assert rec["value_type"] == "counts" and rec["backed"] is True and rec["species"] == "human"
    a.file.close()
    assert _sha(p) == before
    with pytest.raises(InputFileError, match="needs an .h5ad"):
        read_backed(_write_table(tmp_path / "t.csv", ref))


def test_read_backed_refuses_linear_values_and_warns_on_other_log_bases(tmp_path, ref, caplog):
    """A backed file is not normalised: linear values cannot be used (the steps normalise
    counts on the fly, nothing else), and log values of another base are used with a
    WARNING naming the step that rewrites them."""
    X = _dense(ref.X)
    tpm = X / X.sum(1, keepdims=True) * 1e6
    p = tmp_path / "tpm.h5ad"
    ad.AnnData(X=tpm.astype(np.float32), var=ref.var.copy(), obs=ref.obs.copy()).write_h5ad(p)
    with pytest.raises(InputFileError, match="linear normalised values") as exc:
        read_backed(p)
    assert "cafclassify read" in exc.value.fix
    p2 = tmp_path / "log2tpm.h5ad"
    ad.AnnData(X=np.log2(1 + tpm).astype(np.float32), var=ref.var.copy(),
               obs=ref.obs.copy()).write_h5ad(p2)
    with caplog.at_level("WARNING"):
        a = read_backed(p2)
    assert "log2(1 + x) values of 1,000,000 per cell" in caplog.text
    assert a.uns[K.UNS][K.UNS_READ]["value_type"] == "lognorm"
    a.file.close()


def test_top_level_api():
    # the package-level read is io.read plus a provenance stamp (cafclassify._api)
    assert cafclassify.read.__wrapped__ is read
    assert callable(cafclassify.detect_value_type) and callable(cafclassify.fetch)


# ---------------------------------------------------------------------------
# malformed inputs: every one an InputFileError naming the file
# ---------------------------------------------------------------------------
def _raises_naming(path, match, **kw):
    with pytest.raises(InputFileError, match=match) as exc:
        read(path, **kw)
    assert str(path) in str(exc.value), str(exc.value)
    assert exc.value.fix
    assert exc.value.__suppress_context__ or exc.value.__context__ is None
    return exc.value


def test_missing_and_empty(tmp_path):
    _raises_naming(tmp_path / "nope.h5ad", "does not exist")
    e = tmp_path / "empty.csv"
    e.touch()
    _raises_naming(e, "empty")
    z = tmp_path / "x.zip"
    z.write_bytes(b"PK\x03\x04" + b"\0" * 100)
    _raises_naming(z, "zip archive")


def test_r_data_file_and_bad_options(tmp_path, ref):
    rds = tmp_path / "seurat.rds"
    with gzip.open(rds, "wb") as fh:
        fh.write(b"X\n\x00\x00\x00\x03\x00\x04\x02\x00" + bytes(200))
    err = _raises_naming(rds, "cannot read the R data file")  # R objects: tests/test_rdata.py
    assert "truncated or corrupted" in err.fix
    p = tmp_path / "x.h5ad"
    ref.write_h5ad(p)
    _raises_naming(p, "sample_column='donor'", sample_column="donor")
    _raises_naming(p, "var has no column 'sym'", symbol_column="sym")
    _raises_naming(p, "orientation= only applies", orientation="cells_x_genes")
    t = _write_table(tmp_path / "t.csv", ref)
    _raises_naming(t, "layer='raw' only applies", layer="raw")


def test_truncated_hdf5(tmp_path, ref):
    good = tmp_path / "good.h5ad"
    ref.write_h5ad(good)
    for name, frac in (("trunc.h5ad", 0.5), ("tiny.h5ad", 0.01)):
        bad = tmp_path / name
        bad.write_bytes(good.read_bytes()[: max(16, int(good.stat().st_size * frac))])
        _raises_naming(bad, "truncated|corrupted|cannot")
    h5 = _write_10x_h5_v3(tmp_path / "x.h5", ref)
    bad = tmp_path / "bad.h5"
    bad.write_bytes(h5.read_bytes()[: h5.stat().st_size // 2])
    _raises_naming(bad, "truncated|corrupted|cannot")


def test_mtx_missing_and_mismatched_files(tmp_path, ref):
    f1 = _write_mtx_folder(tmp_path / "a", ref)
    (f1 / "barcodes.tsv.gz").unlink()
    err = _raises_naming(f1, "barcodes.tsv")
    assert "incomplete" in err.problem
    f2 = _write_mtx_folder(tmp_path / "b", ref, extra_feature_rows=5)
    err = _raises_naming(f2, "lines in features.tsv.gz")
    assert f"{ref.n_vars + 5} lines" in err.problem
    f3 = _write_mtx_folder(tmp_path / "c", ref)
    raw = (f3 / "matrix.mtx.gz").read_bytes()
    (f3 / "matrix.mtx.gz").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(InputFileError, match="matrix.mtx.gz"):
        read(f3)
    empty = tmp_path / "e"
    empty.mkdir()
    _raises_naming(empty, "no matrix.mtx")


def test_table_errors(tmp_path, ref):
    good = _write_table(tmp_path / "g.csv", ref).read_text().splitlines()
    ragged = tmp_path / "ragged.csv"
    ragged.write_text("\n".join([*good[:3], good[3] + ",5,6", *good[4:]]) + "\n")
    _raises_naming(ragged, "ragged|fields")
    short = tmp_path / "short.csv"
    short.write_text("\n".join([*good[:3], ",".join(good[3].split(",")[:-2]), *good[4:]]) + "\n")
    err = _raises_naming(short, "missing values")
    assert repr(good[3].split(",")[0]) in err.problem  # names the row
    text = tmp_path / "text.csv"
    cells = good[5].split(",")
    cells[3] = "high"
    text.write_text("\n".join([*good[:5], ",".join(cells), *good[6:]]) + "\n")
    err = _raises_naming(text, "non-numeric value 'high'")
    nan = tmp_path / "nan.csv"
    nan.write_text("\n".join([*good[:2], good[2].rsplit(",", 1)[0] + ",NA", *good[3:]]) + "\n")
    _raises_naming(nan, "missing values")
    inf = tmp_path / "inf.csv"
    inf.write_text("\n".join([*good[:2], good[2].rsplit(",", 1)[0] + ",inf", *good[3:]]) + "\n")
    _raises_naming(inf, "infinite")
    neg = tmp_path / "neg.csv"
    neg.write_text("\n".join([*good[:2], good[2].rsplit(",", 1)[0] + ",-3", *good[3:]]) + "\n")
    _raises_naming(neg, "not valid counts")  # integers: broken counts, not z-scores (#16)
    header_only = tmp_path / "h.csv"
    header_only.write_text(good[0] + "\n")
    _raises_naming(header_only, "no data rows")


def test_nan_in_h5ad(tmp_path, ref):
    b = ad.AnnData(X=_dense(ref.X).astype(np.float32), var=ref.var.copy())
    b.X[4, 2] = np.nan
    p = tmp_path / "nan.h5ad"
    b.write_h5ad(p)
    _raises_naming(p, "NaN")


def test_loom_without_gene_names(tmp_path, ref):
    p = tmp_path / "x.loom"
    b = ref.copy()
    b.obs = pd.DataFrame(index=b.obs_names)
    b.write_loom(p)
    with h5py.File(p, "a") as f:
        del f["row_attrs/var_names"]
    _raises_naming(p, "no gene-name row attribute")


# ---------------------------------------------------------------------------
# the real files
# ---------------------------------------------------------------------------
needs_data = pytest.mark.skipif(not DATA.is_dir(), reason=f"shared data folder {DATA} not present")


@needs_data
def test_real_breast_counts(tmp_path):
    src = DATA / "breast_tumour_302cells_counts.h5ad"
    a = read(src)
    rec = a.uns[K.UNS][K.UNS_READ]
    assert rec["value_type"] == "counts"
    assert rec["species"] == "human" and rec["id_type"] == "symbol"
    assert (a.n_obs, a.n_vars) == (302, 33694)
    c = a.layers[K.LAYER_COUNTS]
    assert sp.issparse(c) and sp.issparse(a.X)
    assert np.all(c.data == np.round(c.data))
    tot = np.asarray(np.expm1(a.X).sum(1)).ravel()
    np.testing.assert_allclose(tot, 1e4, rtol=1e-3)
    assert rec["sha256"] == hashlib.sha256(src.read_bytes()).hexdigest()


@needs_data
@pytest.mark.parametrize(("name", "target", "log"), [
    ("log2(1 + CPM), mitochondrial genes removed", 1e6, lambda v: np.log2(1 + v)),
    ("log10(1 + CP10k)", 1e4, lambda v: np.log10(1 + v)),
])
def test_real_breast_log_values_read_as_its_counts(tmp_path, name, target, log):
    """The Wu 2021 sample published as other log values reads as its counts do (the
    calls depend on it: as log2(1 + CPM) used as is, subtype ARI 0.51 instead of 0.62)."""
    src = ad.read_h5ad(DATA / "wu2021_brca_CID4465_1564cells_counts.h5ad")
    keep = ~src.var_names.str.startswith("MT-") if "mitochondrial" in name else slice(None)
    C = sp.csr_matrix(src.X, dtype=np.float64)
    L = sp.diags(1.0 / np.asarray(C.sum(1)).ravel()) @ C * target
    L.data = log(L.data)
    b = ad.AnnData(X=sp.csr_matrix(L[:, keep], dtype=np.float32), obs=src.obs, var=src.var[keep])
    b.write_h5ad(tmp_path / "logvalues.h5ad")
    a = read(tmp_path / "logvalues.h5ad")
    assert a.uns[K.UNS][K.UNS_READ]["value_type_evidence"]["log_scale"]["base"] != "unknown"
    ref = read(DATA / "wu2021_brca_CID4465_1564cells_counts.h5ad")[:, keep]
    # the same values up to one global factor (the removed genes' mean share of a cell)
    x, y = np.expm1(a.X.toarray()), np.expm1(ref.X.toarray())
    factor = np.median(x.sum(1) / y.sum(1))
    np.testing.assert_allclose(x, y * factor, rtol=1e-3, atol=1e-2)


@needs_data
def test_real_colorectal_lognorm():
    a = read(DATA / "crc_tumour_normal_2850cells_lognorm.h5ad", sample_column="tumor_normal")
    rec = a.uns[K.UNS][K.UNS_READ]
    assert rec["value_type"] == "lognorm"
    assert rec["normalization"].startswith("none")  # a gene panel: its log base cannot be told
    assert rec["species"] == "human"
    assert K.LAYER_COUNTS not in a.layers
    assert rec["n_samples"] == a.obs["tumor_normal"].nunique()


@needs_data
def test_real_ovarian_logtpm_ensembl(tmp_path):
    src = DATA / "ovarian_tumour_66cells_logtpm.h5ad"
    a = read(src)
    rec = a.uns[K.UNS][K.UNS_READ]
    assert rec["value_type"] == "lognorm"
    assert rec["species"] == "human" and rec["id_type"] == "ensembl_human"
    sym = a.var[K.VAR_SYMBOL]
    assert (sym != "").mean() > 0.95
    assert a.var_names[0].startswith("ENSG") and not sym.iloc[0].startswith("ENSG")
    # a copy of the file under a lying name reads the same
    lie = tmp_path / "ovarian.csv"
    shutil.copy(src, lie)
    os.chmod(lie, 0o444)
    assert read(lie).uns[K.UNS][K.UNS_READ]["sha256"] == rec["sha256"]
