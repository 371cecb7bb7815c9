"""Scoring kernels against independent dense numpy references (no peer packages needed)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import sparse
from scipy.stats import rankdata

from cafclassify._errors import DataError, SignatureError
from cafclassify.scoring import (
    aucell_scores,
    decoupler_tie_order,
    default_n_up,
    gene_stats,
    list_methods,
    scanpy_control_genes,
    scanpy_scores,
    ucell_scores,
    zmean_scores,
)


def _lognorm_with_ties(n_cells=300, n_genes=200, seed=0, mean_nnz=30):
    """Sparse log-normalised matrix from Poisson counts (many exact ties within cells),
    with an all-zero cell, a cell with a single gene and an all-zero gene."""
    rng = np.random.default_rng(seed)
    lam = rng.gamma(0.3, mean_nnz / (0.3 * n_genes), size=(1, n_genes))
    depth = rng.lognormal(0, 0.6, size=(n_cells, 1))
    counts = rng.poisson(lam * depth * 3)
    counts[0] = 0
    counts[1] = 0
    counts[1, 5] = 4
    counts[:, 7] = 0
    libsize = np.maximum(counts.sum(1, keepdims=True), 1)
    X = np.log1p(counts / libsize * 1e4).astype(np.float32)
    return sparse.csr_matrix(X)


SETS = {
    "up_only": (np.array([3, 10, 11, 40, 77, 150]), np.ones(6)),
    "signed": (np.array([2, 8, 19, 33, 60, 7]), np.array([1.0, 1, 1, -1, -1, 1])),
    "small": (np.array([0, 1]), np.array([1.0, 1.0])),
}


# --------------------------- dense references -------------------------------
def _ucell_ref(X, sets, max_rank):
    X = np.asarray(X)
    n = X.shape[0]
    ranks = np.full(X.shape, float(max_rank))
    for i in range(n):
        nz = np.flatnonzero(X[i])
        if nz.size:
            r = rankdata(-X[i, nz], method="average")
            ranks[i, nz] = np.minimum(r, max_rank)
    out = np.zeros((n, len(sets)))
    for j, (idx, w) in enumerate(sets.values()):
        def u(genes):
            k = len(genes)
            smin, smax = k * (k + 1) / 2, k * max_rank
            return 1 - (ranks[:, genes].sum(1) - smin) / (smax - smin)
        up, down = idx[w > 0], idx[w < 0]
        s = u(up) if up.size else np.zeros(n)
        if down.size:
            s = np.clip(s - u(down), 0, None)
        out[:, j] = s
    return out


def _aucell_ref(X, sets, n_up, prio):
    """Recovery-curve AUC computed literally (sorted ranks, step integral)."""
    X = np.asarray(X, dtype=float)
    order = np.argsort(prio)  # column positions in tie-break order
    out = np.zeros((X.shape[0], len(sets)))
    for i in range(X.shape[0]):
        if not X[i].any():
            continue
        r_perm = rankdata(-X[i, order], method="ordinal")
        ranks = np.empty_like(r_perm)
        ranks[order] = r_perm
        for j, (idx, w) in enumerate(sets.values()):
            def auc(genes, ranks=ranks):
                x = np.sort(ranks[genes][ranks[genes] <= n_up]).astype(float)
                y = np.arange(1, x.size + 1)
                x = np.append(x, n_up)
                xt = np.arange(1, genes.size + 1)
                xt = xt[xt < n_up]
                mx = np.sum(np.diff(np.append(xt, n_up)) * xt)
                return np.sum(np.diff(x) * y) / mx
            up, down = idx[w > 0], idx[w < 0]
            out[i, j] = (auc(up) if up.size else 0) - (auc(down) if down.size else 0)
    return out


# ------------------------------- UCell ---------------------------------------
@pytest.mark.parametrize("max_rank", [8, 20, 1500])
def test_ucell_matches_dense_reference_with_ties_and_cap(max_rank):
    X = _lognorm_with_ties()
    ours = ucell_scores(X, SETS, max_rank=max_rank)
    ref = _ucell_ref(X.toarray(), SETS, max_rank)
    np.testing.assert_allclose(ours, ref, atol=1e-12, rtol=0)
    assert np.all(ours[0] == 0)  # empty cell: every gene at max_rank
    # the cap matters: scores differ between rank caps
    if max_rank == 8:
        assert not np.allclose(ours, ucell_scores(X, SETS, max_rank=20))


def test_ucell_signed_set_clips_and_down_genes_lower_score():
    X = _lognorm_with_ties().toarray()
    idx = np.array([3, 10, 11, 40])
    up = ucell_scores(X, {"s": (idx, np.ones(4))}, max_rank=50)[:, 0]
    signed = ucell_scores(X, {"s": (np.r_[idx, 60, 61], np.r_[np.ones(4), -1, -1])}, max_rank=50)[:, 0]
    assert np.all(signed <= up + 1e-12)
    assert np.all(signed >= 0)
    only_down = ucell_scores(X, {"s": (idx, -np.ones(4))}, max_rank=50)[:, 0]
    assert np.all(only_down == 0)  # UCell: pos score 0 minus anything, clipped


def test_ucell_negative_values_ranked_among_nonzeros():
    # pyucell ranks every non-zero value (negatives below positives), zeros at max_rank
    X = np.array([[3.0, -1.0, 0.0, 2.0, -5.0, 0.0]])
    s = {"a": (np.array([1]), np.ones(1)), "b": (np.array([2]), np.ones(1))}
    r = _ucell_ref(X, s, max_rank=6)
    np.testing.assert_allclose(ucell_scores(X, s, max_rank=6), r)
    assert r[0, 0] > r[0, 1]


def test_ucell_rejects_sets_not_smaller_than_max_rank():
    X = _lognorm_with_ties()
    with pytest.raises(SignatureError, match="max_rank"):
        ucell_scores(X, {"big": (np.arange(10), np.ones(10))}, max_rank=10)


# ------------------------------- AUCell --------------------------------------
@pytest.mark.parametrize("seed", [0, 3])
def test_aucell_matches_literal_recovery_curve_with_zero_ties(seed):
    # few detected genes per cell: zero-valued set genes reach the top n_up ranks,
    # so the tie order of zeros matters and is exercised
    X = _lognorm_with_ties(n_genes=200, mean_nnz=6, seed=seed)
    n_up = 30
    assert np.median(np.diff(X.indptr)) < n_up
    prio = np.random.default_rng(seed).permutation(200)
    ours = aucell_scores(X, SETS, n_up=n_up, tie_order=prio)
    ref = _aucell_ref(X.toarray(), SETS, n_up, prio)
    np.testing.assert_allclose(ours, ref, atol=1e-12, rtol=0)
    # column-order tie break is a different, also exact, ranking
    ours_col = aucell_scores(X, SETS, n_up=n_up)
    np.testing.assert_allclose(ours_col, _aucell_ref(X.toarray(), SETS, n_up, np.arange(200)),
                               atol=1e-12)
    assert not np.allclose(ours, ours_col)


def test_aucell_default_n_up_and_negative_values():
    assert default_n_up(4210) == 211
    assert default_n_up(10) == 2
    X = np.array([[2.0, 0, -1, 0, 3, 0, 0, 1, -2, 0]] * 2)
    X[1, 0] = 0
    s = {"a": (np.array([2, 3, 8]), np.ones(3)), "b": (np.array([0, 4, 9]), np.ones(3))}
    np.testing.assert_allclose(aucell_scores(X, s, n_up=9),
                               _aucell_ref(X, s, 9, np.arange(10)), atol=1e-12)


def test_decoupler_tie_order_puts_empty_genes_last():
    nonempty = np.array([True, False, True, True, False, True])
    prio = decoupler_tie_order(nonempty)
    assert sorted(prio[nonempty]) == [0, 1, 2, 3]
    assert sorted(prio[~nonempty]) == [4, 5]
    perm = np.random.default_rng(0).choice(np.arange(4), 4, replace=False)
    assert np.array_equal(prio[np.flatnonzero(nonempty)[perm]], np.arange(4))


# ------------------------------ linear scores -------------------------------
def test_gene_stats_streaming_equals_numpy():
    X = _lognorm_with_ties(n_cells=257)
    D = X.toarray().astype(float)
    for chunk in (1, 50, 10_000):
        st = gene_stats(X, chunk_size=chunk)
        np.testing.assert_allclose(st.mean, D.mean(0), rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(st.var, D.var(0, ddof=1), rtol=1e-9, atol=1e-12)
        assert np.array_equal(st.n_nonzero, (D != 0).sum(0))


def test_zmean_matches_dense_reference_with_weights():
    X = _lognorm_with_ties()
    D = X.toarray().astype(float)
    sd = D.std(0, ddof=1)
    z = np.divide(D - D.mean(0), sd, out=np.zeros_like(D), where=sd > 0)
    sets = {"w": (np.array([3, 10, 7, 40]), np.array([2.0, 1.0, 1.0, -0.5])),
            "u": (np.array([5, 6]), np.ones(2))}
    ref = np.column_stack([z[:, idx] @ w / np.abs(w).sum() for idx, w in sets.values()])
    np.testing.assert_allclose(zmean_scores(X, sets, chunk_size=37), ref, atol=1e-10)


def test_scanpy_scores_equal_set_mean_minus_control_mean():
    X = _lognorm_with_ties(n_genes=400)
    D = X.toarray().astype(float)
    idx = np.array([3, 10, 11, 40, 77])
    out, ctrl = scanpy_scores(X, {"a": (idx, np.ones(5))}, ctrl_size=20, n_bins=10,
                              random_state=4, return_controls=True)
    c = ctrl["a"]["up"]
    assert c.size > 0 and not np.isin(c, idx).any()
    np.testing.assert_allclose(out[:, 0], D[:, idx].mean(1) - D[:, c].mean(1), atol=1e-12)
    # same draw as scanpy_control_genes, deterministic, seed-dependent
    means = D.mean(0)
    c2 = scanpy_control_genes(means, idx, ctrl_size=20, n_bins=10, random_state=4)
    assert np.array_equal(c, c2)
    assert not np.array_equal(c, scanpy_control_genes(means, idx, ctrl_size=20, n_bins=10,
                                                      random_state=5))
    # fixed control genes are used as given
    fixed = np.array([100, 101, 102])
    out2 = scanpy_scores(X, {"a": (idx, np.ones(5))}, control_genes={"a": fixed})
    np.testing.assert_allclose(out2[:, 0], D[:, idx].mean(1) - D[:, fixed].mean(1), atol=1e-12)


def test_scanpy_control_genes_come_from_the_set_genes_bins():
    means = np.arange(100, dtype=float)  # bin = rank // round(100/4) = 25 genes per bin
    ctrl = scanpy_control_genes(means, np.array([3]), ctrl_size=10, n_bins=5, random_state=0)
    assert ctrl.size == 10 and np.all(ctrl < 24) and 3 not in ctrl
    ctrl_all = scanpy_control_genes(means, np.array([3]), ctrl_size=100, n_bins=5)
    assert np.array_equal(ctrl_all, np.setdiff1d(np.arange(24), [3]))


# ------------------------------ validation ----------------------------------
def test_bad_sets_and_values_raise_clear_errors():
    X = _lognorm_with_ties()
    with pytest.raises(SignatureError, match="more than once"):
        ucell_scores(X, {"d": (np.array([1, 1]), np.ones(2))})
    with pytest.raises(SignatureError, match="out of range"):
        ucell_scores(X, {"d": (np.array([1, 999]), np.ones(2))})
    with pytest.raises(SignatureError, match="no genes"):
        ucell_scores(X, {"d": (np.array([], dtype=int), np.ones(0))})
    with pytest.raises(SignatureError, match="non-zero"):
        zmean_scores(X, {"d": (np.array([1, 2]), np.array([1.0, 0.0]))})
    with pytest.raises(SignatureError, match="mapping"):
        ucell_scores(X, [np.array([1, 2])])
    bad = X.copy()
    bad.data[3] = np.nan
    for f in (ucell_scores, aucell_scores, zmean_scores):
        with pytest.raises(DataError, match="NaN"):
            f(bad, {"a": (np.array([1, 2]), np.ones(2))})
    with pytest.raises(DataError, match="NaN"):
        ucell_scores(bad.toarray(), {"a": (np.array([1, 2]), np.ones(2))})


def test_list_methods_registry():
    df = list_methods()
    assert list(df.columns) == ["method", "description", "reference"]
    assert set(df["method"]) == {"ucell", "aucell", "scanpy", "zmean"}
    assert df["reference"].str.len().min() > 20


def test_64_bit_indptr_and_unsorted_rows_score_like_canonical_csr():
    """A CSR with a 64-bit indptr (> 2**31 values) is scored in place, as one with a
    32-bit indptr; a matrix with unsorted or duplicated indices is canonicalised first."""
    from cafclassify.scoring._chunks import _csr_is_canonical

    X = _lognorm_with_ties(seed=3)
    sets = {"a": (np.arange(5, 25), np.ones(20)), "b": (np.arange(40, 52), np.ones(12))}
    ref = {f: f(X, sets) for f in (ucell_scores, aucell_scores, zmean_scores)}
    wide = X.copy()
    wide.indptr = wide.indptr.astype(np.int64)  # indices stay int32, as anndata writes them
    assert _csr_is_canonical(wide.indptr, wide.indices)
    messy = X.copy()
    r = next(i for i in range(X.shape[0]) if X.indptr[i + 1] - X.indptr[i] > 2)
    a, b = messy.indptr[r], messy.indptr[r + 1]
    messy.indices[a:b] = messy.indices[a:b][::-1].copy()  # unsorted row, same matrix
    messy.data[a:b] = messy.data[a:b][::-1].copy()
    messy.has_sorted_indices = False
    assert not _csr_is_canonical(messy.indptr, messy.indices)
    for f, want in ref.items():
        np.testing.assert_array_equal(f(wide, sets), want)
        np.testing.assert_array_equal(f(messy, sets), want)  # canonicalised: the same matrix
