"""Property-based tests (hypothesis) for the readers and the scoring functions.

Readers: random small sparse count matrices written as .h5ad, CSV (cells x genes),
TSV (genes x cells) and a 10x Matrix Market folder are read back with the same
values and names, never with an unexpected exception.

Scoring: on random sparse matrices and gene sets the kernels and ``cafclassify.score``
never crash; UCell and (unsigned) AUCell scores lie in [0, 1]; UCell is invariant to
the order of the genes (columns; ties get average ranks); every per-cell method is
equivariant to the order of the cells; results do not depend on the chunk size or on
the sparse format. AUCell breaks ties by gene order, so gene-order invariance is not
promised for it (documented in ``aucell_scores``) and not tested.
"""

from __future__ import annotations

import gzip
import logging
import tempfile
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.io
import scipy.sparse as sp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cafclassify import _keys as K
from cafclassify._errors import CafClassifyError
from cafclassify.io import read
from cafclassify.scoring import aucell_scores, score, ucell_scores

SETTINGS = settings(max_examples=30, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow])

# real human symbols, so species detection has something to work with
SYMBOLS = ["COL1A1", "DCN", "ACTA2", "PTPRC", "EPCAM", "PECAM1", "LUM", "POSTN", "FAP",
           "PDGFRA", "PDGFRB", "RGS5", "CD74", "MKI67", "IL6", "CXCL12"]


@pytest.fixture(autouse=True, scope="module")
def _quiet():
    """The readers log one INFO line per file; keep hypothesis output readable."""
    logger = logging.getLogger("cafclassify")
    level = logger.level
    logger.setLevel(logging.WARNING)
    yield
    logger.setLevel(level)


@st.composite
def count_matrices(draw, max_cells=12, max_genes=16):
    """A cells x genes sparse integer count matrix (every cell and gene has a count)."""
    n_cells = draw(st.integers(2, max_cells))
    n_genes = draw(st.integers(2, max_genes))
    density = draw(st.floats(0.05, 1.0))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    dense = rng.integers(1, draw(st.integers(2, 500)), size=(n_cells, n_genes))
    dense = dense * (rng.random((n_cells, n_genes)) < density)
    # real count matrices have no empty cells or genes after Cell Ranger filtering
    dense[np.arange(n_cells), rng.integers(0, n_genes, n_cells)] += 1
    dense[rng.integers(0, n_cells, n_genes), np.arange(n_genes)] += 1
    genes = list(rng.permutation(SYMBOLS)[:n_genes])
    barcodes = [f"{''.join(rng.choice(list('ACGT'), 10))}-{i}" for i in range(n_cells)]
    return sp.csr_matrix(dense.astype(np.float32)), genes, barcodes


def _check_roundtrip(a: ad.AnnData, X: sp.csr_matrix, genes, barcodes) -> None:
    assert list(a.obs_names) == barcodes
    assert list(a.var_names) == genes
    got = a.X.toarray() if sp.issparse(a.X) else np.asarray(a.X)
    np.testing.assert_array_equal(got, X.toarray())
    assert a.uns[K.UNS][K.UNS_READ]["n_cells"] == len(barcodes)
    assert list(a.var[K.VAR_SYMBOL]) == genes


@SETTINGS
@given(data=count_matrices())
def test_h5ad_roundtrip(data):
    X, genes, barcodes = data
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "x.h5ad"
        ad.AnnData(X=X, obs=pd.DataFrame(index=barcodes), var=pd.DataFrame(index=genes)).write_h5ad(p)
        a = read(p, value_type="counts", normalize=False)
        before = p.read_bytes()
        _check_roundtrip(a, X, genes, barcodes)
        assert p.read_bytes() == before


@SETTINGS
@given(data=count_matrices())
def test_csv_cells_x_genes_roundtrip(data):
    X, genes, barcodes = data
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "x.csv"
        pd.DataFrame(X.toarray().astype(int), index=barcodes, columns=genes).to_csv(p)
        a = read(p, value_type="counts", normalize=False)
        _check_roundtrip(a, X, genes, barcodes)


