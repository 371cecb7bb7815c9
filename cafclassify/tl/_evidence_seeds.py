"""The seed rule on programme evidence: which fibroblasts teach each subtype, and which
subtypes a sample holds (steps 4-7 of the method; steps 1-3, the evidence ``E`` over the
neighbourhood and ``e`` in the cell alone, in :mod:`._evidence`).

Method
------
4. **Seeds.** A cell seeds subtype ``k`` when ``E_k >= z_alpha`` (one-sided
   ``alpha`` = 0.05, ``z`` = 1.645: the programme is expressed beyond random genes)
   and ``E_k - E_j >= sqrt(2) z_alpha`` for every other programme ``j`` (the
   difference of two null-standardised values has SD ``sqrt(2)``: the winner is
   ahead at the same alpha). These are fixed statistical conventions, not fitted.
5. **The cell agrees with its neighbourhood.** Seeds are the training labels of a
   classifier that reads each cell's *own* expression, so a seed must also carry its
   programme itself. The same evidence computed without averaging (``W = I``), ``e``,
   must point the same way as both comparisons of step 4: ``e_k >= 0`` (above random
   genes) and ``e_k >= e_j`` for the runner-up ``j``. Only the direction is asked, not
   significance: one shallow cell alone is rarely significant. The neighbourhood gives
   the power, the cell a veto; this is consensus filtering of noisy training labels
   (Brodley & Friedl 1999, *J Artif Intell Res* 11:131). Where the graph mixes
   subtypes (a full-length protocol, a small gene panel) a cell inherits its
   neighbours' programme and, unvetoed, teaches the model the wrong mapping. Measured
   (``benchmarks/bench_real.py`` chains, ARI, mean over ``random_state`` 0-2, without
   -> with the veto): breast sample 0.605 -> 0.639, synthetic full-length-like reads
   0.412 -> 0.567, 1,200-gene panel-like matrix 0.465 -> 0.504, synthetic control
   0.631 -> 0.653; costs: breast without the WU genes 0.586 -> 0.572, ~520 UMI cells
   0.244 -> 0.213. Asking the cell to rank ``k`` above *every* programme gained more
   on synthetic data but cost the real non-circular check (0.586 -> 0.538): with
   several absent programmes, a true seed's noisy profile often tops one of them
   (``docs/classifier.md``).
6. **Existence.** A programme with no population still wins in a few cells by
   chance. For every null draw ``r`` of set ``k`` the seed rule (4-5) is re-applied
   with ``E_kr`` and ``e_kr`` in place of ``E_k`` and ``e_k`` (the other programmes
   unchanged). Subtype ``k`` is *present* only when its seed count exceeds the
   ``1 - alpha / K`` quantile of those null counts over ``N_EXIST`` (200) draws, ``K``
   the number of subtype programmes (Bonferroni: 99.2 % for six; an observed count, not
   interpolated; more cells carry it than carry a random gene set of its size and
   expression), and at least
   ``min_required`` cells pass the neighbourhood rule (4) for it; otherwise it is
   reported absent with both counts and is not a class of the model. Why family-wise:
   which subtypes a sample holds is one answer made of ``K`` decisions, and a false
   "present" is the costly error (the class is learnt and takes cells). Each class at
   0.05 on its own called an absent apCAF present in a simulated sorted sample of
   4,000 CAFs (53 seeds against a 95th percentile of 50; 573 cells called) and a false
   apCAF class in the breast sample's 40-marker panel; 200 draws so that the quantile
   is not the single largest draw (with 50 it was, and it moved with ``random_state``).
   Measured in ``docs/classifier.md`` (Limits). A class that
   passes the null test but not the count is listed apart (``too_few_to_learn``): its
   population may exist but is too small, or its cells too shallow, to be learnt (thin
   data, ``docs/classifier.md``), and the report says so instead of calling it absent
   from the sample. A present class with fewer than ``min_required`` agreeing seeds (a
   population of a few dozen shallow cells, whose own profiles are mostly dropout) is
   topped up to ``min_required`` from its neighbourhood seeds, those whose own evidence
   comes closest to agreeing (largest ``min(e_k, e_k - e_j)``); the report counts them
   (``topped_up``).
7. **A population the graph does not single out.** The neighbourhood gives power only
   where the graph carries the programme. On a targeted panel a subtype measured by a
   handful of genes hardly shapes the PCA, so its cells' neighbourhoods are mostly
   other subtypes: on the benchmark's 306-gene panel the 35 planted apCAFs give 2
   neighbourhood seeds, while 21 cells pass the rule on their own. So for a class that
   is *too few to learn* (it passed the existence test of step 6, but fewer than
   ``min_required`` cells pass the neighbourhood rule), and only for such a class, the
   rule is read the other way round: a cell seeds ``k`` when the rule of step 4 holds
   on its own evidence ``e`` and its neighbourhood does not contradict it (``E_k >= 0``,
   the direction-only consensus of step 5 with the roles swapped). The class is learnt
   when more cells pass this way than pass for the null draws of ``k`` (95th
   percentile, the same rule) and, with its neighbourhood seeds, it has at least
   ``min_required`` seeds; the report lists it under ``learnt_from_cells_alone`` and
   the HTML report warns that it rests on fewer, noisier seeds. Why only then: applied
   to every class (the symmetric rule of ``docs/classifier.md``) per-cell passes of a
   500-cell population add a few wrong seeds to present classes and revive absent ones
   (sorted mouse data 0.619 -> 0.600, and 0.574 when absent classes may be revived),
   whereas a class that is already evidenced but too thin loses all its cells to other
   classes when it is not learnt. Measured (ARI, mean over ``random_state`` 0-2): six
   panel designs of 190-629 genes 0.235 / 0.364 / 0.444 / 0.446 / 0.540 / 0.392 ->
   0.269 / 0.435 / 0.444 / 0.492 / 0.583 / 0.493; every dataset without a too-few class
   is unchanged (``docs/classifier.md``).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from ._evidence import TAIL, Evidence

__all__ = ["evidence_seeds"]

#: conventions (not fitted to any dataset)
ALPHA = 0.05


def _rule(E: np.ndarray, z: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Winner and runner-up per cell, the winner's lead, and the neighbourhood rule (step 4)."""
    n, K = E.shape
    order = np.argsort(-E, axis=1, kind="stable")
    top = order[:, 0]
    second = order[:, 1] if K > 1 else np.full(n, -1)
    e1 = E[np.arange(n), top]
    e2 = E[np.arange(n), second] if K > 1 else np.full(n, -np.inf)
    ok = (e1 >= z) & (e1 - e2 >= np.sqrt(2.0) * z)
    return top, second, e1 - e2, ok


