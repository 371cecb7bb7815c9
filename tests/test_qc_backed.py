"""Out-of-core QC: backed qc() == in-memory qc(), streaming filter == in-memory subset.

The synthetic files hold counts (``layers["counts"]``) of two samples with different
library sizes, interleaved so that every row block holds cells of both, a whole-
transcriptome number of genes (so the automatic mitochondrial threshold applies),
planted low-gene, high-count and high-mitochondrial cells, plus ``raw``, ``obsm``,
``obsp``, a categorical with colours in ``uns`` and a dense layer, so that every part of
an ``.h5ad`` file goes through the streaming filter.
"""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from anndata._core.sparse_dataset import BaseCompressedSparseDataset

from cafclassify import _keys as K
from cafclassify._errors import DataError, InputFileError
from cafclassify.io._filter_h5ad import filter_cells_h5ad
from cafclassify.io._lazy import open_lazy
from cafclassify.io._shard import requalify_qc
from cafclassify.pp import _qc as Q
from cafclassify.pp import filter_cells, filter_cells_to_h5ad, qc, qc_thresholds_from_metrics

MT = [f"MT-{g}" for g in ("CO1", "CO2", "CO3", "ND1", "ND2", "ND4", "ND5", "ATP6", "CYB")]
RIBO = ["RPL3", "RPL7A", "RPL13A", "RPS4X", "RPS6", "RPLP0", "RPSA"]
N_CELLS, CHUNK = 3000, 700  # 5 row blocks (the last one short)
SAMPLES = ("s1", "pt/2")  # '/' is not allowed in h5ad keys: thresholds use "pt_2"


def _counts(n_cells: int, n_genes: int, seed: int):
    """Sparse counts, two interleaved samples, planted outliers; returns (counts, obs, var)."""
    rng = np.random.default_rng(seed)
    names = MT + RIBO + [f"GENE{i:05d}" for i in range(n_genes - len(MT) - len(RIBO))]
    p = rng.gamma(0.4, 1.0, size=n_genes)
    p[: len(MT)] = p.sum() * 0.05 / len(MT)  # ~5% mitochondrial reads
    p /= p.sum()
    sample = rng.integers(0, 2, size=n_cells)
    nnz = rng.poisson(np.where(sample == 0, 300, 700) * rng.lognormal(0, 0.3, size=n_cells))
    rows = np.repeat(np.arange(n_cells), nnz)
    cols = rng.choice(n_genes, size=rows.size, p=p)
    vals = rng.poisson(1.0, size=rows.size) + 1
    X = sp.csr_matrix((vals, (rows, cols)), shape=(n_cells, n_genes), dtype=np.int32)
    X.sum_duplicates()
    X = X.tolil()
    bad = rng.choice(n_cells, size=30, replace=False)
    for i in bad[:10]:  # debris: 5 genes
        X[i] = 0
        X[i, rng.choice(np.arange(len(MT), n_genes), size=5, replace=False)] = 1
    for i in bad[10:20]:  # damaged: ~30% mitochondrial reads (library grows 1.45x: not an outlier)
        X[i, : len(MT)] = round(0.45 * X[i, len(MT):].sum() / len(MT))
    X = X.tocsr()
    X[bad[20:]] = X[bad[20:]] * 30  # high counts (same genes)
    X = sp.csr_matrix(X, dtype=np.int32)
    X.sort_indices()
    cell_type = rng.choice(["fibro", "tcell", "rare"], size=n_cells, p=[0.6, 0.38, 0.02])
    obs = pd.DataFrame(
        {"sample": pd.Categorical(np.asarray(SAMPLES)[sample]),
         "cell_type": pd.Categorical(cell_type), "score": rng.normal(size=n_cells)},
        index=[f"cell{i}" for i in range(n_cells)],
    )
    var = pd.DataFrame({K.VAR_SYMBOL: names, "n": np.arange(n_genes)}, index=names)
    return X, obs, var


