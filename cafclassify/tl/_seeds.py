"""Weak labels (seeds): the fibroblasts the classifier is trained on.

The classifier never sees author labels. It is trained on *weak labels*: fibroblasts
whose programmes point clearly at one subtype.

Default rule (``seed_rule="evidence"``): programme evidence against random gene sets,
read within each cell and its kNN neighbourhood, after a per-dataset audit of every
set gene; a subtype is present only when more cells carry it than carry random gene sets
of its size and expression. The method, its conventions and why it replaced the first
rule are in :mod:`cafclassify.tl._evidence`. Its classes are the subtype sets the score
step kept (those with their library ``min_coverage`` of genes in the data); when fewer
than two were kept (a targeted panel), every subtype set with two or more genes in the
data is read instead and reported as resting on part of its list
(:func:`_partial_sets`).

First rule (``seed_rule="zscore"``, kept to compare with): each subtype score is
standardised across fibroblasts (``z = (s - mean) / SD``, or median/MAD with
``z_method="robust"``); a cell seeds subtype *k* when ``z_k >= z_min`` (1.0) and
``z_k - z_runner_up >= margin`` (1.0). A population that is most of the fibroblasts
sits near the mean of its own score and never qualifies, and every subtype has a top
tail whether it exists or not: measured on a real sorted mouse CAF dataset, 485 author
vCAFs gave 9 seeds, and ARI with the authors was 0.27 against 0.69 for a marker argmax.

Both rules cap seeds per class (``max_seeds_per_class``; the evidence rule keeps a random
subset, drawn with ``random_state``, the z-score rule the largest margins) and report
a subtype with fewer than ``max(min_seeds, min_per_fold * cv)`` seeds as ABSENT (WARNING
log and ``uns``): it is not a class of the model. The default minimum is 10, two seeds per
cross-validation fold (the lineage gate's stage-2 convention): it is what training and
5-fold calibration need, while *whether a population exists* is the evidence rule's null
test. A minimum of 15 made existence a coin toss for real populations of about 20 cells
(synthetic control, 17 dCAFs: 14 or 15 seeds depending on ``random_state``, so dCAF was
present at one seed and absent at another, macro-F1 0.87 vs 0.74), with seed counts far
above their null (95th percentile 2.5-4.7).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from .. import _keys as K
from .._errors import ConfigError, DataError
from ._fibroblasts import (
    AXIS_SETS,
    _fibroblast_lognorm,
    _fibroblast_mask,
    _load_library,
    _robust_z,
    _std_z,
    _symbols,
    _uns_safe,
)

if TYPE_CHECKING:
    from anndata import AnnData

logger = logging.getLogger(__name__)

#: a class needs max(MIN_SEEDS, MIN_PER_FOLD * cv) seeds (two per CV fold; module docstring)
MIN_SEEDS = 10
MIN_PER_FOLD = 2


def _subtype_classes(library, score_columns: Sequence[str], classes: Sequence[str] | None) -> list[str]:
    if classes is not None:
        missing = [c for c in classes if c not in score_columns]
        if missing:
            raise DataError(f"classes {missing} have no score column.", path="obsm scores",
                            fix="score these sets first or drop them from classes.")
        return list(classes)
    return [n for n in _subtype_set_names(library) if n in score_columns]


def _subtype_set_names(library) -> list[str]:
    """The library's subtype sets that are classes (the LTBP2/state axes are not)."""
    return [n for n, gs in library.sets.items() if gs.group == "subtype" and n not in AXIS_SETS]


def _partial_sets(adata, library, scored: list[str]) -> tuple[list[str], dict | None]:
    """Every subtype set the data measure at all, when fewer than two were scored.

    The score step leaves out a set with less than its library ``min_coverage`` of its
    genes in the data (0.5 for the subtype sets of ``caf_v1``): on a targeted panel that
    can leave one subtype set or none, and a classification needs two. Rather than
    calling no cell, the seed rule then reads every subtype set with at least two genes
    in the data (the evidence rule needs two; its gene audit and existence test still
    apply), and the report says that these classes rest on part of their lists
    (``weak_labels["partial_sets"]``): on real cells a set cut to a few genes can mark
    another cell state than the whole list (``docs/classifier.md``, thin data).
    """
    from ..genesets import match_signatures

    names = _subtype_set_names(library)
    matched = match_signatures(library.subset(names=names), adata, min_coverage=0.0, on_low_coverage="keep")
    usable = [n for n in names if n in matched and len(matched[n].indices) >= 2]
    if len(usable) < 2:
        return scored, None
    info = {n: {"n_found": int(len(matched[n].indices)), "n_genes": int(matched[n].n_genes),
                "coverage": float(matched[n].coverage),
                "min_coverage": float(library.sets[n].min_coverage)} for n in usable}
    logger.warning("fewer than two subtype sets reach their library coverage (scored: %s); the seed rule "
                   "reads every subtype set with two or more genes in the data instead (%s): calls rest "
                   "on part of each list", scored or "none",
                   ", ".join(f"{n} {v['n_found']}/{v['n_genes']}" for n, v in info.items()))
    return usable, info