def _own_agreement(cell: np.ndarray, top: np.ndarray, second: np.ndarray) -> np.ndarray:
    """``min(e_k, e_k - e_j)`` for winner ``k`` and runner-up ``j`` of the neighbourhood rule.

    Non-negative when the cell alone points the same way on both of the rule's
    comparisons (step 5): ``k`` above random genes and above ``j``.
    """
    rows = np.arange(cell.shape[0])
    own = cell[rows, top]
    if cell.shape[1] < 2:
        return own
    return np.minimum(own, own - cell[rows, second])


def _capped(idx: np.ndarray, max_per_class: int | None, rng: np.random.Generator) -> np.ndarray:
    """At most ``max_per_class`` of the seeds ``idx``, drawn at random (sorted).

    The cap bounds the cost of training on a large dataset; it must not change *which*
    cells a class is learnt from. Keeping the seeds with the largest lead instead (the
    rule until 2026-12-07) trains on a tail that narrows as the dataset grows, and the
    model then misplaces the cells between the extremes. On the 1M-cell benchmark
    (150,074 fibroblasts, every class over 2,000 seeds) the top-2,000 cap gave ARI
    0.533 against the planted subtypes (31,174 cells called dCAF, 5,814 planted), a
    random 2,000 0.621 (16,619 dCAF); on a 60,000-cell simulation (9,036 fibroblasts,
    one class capped) 0.640 and 0.638."""
    if max_per_class is None or idx.size <= max_per_class:
        return idx
    return np.sort(rng.choice(idx, max_per_class, replace=False))


