"""Class priors of the data at hand: EM re-weighting of the calibrated posteriors.

Why
---
The classifier is trained with balanced class weights (:mod:`._train`): its calibrated
probabilities are those of a world in which every subtype present is equally common.
That is the right way to *learn* from seeds (a rare subtype is not drowned by a common
one), but the wrong prior to *call* cells of a real tumour, where one subtype is often
most of the fibroblasts. Under a uniform prior, a cell of the majority population that
also carries part of another programme (mixed cells are common: dissociation stress,
transitions, doublets) goes to the minority class. Measured (``docs/classifier.md``):
on synthetic sorted mouse CAFs with 68 % vCAF the calls agreed with the planted truth
at ARI 0.50 under the uniform prior and 0.64 with the estimated one.

Method
------
Saerens, Latinne & Decaestecker (2002), *Neural Computation* 14:21, "Adjusting the
outputs of a classifier to new a priori probabilities: a simple procedure". With
posteriors ``p_i(k)`` computed under training priors ``t_k`` (here ``1/K``), the priors
``pi`` of the cells being classified are the fixed point of

    q_i(k) = p_i(k) pi_k / t_k  /  sum_j p_i(j) pi_j / t_j,        pi_k = mean_i q_i(k),

started at ``pi = t`` (EM for the mixing proportions with the class-conditional
likelihoods held fixed). The adjusted posteriors ``q`` are the calibrated probabilities
under the estimated composition; calls, confidences and ``unassigned`` are read from
them. Nothing is fitted to labels: the composition is estimated from the cells
themselves, so the same model applied to another sample adapts to that sample's mix.

The prior is estimated over all fibroblasts together (also with ``batch_key``: a pooled
estimate). ``prior="uniform"`` keeps the training prior (the behaviour before this
step). Convergence: 1,000 iterations at most, tolerance 1e-6 on ``pi``.
"""

from __future__ import annotations

import logging

import numpy as np

__all__ = ["PRIORS", "adjust_to_prior"]

logger = logging.getLogger(__name__)

PRIORS = ("estimate", "uniform")
MAX_ITER = 1000
TOL = 1e-6


def adjust_to_prior(proba: np.ndarray, *, train_prior: np.ndarray | None = None,
                    max_iter: int = MAX_ITER, tol: float = TOL) -> tuple[np.ndarray, np.ndarray, dict]:
    """Posteriors re-weighted to the class priors estimated on these cells (EM).

    Parameters
    ----------
    proba
        Cells x classes calibrated probabilities (rows sum to 1), computed under
        ``train_prior``. Rows with a NaN are ignored and returned unchanged.
    train_prior
        The classes' prior during training (default uniform: balanced class weights).
    max_iter, tol
        EM iterations and convergence tolerance on the priors.

    Returns
    -------
    ``(adjusted, prior, info)``: the adjusted probabilities, the estimated priors and a
    record (``iterations``, ``converged``).

    Examples
    --------
    >>> import numpy as np
    >>> p = np.array([[0.6, 0.4]] * 9 + [[0.2, 0.8]])
    >>> q, prior, _ = adjust_to_prior(p)
    >>> bool(prior[0] > 0.5) and bool((q[:9, 0] > 0.6).all())
    True
    """
    P = np.asarray(proba, dtype=np.float64)
    n, k = P.shape
    t = np.full(k, 1.0 / k) if train_prior is None else np.asarray(train_prior, dtype=np.float64)
    ok = np.isfinite(P).all(axis=1)
    out = P.copy()
    if k < 2 or not ok.any():
        return out, t.copy(), {"iterations": 0, "converged": True}
    Pk = np.clip(P[ok], 0.0, None)
    pi = t.copy()
    converged = False
    iterations = 0
    while iterations < max_iter and not converged:
        iterations += 1
        new = _reweight(Pk, pi, t).mean(axis=0)
        converged = bool(np.abs(new - pi).max() < tol)
        pi = new
    out[ok] = _reweight(Pk, pi, t)
    if not converged:
        logger.warning("class-prior EM did not converge in %d iterations (last change above %g)",
                       max_iter, tol)
    return out, pi, {"iterations": int(iterations), "converged": converged}


def _reweight(P: np.ndarray, pi: np.ndarray, t: np.ndarray) -> np.ndarray:
    """``q_i(k) = p_i(k) pi_k / t_k`` normalised over ``k`` (the E-step)."""
    Q = P * (pi / t)
    Q /= np.maximum(Q.sum(axis=1, keepdims=True), 1e-300)
    return Q
