"""Separate axes that never compete with the subtype: LTBP2+ CAFs and state flags.

* LTBP2+: the evidence for an LTBP2+ CAF rests on ONE seed gene (LTBP2). The call
  is therefore based on LTBP2 expression itself: a two-component Gaussian mixture
  on log-expression of LTBP2-detected fibroblasts; a cell is positive when its
  posterior for the high component is >= 0.5, or >= 0.25 with support from the
  (largely inferred) LTBP2_CAF module (robust z >= 1). ``ltbp2_score`` is the
  z-score of LTBP2 expression among fibroblasts. This caveat is written to uns.
* Senescent / cycling: the state score's robust z, against the fibroblasts' median and
  MAD, >= ``state_z`` (default 2.5), for fibroblasts and mural cells (cycling is a
  state: a cycling pericyte keeps its compartment and gets the flag).

Neither axis reads the subtype model, so both are written whether the classifier was
trained or skipped (:mod:`._insufficient`): a sorted sample with one learnable subtype
still gets its LTBP2+ and state flags.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from .. import _keys as K
from .._errors import DataError
from ._fibroblasts import (
    _PREDICT_CHUNK,
    AXIS_SETS,
    STATE_SETS,
    _lognorm,
    _matrix,
    _robust_z,
    _rows_csr,
    _symbols,
    _value_type,
)
from ._seeds import _get_scores

logger = logging.getLogger(__name__)


_LTBP2_CAVEAT = (
    "LTBP2+ CAF calls rest on ONE seed gene (LTBP2; Zhan et al. 2025, ESCC). The call is based on "
    "LTBP2 expression itself (two-component mixture among LTBP2-detected fibroblasts); the "
    "LTBP2_CAF module beyond LTBP2 is largely inferred and only supports borderline cells. "
    "Treat LTBP2+ calls as a hypothesis to confirm (protein, spatial or an ESCC reference)."
)


AXIS_KEYS = (K.OBS_LTBP2, K.OBS_LTBP2_SCORE, K.OBS_SENESCENT, K.OBS_CYCLING)


def separate_axes(adata, fib: np.ndarray, mural: np.ndarray, *, score_key: str, signatures, layer: str | None,
                  state_z: float, random_state: int) -> tuple[dict, dict]:
    """Write the LTBP2+ axis (fibroblasts) and the state flags (fibroblasts and ``mural``
    cells) to ``obs``; return their records for ``uns`` (``ltbp2``, ``state_flags``).

    ``fib`` and ``mural`` are boolean masks over the cells. The scores of the axis and state
    sets are read from ``obsm[score_key]`` (computed on these cells when missing); when
    they cannot be had, the flags are False and the record says why.
    """
    stroma = fib | mural
    try:
        axis_scores, axis_src = _get_scores(adata, stroma, score_key=score_key, signatures=signatures,
                                            layer=layer, needed=[*AXIS_SETS, *STATE_SETS],
                                            random_state=random_state)
    except (DataError, ImportError, KeyError) as exc:
        logger.warning("state/LTBP2 scores unavailable (%s); flags will be False.", exc)
        axis_scores, axis_src = pd.DataFrame(index=adata.obs_names[stroma]), "unavailable"
    fib_in_stroma = fib[stroma]
    module = axis_scores["LTBP2_CAF"][fib_in_stroma] if "LTBP2_CAF" in axis_scores else None
    lt_pos, lt_score, lt_info = _ltbp2_axis(adata, np.flatnonzero(fib), layer, module, random_state)
    adata.obs[K.OBS_LTBP2] = lt_pos
    adata.obs[K.OBS_LTBP2_SCORE] = lt_score
    flags_info = _state_flags(adata, axis_scores, stroma, fib_in_stroma, state_z)
    flags_info["score_source"] = axis_src
    return lt_info, flags_info


def _ltbp2_axis(adata, fib_rows, layer, module_scores: pd.Series | None, random_state: int):
    from sklearn.mixture import GaussianMixture

    sym = _symbols(adata)
    hit = np.flatnonzero(np.isin(sym, ["LTBP2", "Ltbp2"]))
    n = adata.n_obs
    pos = np.zeros(n, dtype=bool)
    score = np.full(n, np.nan)
    info: dict = {"caveat": _LTBP2_CAVEAT}
    if hit.size == 0:
        logger.warning("LTBP2 is not among the genes: ltbp2_positive is False for all cells.")
        info.update({"status": "LTBP2 not measured", "n_positive": 0})
        return pos, score, info
    X = _matrix(adata, layer)
    counts = _value_type(X) == "counts"
    x = np.zeros(fib_rows.size)
    for start in range(0, fib_rows.size, _PREDICT_CHUNK):
        r = fib_rows[start:start + _PREDICT_CHUNK]
        x[start:start + r.size] = _lognorm(_rows_csr(X, r), counts)[:, hit[0]].toarray().ravel()
    sdv = x.std()
    score[fib_rows] = (x - x.mean()) / (sdv if sdv > 0 else 1.0)
    det = x > 0
    post = np.zeros(fib_rows.size)
    rule = "none"
    if det.sum() >= 20:
        gm = GaussianMixture(2, random_state=random_state).fit(x[det, None])
        means = gm.means_.ravel()
        hi = int(np.argmax(means))
        if means[hi] - means[1 - hi] >= 0.5:
            post[det] = gm.predict_proba(x[det, None])[:, hi]
            rule = "gmm"
            info["gmm_means"] = means.tolist()
            info["gmm_weights"] = gm.weights_.ravel().tolist()
    if rule == "none" and det.any():
        xd = x[det]
        med = np.median(xd)
        thr = med + 2 * 1.4826 * np.median(np.abs(xd - med))
        post = (x > thr).astype(float)
        rule = "threshold"
        info["threshold"] = float(thr)
    support = np.zeros(fib_rows.size, dtype=bool)
    if module_scores is not None:
        support = _robust_z(module_scores.to_numpy()) >= 1.0
    call = det & ((post >= 0.5) | ((post >= 0.25) & support))
    pos[fib_rows] = call
    info.update({
        "status": "called", "rule": rule,
        "description": ("positive if LTBP2 detected and posterior of the LTBP2-high mixture "
                        "component >= 0.5, or >= 0.25 with LTBP2_CAF module robust z >= 1"),
        "n_positive": int(call.sum()), "fraction_of_fibroblasts": float(call.mean()) if call.size else 0.0,
        "module_available": module_scores is not None,
        "module_support_fraction": float(support[call].mean()) if call.any() else 0.0,
    })
    return pos, score, info


def _state_flags(adata, axis_scores: pd.DataFrame, stroma: np.ndarray, fib_in_stroma: np.ndarray,
                 state_z: float) -> dict:
    """``obs["senescent_flag"]``, ``obs["cycling_flag"]`` for the ``stroma`` cells (robust z
    against the fibroblasts' median/MAD >= ``state_z``); returns the record for ``uns``."""
    info: dict = {}
    for st, key in (("senescence", K.OBS_SENESCENT), ("cycling", K.OBS_CYCLING)):
        flag = np.zeros(adata.n_obs, dtype=bool)
        if st in axis_scores:
            flag[stroma] = _robust_z(axis_scores[st].to_numpy(), ref=fib_in_stroma) >= state_z
            info[st] = {"status": "called", "n_flagged": int(flag.sum())}
        else:
            logger.warning("no %r score: %s is False for all cells.", st, key)
            info[st] = {"status": "score unavailable", "n_flagged": 0}
        adata.obs[key] = flag
    info["rule"] = (f"flag if the state score's robust z (median/MAD of the fibroblasts of "
                    f"this dataset) >= {state_z}, for fibroblasts and mural cells; relative, so "
                    "a dataset has its top tail flagged only if it stands out by this much")
    return info
