"""Value-type detection: counts, log-normalised, scaled, linear/unknown, NaN."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from cafclassify._errors import DataError
from cafclassify.io import detect_value_type, value_type_details
from cafclassify.io._valuetype import log_scale_details


def _counts(n_cells=300, n_genes=200, seed=0):
    rng = np.random.default_rng(seed)
    mu = rng.gamma(0.3, 2.0, size=n_genes)
    lib = rng.lognormal(0, 0.4, size=(n_cells, 1))
    return rng.poisson(mu * lib).astype(np.float32)


def _lognorm(counts, target=1e4, log=np.log1p):
    tot = counts.sum(1, keepdims=True)
    tot[tot == 0] = 1
    return log(counts / tot * target).astype(np.float32)


@pytest.mark.parametrize("fmt", ["dense", "csr", "csc"])
def test_counts_detected_dense_and_sparse(fmt):
    X = _counts()
    X = {"dense": X, "csr": sp.csr_matrix(X), "csc": sp.csc_matrix(X)}[fmt]
    assert detect_value_type(X) == "counts"


def test_integer_dtype_counts():
    assert detect_value_type(_counts().astype(np.int32)) == "counts"


def test_lognorm_detected_and_base_guessed():
    X = sp.csr_matrix(_lognorm(_counts()))
    d = value_type_details(X)
    assert d["value_type"] == "lognorm"
    assert d["log_base_guess"] == "e"  # expm1 gives constant totals of 1e4
    X2 = _lognorm(_counts(), target=1e6, log=lambda v: np.log2(v + 1))  # log2(TPM+1)-like
    d2 = value_type_details(X2)
    assert d2["value_type"] == "lognorm"
    assert d2["log_base_guess"] == "2"


def test_scaled_detected_from_negative_values():
    L = _lognorm(_counts())
    Z = (L - L.mean(0)) / (L.std(0) + 1e-6)
    assert detect_value_type(Z) == "scaled"


def test_linear_normalised_detected_from_equal_totals_estimated_counts_unknown():
    X = _counts()
    cp10k = X / X.sum(1, keepdims=True) * 1e4  # not logged: non-integer, max >> 50
    d = value_type_details(cp10k)
    assert d["value_type"] == "linear"
    assert d["linear_total"] == pytest.approx(1e4)
    # a gene subset of them, or estimated counts (totals vary with depth): cannot be told
    rng = np.random.default_rng(1)
    est = X * rng.uniform(0.9, 1.1, size=X.shape) * 40
    d = value_type_details(est)
    assert d["value_type"] == "unknown"
    assert "estimated counts" in d["reason"]
    assert value_type_details(cp10k[:5])["value_type"] == "unknown"  # too few cells to tell


def test_fractions_of_the_cell_total_are_linear_not_log_values():
    """Values <= 50 are log values unless their own totals are equal in every cell and no
    log base makes them as equal: counts / cell total (fractions), or CP100."""
    X = _real_counts()
    for target in (1.0, 100.0):
        d = value_type_details(sp.csr_matrix(X / X.sum(1, keepdims=True) * target))
        assert d["value_type"] == "linear", target
        assert d["linear_total"] == pytest.approx(target)
    for log in (np.log1p, lambda v: np.log2(v + 1)):  # log values stay log values
        assert value_type_details(_lognorm(X, target=1e4, log=log))["value_type"] == "lognorm"


def _real_counts(n_cells=400, n_genes=3000, seed=0):
    """Counts with a realistic skew: a few genes take much of each cell's total."""
    rng = np.random.default_rng(seed)
    mu = rng.lognormal(-1.5, 1.6, size=n_genes)
    lib = rng.lognormal(0, 0.5, size=(n_cells, 1))
    return rng.poisson(mu / mu.sum() * 3000 * lib).astype(np.float32)


@pytest.mark.parametrize(("base", "target", "log"), [
    ("e", 1e4, np.log1p),
    ("e", 1e6, np.log1p),
    ("2", 1e6, lambda v: np.log2(v + 1)),
    ("2", 1e4, lambda v: np.log2(v + 1)),
    ("10", 1e4, lambda v: np.log10(v + 1)),
])
def test_log_scale_identified(base, target, log):
    X = _real_counts()
    s = log_scale_details(sp.csr_matrix(_lognorm(X, target=target, log=log)))
    assert s["base"] == base
    assert s["total"] == pytest.approx(target, rel=1e-3)
    assert s["spread"] < 1e-3
    others = [v for k, v in s["spread_by_base"].items() if k != base]
    assert min(others) > 0.01  # the wrong bases' totals vary with each cell's profile
    # genes removed after normalising (a tenth of each cell's total): still identified
    keep = np.arange(X.shape[1]) >= 300
    s = log_scale_details(_lognorm(X, target=target, log=log)[:, keep])
    assert s["base"] == base


def test_log_scale_not_identified_on_a_gene_subset_or_size_factors():
    X = _real_counts()
    L = _lognorm(X, target=1e6, log=lambda v: np.log2(v + 1))
    assert log_scale_details(L[:, :200])["base"] == "unknown"  # a small panel cut afterwards
    # scran-style size factors, which differ from the cells' totals (by ~30 % here)
    sf = X.sum(1, keepdims=True) * np.random.default_rng(2).lognormal(0, 0.3, (X.shape[0], 1))
    assert log_scale_details(np.log2(X / sf * sf.mean() + 1))["base"] == "unknown"


def test_all_zero_is_unknown_and_empty_raises():
    assert detect_value_type(sp.csr_matrix((10, 5))) == "unknown"
    with pytest.raises(DataError, match="empty"):
        detect_value_type(np.zeros((0, 5)))


def test_sampling_is_deterministic_and_covers_large_matrices():
    X = sp.random(20000, 50, density=0.05, format="csr", random_state=0)
    X.data = np.round(X.data * 10)
    X.eliminate_zeros()
    a = value_type_details(X, n_rows=500)
    b = value_type_details(X, n_rows=500)
    assert a == b
    assert a["n_rows_sampled"] == 500
    assert a["value_type"] == "counts"
