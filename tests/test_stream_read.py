"""read_to_h5ad: the streamed file equals read() + write_h5ad, read block by block."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import anndata as ad
import h5py
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from cafclassify import _keys as K
from cafclassify._errors import CafClassifyError, InputFileError
from cafclassify.io import _stream as S
from cafclassify.io import read
from cafclassify.io._stream import NotStreamableError, read_to_h5ad, streamable
from cafclassify.io._valuetype import _sample_rows

from _tenx_fixtures import write_10x_h5_v2 as _write_10x_h5_v2
from _tenx_fixtures import write_10x_h5_v3

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"

GENES = (
    "ACTB GAPDH COL1A1 COL1A2 COL3A1 DCN LUM FAP PDGFRA PDGFRB ACTA2 TAGLN MYH11 RGS5 "
    "PECAM1 VWF CDH5 EPCAM KRT8 KRT18 KRT19 PTPRC CD3E CD4 CD8A MS4A1 CD79A CD14 LYZ "
    "CD68 C1QA IL6 CXCL12 CXCL8 CCL2 CFD HLA-DRA CD74 POSTN MMP11 CTHRC1 SFRP2 TWIST1 "
    "THY1 VIM FN1 SPARC TNC LTBP2 MYL9 CNN1 DES MKI67 TOP2A PCNA B2M MALAT1 EEF1A1 "
    "TPT1 FTL FTH1 S100A6 IGFBP7 MGP APOD PI16 DPT CCDC80 SERPINF1 TIMP1 TIMP3 CST3 "
    "MT-CO1 MT-CO2 MT-ND1 MT-ATP6 RPL3 RPL7A RPS4X RPS6 RPLP0 RPSA"
).split()
STREAM_ONLY = {"streamed", "chunk_size", "n_blocks"}
N_CELLS = 2500
CHUNK = 700


def _counts(n_cells=N_CELLS, seed=0, *, dup_genes=True, dup_cells=True) -> ad.AnnData:
    rng = np.random.default_rng(seed)
    mu = rng.gamma(0.8, 3.0, size=len(GENES))
    lib = rng.lognormal(0, 0.4, size=(n_cells, 1))
    X = rng.poisson(mu * lib).astype(np.float32)
    X[:, 0] += 1  # no empty cell
    names = list(GENES)
    if dup_genes:  # planted duplicates: COL1A1 three times, DCN twice
        names[10], names[20], names[30] = "COL1A1", "COL1A1", "DCN"
    cells = [f"CELL{i:05d}_AACGTTGCAACG" for i in range(n_cells)]
    if dup_cells:  # barcodes repeated across blocks
        for i in (j for j in (5, 800, 1500, 2400) if j < n_cells):
            cells[i] = cells[3]
    obs = pd.DataFrame(
        {"sample": np.repeat(["s1", "s2", "s3", "s4", "s5"], n_cells // 5),
         "score": rng.normal(size=n_cells)},
        index=cells,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the planted duplicate names
        return ad.AnnData(X=sp.csr_matrix(X), obs=obs, var=pd.DataFrame(index=names))


def _reference(src: Path, tmp: Path, **kw) -> ad.AnnData:
    ref = read(src, **kw)
    ref.write_h5ad(tmp / "ref.h5ad", compression="gzip")
    return ad.read_h5ad(tmp / "ref.h5ad")


def _dense(m):
    return m.toarray() if sp.issparse(m) else np.asarray(m)


def _assert_same(ref: ad.AnnData, got: ad.AnnData) -> None:
    """Every element of the two AnnData objects equal (X bit-identical: normalisation is per cell)."""
    assert got.shape == ref.shape
    assert list(got.obs_names) == list(ref.obs_names)
    assert list(got.var_names) == list(ref.var_names)
    pd.testing.assert_frame_equal(got.obs, ref.obs)
    pd.testing.assert_frame_equal(got.var, ref.var)
    assert sp.issparse(got.X) == sp.issparse(ref.X)
    assert got.X.dtype == ref.X.dtype
    np.testing.assert_array_equal(_dense(got.X), _dense(ref.X))  # per-cell normalisation: bit-identical
    assert sorted(got.layers.keys()) == sorted(ref.layers.keys())
    for k in ref.layers:
        assert got.layers[k].dtype == ref.layers[k].dtype, k
        np.testing.assert_array_equal(_dense(got.layers[k]), _dense(ref.layers[k]))
    assert sorted(got.obsm.keys()) == sorted(ref.obsm.keys())
    for k in ref.obsm:
        np.testing.assert_array_equal(np.asarray(got.obsm[k]), np.asarray(ref.obsm[k]))
    assert sorted(got.varm.keys()) == sorted(ref.varm.keys())
    assert sorted(got.obsp.keys()) == sorted(ref.obsp.keys())
    for k in ref.obsp:
        np.testing.assert_array_equal(_dense(got.obsp[k]), _dense(ref.obsp[k]))
    assert (got.raw is None) == (ref.raw is None)
    if ref.raw is not None:
        pd.testing.assert_frame_equal(got.raw.var, ref.raw.var)
        np.testing.assert_array_equal(_dense(got.raw.X), _dense(ref.raw.X))
    uns_ref = {k: v for k, v in ref.uns.items() if k != K.UNS}
    uns_got = {k: v for k, v in got.uns.items() if k != K.UNS}
    assert repr(uns_got) == repr(uns_ref)
    rec_ref = dict(ref.uns[K.UNS][K.UNS_READ])
    rec_got = dict(got.uns[K.UNS][K.UNS_READ])
    assert rec_got["streamed"] is True or rec_got["streamed"] == 1
    assert {k: v for k, v in rec_got.items() if k not in STREAM_ONLY}.keys() == rec_ref.keys()
    for k, v in rec_ref.items():
        assert repr(rec_got[k]) == repr(v), k


def _stream(src: Path, tmp: Path, **kw) -> tuple[ad.AnnData, dict]:
    out = tmp / "streamed.h5ad"
    rec = read_to_h5ad(src, out, **kw)
    return ad.read_h5ad(out), rec


@pytest.fixture
def count_blocks(monkeypatch):
    """Record the row range of every block read from the source."""
    calls: list[tuple[int, int]] = []
    original = S._read_block

    def counting(source, start, stop):
        calls.append((start, stop))
        return original(source, start, stop)

    monkeypatch.setattr(S, "_read_block", counting)
    return calls


# ---------------------------------------------------------------------------
# h5ad inputs
# ---------------------------------------------------------------------------
@pytest.mark.filterwarnings("ignore:.* names are not unique:UserWarning")
def test_counts_h5ad_equals_read_with_duplicates_and_blocks(tmp_path, count_blocks):
    a = _counts()
    a.layers["spliced"] = a.X.copy()
    a.obsm["X_pca"] = np.random.default_rng(1).normal(size=(a.n_obs, 4))
    a.obsp["connectivities"] = sp.random(a.n_obs, a.n_obs, density=0.001, format="csr", random_state=0)
    a.uns["source"] = {"doi": "10.1/xyz"}
    a.uns["log1p"] = {"base": 2.0}  # stale: replaced as read() replaces it
    a.raw = a.copy()
    src = tmp_path / "counts.h5ad"
    a.write_h5ad(src)
    ref = _reference(src, tmp_path, sample_column="sample")
    got, rec = _stream(src, tmp_path, sample_column="sample", chunk_size=CHUNK)
    _assert_same(ref, got)
    # the planted duplicates were renamed the same way, copies keep their symbol
    assert rec["n_duplicate_genes"] == 3 and rec["n_duplicate_barcodes"] == 4
    assert "COL1A1-1" in got.var_names and got.var.loc["COL1A1-2", K.VAR_SYMBOL] == "COL1A1"
    assert got.obs_names[2400] == "CELL00003_AACGTTGCAACG-4"
    assert rec["value_type"] == "counts" and rec["streamed"] and rec["chunk_size"] == CHUNK
    # one read per block of <= chunk_size cells covering all cells in order: never the whole matrix
    n_blocks = math.ceil(N_CELLS / CHUNK)
    assert rec["n_blocks"] == n_blocks
    assert count_blocks == [(s, min(s + CHUNK, N_CELLS)) for s in range(0, N_CELLS, CHUNK)]
    assert all(stop - start <= CHUNK for start, stop in count_blocks)


def test_chunk_size_does_not_change_the_result(tmp_path):
    src = tmp_path / "counts.h5ad"
    _counts().write_h5ad(src)
    a = read_to_h5ad(src, tmp_path / "a.h5ad", chunk_size=N_CELLS * 2)
    b = read_to_h5ad(src, tmp_path / "b.h5ad", chunk_size=333)
    assert (a["n_blocks"], b["n_blocks"]) == (1, math.ceil(N_CELLS / 333))
    A, B = ad.read_h5ad(tmp_path / "a.h5ad"), ad.read_h5ad(tmp_path / "b.h5ad")
    assert (A.X != B.X).nnz == 0
    assert (A.layers["counts"] != B.layers["counts"]).nnz == 0


def test_more_than_int32_nonzeros_get_64bit_indices(tmp_path, monkeypatch):
    # > 2**31 - 1 non-zeros cannot be tested for real: lower the threshold instead
    monkeypatch.setattr(S, "_INT32_MAX", 10)
    src = tmp_path / "counts.h5ad"
    _counts(n_cells=600, dup_genes=False, dup_cells=False).write_h5ad(src)
    ref = _reference(src, tmp_path)
    got, _ = _stream(src, tmp_path, chunk_size=250)
    with h5py.File(tmp_path / "streamed.h5ad", "r") as f:
        for key in ("X", "layers/counts"):
            assert f[f"{key}/indptr"].dtype == np.int64 and f[f"{key}/indices"].dtype == np.int64
    _assert_same(ref, got)


def test_lognorm_h5ad_used_as_is(tmp_path, count_blocks):
    a = _counts(seed=3, dup_genes=False)
    norm = a.X.multiply(1e4 / a.X.sum(axis=1)).tocsr()
    norm.data = np.log1p(norm.data)
    a.X = norm.astype(np.float64)  # dtype kept as stored
    a.uns["log1p"] = {"base": None}
    src = tmp_path / "lognorm.h5ad"
    a.write_h5ad(src)
    ref = _reference(src, tmp_path)
    got, rec = _stream(src, tmp_path, chunk_size=CHUNK)
    _assert_same(ref, got)
    assert rec["value_type"] == "lognorm" and "counts" not in got.layers
    assert got.X.dtype == np.float64
    assert len(count_blocks) == math.ceil(N_CELLS / CHUNK)


def test_dense_h5ad_and_layer_choice(tmp_path):
    a = _counts(seed=4, n_cells=900, dup_genes=False, dup_cells=False)
    counts = a.X.toarray().astype(np.int32)
    a.X = np.log1p(counts / counts.sum(1, keepdims=True) * 1e4).astype(np.float32)
    a.layers["counts"] = counts  # dense int layer: read with layer="counts"
    a.varm["loadings"] = np.ones((a.n_vars, 2))
    src = tmp_path / "dense.h5ad"
    a.write_h5ad(src)
    ref = _reference(src, tmp_path, layer="counts")
    got, rec = _stream(src, tmp_path, layer="counts", chunk_size=250)
    _assert_same(ref, got)
    assert not sp.issparse(got.X) and got.layers["counts"].dtype == np.int32
    assert rec["details"]["source_matrix"] == "layers['counts']"
    # X (dense lognorm) unchanged when read as is
    ref = _reference(src, tmp_path)
    got, _ = _stream(src, tmp_path, chunk_size=250)
    _assert_same(ref, got)


def test_raw_layer_and_no_normalize(tmp_path):
    a = _counts(seed=5, n_cells=1200, dup_genes=False, dup_cells=False)
    a.raw = a.copy()
    a.X = a.X * 0.5 + 0.25 * (a.X > 0)  # non-integer, lognorm-like
    a.obsp["distances"] = sp.eye(a.n_obs, format="csr")
    a.uns["note"] = "kept"
    src = tmp_path / "raw.h5ad"
    a.write_h5ad(src)
    ref = _reference(src, tmp_path, layer="raw")
    got, rec = _stream(src, tmp_path, layer="raw", chunk_size=500)
    _assert_same(ref, got)
    assert rec["details"]["source_matrix"] == "raw.X" and "counts" in got.layers
    ref = _reference(src, tmp_path, layer="raw", normalize=False)
    got, _ = _stream(src, tmp_path, layer="raw", normalize=False, chunk_size=500)
    _assert_same(ref, got)
    assert "counts" not in got.layers and float(got.X.max()) == float(a.raw.X.max())


def test_stamp_sees_the_annotations_before_writing(tmp_path):
    src = tmp_path / "counts.h5ad"
    _counts(n_cells=500, dup_genes=False, dup_cells=False).write_h5ad(src)
    seen = {}

    def stamp(skel):
        seen["X"] = skel.X
        seen["record"] = skel.uns[K.UNS][K.UNS_READ]["value_type"]
        skel.uns[K.UNS]["provenance"] = {"step": "read"}

    got, _ = _stream(src, tmp_path, stamp=stamp, chunk_size=200)
    assert seen == {"X": None, "record": "counts"}
    assert got.uns[K.UNS]["provenance"]["step"] == "read"


# ---------------------------------------------------------------------------
# 10x HDF5
# ---------------------------------------------------------------------------
def _10x_v3(path, adata):
    """Cell Ranger v3 file with gzip-compressed chunked values (as Cell Ranger writes)."""
    return write_10x_h5_v3(path, adata, compressed=True)


@pytest.fixture
def parallel_small(monkeypatch):
    """n_jobs=2 starts the second process even for the small test files."""
    from cafclassify.io import _part_writer

    monkeypatch.setattr(_part_writer, "PARALLEL_MIN_VALUES", 0)


@pytest.mark.parametrize("n_jobs", [1, 2])  # 2: the counts layer is written by a second process
def test_10x_h5_v3_equals_read(tmp_path, count_blocks, n_jobs, parallel_small):
    src = write_10x_h5_v3(tmp_path / "filtered_feature_bc_matrix.h5", _counts(seed=6), antibody=3,
                          antibody_at=5, compressed=True)
    ref = _reference(src, tmp_path)
    got, rec = _stream(src, tmp_path, chunk_size=CHUNK, n_jobs=n_jobs)
    _assert_same(ref, got)
    assert rec["format"] == "10x_h5" and rec["details"]["n_features_not_gene_expression"] == 3
    assert not any(v.endswith("TotalSeqB") for v in got.var_names)
    assert rec["n_duplicate_genes"] == 3 and rec["n_duplicate_barcodes"] == 4
    assert len(count_blocks) == math.ceil(N_CELLS / CHUNK)


def test_10x_h5_v2_equals_read(tmp_path):
    src = _write_10x_h5_v2(tmp_path / "v2.h5", _counts(seed=7, n_cells=1000))
    ref = _reference(src, tmp_path)
    got, rec = _stream(src, tmp_path, chunk_size=300)
    _assert_same(ref, got)
    assert rec["details"]["layout"] == "cellranger_v2"


# ---------------------------------------------------------------------------
# real files
# ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "chunk", "vtype"),
    [("breast_tumour_302cells_counts.h5ad", 100, "counts"),
     ("crc_tumour_normal_2850cells_lognorm.h5ad", 1000, "lognorm")],
)
def test_real_files_equal_read(tmp_path, name, chunk, vtype):
    src = DATA / name
    if not src.is_file():
        pytest.skip(f"shared data file {src} not found (expected beside the repository)")
    ref = _reference(src, tmp_path)
    got, rec = _stream(src, tmp_path, chunk_size=chunk)
    _assert_same(ref, got)
    assert rec["value_type"] == vtype


# ---------------------------------------------------------------------------
# refusals: same messages as read(), nothing written
# ---------------------------------------------------------------------------
def _messages_match(src: Path, tmp: Path, chunk_size: int = CHUNK, n_jobs: int = 1, **kw) -> InputFileError:
    with pytest.raises(InputFileError) as ref:
        read(src, **kw)
    out = tmp / "out" / "never.h5ad"
    with pytest.raises(InputFileError) as got:
        read_to_h5ad(src, out, chunk_size=chunk_size, n_jobs=n_jobs, **kw)
    assert got.value.message == ref.value.message
    assert not out.exists()
    if out.parent.exists():  # no temporary file left behind
        assert not list(out.parent.iterdir())
    return got.value


def test_malformed_10x_reports_like_read(tmp_path):
    src = _10x_v3(tmp_path / "broken.h5", _counts(seed=8, n_cells=300))
    with h5py.File(src, "a") as f:
        del f["matrix/features/name"]  # the gene names are missing
    err = _messages_match(src, tmp_path)
    assert str(src) in err.message and "missing one or more required datasets" in err.problem
    two = _write_10x_h5_v2(tmp_path / "two_genomes.h5", _counts(seed=8, n_cells=300))
    with h5py.File(two, "a") as f:
        f.copy(f["GRCh38"], f, name="mm10")
    assert "several genomes (GRCh38, mm10)" in _messages_match(two, tmp_path).problem


def test_inconsistent_10x_matrix_is_an_input_error(tmp_path):
    src = _10x_v3(tmp_path / "cut.h5", _counts(seed=8, n_cells=300))
    with h5py.File(src, "a") as f:  # indptr cut short: a truncated export
        indptr = f["matrix/indptr"][:-20]
        del f["matrix/indptr"]
        f["matrix/indptr"] = indptr
    out = tmp_path / "out.h5ad"
    with pytest.raises(InputFileError, match="cannot read the 10x HDF5 file") as exc:
        read_to_h5ad(src, out, chunk_size=100)
    assert str(src) in exc.value.message and not out.exists()
    with pytest.raises(InputFileError):  # read() refuses it too
        read(src)


@pytest.mark.parametrize("n_jobs", [1, 2])
def test_nan_outside_the_value_type_sample_is_refused_like_read(tmp_path, n_jobs, parallel_small):
    a = _counts(seed=9, dup_genes=False, dup_cells=False)
    sampled = set(_sample_rows(a.X, 2000, 0).tolist())
    late = [i for i in range(N_CELLS - 1, 0, -1) if i not in sampled][:2]  # last blocks
    X = a.X.tolil()
    for i in late:
        X[i, 2] = np.nan
    a.X = X.tocsr()
    src = tmp_path / "nan.h5ad"
    a.write_h5ad(src)
    err = _messages_match(src, tmp_path, n_jobs=n_jobs)
    assert "2 NaN or infinite" in err.problem


def test_scaled_and_missing_layer_refused_like_read(tmp_path):
    a = _counts(seed=10, n_cells=300, dup_genes=False, dup_cells=False)
    a.layers["scaled"] = sp.csr_matrix(a.X.toarray() - 1.5)  # non-integer: integers below 0 are broken counts (#16)
    src = tmp_path / "scaled.h5ad"
    a.write_h5ad(src)
    assert "scaled" in _messages_match(src, tmp_path, layer="scaled").problem
    assert "not in the file" in _messages_match(src, tmp_path, layer="nope").problem
    assert "no adata.raw" in _messages_match(src, tmp_path, layer="raw").problem


def test_formats_that_cannot_stream(tmp_path):
    a = _counts(seed=11, n_cells=50, dup_genes=False, dup_cells=False)
    csv = tmp_path / "table.csv"
    pd.DataFrame(a.X.toarray().T.astype(int), index=a.var_names, columns=a.obs_names).to_csv(csv)
    csc = tmp_path / "csc.h5ad"
    ad.AnnData(X=sp.csc_matrix(a.X), obs=a.obs, var=a.var).write_h5ad(csc)
    for src, why in ((csv, "csv files"), (csc, "csc_matrix")):
        out = tmp_path / "o.h5ad"
        with pytest.raises(NotStreamableError, match=why) as exc:
            read_to_h5ad(src, out)
        assert isinstance(exc.value, CafClassifyError) and str(src) in exc.value.message
        assert not out.exists()
        ok, reason = streamable(src)
        assert not ok and why in reason
    good = tmp_path / "csr.h5ad"
    a.write_h5ad(good)
    assert streamable(good) == (True, "")
    assert streamable(good, layer="nope")[0] is False


def test_bad_options(tmp_path):
    src = tmp_path / "counts.h5ad"
    _counts(n_cells=50, dup_genes=False, dup_cells=False).write_h5ad(src)
    for bad in (0, -5, 2.5, True):
        with pytest.raises(InputFileError, match="chunk_size"):
            read_to_h5ad(src, tmp_path / "o.h5ad", chunk_size=bad)
    with pytest.raises(InputFileError, match="value_type='tpm'"):
        read_to_h5ad(src, tmp_path / "o.h5ad", value_type="tpm")
    with pytest.raises(InputFileError, match="output path is the input"):
        read_to_h5ad(src, src)
    assert not (tmp_path / "o.h5ad").exists()