def _get_scores(adata: AnnData, fib: np.ndarray, *, score_key: str, signatures, layer,
                needed: Sequence[str], random_state: int) -> tuple[pd.DataFrame, str]:
    """Scores of the fibroblasts for the ``needed`` sets (reuse obsm, else UCell on fibroblasts)."""
    if score_key in adata.obsm:
        df = adata.obsm[score_key]
        if not isinstance(df, pd.DataFrame):
            raise DataError(f"obsm[{score_key!r}] is not a DataFrame with set names as columns.",
                            path=f"obsm[{score_key!r}]", fix="re-run cafclassify.score.")
        have = [c for c in needed if c in df.columns]
        if have:
            return df.loc[adata.obs_names[fib], have].astype(np.float64), f"obsm[{score_key!r}]"
    from ..scoring import score

    sub = adata[fib].copy()
    score(sub, signatures, method="ucell", layer=layer, key_added="_caf_tmp", random_state=random_state)
    df = sub.obsm["_caf_tmp"]
    have = [c for c in needed if c in df.columns]
    return df[have].astype(np.float64), "ucell computed on fibroblasts (obsm score_key absent)"


def _select_seeds(scores: pd.DataFrame, *, z_min: float, margin: float, max_per_class: int | None,
                  min_required: int, z_method: str = "std") -> tuple[np.ndarray, dict]:
    """Apply the seed rule; return labels (object array, None = not a seed) and a report."""
    classes = list(scores.columns)
    z = (_std_z if z_method == "std" else _robust_z)(scores.to_numpy())
    n = z.shape[0]
    order = np.argsort(-z, axis=1, kind="stable")
    top = order[:, 0]
    z1 = z[np.arange(n), top]
    z2 = z[np.arange(n), order[:, 1]] if z.shape[1] > 1 else np.full(n, -np.inf)
    gap = z1 - z2
    ok = (z1 >= z_min) & (gap >= margin)
    labels = np.full(n, None, dtype=object)
    cand_counts, seed_counts, absent = {}, {}, []
    for k, c in enumerate(classes):
        idx = np.flatnonzero(ok & (top == k))
        cand_counts[c] = int(idx.size)
        if max_per_class is not None and idx.size > max_per_class:
            idx = idx[np.argsort(-gap[idx], kind="stable")[:max_per_class]]
        if idx.size < min_required:
            absent.append(c)
            seed_counts[c] = 0
            continue
        labels[idx] = c
        seed_counts[c] = int(idx.size)
    report = {
        "rule": (f"{'z-score (mean/SD)' if z_method == 'std' else 'robust z (median/MAD)'} across "
                 f"fibroblasts of each subtype score; seed of k if "
                 f"z_k >= {z_min} and z_k - runner-up >= {margin}; at most {max_per_class} per class "
                 f"(largest margin); classes with < {min_required} seeds are absent"),
        "z_method": z_method, "z_min": float(z_min), "margin": float(margin),
        "max_seeds_per_class": -1 if max_per_class is None else int(max_per_class),
        "min_seeds_required": int(min_required),
        "candidate_counts": cand_counts, "seed_counts": seed_counts, "absent_classes": absent,
        "n_fibroblasts": int(n), "n_seeds": int(sum(seed_counts.values())),
    }
    return labels, report