@SETTINGS
@given(data=count_matrices())
def test_tsv_genes_x_cells_roundtrip(data):
    X, genes, barcodes = data
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "x.tsv.gz"
        with gzip.open(p, "wt") as fh:
            pd.DataFrame(X.toarray().T.astype(int), index=genes, columns=barcodes).to_csv(fh, sep="\t")
        a = read(p, value_type="counts", normalize=False)
        _check_roundtrip(a, X, genes, barcodes)
        assert a.uns[K.UNS][K.UNS_READ]["orientation"] == "genes_x_cells"


@SETTINGS
@given(data=count_matrices())
def test_10x_mtx_roundtrip(data):
    X, genes, barcodes = data
    with tempfile.TemporaryDirectory() as d:
        folder = Path(d) / "sample"
        folder.mkdir()
        with gzip.open(folder / "matrix.mtx.gz", "wb") as fh:
            scipy.io.mmwrite(fh, sp.coo_matrix(X.T.astype(np.int64)))
        with gzip.open(folder / "features.tsv.gz", "wt") as fh:
            fh.writelines(f"ENSG{i:011d}\t{g}\tGene Expression\n" for i, g in enumerate(genes))
        with gzip.open(folder / "barcodes.tsv.gz", "wt") as fh:
            fh.writelines(f"{b}\n" for b in barcodes)
        a = read(folder, normalize=False)
        _check_roundtrip(a, X, genes, barcodes)
        assert a.uns[K.UNS][K.UNS_READ]["value_type"] == "counts"


@SETTINGS
@given(data=count_matrices())
def test_read_normalises_counts_and_keeps_them(data):
    X, genes, barcodes = data
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "x.h5ad"
        ad.AnnData(X=X, obs=pd.DataFrame(index=barcodes), var=pd.DataFrame(index=genes)).write_h5ad(p)
        a = read(p, value_type="counts")
    np.testing.assert_array_equal(a.layers[K.LAYER_COUNTS].toarray(), X.toarray())
    expected = np.log1p(X.toarray() / X.toarray().sum(1, keepdims=True) * 1e4)
    np.testing.assert_allclose(a.X.toarray(), expected, rtol=1e-5, atol=1e-6)


# =============================================================================== scoring


@st.composite
def score_inputs(draw, signed=False):
    """A sparse log-normalised matrix (with ties and empty cells) and 1-4 gene sets."""
    n_cells = draw(st.integers(1, 25))
    n_genes = draw(st.integers(2, 40))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    density = draw(st.floats(0.0, 1.0))
    counts = rng.poisson(draw(st.floats(0.1, 5.0)), size=(n_cells, n_genes))
    counts = counts * (rng.random((n_cells, n_genes)) < density)
    lib = np.maximum(counts.sum(1, keepdims=True), 1)
    X = sp.csr_matrix(np.log1p(counts / lib * 1e4))
    sets = {}
    for j in range(draw(st.integers(1, 4))):
        k = draw(st.integers(1, n_genes))
        idx = np.sort(rng.choice(n_genes, k, replace=False))
        w = np.ones(k)
        if signed and k > 1:
            w[rng.random(k) < 0.4] = -1.0
        sets[f"set{j}"] = (idx, w)
    # UCell needs max_rank above the size of each direction of a set (a clear SignatureError
    # otherwise, tested in test_scoring_kernels.py)
    largest = max(max(int((w > 0).sum()), int((w < 0).sum())) for _, w in sets.values())
    max_rank = draw(st.integers(largest + 1, largest + 1 + n_genes))
    return X, sets, max_rank


def _permute_columns(X, sets, perm):
    """Column j of the result is column perm[j] of X; set indices follow their genes."""
    inv = np.argsort(perm)
    return X[:, perm], {n: (inv[idx], w) for n, (idx, w) in sets.items()}


