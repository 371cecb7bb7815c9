"""Probability calibration and its diagnostics.

* :func:`fit_temperature` - temperature scaling (Guo et al. 2017): one scalar
  ``T`` that divides the logits, fitted by minimising the negative
  log-likelihood of out-of-fold logits. It never changes the arg-max label,
  only how confident the probabilities are.
* :class:`IsotonicCalibrator` - one-vs-rest isotonic regression per class on
  out-of-fold probabilities, renormalised to sum 1 (the scheme of scikit-learn's
  ``CalibratedClassifierCV(method="isotonic")``, stored as plain arrays so a
  saved model never needs pickled objects).
* :func:`expected_calibration_error` - top-label ECE with equal-width bins
  (15 by default) plus the reliability-curve data.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax, softmax

__all__ = [
    "IsotonicCalibrator",
    "expected_calibration_error",
    "fit_temperature",
    "softmax_with_temperature",
]


def softmax_with_temperature(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Row-wise softmax of ``logits / temperature``."""
    return softmax(np.asarray(logits, dtype=np.float64) / float(temperature), axis=1)


def fit_temperature(logits: np.ndarray, y: np.ndarray, *, bounds: tuple[float, float] = (0.05, 20.0)) -> float:
    """Fit one temperature by minimising the NLL of ``softmax(logits / T)``.

    Parameters
    ----------
    logits
        Out-of-fold logits, cells x classes.
    y
        Integer class index per row.
    bounds
        Search interval for ``T``.

    Returns
    -------
    The fitted temperature (1.0 if there is nothing to fit).
    """
    logits = np.asarray(logits, dtype=np.float64)
    y = np.asarray(y, dtype=np.int64)
    if logits.shape[0] == 0 or logits.shape[1] < 2:
        return 1.0
    rows = np.arange(y.size)

    def nll(log_t: float) -> float:
        return float(-log_softmax(logits / np.exp(log_t), axis=1)[rows, y].mean())

    res = minimize_scalar(nll, bounds=(np.log(bounds[0]), np.log(bounds[1])), method="bounded",
                          options={"xatol": 1e-4})
    return float(np.exp(res.x))


class IsotonicCalibrator:
    """One-vs-rest isotonic calibration stored as step-function arrays."""

    def __init__(self, x: list[np.ndarray] | None = None, y: list[np.ndarray] | None = None) -> None:
        self.x = x or []
        self.y = y or []

    def fit(self, proba: np.ndarray, labels: np.ndarray) -> IsotonicCalibrator:
        """Fit on out-of-fold probabilities ``proba`` (cells x classes) and integer ``labels``."""
        from sklearn.isotonic import IsotonicRegression

        self.x, self.y = [], []
        for k in range(proba.shape[1]):
            iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip")
            iso.fit(proba[:, k], (labels == k).astype(np.float64))
            self.x.append(np.asarray(iso.X_thresholds_, dtype=np.float64))
            self.y.append(np.asarray(iso.y_thresholds_, dtype=np.float64))
        return self

    def transform(self, proba: np.ndarray) -> np.ndarray:
        """Calibrated probabilities (rows sum to 1; rows that calibrate to all-zero keep the input)."""
        out = np.empty_like(proba, dtype=np.float64)
        for k in range(proba.shape[1]):
            out[:, k] = np.interp(proba[:, k], self.x[k], self.y[k])
        s = out.sum(axis=1, keepdims=True)
        bad = s[:, 0] <= 1e-12
        out[~bad] /= s[~bad]
        out[bad] = proba[bad]
        return out


def expected_calibration_error(
    proba: np.ndarray, y: np.ndarray, *, n_bins: int = 15
) -> tuple[float, dict[str, list]]:
    """Top-label expected calibration error with equal-width confidence bins.

    Parameters
    ----------
    proba
        Probabilities, cells x classes.
    y
        True class index per row (rows with ``y < 0`` are ignored).
    n_bins
        Number of equal-width bins on [0, 1].

    Returns
    -------
    ``(ece, reliability)`` where ``reliability`` has lists ``bin_centre``,
    ``accuracy``, ``confidence`` and ``count`` (one entry per non-empty bin).
    """
    proba = np.asarray(proba, dtype=np.float64)
    y = np.asarray(y)
    keep = y >= 0
    proba, y = proba[keep], y[keep]
    rel: dict[str, list] = {"bin_centre": [], "accuracy": [], "confidence": [], "count": []}
    if y.size == 0:
        return float("nan"), rel
    conf = proba.max(axis=1)
    correct = (proba.argmax(axis=1) == y).astype(np.float64)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    which = np.clip(np.digitize(conf, edges[1:-1], right=True), 0, n_bins - 1)
    ece = 0.0
    for b in range(n_bins):
        m = which == b
        n = int(m.sum())
        if n == 0:
            continue
        acc, cf = float(correct[m].mean()), float(conf[m].mean())
        ece += n / y.size * abs(acc - cf)
        rel["bin_centre"].append(float((edges[b] + edges[b + 1]) / 2))
        rel["accuracy"].append(acc)
        rel["confidence"].append(cf)
        rel["count"].append(n)
    return float(ece), rel