def _lognorm(X):
    Y = sp.csr_matrix(X, dtype=np.float32)
    tot = np.asarray(Y.sum(axis=1)).ravel()
    Y = sp.diags(1e4 / np.maximum(tot, 1)) @ Y
    Y.data = np.log1p(Y.data)
    return sp.csr_matrix(Y, dtype=np.float32)


def _full_anndata(X, obs, var, *, dense_layer: bool, raw: bool) -> ad.AnnData:
    rng = np.random.default_rng(1)
    n = X.shape[0]
    a = ad.AnnData(X=_lognorm(X), obs=obs, var=var)
    a.layers[K.LAYER_COUNTS] = X
    if dense_layer:
        a.layers["dense"] = X.toarray().astype(np.float32)
    if raw:
        a.raw = ad.AnnData(X=X, var=var)
    a.obsm["X_pca"] = rng.normal(size=(n, 4)).astype(np.float32)
    a.obsm["scores"] = pd.DataFrame(rng.normal(size=(n, 2)), index=a.obs_names, columns=["a", "b"])
    a.obsp["connectivities"] = sp.random(n, n, density=0.002, format="csr", random_state=2)
    a.varm["loadings"] = rng.normal(size=(X.shape[1], 3))
    a.uns["cell_type_colors"] = np.array(["#1f77b4", "#ff7f0e", "#2ca02c"])
    a.uns[K.UNS] = {K.UNS_READ: {"species": "human", "sample_column": "sample"}}
    return a


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("qc_backed")
    X, obs, var = _counts(N_CELLS, 10_050, seed=0)
    # no raw: open_lazy() cannot open files with raw yet (anndata needs raw={...} passed)
    _full_anndata(X, obs, var, dense_layer=False, raw=False).write_h5ad(d / "counts.h5ad")
    # lognorm only (no counts anywhere): count thresholds skipped, mt % on expm1
    ad.AnnData(X=_lognorm(X), obs=obs, var=var).write_h5ad(d / "lognorm.h5ad")
    # few genes, dense counts in X, every kind of element: for the filter
    Xs, obs_s, var_s = _counts(900, 300, seed=1)
    small = _full_anndata(Xs, obs_s, var_s, dense_layer=True, raw=True)
    small.X = Xs.toarray().astype(np.float32)  # dense counts in X
    del small.layers[K.LAYER_COUNTS]
    small.write_h5ad(d / "small.h5ad")
    return d


class _ReadLog:
    """Records every read of an on-disk sparse matrix: (matrix name, rows read)."""

    def __init__(self, monkeypatch):
        self.reads: list[tuple[str, object]] = []
        original = BaseCompressedSparseDataset.__getitem__

        def spy(ds, key):
            self.reads.append((ds.group.name, key[0] if isinstance(key, tuple) else key))
            return original(ds, key)

        monkeypatch.setattr(BaseCompressedSparseDataset, "__getitem__", spy)

    def slices(self, name: str) -> list[tuple[int, int]]:
        return [(k.start, k.stop) for n, k in self.reads if n == name and isinstance(k, slice)]

    def others(self, name: str) -> list:
        return [k for n, k in self.reads if n == name and not isinstance(k, slice)]


def _same_qc(backed: ad.AnnData, mem: ad.AnnData) -> None:
    pd.testing.assert_frame_equal(backed.obs, mem.obs)
    assert backed.uns[K.UNS][K.UNS_QC] == mem.uns[K.UNS][K.UNS_QC]


# --------------------------------------------------------------------------- qc