@SETTINGS
@given(data=score_inputs(signed=True))
def test_ucell_in_unit_interval(data):
    X, sets, max_rank = data
    s = ucell_scores(X, sets, max_rank=max_rank)
    assert s.shape == (X.shape[0], len(sets))
    assert np.isfinite(s).all()
    assert (s >= 0).all() and (s <= 1 + 1e-12).all()


@SETTINGS
@given(data=score_inputs(signed=False))
def test_aucell_unsigned_in_unit_interval(data):
    X, sets, _ = data
    s = aucell_scores(X, sets)
    assert s.shape == (X.shape[0], len(sets))
    assert np.isfinite(s).all()
    assert (s >= 0).all() and (s <= 1 + 1e-12).all()


@SETTINGS
@given(data=score_inputs(signed=True), perm_seed=st.integers(0, 2**32 - 1))
def test_ucell_invariant_to_gene_order(data, perm_seed):
    X, sets, max_rank = data
    perm = np.random.default_rng(perm_seed).permutation(X.shape[1])
    Xp, sets_p = _permute_columns(X, sets, perm)
    np.testing.assert_allclose(ucell_scores(Xp, sets_p, max_rank=max_rank),
                               ucell_scores(X, sets, max_rank=max_rank), rtol=0, atol=1e-12)


@SETTINGS
@given(data=score_inputs(signed=True), perm_seed=st.integers(0, 2**32 - 1),
       chunk=st.integers(1, 30))
def test_per_cell_scores_follow_the_cells(data, perm_seed, chunk):
    """Reordering cells reorders the scores; chunk size and sparse format change nothing."""
    X, sets, max_rank = data
    perm = np.random.default_rng(perm_seed).permutation(X.shape[0])
    u = ucell_scores(X, sets, max_rank=max_rank)
    a = aucell_scores(X, sets)
    np.testing.assert_array_equal(ucell_scores(X[perm], sets, max_rank=max_rank), u[perm])
    np.testing.assert_array_equal(aucell_scores(X[perm], sets), a[perm])
    np.testing.assert_array_equal(ucell_scores(X, sets, max_rank=max_rank, chunk_size=chunk), u)
    np.testing.assert_array_equal(aucell_scores(X, sets, chunk_size=chunk), a)
    np.testing.assert_array_equal(ucell_scores(X.tocsc(), sets, max_rank=max_rank), u)
    np.testing.assert_array_equal(ucell_scores(X.toarray(), sets, max_rank=max_rank), u)
    np.testing.assert_array_equal(aucell_scores(X.toarray(), sets), a)


def _adata(X, n_genes):
    genes = (SYMBOLS + [f"GENE{i}" for i in range(n_genes)])[:n_genes]
    return ad.AnnData(X=X, obs=pd.DataFrame(index=[f"c{i}" for i in range(X.shape[0])]),
                      var=pd.DataFrame(index=genes))


@SETTINGS
@given(data=score_inputs(signed=False), perm_seed=st.integers(0, 2**32 - 1),
       method=st.sampled_from(["ucell", "aucell"]))
