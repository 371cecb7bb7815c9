"""Value-type detection: counts, log-normalised, scaled, linear/unknown, NaN."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from cafclassify._errors import DataError
from cafclassify.io import detect_value_type, value_type_details


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


def test_linear_normalised_is_unknown():
    X = _counts()
    cp10k = X / X.sum(1, keepdims=True) * 1e4  # not logged: non-integer, max >> 50
    d = value_type_details(cp10k)
    assert d["value_type"] == "unknown"
    assert "linear" in d["reason"]


def test_small_integer_noise_still_counts_but_fractions_are_not():
    X = _counts() + 1e-5 * (np.random.default_rng(1).random((300, 200)) > 0.5)
    assert detect_value_type(X) == "counts"
    assert detect_value_type(_counts() + 0.5) == "lognorm"  # max is small: < 50


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nan_inf_raise(bad):
    X = _lognorm(_counts())
    X[3, 5] = bad
    with pytest.raises(DataError, match="NaN|infinite"):
        detect_value_type(X)
    with pytest.raises(DataError):
        detect_value_type(sp.csr_matrix(X))


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