def weak_labels(
    adata: AnnData,
    *,
    signatures="caf_v1",
    score_key: str = K.OBSM_SCORES,
    lineage_key: str = K.OBS_LINEAGE,
    layer: str | None = None,
    classes: Sequence[str] | None = None,
    z_min: float = 1.0,
    margin: float = 1.0,
    z_method: str = "std",
    seed_rule: str = "evidence",
    max_seeds_per_class: int | None = 2000,
    min_seeds: int = MIN_SEEDS,
    min_per_fold: int = MIN_PER_FOLD,
    cv: int = 5,
    key_added: str = K.OBS_SEED,
    random_state: int = 0,
    copy: bool = False,
) -> AnnData | None:
    """Select confident seed cells per subtype from signature scores (see module docstring).

    Parameters
    ----------
    adata
        Data with ``obs[lineage_key]`` (from :func:`cafclassify.gate`) and,
        ideally, ``obsm[score_key]``; missing scores are computed with UCell on
        the fibroblasts.
    signatures, score_key, lineage_key, layer
        Signature library, scores, gate labels and expression layer.
    classes
        Subtype sets to use (default: the library's subtype sets except LTBP2_CAF).
    seed_rule
        ``"evidence"`` (default): programme evidence against random gene sets, read within
        each cell (see :mod:`cafclassify.tl._evidence`); ``"zscore"``: the first rule,
        z-scores across fibroblasts (kept to compare with; ``z_min``, ``margin`` and
        ``z_method`` apply to it only).
    z_min, margin
        Thresholds of the ``"zscore"`` rule.
    z_method
        ``"std"`` (mean/SD) or ``"robust"`` (median/MAD) standardisation (``"zscore"`` rule).
    max_seeds_per_class
        Cap per class (a random subset under the evidence rule, the largest margins under
        the z-score rule); ``None`` for no cap.
    min_seeds, min_per_fold, cv
        A class needs ``max(min_seeds, min_per_fold * cv)`` seeds, else it is absent.
        Under the evidence rule, when only one class reaches that and others passed the
        existence test with fewer, the seeds are read again with a minimum of ``cv``, as
        :func:`cafclassify.tl.classify` trains (``report["few_seed_fallback"]``), so these
        are the seeds a classifier would be trained on.
    key_added
        obs column for the seed labels.
    random_state
        Seed (used only when scores must be computed).
    copy
        Return a modified copy instead of writing in place.

    Returns
    -------
    ``None`` (or a copy if ``copy=True``) with

    ``obs[key_added]``
        categorical seed label, NaN for non-seeds.
    ``uns["cafclassify"]["classify"]["weak_labels"]``
        the rule, its parameters, candidate/seed counts and absent classes.
    """
    adata = adata.copy() if copy else adata
    labels_full, report = _weak_labels_impl(
        adata, signatures=signatures, score_key=score_key, lineage_key=lineage_key, layer=layer,
        classes=classes, z_min=z_min, margin=margin, max_seeds_per_class=max_seeds_per_class,
        min_required=max(int(min_seeds), int(min_per_fold) * int(cv)), random_state=random_state,
        z_method=z_method, seed_rule=seed_rule, fallback_min_required=int(cv),  # as train
    )[:2]
    _write_seeds(adata, labels_full, report, key_added)
    return adata if copy else None


def _weak_labels_impl(adata, *, signatures, score_key, lineage_key, layer, classes, z_min, margin,
                      max_seeds_per_class, min_required, random_state, z_method="std",
                      seed_rule="evidence", fallback_min_required: int | None = None):
    fib, gated = _fibroblast_mask(adata, lineage_key)
    if fib.sum() == 0:
        raise DataError("no cells are labelled 'fibroblast', so there is nothing to classify.",
                        path=f"obs[{lineage_key!r}]",
                        fix="check the gate (cafclassify.gate) or pass pre-gated fibroblasts.")
    library = _load_library(signatures)
    needed_all = list(library.sets)
    scores, source = _get_scores(adata, fib, score_key=score_key, signatures=signatures, layer=layer,
                                 needed=needed_all, random_state=random_state)
    cls = _subtype_classes(library, list(scores.columns), classes)
    partial = None
    if len(cls) < 2 and classes is None and seed_rule == "evidence":
        cls, partial = _partial_sets(adata, library, cls)
    if len(cls) < 2:
        raise DataError(f"fewer than two subtype scores are available ({cls}).",
                        path=f"obsm[{score_key!r}]",
                        fix="score the subtype sets (cafclassify.score) with enough gene coverage.")
    if z_method not in ("std", "robust"):
        raise ConfigError(f"z_method must be 'std' or 'robust', got {z_method!r}.", fix="pass 'std' (default).")
    if seed_rule not in ("evidence", "zscore"):
        raise ConfigError(f"seed_rule must be 'evidence' or 'zscore', got {seed_rule!r}.",
                          fix="pass seed_rule='evidence' (default).")
    extras: dict = {}
    if seed_rule == "evidence":
        labels, report, extras = _evidence_seeds(adata, fib, library, cls, layer=layer,
                                                 max_per_class=max_seeds_per_class,
                                                 min_required=min_required, random_state=random_state,
                                                 fallback_min_required=fallback_min_required)
        if partial is not None:
            report["partial_sets"] = partial
    else:
        labels, report = _select_seeds(scores[cls], z_min=z_min, margin=margin,
                                       max_per_class=max_seeds_per_class, min_required=min_required,
                                       z_method=z_method)
        report["seed_rule"] = "zscore"
    report["score_source"] = source
    report["gated"] = bool(gated)
    unlearnt = set(report.get("too_few_to_learn", []))
    for c in report["absent_classes"]:
        why = report.get("absent_reasons", {}).get(
            c, f"only {report['candidate_counts'][c]} confident seed cells (need {min_required})")
        logger.warning("subtype %s %s: %s. It is not a class of the model and will never be called.",
                       c, "cannot be learnt" if c in unlearnt else "is ABSENT", why)
    full = np.full(adata.n_obs, None, dtype=object)
    full[np.flatnonzero(fib)] = labels
    return full, report, fib, scores, library, cls, extras


