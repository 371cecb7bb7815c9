"""Stage 1 of the lineage gate: the cluster call and the cells' exceptions to it.

Every decision here is a comparison with fixed statistical conventions (``docs/gate.md``,
steps 4-6); nothing is fitted to a dataset.

* **Cluster call.** A lineage is *expressed* in a cluster when its mean score above the
  random-gene-set null is significant (one-sided z, alpha 0.05, Bonferroni over clusters
  x sets) and at least half a null SD (Cohen's "medium" effect). Among expressed lineages
  the cluster takes the one with the largest ``level x level / peak level``; the margin
  ``1 - E2 / E1`` says how far ahead it is. No lineage expressed: *ambiguous*.
* **Cells.** A cell takes its cluster's call (dropout cannot flip it) and leaves it only
  with its own evidence (alpha 0.01) for another lineage at twice the cluster lineage's
  evidence (once in a mixed cluster, margin < 0.5), *and* when its lineage scores are at
  least twice as likely under its own lineage's confident clusters (diagonal Gaussian).
* **Contested clusters.** A cluster's call speaks for its cells without evidence only when
  it is not, significantly, a minority among its cells with evidence (one-sided exact
  binomial test against one half, alpha 0.05). In a contested cluster those cells are
  left ``other`` for stage 2 (``_gate_refine``): when the shallowest cells of every
  lineage cluster together, one lineage can pass the cluster test while most of the
  cluster is something else.
* **Confidence.** The mean of the cell's share of the lineage evidence and the share of
  its cluster that does not contradict its label.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy import stats

logger = logging.getLogger(__name__)

# Statistical conventions (not fitted to any dataset):
_ALPHA_CLUSTER = 0.05  # family-wise error for "lineage expressed in cluster" (Bonferroni)
_MIN_EFFECT = 0.5  # cluster mean above null, in null SDs (Cohen's "medium" effect)
_ALPHA_CELL = 0.01  # per-cell "this cell expresses the set" (one-sided)
_OVERRIDE_RATIO = 2.0  # a cell leaves its cluster's call only with >= 2x the evidence
_MIXED_MARGIN = 0.5  # a cluster call with a smaller margin is not confident (as stage-2 seeds)
_MIN_REFERENCE = 10  # cells of confident clusters needed to describe a lineage (as stage-2 seeds)
_ALPHA_CONTESTED = 0.05  # "the call is a minority among the cluster's cells with evidence" (binomial)


def _reference_loglik(S: np.ndarray, codes: np.ndarray, cl_call: np.ndarray, margin: np.ndarray,
                      L: int) -> np.ndarray | None:
    """Log-likelihood of every cell's lineage scores under each lineage's reference cells.

    References are the cells of clusters called with margin >= ``_MIXED_MARGIN`` (the
    stage-2 seed convention); a lineage with fewer than ``_MIN_REFERENCE`` such cells has
    no reference (-inf column is not used: NaN). Diagonal Gaussian per lineage over all
    lineage scores, SD floored at 1e-3 (scores are UCell/AUCell values in [0, 1]).
    """
    ref_cl = (cl_call >= 0) & (margin >= _MIXED_MARGIN)
    lin = np.where(ref_cl[codes], cl_call[codes], -1)
    LL = np.full((S.shape[0], L), np.nan)
    for l_ in range(L):
        m = lin == l_
        if m.sum() < _MIN_REFERENCE:
            continue
        mu_l = S[m].mean(0)
        sd_l = np.maximum(S[m].std(0), 1e-3)
        LL[:, l_] = -0.5 * (((S - mu_l) / sd_l) ** 2).sum(1) - np.log(sd_l).sum()
    return LL if np.isfinite(LL).any() else None


def _decide(S: np.ndarray, mu: np.ndarray, sigma: np.ndarray, clusters: np.ndarray,
            labels: list[str]) -> dict[str, Any]:
    """Cluster-level lineage decision with per-cell exceptions (see module docs)."""
    n, L = S.shape
    codes, uniq = pd.factorize(pd.Series(clusters).astype(str), sort=True)
    n_cl = len(uniq)
    size = np.bincount(codes, minlength=n_cl).astype(float)
    onehot = sp.csr_matrix((np.ones(n), (codes, np.arange(n))), shape=(n_cl, n))
    D = S - mu  # score above random gene sets of the same size, per cell
    R = np.asarray(onehot @ S) / size[:, None]  # cluster mean score
    Dm = np.asarray(onehot @ D) / size[:, None]
    effect = Dm / sigma[None, :]
    z = effect * np.sqrt(size)[:, None]
    z_crit = stats.norm.isf(_ALPHA_CLUSTER / max(n_cl * L, 1))
    present = (z >= z_crit) & (effect >= _MIN_EFFECT)
    # peak level of each lineage over clusters where it is expressed (else over all)
    M = np.where(present.any(0), np.where(present, R, -np.inf).max(0), R.max(0))
    M = np.maximum(M, 1e-12)
    E = R**2 / M[None, :]  # level x (level / peak level) of the lineage
    Em = np.where(present, E, -np.inf)
    cl_call = np.where(present.any(1), Em.argmax(1), -1)
    E_sorted = np.sort(np.where(present, E, 0.0), axis=1)[:, ::-1]
    E_sorted = np.hstack([E_sorted, np.zeros((n_cl, 1))])  # a second column when L == 1
    margin = np.where(E_sorted[:, 0] > 0, 1 - E_sorted[:, 1] / np.maximum(E_sorted[:, 0], 1e-12), 0.0)
    margin = np.where(cl_call >= 0, margin, 0.0)

    # per-cell evidence: a cell counts as expressing set l only at alpha = 0.01
    z_cell = stats.norm.isf(_ALPHA_CELL)
    sig_cell = D >= z_cell * sigma[None, :]
    e = np.where(sig_cell, S**2 / M[None, :], 0.0)
    has = e.max(1) > 0
    own = np.where(has, e.argmax(1), -1)
    cc = cl_call[codes]
    # a cluster's call speaks for its cells without evidence only if it is not a minority
    # among its cells with evidence: a cluster of the shallowest cells of every lineage has
    # one significant set, but most of its cells with evidence name other lineages
    purity, contested = _evidence_purity(own, codes, cl_call)
    # a contested call is not confident: its cells' own evidence decides at ratio 1 and the
    # cluster does not describe its lineage for the likelihood check. (Stage 2 still seeds
    # from its cells whose own evidence names the call: they are evidence, not inheritance.)
    margin_eff = np.where(contested, 0.0, margin)
    final = cc.copy()
    rows = np.arange(n)
    e_cluster = np.where(cc >= 0, e[rows, np.maximum(cc, 0)], 0.0)
    # in a mixed cluster (two lineages expressed, margin < _MIXED_MARGIN: the cluster call is
    # not confident) a cell's own evidence for another lineage expressed in the cluster
    # decides at ratio 1; elsewhere it needs _OVERRIDE_RATIO (dropout must not flip a call)
    mixed = (cc >= 0) & (margin_eff[codes] < _MIXED_MARGIN)
    own_present = (own >= 0) & present[codes, np.maximum(own, 0)]
    ratio = np.where(mixed & own_present, 1.0, _OVERRIDE_RATIO)
    override = (cc >= 0) & (own >= 0) & (own != cc) & (e[rows, np.maximum(own, 0)] > ratio * e_cluster)
    # ... and the cell must also look like the cells of its own lineage more than like those
    # of its cluster's: likelihood of its lineage scores under each lineage's confident
    # clusters (specific markers weigh more than shared ones: a cell with pericyte genes
    # that fibroblasts never express is not a fibroblast because it also has collagens)
    LL = _reference_loglik(S, codes, cl_call, margin_eff, L)
    if LL is not None:
        both = override & np.isfinite(LL[rows, np.maximum(own, 0)]) & np.isfinite(LL[rows, np.maximum(cc, 0)])
        lr = LL[rows, np.maximum(own, 0)] - LL[rows, np.maximum(cc, 0)]
        override &= ~both | (lr >= np.log(_OVERRIDE_RATIO))
    final[override] = own[override]
    amb = cc < 0
    final[amb] = own[amb]  # -1 (no evidence) stays "other"
    # cells without evidence in a contested cluster: nothing supports any lineage for them
    unplaced = contested[codes] & (own < 0)
    final[unplaced] = -1

    # confidence = mean of (a) the cell's own evidence share for its lineage (0 for a
    # cell with no evidence of its own: its call rests on its cluster alone) and (b) the
    # share of its cluster that does not contradict it (cells with no evidence of their
    # own do not contradict). A cell the gate could not place ('other') has confidence
    # 0: nothing supports a lineage.
    tot = e.sum(1)
    placed = final >= 0
    share = e[rows, np.maximum(final, 0)] / np.maximum(tot, 1e-300)
    agree = np.zeros(n)
    for c in range(n_cl):
        m = codes == c
        own_m = own[m]
        for lab in np.unique(final[m]):
            sel = final[m] == lab
            agree[np.flatnonzero(m)[sel]] = 1.0 - np.mean((own_m >= 0) & (own_m != lab))
    conf = np.where(placed, np.clip(0.5 * share + 0.5 * agree, 0.0, 1.0), 0.0)

    lab_arr = np.array([*labels, "other"], dtype=object)
    table = pd.DataFrame({"cluster": uniq.astype(str), "size": size.astype(int),
                          "lineage": lab_arr[cl_call], "margin": margin})
    for j, name in enumerate(labels):
        table[f"mean_{name}"] = R[:, j]
        table[f"effect_{name}"] = effect[:, j]
    table["purity"] = np.array([(final[codes == c] == cl_call[c]).mean() if cl_call[c] >= 0 else np.nan
                                for c in range(n_cl)])
    table["evidence_purity"] = purity
    table["contested"] = contested
    return {"final": final, "conf": conf, "codes": codes, "uniq": uniq, "table": table,
            "cl_call": cl_call, "margin": margin, "override": override, "own": own,
            "present": present, "unplaced": unplaced}


def _evidence_purity(own: np.ndarray, codes: np.ndarray, cl_call: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Share of a cluster's cells with evidence whose evidence names the cluster's call.

    ``contested`` when that share is below one half at one-sided alpha
    ``_ALPHA_CONTESTED`` (exact binomial test against 0.5): the cells that carry evidence
    say, significantly, that most of the cluster is something else. A cluster with few
    cells with evidence is never contested (absence of evidence never moves a cell).
    Ambiguous clusters (call -1) get NaN and are not contested.
    """
    n_cl = cl_call.size
    ev = own >= 0
    n_ev = np.bincount(codes[ev], minlength=n_cl)
    n_agree = np.bincount(codes[ev & (own == cl_call[codes])], minlength=n_cl)
    called = (cl_call >= 0) & (n_ev > 0)
    purity = np.where(called, n_agree / np.maximum(n_ev, 1), np.nan)
    contested = called & (stats.binom.cdf(n_agree, n_ev, 0.5) < _ALPHA_CONTESTED)
    return purity, contested


def _contested_info(table: pd.DataFrame, unplaced: np.ndarray) -> dict[str, Any]:
    """``uns`` record of contested clusters (stage 1, before the compartment step)."""
    t = table[table["contested"]]
    info = {"clusters": [str(c) for c in t["cluster"]],
            "calls": [str(c) for c in t["lineage"]],
            "evidence_purity": [float(p) for p in t["evidence_purity"]],
            "n_unplaced_cells": int(unplaced.sum()),
            "rule": ("a cluster is contested when its call is significantly a minority among its "
                     f"cells with evidence (one-sided binomial against 0.5, alpha {_ALPHA_CONTESTED}); "
                     "its cells without evidence of their own are 'other' after stage 1")}
    if len(t):
        logger.info("Gate: %d contested cluster(s) (%s); %d cells without evidence left for stage 2.",
                    len(t), ", ".join(f"{c} called {lin} with evidence purity {p:.2f}" for c, lin, p in
                                      zip(info["clusters"], info["calls"], info["evidence_purity"],
                                          strict=True)), info["n_unplaced_cells"])
    return info
