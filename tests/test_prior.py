"""Class priors of the calls (cafclassify.tl._prior): EM re-weighting of calibrated posteriors."""

from __future__ import annotations

import re

import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import adjusted_rand_score

import cafclassify as caf
from cafclassify import _keys as K
from cafclassify._errors import ConfigError
from cafclassify.tl._prior import adjust_to_prior


def _uniform_prior_posteriors(prior, n=4000, shift=1.5, seed=0):
    """Two Gaussian classes (means 0 and ``shift``) drawn with ``prior``; the exact
    posteriors under a *uniform* prior, as a balanced classifier would give them."""
    rng = np.random.default_rng(seed)
    y = rng.choice(2, size=n, p=prior)
    x = rng.normal(np.where(y == 1, shift, 0.0), 1.0)
    lik = np.column_stack([stats.norm.pdf(x, 0.0, 1.0), stats.norm.pdf(x, shift, 1.0)])
    return lik / lik.sum(axis=1, keepdims=True), y


@pytest.mark.parametrize("prior", [(0.8, 0.2), (0.5, 0.5), (0.15, 0.85)])
def test_em_recovers_the_planted_prior_and_the_bayes_calls(prior):
    P, y = _uniform_prior_posteriors(prior)
    Q, pi, info = adjust_to_prior(P)
    assert info["converged"]
    assert pi == pytest.approx(prior, abs=0.04)
    np.testing.assert_allclose(Q.sum(axis=1), 1.0)
    acc_uniform = (P.argmax(1) == y).mean()
    acc_adjusted = (Q.argmax(1) == y).mean()
    if prior[0] != 0.5:  # a skewed composition: the adjusted calls are the better ones
        assert acc_adjusted > acc_uniform + 0.02
    else:
        assert abs(acc_adjusted - acc_uniform) < 0.01


def test_nan_rows_untouched_and_degenerate_inputs():
    P = np.array([[0.9, 0.1], [np.nan, np.nan], [0.2, 0.8]])
    Q, pi, _ = adjust_to_prior(P)
    assert np.isnan(Q[1]).all() and np.isfinite(Q[[0, 2]]).all()
    one = np.ones((5, 1))
    Q1, pi1, info = adjust_to_prior(one)
    np.testing.assert_array_equal(Q1, one)
    assert info["iterations"] == 0


def _chain(a):
    """The workflow's chain up to scores: qc (filtering), gate, score."""
    caf.qc(a)
    a = a[a.obs["qc_pass"].to_numpy()].copy()
    caf.gate(a)
    caf.score(a, "caf_v1", on_low_coverage="keep")
    return a


@pytest.fixture(scope="module")
def sorted_mouse():
    """Sorted mouse CAFs, 68 % vCAF (as the study that named vCAFs), classified under both priors."""
    fr = {"vCAF": 0.68, "iCAF": 0.17, "myCAF": 0.1, "dCAF": 0.05, "apCAF": 0.0, "meCAF": 0.0}
    a = _chain(caf.simulate(800, n_genes=8000, species="mouse", lineage_fractions={"fibroblast": 1.0},
                            subtype_fractions=fr, random_state=3))
    return a, caf.classify(a, copy=True, random_state=0), caf.classify(a, copy=True, random_state=0,
                                                                        prior="uniform")


def test_majority_population_keeps_its_mixed_cells(sorted_mouse):
    """A quarter of the cells also carry part of another programme. Under the uniform
    training prior those mixed cells of the majority go to minority classes; with the
    estimated prior they stay."""
    a, est, uni = sorted_mouse
    truth = a.obs["true_subtype"].astype(str).to_numpy()
    ari = {name: adjusted_rand_score(truth, b.obs[K.OBS_SUBTYPE].astype(str).to_numpy())
           for name, b in (("estimate", est), ("uniform", uni))}
    # measured: 0.656 against 0.537
    assert ari["estimate"] > ari["uniform"] + 0.05, ari
    rec = est.uns[K.UNS][K.UNS_CLASSIFY]["prior"]
    assert rec["converged"] and rec["prior"]["vCAF"] == max(rec["prior"].values())
    assert est.uns[K.UNS][K.UNS_CLASSIFY]["params"]["prior"] == "estimate"
    assert uni.uns[K.UNS][K.UNS_CLASSIFY]["prior"]["method"].startswith("uniform")
    fib = (est.obs[K.OBS_LINEAGE] == "fibroblast").to_numpy()
    np.testing.assert_allclose(est.obsm[K.OBSM_SUBTYPE_PROBA].to_numpy()[fib].sum(axis=1), 1.0)
    with pytest.raises(ConfigError, match="prior"):
        caf.classify(a, copy=True, prior="empirical")


def test_report_states_the_prior(sorted_mouse, tmp_path):
    from cafclassify.report import write_report

    est = sorted_mouse[1]
    html = write_report(est, tmp_path / "r.html").read_text(encoding="utf-8")
    m = re.search(r'<p data-key="prior">([^<]*)</p>', html)
    assert m, "the report does not state the class prior of the calls"
    pi = est.uns[K.UNS][K.UNS_CLASSIFY]["prior"]["prior"]
    assert "EM" in m.group(1) and f"vCAF {pi['vCAF']:.1%}" in m.group(1)


def test_saved_model_adapts_to_another_samples_composition():
    """A model trained on one sample, applied to another where one subtype is 70 % and two
    are absent: EM moves prior mass away from the absent subtypes and the estimated prior calls
    fewer cells into them (measured: 2 against 28). Whether ARI gains depends on how well
    the model transfers (-0.07 to +0.01 over four source samples, docs/classifier.md): not
    asserted."""
    def chain(**kw):
        return _chain(caf.simulate(3000, n_genes=3000, **kw))

    model = caf.train(chain(random_state=11), random_state=0)
    assert {"apCAF", "dCAF"} <= set(model.classes)
    fr = {"myCAF": 0.7, "iCAF": 0.15, "apCAF": 0.0, "meCAF": 0.1, "vCAF": 0.05, "dCAF": 0.0}
    target = chain(random_state=5, subtype_fractions=fr)
    truth = target.obs["true_subtype"].astype(str).to_numpy()
    m = truth != "none"
    res, prior = {}, None
    for kind in ("uniform", "estimate"):
        b = caf.classify(target, model, copy=True, prior=kind)
        calls = b.obs[K.OBS_SUBTYPE].astype(str).to_numpy()
        res[kind] = int(np.isin(calls[m], ["apCAF", "dCAF"]).sum())
        if kind == "estimate":
            prior = b.uns[K.UNS]["classify"]["prior"]["prior"]
    assert res["estimate"] < res["uniform"], res
    assert prior["apCAF"] + prior["dCAF"] < 0.5 * 2 / len(prior), prior  # uniform: 2/6