@pytest.mark.parametrize("name", ["counts.h5ad", "lognorm.h5ad"])
def test_backed_qc_equals_in_memory(files, name):
    mem = ad.read_h5ad(files / name)
    backed = open_lazy(files / name)
    assert backed.isbacked and len(backed.layers) == 0  # counts stay on disk
    qc(mem, sample_key="sample")
    assert qc(backed, sample_key="sample", chunk_size=CHUNK) is None
    _same_qc(backed, mem)
    rec = mem.uns[K.UNS][K.UNS_QC]
    assert set(rec["thresholds"]) == {"s1", "pt_2"}
    removed = pd.DataFrame(rec["table"]).set_index("sample")
    assert removed["removed_low_genes"].sum() >= 10 and removed["removed_high_mt"].sum() >= 8
    if name == "counts.h5ad":
        assert rec["value_type"] == "counts" and rec["matrix"] == "layers['counts']"
        # samples differ in depth: their own thresholds, and the planted high-count cells fail
        assert rec["thresholds"]["s1"]["min_genes"] < rec["thresholds"]["pt_2"]["min_genes"]
        assert removed["removed_high_counts"].sum() >= 8
    else:
        assert rec["value_type"] == "lognorm" and "count_thresholds" in rec["skipped"]
        assert removed["removed_high_counts"].sum() == 0


def test_backed_qc_reads_the_matrix_in_row_blocks(files, monkeypatch):
    log = _ReadLog(monkeypatch)
    backed = open_lazy(files / "counts.h5ad")
    qc(backed, sample_key="sample", chunk_size=CHUNK)
    blocks = [(a, min(a + CHUNK, N_CELLS)) for a in range(0, N_CELLS, CHUNK)]
    assert log.slices("/layers/counts") == blocks  # each row block read once, nothing else
    # the only other reads: the value-type check on a sample of rows
    assert all(len(k) <= 2000 for k in log.others("/layers/counts"))
    assert log.slices("/X") == [] and log.others("/X") == []  # X (lognorm) is not touched


def test_qc_result_does_not_depend_on_chunk_size(files):
    a = open_lazy(files / "counts.h5ad")
    b = ad.read_h5ad(files / "counts.h5ad")
    qc(a, chunk_size=N_CELLS + 1)  # one block; sample column from the read record
    qc(b, chunk_size=333)
    _same_qc(a, b)
    assert b.uns[K.UNS][K.UNS_QC]["params"]["sample_key"] == "sample"


# --------------------------------------------------------------------------- shared thresholds


def test_one_threshold_function_for_qc_and_shard_merge(files, monkeypatch):
    calls = []
    real = Q.qc_thresholds_from_metrics

    def spy(obs, **kw):
        calls.append(kw)
        return real(obs, **kw)

    monkeypatch.setattr(Q, "qc_thresholds_from_metrics", spy)
    a = ad.read_h5ad(files / "counts.h5ad")
    qc(a, sample_key="sample", min_genes=50)
    rec = a.uns[K.UNS][K.UNS_QC]
    qc_pass, reason, section = requalify_qc(a.obs, rec, n_vars=a.n_vars)
    assert len(calls) == 2  # qc() and requalify_qc() both went through it
    np.testing.assert_array_equal(qc_pass, a.obs[K.OBS_QC_PASS].to_numpy())
    assert list(reason) == list(a.obs[K.OBS_QC_REASON])
    assert section["thresholds"] == rec["thresholds"] and section["table"] == rec["table"]
    assert rec["thresholds"]["s1"]["min_genes"] == 50.0  # the explicit bound reached both
    # and directly: the same marks from the metric columns alone
    marks = qc_thresholds_from_metrics(
        a.obs[[K.OBS_N_GENES, K.OBS_TOTAL_COUNTS, K.OBS_PCT_MT, K.OBS_PCT_RIBO, "sample"]],
        sample_key="sample", min_genes=50, has_counts=True, n_mt_genes=len(MT), n_vars=a.n_vars,
    )
    np.testing.assert_array_equal(marks.qc_pass, qc_pass)
    assert marks.samples == list(pd.unique(a.obs["sample"].astype(str)))