def _evidence_seeds(adata, fib, library, cls, *, layer, max_per_class, min_required, random_state,
                    fallback_min_required=None):
    """Seeds from programme evidence against random gene sets (``_evidence``, ``_evidence_seeds``).

    With ``fallback_min_required``: when fewer than two classes reach ``min_required`` but
    classes that passed the existence test were too few to learn, the seed rule is read
    again from the same evidence with the smaller minimum, and kept when two classes reach
    it (``report["few_seed_fallback"]``; :mod:`._train`, "Fewer seeds rather than no
    classifier")."""
    from ..genesets import match_signatures
    from ._evidence import audit_genes, fibroblast_graph, programme_evidence
    from ._evidence_seeds import evidence_seeds

    Xf = _fibroblast_lognorm(adata, np.flatnonzero(fib), layer)
    matched = match_signatures(library.subset(names=cls), adata, min_coverage=0.0, on_low_coverage="keep")
    sets = {c: (np.asarray(matched[c].indices), np.asarray(matched[c].weights)) for c in cls if c in matched}
    W = fibroblast_graph(Xf, random_state=random_state)
    audited, audit = audit_genes(Xf, W, sets, _symbols(adata))
    usable = [c for c in cls if c in audited and audited[c][0].size >= 2]
    for c in cls:
        if c not in usable:
            logger.warning("subtype %s: fewer than 2 of its genes agree with the set in these data; "
                           "it cannot be evidenced here.", c)
    ev = programme_evidence(Xf, W, {c: audited[c] for c in usable}, random_state=random_state)
    labels, report = evidence_seeds(ev, usable, max_per_class=max_per_class,
                                    min_required=min_required, random_state=random_state)
    present = [c for c, n in report["seed_counts"].items() if n > 0]
    unlearnt = report.get("too_few_to_learn", [])
    if (fallback_min_required is not None and min_required > fallback_min_required and len(present) < 2
            and unlearnt and len(present) + len(unlearnt) >= 2):
        # would be skipped: the evidenced classes from fewer seeds, read from the same evidence
        labels_f, report_f = evidence_seeds(ev, usable, max_per_class=max_per_class,
                                            min_required=fallback_min_required, random_state=random_state)
        present_f = [c for c, n in report_f["seed_counts"].items() if n > 0]
        if len(present_f) >= 2:
            added = [c for c in present_f if c not in present]
            logger.warning("only %s could be learnt from %d seeds; %s passed the existence test with fewer: "
                           "learnt from at least %d seeds (one per fold) rather than calling no subtype",
                           present or "no subtype", min_required, added, fallback_min_required)
            labels, report = labels_f, report_f
            report["few_seed_fallback"] = {"min_required": int(fallback_min_required),
                                           "default_min_required": int(min_required), "classes": added}
    for c in cls:
        if c not in usable:
            report["candidate_counts"][c] = 0
            report["neighbourhood_counts"][c] = 0
            report["topped_up"][c] = 0
            report["seed_counts"][c] = 0
            report["absent_classes"].append(c)
            report["absent_reasons"][c] = "fewer than 2 of its genes agree with the set in these data"
    report["null"] = ev.null
    report["gene_audit"] = {c: audit[c].tolist() for c in audit.columns}
    extras = {"graph": W, "evidence": pd.DataFrame(ev.E, columns=usable)}
    return labels, report, extras


def _write_seeds(adata, labels_full, report, key_added):
    present = [c for c, n in report["seed_counts"].items() if n > 0]
    adata.obs[key_added] = pd.Categorical(labels_full, categories=present)
    sec = K.uns_section(adata, K.UNS_CLASSIFY)
    report = dict(report)
    audit = report.pop("gene_audit", None)
    sec["weak_labels"] = _uns_safe(report)
    if audit is not None:  # one row per (set, gene): a table, not a nested dict
        sec["gene_audit"] = gene_audit_table(audit)


def gene_audit_table(audit: dict) -> pd.DataFrame:
    """The per-gene audit (dict of columns, as in the training summary) as a DataFrame."""
    df = pd.DataFrame({k: list(v) for k, v in audit.items()})
    if "r_with_set" in df:
        df["r_with_set"] = pd.to_numeric(df["r_with_set"], errors="coerce")
    return df


