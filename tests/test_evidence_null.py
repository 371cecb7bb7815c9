"""The evidence's null (cafclassify.tl._evidence_null): kernels, pooled moments, stability."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from cafclassify.tl._evidence import fibroblast_graph, programme_evidence
from cafclassify.tl._evidence_null import Moments, NullSampler, averaged, centred_scores


def _shallow(n=400, g=300, seed=0):
    """Poisson counts, log-normalised; programme A (genes 0-9) up in the first 40 % of cells."""
    rng = np.random.default_rng(seed)
    base = rng.gamma(2.0, 0.5, size=g)
    lam = np.tile(base, (n, 1))
    is_a = np.arange(n) < int(0.4 * n)
    lam[is_a, :10] *= 3.0
    counts = rng.poisson(lam)
    X = sp.csr_matrix(np.log1p(counts / counts.sum(1, keepdims=True) * 1e4))
    return X, is_a


def test_kernels_equal_the_dense_products():
    X, _ = _shallow()
    Xd = X.toarray()
    mean = Xd.mean(axis=0)
    rng = np.random.default_rng(1)
    cols = [(rng.choice(X.shape[1], 12, replace=False), rng.choice([-1.0, 1.0], 12)) for _ in range(7)]
    want = np.column_stack([(Xd[:, i] - mean[i]) @ w / np.abs(w).sum() for i, w in cols])
    np.testing.assert_allclose(centred_scores(X, mean, cols), want, rtol=1e-10, atol=1e-12)
    W = fibroblast_graph(X, random_state=0)
    B = rng.normal(size=(X.shape[0], 5))
    np.testing.assert_allclose(averaged(W, B), W.toarray() @ B, rtol=1e-10, atol=1e-12)


def test_moments_pooled_in_chunks_equal_those_of_all_draws():
    rng = np.random.default_rng(2)
    N = rng.normal(3.0, 2.0, size=(30, 2, 170))
    m = Moments(N[:, :, :50])
    for a, b in ((50, 100), (100, 150), (150, 170)):
        m.add(N[:, :, a:b])
    assert m.n == 170
    np.testing.assert_allclose(m.mean, N.mean(axis=2), rtol=1e-12)
    np.testing.assert_allclose(m.sd, N.std(axis=2), rtol=1e-10)


def test_the_first_draws_do_not_depend_on_how_many_follow():
    """The kept draws (existence test) are the first of the same stream."""
    X, _ = _shallow()
    mean = np.asarray(X.mean(axis=0)).ravel()
    sets = {"A": (np.arange(10), np.ones(10)), "B": (np.arange(10, 20), np.ones(10))}
    a = NullSampler(mean, sets, random_state=4).draw(50)
    b = NullSampler(mean, sets, random_state=4)
    first = b.draw(20) + b.draw(30)  # set by set within each call
    by_set = first[:20] + first[40:70], first[20:40] + first[70:]
    for got, want in zip(by_set[0] + by_set[1], a, strict=True):
        np.testing.assert_array_equal(got[0], want[0])


def test_more_null_draws_make_the_evidence_stable_across_random_state():
    """The draws are shared by every cell, so their Monte-Carlo error moves a set's
    evidence in every cell together; the moments of 500 draws move it about sqrt(10)
    times less between two ``random_state`` than those of 50 (measured here: the mean
    absolute change of E is 0.30 of the 50-draw change; the same moments for both would
    give 1)."""
    X, _ = _shallow()
    W = fibroblast_graph(X, random_state=0)
    sets = {"A": (np.arange(10), np.ones(10)), "B": (np.arange(10, 20), np.ones(10)),
            "C": (np.arange(20, 30), np.ones(10))}
    change = {}
    for n_moments in (50, 500):
        e0, e1 = (programme_evidence(X, W, sets, n_null=50, n_moments=n_moments, random_state=s)
                  for s in (0, 1))
        assert e0.null["n_moments"] == n_moments and e0.E_null.shape[2] == 50
        change[n_moments] = np.abs(e0.E - e1.E).mean()
    assert change[500] <= 0.45 * change[50], change