def test_threshold_function_rules_on_planted_metrics():
    n = 200
    rng = np.random.default_rng(0)
    obs = pd.DataFrame({
        K.OBS_N_GENES: rng.integers(900, 1100, size=n), K.OBS_TOTAL_COUNTS: rng.uniform(2e3, 3e3, n),
        K.OBS_PCT_MT: rng.uniform(1, 3, n), K.OBS_PCT_RIBO: rng.uniform(5, 10, n),
    })
    obs.loc[0, K.OBS_N_GENES] = 10  # low genes and high mt: first reason wins
    obs.loc[0, K.OBS_PCT_MT] = 90.0
    obs.loc[1, K.OBS_PCT_MT] = 15.0  # above the MAD bound but below the 20% floor
    obs.loc[2, K.OBS_PCT_MT] = 25.0
    dbl = np.zeros(n, dtype=bool)
    dbl[3] = True
    m = qc_thresholds_from_metrics(obs, n_mt_genes=13, n_vars=20_000, predicted_doublet=dbl)
    assert list(m.qc_reason[:4]) == ["low_genes", "pass", "high_mt", "doublet"]
    assert m.thresholds["all"]["max_pct_mt"] == Q.MT_FLOOR
    panel = qc_thresholds_from_metrics(obs, n_mt_genes=13, n_vars=500)  # gene panel: no auto mt
    assert panel.thresholds["all"]["max_pct_mt"] is None and panel.qc_reason[2] == "pass"
    with pytest.raises(DataError, match="pct_counts_mt"):
        qc_thresholds_from_metrics(obs.drop(columns=[K.OBS_PCT_MT]))


# --------------------------------------------------------------------------- streaming filter


def _assert_same_file(got_path, want: ad.AnnData, tmp_path) -> None:
    """The file at got_path equals `want` written normally and read back."""
    want.write_h5ad(tmp_path / "want.h5ad")
    w, g = ad.read_h5ad(tmp_path / "want.h5ad"), ad.read_h5ad(got_path)
    assert list(g.obs_names) == list(w.obs_names) and list(g.var_names) == list(w.var_names)
    pd.testing.assert_frame_equal(g.obs, w.obs)
    pd.testing.assert_frame_equal(g.var, w.var)
    assert sorted(g.layers) == sorted(w.layers) and (g.raw is None) == (w.raw is None)
    pairs = [("X", g.X, w.X), *[(k, g.layers[k], w.layers[k]) for k in w.layers]]
    if w.raw is not None:
        pairs.append(("raw", g.raw.X, w.raw.X))
        pd.testing.assert_frame_equal(g.raw.var, w.raw.var)
    for name, gm, wm in pairs:
        assert sp.issparse(gm) == sp.issparse(wm) and gm.dtype == wm.dtype, name
        if sp.issparse(wm):
            assert (gm != wm).nnz == 0, name
        else:
            np.testing.assert_array_equal(gm, wm, err_msg=name)
    assert sorted(g.obsm) == sorted(w.obsm) and sorted(g.obsp) == sorted(w.obsp)
    np.testing.assert_array_equal(g.obsm["X_pca"], w.obsm["X_pca"])
    pd.testing.assert_frame_equal(g.obsm["scores"], w.obsm["scores"])
    assert (g.obsp["connectivities"] != w.obsp["connectivities"]).nnz == 0
    np.testing.assert_array_equal(g.varm["loadings"], w.varm["loadings"])
    assert _plain(g.uns) == _plain(w.uns)


def _plain(x):
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, np.generic):
        return x.item()
    return x


def test_filter_h5ad_equals_in_memory_subset(files, tmp_path, monkeypatch):
    """From a path, dense X + dense layer + raw; a category disappears (its colour too)."""
    mem = ad.read_h5ad(files / "small.h5ad")
    keep = (mem.obs["cell_type"] != "rare").to_numpy() & (np.arange(mem.n_obs) % 3 != 0)
    keep[250:500] = False  # a whole block without kept cells
    log = _ReadLog(monkeypatch)
    out = filter_cells_h5ad(files / "small.h5ad", tmp_path / "f.h5ad", keep, chunk_size=250,
                            compression=None)
    monkeypatch.undo()
    want = mem[keep].copy()
    assert list(want.obs["cell_type"].cat.categories) == ["fibro", "tcell"]
    assert len(want.uns["cell_type_colors"]) == 2
    _assert_same_file(out, want, tmp_path)
    # raw.X (sparse) read block by block, skipping the block without kept cells
    assert log.slices("/raw/X") == [(0, 250), (500, 750), (750, 900)]