def evidence_seeds(ev: Evidence, classes: list[str], *, alpha: float = ALPHA,
                   max_per_class: int | None, min_required: int,
                   random_state: int = 0) -> tuple[np.ndarray, dict]:
    """Seed labels (object array, None = not a seed) and the report (module docstring 4-6).

    A class with more than ``max_per_class`` seeds keeps a random ``max_per_class`` of
    them (:func:`_capped`, drawn with ``random_state``).
    """
    rng = np.random.default_rng(random_state)
    z = float(stats.norm.isf(alpha))
    E, E_null, cell = ev.E, ev.E_null, ev.cell
    n = E.shape[0]
    if E.shape[1] == 0:  # no programme could be evidenced: nothing to seed
        top, ok = np.zeros(n, dtype=int), np.zeros(n, dtype=bool)
        own = np.zeros(n)
    else:
        top, second, _, ok = _rule(E, z)
        own = _own_agreement(cell, top, second)
    agree = ok & (own >= 0)
    labels = np.full(n, None, dtype=object)
    cand, hood, topped, seeds, null_thr, absent, absent_why = {}, {}, {}, {}, {}, [], {}
    unlearnt = []  # absent although more cells carry it than random sets: too few to learn
    n_null = E_null.shape[2]
    # the existence of every class is one family of decisions: Bonferroni over the classes
    q_exist = 1.0 - alpha / max(len(classes), 1)
    pct = f"{100 * q_exist:.1f} % quantile"
    for k, c in enumerate(classes):
        in_hood = np.flatnonzero(ok & (top == k))
        idx = np.flatnonzero(agree & (top == k))
        cand[c], hood[c], topped[c] = int(idx.size), int(in_hood.size), 0
        thr = _null_quantile(ev, k, z, q_exist)
        null_thr[c] = thr
        if idx.size <= thr or in_hood.size < min_required:
            absent.append(c)
            carry = "cell carries" if idx.size == 1 else "cells carry"
            if idx.size <= thr:
                absent_why[c] = (f"{idx.size} {carry} it, random gene sets of its size and expression "
                                 f"level reach {thr:.0f} ({pct})")
            else:
                unlearnt.append(c)
                absent_why[c] = (f"{idx.size} {carry} it, more than random gene sets of its size and "
                                 f"expression level ({thr:.0f}, {pct}), but only {in_hood.size} "
                                 f"pass{'es' if in_hood.size == 1 else ''} the neighbourhood rule, fewer than "
                                 f"the {min_required} a class needs to be learnt: it may be present, and its "
                                 "cells are called as other subtypes")
            seeds[c] = 0
            continue
        if idx.size < min_required:  # present but thin: top up by the cells' own agreement
            extra = np.setdiff1d(in_hood, idx)
            extra = extra[np.argsort(-own[extra], kind="stable")[: min_required - idx.size]]
            topped[c] = int(extra.size)
            idx = np.concatenate([idx, extra])
        idx = _capped(idx, max_per_class, rng)
        labels[idx] = c
        seeds[c] = int(idx.size)
    # step 7: a class too few to learn from its neighbourhoods may be learnt from its cells
    alone_report = {}
    for c in list(unlearnt):
        k = classes.index(c)
        idx, n_alone, q_alone = _cell_alone_seeds(ev, k, z, top, agree, labels, 1.0 - alpha)
        learnt = n_alone > q_alone and idx.size >= min_required
        alone_report[c] = {"n_cells_alone": n_alone, "null_q95": q_alone, "n_seeds": int(idx.size),
                           "learnt": bool(learnt)}
        if not learnt:
            absent_why[c] += (f"; {n_alone} pass{'es' if n_alone == 1 else ''} the rule in the cell alone "
                              "(random gene sets: "
                              f"{q_alone:.0f}, 95th percentile)")
            continue
        idx = _capped(idx, max_per_class, rng)
        labels[idx] = c
        seeds[c] = int(idx.size)
        unlearnt.remove(c)
        absent.remove(c)
        del absent_why[c]
    report = {
        "rule": (f"evidence against random gene sets (null-SD units, the null's mean and SD from "
                 f"{ev.null.get('n_moments', n_null)} random sets per programme, over the cell's kNN "
                 f"neighbourhood; each score read from the midpoint of its {TAIL:.0%} and {1 - TAIL:.0%} "
                 f"quantiles over fibroblasts); "
                 f"seed of k if E_k >= {z:.3f} (alpha {alpha}) and E_k - E_j >= {np.sqrt(2) * z:.3f} for "
                 f"every other j, and the cell's own evidence e agrees in sign (e_k >= 0, e_k >= e_j for the "
                 f"runner-up j); k present if its seeds exceed "
                 f"the {100 * q_exist:.1f} % quantile (1 - alpha / {len(classes)}, Bonferroni over the "
                 f"programmes) of seeds of {n_null} random sets and at least {min_required} cells "
                 f"pass the neighbourhood rule; a class present but with fewer is learnt from the cells that "
                 f"pass the rule on their own (their neighbourhood E_k >= 0) when more do than for random "
                 f"sets and it reaches {min_required} seeds; a class with more than the cap keeps "
                 f"a random subset of its seeds"),
        "seed_rule": "evidence", "alpha": float(alpha), "z": z, "margin": float(np.sqrt(2) * z),
        "max_seeds_per_class": -1 if max_per_class is None else int(max_per_class),
        "min_seeds_required": int(min_required),
        "candidate_counts": cand, "neighbourhood_counts": hood, "topped_up": topped,
        "existence_quantile": q_exist, "null_seed_threshold": null_thr, "seed_counts": seeds,
        "absent_classes": absent, "absent_reasons": absent_why, "too_few_to_learn": unlearnt,
        "learnt_from_cells_alone": alone_report,
        "n_fibroblasts": int(n), "n_seeds": int(sum(seeds.values())),
    }
    return labels, report