def test_score_with_dict_sets_bounded_and_order_invariant(data, perm_seed, method):
    X, sets, max_rank = data
    n_cells, n_genes = X.shape
    adata = _adata(X, n_genes)
    names = np.asarray(adata.var_names)
    gene_sets = {n: list(names[idx]) for n, (idx, _) in sets.items()}
    if method == "aucell" and (X.getnnz(axis=0) > 0).sum() < 2:
        # nothing to rank: a clear user error, not a crash or a column of zeros
        with pytest.raises(CafClassifyError, match="fewer than 2 genes are detected"):
            score(adata, gene_sets, method=method, species="human", on_low_coverage="keep",
                  copy=True)
        return
    out = score(adata, gene_sets, method=method, max_rank=max_rank, species="human",
                on_low_coverage="keep", copy=True)
    s = out.obsm[K.OBSM_SCORES]
    assert list(s.index) == list(adata.obs_names)
    assert set(s.columns) == set(gene_sets)
    assert np.isfinite(s.to_numpy()).all()
    assert ((s >= 0) & (s <= 1 + 1e-12)).all().all()
    assert adata.obsm.get(K.OBSM_SCORES) is None  # copy=True left the input alone

    rng = np.random.default_rng(perm_seed)
    cells = rng.permutation(n_cells)
    by_cells = score(adata[cells].copy(), gene_sets, method=method, max_rank=max_rank,
                     species="human", on_low_coverage="keep", copy=True).obsm[K.OBSM_SCORES]
    pd.testing.assert_frame_equal(by_cells.loc[s.index], s, check_exact=True)
    if method == "ucell":  # UCell promises gene-order invariance (average ranks for ties)
        genes = rng.permutation(n_genes)
        by_genes = score(adata[:, genes].copy(), gene_sets, method=method, max_rank=max_rank,
                         species="human", on_low_coverage="keep", copy=True).obsm[K.OBSM_SCORES]
        pd.testing.assert_frame_equal(by_genes[s.columns], s, check_exact=False, rtol=0, atol=1e-12)


# ---------------------------------------------------------------------------
# every valid layout of the same matrix reads to the same numbers (issue #18)
# ---------------------------------------------------------------------------
def _dtypes_holding(max_value: float) -> list[np.dtype]:
    """Every numeric dtype that holds the integers 0..max_value exactly."""
    out = []
    for dt in (np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64,
               np.float16, np.float32, np.float64):
        dt = np.dtype(dt)
        top = np.iinfo(dt).max if dt.kind in "iu" else 2.0 ** (np.finfo(dt).nmant + 1)
        if max_value <= top:
            out.append(dt)
    return out


def _dense(M) -> np.ndarray:
    return (M.toarray() if sp.issparse(M) else np.asarray(M)).astype(np.float64)


def _non_canonical(X: sp.csr_matrix, rng: np.random.Generator, fmt: str, dtype) -> sp.spmatrix:
    """The same matrix with entries split into duplicates and indices shuffled within rows/columns."""
    M = X.tocsr() if fmt == "csr" else X.tocsc()
    data, indices, ptr = [], [], [0]
    for i in range(M.shape[0] if fmt == "csr" else M.shape[1]):
        lo, hi = M.indptr[i], M.indptr[i + 1]
        d, j = [], []
        for v, k in zip(M.data[lo:hi], M.indices[lo:hi], strict=True):
            if v >= 2 and rng.random() < 0.7:  # split a value into two stored entries
                a = float(rng.integers(1, int(v)))
                d += [a, v - a]
                j += [k, k]
            else:
                d.append(v)
                j.append(k)
        order = rng.permutation(len(d))
        data += [d[o] for o in order]
        indices += [j[o] for o in order]
        ptr.append(len(data))
    cls = sp.csr_matrix if fmt == "csr" else sp.csc_matrix
    out = cls((np.asarray(data, dtype=dtype), np.asarray(indices, dtype=np.int32),
               np.asarray(ptr, dtype=np.int32)), shape=X.shape)
    return out