def test_backed_qc_then_streaming_filter_equals_cli_in_memory_path(files, tmp_path):
    """What `cafclassify qc --filter` does in memory == backed qc + filter_cells_to_h5ad."""
    mem = ad.read_h5ad(files / "counts.h5ad")
    qc(mem, sample_key="sample")
    want = filter_cells(mem, copy=True)
    want.uns["stamped"] = "yes"

    backed = open_lazy(files / "counts.h5ad")
    qc(backed, sample_key="sample", chunk_size=CHUNK)
    out = filter_cells_to_h5ad(backed, tmp_path / "filtered.h5ad", chunk_size=CHUNK,
                               stamp=lambda s: s.uns.__setitem__("stamped", "yes"))
    assert want.n_obs < N_CELLS - 20  # the planted cells are gone
    _assert_same_file(out, want, tmp_path)
    assert "filtered" not in backed.uns[K.UNS][K.UNS_QC]  # the source object is not modified
    assert backed.n_obs == N_CELLS


def test_filter_from_obs_column_and_bad_masks(files, tmp_path):
    """Source: a backed AnnData with a new obs column (read_h5ad(backed="r") works too)."""
    backed = ad.read_h5ad(files / "small.h5ad", backed="r")
    backed.obs["keep"] = (backed.obs["sample"] == "s1").to_numpy()
    out = filter_cells_h5ad(backed, tmp_path / "s1.h5ad", "keep", chunk_size=200)
    mem = ad.read_h5ad(files / "small.h5ad")
    mem.obs["keep"] = backed.obs["keep"]
    _assert_same_file(out, mem[mem.obs["keep"].to_numpy()].copy(), tmp_path)
    with pytest.raises(DataError, match="3 values for 900 cells"):
        filter_cells_h5ad(backed, tmp_path / "x.h5ad", np.ones(3, dtype=bool))
    with pytest.raises(DataError, match="boolean mask"):
        filter_cells_h5ad(backed, tmp_path / "x.h5ad", np.arange(900))
    with pytest.raises(DataError, match="not boolean"):
        filter_cells_h5ad(backed, tmp_path / "x.h5ad", "score")
    with pytest.raises(DataError, match="no cell"):
        filter_cells_h5ad(backed, tmp_path / "x.h5ad", np.zeros(900, dtype=bool))
    with pytest.raises(InputFileError, match="output file is the input"):
        filter_cells_h5ad(files / "small.h5ad", files / "small.h5ad", "cell_type")
    with pytest.raises(DataError, match="in memory"):
        filter_cells_h5ad(ad.read_h5ad(files / "small.h5ad"), tmp_path / "x.h5ad", "keep")
    assert not (tmp_path / "x.h5ad").exists()


# --------------------------------------------------------------------------- refusals, doublets


def test_backed_refusals(files, tmp_path, monkeypatch):
    backed = open_lazy(files / "counts.h5ad")
    with pytest.raises(DataError, match="copy=True"):
        qc(backed, copy=True)
    qc(backed)
    with pytest.raises(DataError, match="filter_cells_to_h5ad"):
        filter_cells(backed, copy=True)
    monkeypatch.setattr(Q, "MAX_CELLS_DOUBLETS_BACKED", 1000)
    with pytest.raises(DataError, match="one sample at a time") as err:
        qc(backed, sample_key="sample", doublets=True)
    assert "sample_key=" in err.value.fix


def test_backed_doublets_equal_in_memory(files, tmp_path):
    small = ad.read_h5ad(files / "small.h5ad")
    mem = small[:400].copy()
    mem.X = sp.csr_matrix(mem.X)
    del mem.raw
    mem.write_h5ad(tmp_path / "d.h5ad")
    backed = open_lazy(tmp_path / "d.h5ad")
    qc(mem, sample_key="sample", doublets=True)
    qc(backed, sample_key="sample", doublets=True, chunk_size=150)
    assert np.isfinite(mem.obs[K.OBS_DOUBLET_SCORE]).all()  # scrublet ran on both samples
    _same_qc(backed, mem)