def _cell_alone_seeds(ev: Evidence, k: int, z: float, top: np.ndarray, agree: np.ndarray,
                      labels: np.ndarray, q: float) -> tuple[np.ndarray, int, float]:
    """Seeds of programme ``k`` from the rule read in each cell alone (module docstring, step 7).

    A cell passes when the rule of step 4 holds on its own evidence ``e`` (``e_k >= z``
    and ahead of every other programme by ``sqrt(2) z``) and its neighbourhood does not
    contradict it (``E_k >= 0``: the direction-only consensus of step 5, read the other
    way). The count is judged against the same rule applied to the null draws of ``k``.
    Returns the seeds (cells passing alone that are no other class's seed, with ``k``'s
    neighbourhood seeds), the count passing alone and the null's quantile ``q`` (95th
    percentile: the class has passed its existence test already).
    """
    alone = _alone_rule(ev.E, ev.cell, k, z)
    thr = _null_quantile(ev, k, z, q, alone=True)
    idx = np.flatnonzero((alone | (agree & (top == k))) & pd.isna(labels))
    return idx, int(alone.sum()), thr


def _alone_rule(E: np.ndarray, cell: np.ndarray, k: int, z: float) -> np.ndarray:
    """Cells passing the rule for ``k`` on their own evidence, neighbourhood not against (step 7)."""
    top, _, _, ok = _rule(cell, z)
    return ok & (top == k) & (E[:, k] >= 0)


def _null_quantile(ev: Evidence, k: int, z: float, q: float, *, alone: bool = False) -> float:
    """Quantile ``q``, over the kept null draws of set ``k``, of the number of cells that
    pass the rule for ``k`` when the draw replaces ``k`` (other programmes unchanged).

    The rule is the neighbourhood rule with the cell's agreement (steps 4-5), or with
    ``alone`` the rule read in the cell alone (step 7). Read as an observed count
    (numpy's ``method="higher"``), not interpolated between two counts: where most draws
    pass no cell and a few pass one, the interpolated percentile (0.55) let a single
    cell make a programme present.
    """
    return float(np.quantile(_null_counts(ev, k, z, alone=alone), q, method="higher"))


#: null draws compared at a time (bounds the float64 temporaries: cells x draws)
_DRAWS_AT_ONCE = 50


def _null_counts(ev: Evidence, k: int, z: float, *, alone: bool) -> np.ndarray:
    """Per kept null draw of ``k``, the cells that pass the rule for ``k`` with the draw in
    its place (:func:`_null_quantile`).

    The same counts as re-ranking every cell's programmes for every draw (:func:`_rule`),
    without the re-ranking: ``k`` passes only when it is ahead of the best *other*
    programme by the margin, and that programme (the first of the others in the rule's
    stable order, also the runner-up whose agreement step 5 reads) does not depend on
    the draw. Exactness against the re-ranking, ties included, is a unit test.
    """
    lead, veto = (ev.cell, ev.E) if alone else (ev.E, ev.cell)
    lead_null, veto_null = (ev.cell_null, ev.E_null) if alone else (ev.E_null, ev.cell_null)
    n, n_sets = lead.shape
    rows = np.arange(n)
    others = np.delete(np.arange(n_sets), k)
    if others.size:
        sub = lead[:, others]
        j = others[np.argmax(np.where(np.isnan(sub), -np.inf, sub), axis=1)]
        best_other, veto_other = lead[rows, j][:, None], veto[rows, j][:, None]
    else:
        best_other, veto_other = np.full((n, 1), -np.inf), None
    margin = np.sqrt(2.0) * z
    counts = np.empty(lead_null.shape[2])
    for r0 in range(0, counts.size, _DRAWS_AT_ONCE):
        r1 = min(r0 + _DRAWS_AT_ONCE, counts.size)
        x = lead_null[:, k, r0:r1].astype(np.float64)
        v = veto_null[:, k, r0:r1].astype(np.float64)
        ok = (x >= z) & (x - best_other >= margin)
        if alone or veto_other is None:  # step 7: E_k >= 0; one programme: e_k >= 0
            ok &= v >= 0
        else:  # step 5: min(e_k, e_k - e_j) >= 0 for the runner-up j
            ok &= np.minimum(v, v - veto_other) >= 0
        counts[r0:r1] = ok.sum(axis=0)
    return counts