@settings(max_examples=4, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(data=count_matrices(), seed=st.integers(0, 2**32 - 1))
def test_every_layout_reads_to_the_same_numbers(data, seed):
    """Canonical / non-canonical CSR and CSC and dense, in every dtype that holds the counts:
    identical X and layers['counts'] after read(), streamed read and backed blocks."""
    from cafclassify._utils import take_rows
    from cafclassify.io._read import read_backed
    from cafclassify.io._stream import read_to_h5ad

    X, genes, barcodes = data
    rng = np.random.default_rng(seed)
    obs, var = pd.DataFrame(index=barcodes), pd.DataFrame(index=genes)
    dtypes = _dtypes_holding(float(X.max()))
    assert len(dtypes) >= 6
    with tempfile.TemporaryDirectory() as d:
        def write(M, name):
            p = Path(d) / f"{name}.h5ad"
            ad.AnnData(X=M, obs=obs, var=var).write_h5ad(p)
            return p

        ref_path = write(X, "ref")
        ref = read(ref_path)
        ref_x, ref_counts = ref.X.toarray(), ref.layers[K.LAYER_COUNTS].toarray()
        read_to_h5ad(ref_path, Path(d) / "ref_s.h5ad", chunk_size=5)
        streamed_ref = ad.read_h5ad(Path(d) / "ref_s.h5ad")
        n_non_canonical = 0
        for dt in dtypes:
            layouts = {"dense": X.toarray().astype(dt)}
            for fmt in ("csr", "csc") if dt != np.float16 else ():  # scipy.sparse has no float16
                layouts[f"{fmt}_canonical"] = (X.tocsr() if fmt == "csr" else X.tocsc()).astype(dt)
                nc = _non_canonical(X, rng, fmt, dt)
                n_non_canonical += not nc.has_canonical_format
                layouts[f"{fmt}_non_canonical"] = nc
            for name, M in layouts.items():
                p = write(M, f"{name}_{dt.name}")
                got = read(p)
                gx = got.X.toarray() if sp.issparse(got.X) else np.asarray(got.X)
                gc = got.layers[K.LAYER_COUNTS]
                gc = gc.toarray() if sp.issparse(gc) else np.asarray(gc)
                assert np.array_equal(gx, ref_x), (name, dt)
                assert np.array_equal(gc.astype(np.float64), ref_counts.astype(np.float64)), (name, dt)
                assert got.uns[K.UNS][K.UNS_READ]["value_type"] == "counts", (name, dt)
                if name.startswith("csc"):  # only CSR/dense h5ad matrices are streamed / read in blocks
                    continue
                # out of core: backed blocks and the streamed reader see the same values
                b = read_backed(p)
                try:
                    blk = take_rows(b.X, np.arange(b.n_obs))
                    assert not sp.issparse(blk) or blk.has_canonical_format, (name, dt)
                    blk = blk.toarray() if sp.issparse(blk) else np.asarray(blk)
                    assert np.array_equal(blk.astype(np.float64), ref_counts.astype(np.float64)), (name, dt)
                finally:
                    b.file.close()
                if name != "csr_non_canonical" or dt.name not in ("float32", "int64"):
                    continue  # the streamed reader is slower: the non-canonical case, two dtypes
                out = Path(d) / f"{name}_{dt.name}_s.h5ad"
                read_to_h5ad(p, out, chunk_size=5)
                s = ad.read_h5ad(out)
                assert np.array_equal(_dense(s.X), _dense(streamed_ref.X)), (name, dt)
                assert np.array_equal(_dense(s.layers[K.LAYER_COUNTS]),
                                      _dense(streamed_ref.layers[K.LAYER_COUNTS])), (name, dt)
        # the strategy really produced non-canonical matrices (else this test proves nothing)
        assert n_non_canonical >= len(dtypes) - 1


def test_canonical_with_64bit_indptr():
    """The check that avoids scipy's index copy for 64-bit indptr finds duplicates and disorder."""
    from cafclassify.io._canonical import canonical, is_canonical

    ok = sp.random(30, 20, density=0.3, format="csr", random_state=0)
    ok.indptr = ok.indptr.astype(np.int64)
    assert is_canonical(ok) and canonical(ok) is ok
    bad = sp.csr_matrix((np.array([1.0, 2.0, 3.0]), np.array([2, 1, 1], dtype=np.int32),
                         np.array([0, 3], dtype=np.int64)), shape=(1, 4))
    assert not is_canonical(bad)
    fixed = canonical(bad)
    np.testing.assert_array_equal(fixed.toarray(), [[0, 5, 1, 0]])
    assert fixed.nnz == 2 and bad.nnz == 3  # copy: the input is left as it was
