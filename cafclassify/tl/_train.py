"""Training: estimators, self-training, cross-validation and calibration.

Estimators: multinomial L2 logistic regression with balanced class weights
(``"logreg"``; an ``SGDClassifier(loss="log_loss")`` mini-batch path is used when
there are more than ``sgd_threshold`` seeds) or ``HistGradientBoostingClassifier``
(``"hgb"``). Balanced weights make the model's prior uniform over the classes;
:func:`~cafclassify.tl.classify` re-weights its calls to the composition of the cells it
classifies (:mod:`._prior`). Stratified K-fold cross-validation on the seeds gives macro-F1,
per-class precision/recall and a confusion matrix. **These measure agreement
with the weak labels only**, not with the truth; ``benchmarks/bench_real.py`` measures
agreement with author labels and ``benchmarks/bench_classifier.py`` with planted truth.

Calibration: temperature scaling fitted on the out-of-fold logits (default) or
one-vs-rest isotonic regression on the out-of-fold probabilities; ECE (15 bins)
and reliability curves before/after are stored in the model summary. Isotonic
ECE "after" is measured on the data it was fitted on and is optimistic.

**Fewer seeds rather than no classifier.** A class needs ``max(min_seeds, min_per_fold *
cv)`` seeds (10; :mod:`._seeds`). When only one class reaches that, a classifier cannot
be trained and ``classify`` would call no fibroblast subtype. If other classes passed
the evidence rule's existence test but are too few to learn (``too_few_to_learn``), the
seed rule is read again, from the same evidence (:func:`._seeds._evidence_seeds`), with a
minimum of ``cv`` (one per fold, what stratified K-fold cross-validation and calibration
need), and the model is trained when two classes reach it. The evidence for the class is the same family-wise existence test; only the
number of cells it is learnt from is smaller, which the summary records
(``weak_labels["few_seed_fallback"]``) and the report warns about. Only data that would
otherwise get no fibroblast call take this path: no row of ``benchmarks/bench_real.py``'s
main table is skipped, and each is unchanged. Measured where it applies (breast atlas
sample, ``random_state`` 0-1): with 13 author iCAF-like and 249 myCAF-like cells (95 %
myCAF, first of three random subsets) the classifier had been skipped (ARI 0 among the
author CAFs); now iCAF is learnt from 5 seeds (7 cells pass its neighbourhood rule) and
vCAF from 6 cells that carry it alone, and ARI is 0.148 (3 of 13 iCAF-like cells called
iCAF, 7 of 249 myCAF-like cells too, 6 called vCAF; argmax UCell told the author classes
reaches 0.383 on these subsets). In the sorted-stroma design (150 author CAFs and 317
PVL cells, ``random_state`` 1, second subset) 0.772 (fibroblasts ``unassigned``,
:mod:`._insufficient`) becomes 0.815. A class learnt from five seeds is a weak class:
this path exists so that a sample whose fibroblasts are nearly one subtype still gets
calls where the evidence admits them, not to make rare classes common.

Pooling datasets (``batch_key``): HVGs are selected per batch, features are
standardised within each batch (so that batch-wide shifts do not become subtype
signal), CV folds are stratified by class x batch where every combination is large
enough, and the model remembers ``scaling="per_batch"``: new data are then standardised
by their own fibroblasts (per batch if ``batch_key`` is given to :func:`classify`). This
assumes each batch contains a mix of subtypes.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from .. import _keys as K
from .._errors import ConfigError, DataError
from ._features import (
    _Features,
    _hvg,
    _scale,
    _signature_gene_idx,
    _smoothed,
)
from ._fibroblasts import (
    _CHUNK,
    _detect_species,
    _fibroblast_lognorm,
    _fibroblast_mask,
    _fibroblasts_in_memory,
    _matrix,
    _symbols,
    _value_type,
)
from ._seeds import MIN_PER_FOLD, MIN_SEEDS, _weak_labels_impl

if TYPE_CHECKING:
    from anndata import AnnData

    from ..model import CafModel

logger = logging.getLogger(__name__)


# =========================================================================== estimators


def _fit(kind: str, Z: np.ndarray, y: np.ndarray, n_classes: int, *, C: float, random_state: int,
         sgd: bool):
    from sklearn.utils.class_weight import compute_sample_weight

    if kind == "hgb":
        from sklearn.ensemble import HistGradientBoostingClassifier

        est = HistGradientBoostingClassifier(
            max_iter=100, learning_rate=0.1, max_leaf_nodes=15, l2_regularization=1.0,
            max_features=0.3, class_weight="balanced", early_stopping=False,
            random_state=random_state,
        )
        est.fit(Z, y)
        return est
    if sgd:
        from sklearn.linear_model import SGDClassifier

        est = SGDClassifier(loss="log_loss", alpha=1.0 / (C * max(len(y), 1)), random_state=random_state)
        sw = compute_sample_weight("balanced", y)
        rng = np.random.default_rng(random_state)
        classes = np.arange(n_classes)
        for _epoch in range(5):
            order = rng.permutation(len(y))
            for start in range(0, len(y), 10000):
                b = order[start:start + 10000]
                est.partial_fit(Z[b], y[b], classes=classes, sample_weight=sw[b])
        return est
    from sklearn.linear_model import LogisticRegression
    from threadpoolctl import threadpool_limits

    est = LogisticRegression(C=C, class_weight="balanced", max_iter=2000, tol=1e-5)
    # one BLAS thread: results are bit-identical whatever the machine's thread count, and
    # for problems of this size it is also faster (no oversubscription on busy machines)
    with threadpool_limits(limits=1, user_api="blas"):
        est.fit(Z, y)
    return est


def _logits(est, Z: np.ndarray, n_classes: int) -> np.ndarray:
    from threadpoolctl import threadpool_limits

    # a multi-threaded BLAS sums in a thread-dependent order (~1e-16 differences)
    with threadpool_limits(limits=1, user_api="blas"):
        d = np.asarray(est.decision_function(Z), dtype=np.float64)
    if d.ndim == 1:
        d = np.column_stack([-d / 2, d / 2])
    # estimators trained on a fold may miss a class: expand to all classes
    if d.shape[1] != n_classes:
        full = np.full((d.shape[0], n_classes), -1e3)
        full[:, est.classes_] = d
        d = full
    return d


# =========================================================================== train


def train(
    adata: AnnData,
    *,
    signatures="caf_v1",
    score_key: str = K.OBSM_SCORES,
    lineage_key: str = K.OBS_LINEAGE,
    layer: str | None = None,
    estimator: str = "logreg",
    n_hvg: int = 0,
    batch_key: str | None = None,
    calibration: str | None = "temperature",
    cv: int = 5,
    classes: Sequence[str] | None = None,
    z_min: float = 1.0,
    margin: float = 1.0,
    z_method: str = "std",
    seed_rule: str = "evidence",
    feature_smoothing: bool = False,
    max_seeds_per_class: int | None = 2000,
    min_seeds: int = MIN_SEEDS,
    min_per_fold: int = MIN_PER_FOLD,
    C: float = 0.2,
    self_training: int = 1,
    pseudo_min_proba: float = 0.9,
    sgd_threshold: int = 200_000,
    random_state: int = 0,
) -> CafModel:
    """Train a weakly supervised CAF subtype classifier on ``adata``.

    The input is not modified. See the module docstring for the seed rule,
    features, estimators, calibration and pooling across batches.

    Parameters
    ----------
    adata
        Log-normalised (or raw-count) data with ``obs[lineage_key]`` and
        ideally ``obsm[score_key]``.
    signatures
        Signature library (name, path or object; see :func:`cafclassify.load_signatures`).
    score_key, lineage_key, layer
        Where to read scores, gate labels and expression.
    estimator
        ``"logreg"`` or ``"hgb"``.
    n_hvg
        Number of highly variable genes among fibroblasts added to the signature genes.
    batch_key
        obs column of datasets/batches to pool (per-batch scaling and HVGs).
    calibration
        ``"temperature"``, ``"isotonic"`` or ``None``.
    cv
        Number of stratified folds for the out-of-fold metrics and calibration.
    classes
        Subtype sets to use as classes (default: library subtype sets except LTBP2_CAF).
    z_min, margin, z_method, seed_rule, max_seeds_per_class, min_seeds, min_per_fold
        Seed rule (see :func:`weak_labels`).
    feature_smoothing
        Train and predict on kNN-averaged features (each fibroblast's scaled profile
        averaged with its 15 nearest fibroblasts, the graph of the seed rule): shallow
        cells are judged on their neighbourhood, not on their dropout. The model
        remembers it and applies it to new data with their own fibroblast graph.
    C
        Inverse L2 strength of the logistic regression.
    self_training
        Rounds of self-training: fibroblasts that are not seeds but that the
        seed-trained model predicts with (uncalibrated) probability >=
        ``pseudo_min_proba`` are added as pseudo-labels (within the per-class cap)
        and the model is refitted. 0 disables it. Seeds come from the extremes
        of each programme; pseudo-labels move the decision boundary towards
        the intermediate cells (the iCAF-myCAF continuum). CV and calibration
        are computed on seeds + pseudo-labels.
    pseudo_min_proba
        Confidence needed for a pseudo-label.
    sgd_threshold
        Above this number of seeds the logistic model is fitted with mini-batch SGD.
    random_state
        Seed.

    Returns
    -------
    The trained :class:`~cafclassify.model.CafModel` (training summary in ``.summary``).
    """
    kw = dict(locals())
    fib, _ = _fibroblast_mask(adata, lineage_key, warn=False)
    with _fibroblasts_in_memory(adata, layer, np.flatnonzero(fib)):
        return _train_impl(**kw)[0]


def _train_impl(adata, *, signatures, score_key, lineage_key, layer, estimator, n_hvg, batch_key,
                calibration, cv, classes, z_min, margin, z_method, max_seeds_per_class, min_seeds,
                min_per_fold, C, sgd_threshold, random_state, self_training=1, pseudo_min_proba=0.9,
                seed_rule="evidence", feature_smoothing=False):
    from sklearn.metrics import confusion_matrix, f1_score, precision_recall_fscore_support
    from sklearn.model_selection import StratifiedKFold

    from .. import __version__
    from ..model import CafModel
    from ._calibration import IsotonicCalibrator, expected_calibration_error, fit_temperature

    if estimator not in ("logreg", "hgb"):
        raise ConfigError(f"estimator must be 'logreg' or 'hgb', got {estimator!r}.",
                          fix="pass estimator='logreg' or 'hgb'.")
    if calibration not in ("temperature", "isotonic", None, "none"):
        raise ConfigError(f"calibration must be 'temperature', 'isotonic' or None, got {calibration!r}.",
                          fix="pass one of these.")
    calibration = "none" if calibration in (None, "none") else calibration
    if int(cv) < 2:
        raise ConfigError(f"cv must be >= 2, got {cv}.", fix="pass cv=5 (default) or another value >= 2.")
    if batch_key is not None and batch_key not in adata.obs:
        raise ConfigError(f"batch_key {batch_key!r} is not an obs column.", path="adata.obs",
                          fix="pass an existing obs column or batch_key=None.")
    min_required = max(int(min_seeds), int(min_per_fold) * int(cv))
    labels_full, seed_report, fib, scores, library, cls, extras = _weak_labels_impl(
        adata, signatures=signatures, score_key=score_key, lineage_key=lineage_key, layer=layer,
        classes=classes, z_min=z_min, margin=margin, max_seeds_per_class=max_seeds_per_class,
        min_required=min_required, random_state=random_state, z_method=z_method,
        seed_rule=seed_rule, fallback_min_required=int(cv),  # fewer seeds rather than no classifier
    )
    present = [c for c in cls if seed_report["seed_counts"][c] > 0]
    if len(present) < 2:
        why = seed_report.get("absent_reasons") or {}
        detail = "".join(f" {c}: {why[c]}." for c in cls if c in why)
        if seed_rule == "zscore":
            fix = "lower z_min/margin/min_seeds, add cells, or check the gate and scores."
        else:  # the evidence rule's existence test has no threshold to lower
            fix = ("fewer than two evidenced subtypes cannot train a classifier: read the per-cell subtype "
                   "scores (obsm['caf_scores']); more fibroblasts or deeper cells give the existence "
                   "test more power; check the gate and the subtype gene coverage.")
        raise DataError(
            f"only {len(present)} subtype(s) ({', '.join(present) or 'none'}) have at least {min_required} "
            f"confident seed cells (cells passing the seed rule: {seed_report['candidate_counts']}); a classifier needs two "
            f"or more.{detail}", path="adata", fix=fix,
        )
    fib_rows = np.flatnonzero(fib)
    X = _matrix(adata, layer)
    counts = _value_type(X) == "counts"

    # ---- features
    hvg = _hvg(adata, fib_rows, layer, counts, n_hvg, batch_key, random_state)
    sets_for_features = [n for n, gs in library.sets.items() if gs.group in ("subtype", "state")]
    sig_idx, sig_missing = _signature_gene_idx(adata, library, sets_for_features)
    feat_idx = np.union1d(hvg, sig_idx)
    sym = _symbols(adata)
    genes_all = [sym[i] for i in feat_idx]
    feats = _Features(adata, genes_all, layer)
    per_batch = batch_key is not None
    batches_fib = adata.obs[batch_key].to_numpy()[fib_rows] if per_batch else None
    mean, sd = feats.stats(fib_rows)
    keep = sd > 1e-8
    n_zero_var = int((~keep).sum())
    if n_zero_var:
        logger.info("dropping %d feature genes with zero variance among fibroblasts", n_zero_var)
    genes = [g for g, k in zip(genes_all, keep, strict=True) if k]
    feats = _Features(adata, genes, layer)
    mean, sd = mean[keep], sd[keep]

    # ---- features of fibroblasts (positions in fib_rows), kNN-averaged if feature_smoothing
    bstats = {}
    if per_batch:  # per-batch scaling with statistics of ALL fibroblasts of each batch
        for b in pd.unique(batches_fib):
            bstats[b] = feats.stats(fib_rows[batches_fib == b])

    def scaled_rows(rows_pos: np.ndarray) -> np.ndarray:
        raw_b = feats.raw_block(fib_rows[rows_pos])
        if not per_batch:
            return _scale(raw_b, mean, sd)
        out = np.empty_like(raw_b)
        bb = batches_fib[rows_pos]
        for b_, (mu_, s_) in bstats.items():
            m_ = bb == b_
            out[m_] = _scale(raw_b[m_], mu_, s_)
        return out

    graph = None
    if feature_smoothing:
        graph = extras.get("graph")
        if graph is None:
            from ._evidence import fibroblast_graph

            graph = fibroblast_graph(_fibroblast_lognorm(adata, fib_rows, layer), random_state=random_state)
        Zfib = _smoothed(graph, scaled_rows, fib_rows.size, len(genes))

        def scaled_rows(rows_pos: np.ndarray) -> np.ndarray:
            return Zfib[rows_pos]

    # ---- seed matrix
    seed_pos = np.flatnonzero(labels_full[fib_rows] != None)  # noqa: E711
    y_names = labels_full[fib_rows][seed_pos].astype(str)
    y = np.array([present.index(v) for v in y_names], dtype=np.int64)
    seed_rows = fib_rows[seed_pos]
    Zs = scaled_rows(seed_pos)
    use_sgd = estimator == "logreg" and seed_rows.size > int(sgd_threshold)
    kind = "hgb" if estimator == "hgb" else ("sgd" if use_sgd else "logreg")

    # ---- self-training: add confidently predicted non-seed fibroblasts as pseudo-labels
    pseudo_counts = dict.fromkeys(present, 0)
    if int(self_training) > 0:
        is_seed = np.zeros(fib_rows.size, dtype=bool)
        is_seed[seed_pos] = True
        for _round in range(int(self_training)):
            est0 = _fit(kind, Zs, y, len(present), C=C, random_state=random_state, sgd=use_sgd)
            cand_pos, cand_y, cand_p = [], [], []
            for start in range(0, fib_rows.size, _CHUNK):
                pos_c = np.arange(start, min(start + _CHUNK, fib_rows.size))
                pos_c = pos_c[~is_seed[pos_c]]
                if pos_c.size == 0:
                    continue
                lg = _logits(est0, scaled_rows(pos_c), len(present))
                pr = np.exp(lg - lg.max(axis=1, keepdims=True))
                pr /= pr.sum(axis=1, keepdims=True)
                keep_c = pr.max(axis=1) >= pseudo_min_proba
                cand_pos.append(pos_c[keep_c])
                cand_y.append(pr[keep_c].argmax(axis=1))
                cand_p.append(pr[keep_c].max(axis=1))
            if not cand_pos:
                break
            cp, cy, cpr = np.concatenate(cand_pos), np.concatenate(cand_y), np.concatenate(cand_p)
            add_pos, add_y = [], []
            for k, c in enumerate(present):
                room = (max_seeds_per_class or np.iinfo(np.int64).max) - int((y == k).sum())
                idx = np.flatnonzero(cy == k)
                idx = idx[np.argsort(-cpr[idx], kind="stable")][: max(room, 0)]
                add_pos.append(cp[idx])
                add_y.append(np.full(idx.size, k))
                pseudo_counts[c] += int(idx.size)
            add_pos_a = np.concatenate(add_pos).astype(np.int64)
            if add_pos_a.size == 0:
                break
            Zs = np.vstack([Zs, scaled_rows(add_pos_a)])
            y = np.concatenate([y, np.concatenate(add_y)]).astype(np.int64)
            seed_pos = np.concatenate([seed_pos, add_pos_a])
            is_seed[add_pos_a] = True
        logger.info("self-training added pseudo-labels: %s", pseudo_counts)

    # ---- cross-validation (out-of-fold logits)
    n_splits = int(min(cv, np.bincount(y).min()))
    strat = y.astype(str)
    strat_by = "class"
    if per_batch:
        combo = np.char.add(np.char.add(y.astype(str), "|"), np.asarray(batches_fib[seed_pos], dtype=str))
        if pd.Series(combo).value_counts().min() >= n_splits:
            strat, strat_by = combo, "class x batch"
    skf = StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=random_state)
    oof = np.zeros((y.size, len(present)))
    for tr, te in skf.split(Zs, strat):
        est = _fit(kind, Zs[tr], y[tr], len(present), C=C, random_state=random_state, sgd=use_sgd)
        oof[te] = _logits(est, Zs[te], len(present))
    pred = oof.argmax(axis=1)
    prec, rec, f1, sup = precision_recall_fscore_support(y, pred, labels=np.arange(len(present)),
                                                         zero_division=0)
    cv_report = {
        "n_splits": n_splits,
        "stratified_by": strat_by,
        "macro_f1": float(f1_score(y, pred, average="macro")),
        "per_class": {c: {"precision": float(prec[k]), "recall": float(rec[k]), "f1": float(f1[k]),
                          "support": int(sup[k])} for k, c in enumerate(present)},
        "confusion_matrix": confusion_matrix(y, pred, labels=np.arange(len(present))).tolist(),
        "labels": present,
        "note": ("out-of-fold agreement with the WEAK labels (seeds + self-training pseudo-labels) "
                 "only, not with true subtypes"),
    }

    # ---- calibration on out-of-fold predictions
    proto = CafModel(kind=kind, genes=genes, classes=present, feature_mean=mean, feature_scale=sd)
    raw_oof = proto._raw_proba(oof, 1.0)
    ece_before, rel_before = expected_calibration_error(raw_oof, y)
    temperature, iso = 1.0, None
    if calibration == "temperature":
        if kind == "sgd":
            from scipy.optimize import minimize_scalar

            def nll(log_t):
                p = proto._raw_proba(oof, float(np.exp(log_t)))
                return float(-np.log(np.clip(p[np.arange(y.size), y], 1e-12, None)).mean())

            temperature = float(np.exp(minimize_scalar(nll, bounds=(np.log(0.05), np.log(20)),
                                                       method="bounded").x))
        else:
            temperature = fit_temperature(oof, y)
        cal_oof = proto._raw_proba(oof, temperature)
    elif calibration == "isotonic":
        iso = IsotonicCalibrator().fit(raw_oof, y)
        cal_oof = iso.transform(raw_oof)
    else:
        cal_oof = raw_oof
    ece_after, rel_after = expected_calibration_error(cal_oof, y)

    # ---- final model on all seeds
    est = _fit(kind, Zs, y, len(present), C=C, random_state=random_state, sgd=use_sgd)
    coef = intercept = None
    if kind != "hgb":
        coef = np.asarray(est.coef_, dtype=np.float64)
        intercept = np.asarray(est.intercept_, dtype=np.float64)
        if coef.shape[0] == 1 and len(present) == 2:  # binary logistic: expand to 2 logits
            coef = np.vstack([-coef / 2, coef / 2])
            intercept = np.array([-intercept[0] / 2, intercept[0] / 2])
    summary = {
        "n_fibroblasts": int(fib.sum()), "gated": seed_report["gated"],
        "weak_labels": seed_report,
        "absent_classes": seed_report["absent_classes"],
        "pseudo_label_counts": pseudo_counts,
        "features": {
            "n_features": len(genes), "n_hvg": int(hvg.size), "n_signature_genes": int(sig_idx.size),
            "n_dropped_zero_variance": n_zero_var, "signature_genes_missing": sig_missing,
            "input_counts_normalised": bool(counts),
        },
        "cv": cv_report,
        "calibration": {
            "method": calibration, "temperature": float(temperature), "n_bins": 15,
            "ece_before": ece_before, "ece_after": ece_after,
            "reliability_before": rel_before, "reliability_after": rel_after,
            "note": ("ECE on out-of-fold predictions against the weak labels"
                     + ("; isotonic 'after' is in-sample (optimistic)" if calibration == "isotonic" else "")),
        },
        "params": {
            "estimator": estimator, "kind": kind, "n_hvg": int(n_hvg), "batch_key": batch_key or "",
            "cv": int(cv), "z_min": float(z_min), "margin": float(margin), "z_method": z_method,
            "max_seeds_per_class": -1 if max_seeds_per_class is None else int(max_seeds_per_class),
            "min_seeds": int(min_seeds), "min_per_fold": int(min_per_fold), "C": float(C),
            "self_training": int(self_training), "pseudo_min_proba": float(pseudo_min_proba),
            "seed_rule": seed_rule, "feature_smoothing": bool(feature_smoothing),
            "random_state": int(random_state), "score_key": score_key, "lineage_key": lineage_key,
            "layer": layer or "",
        },
    }
    from ..genes import recorded_species

    species = recorded_species(adata) or _detect_species(genes)
    model = CafModel(
        kind=kind, genes=genes, classes=present, feature_mean=mean, feature_scale=sd, coef=coef,
        intercept=intercept, estimator=est if kind == "hgb" else None, species=species,
        scaling="per_batch" if per_batch else "train", calibration=calibration,
        temperature=temperature, isotonic=iso,
        signature_name=library.name,
        signature_version=library.version,
        signature_sha256=library.sha256, package_version=__version__,
        summary=summary,
    )
    logger.info(
        "trained %s on %d seeds (%s); CV macro-F1 vs weak labels %.3f; ECE %.3f -> %.3f; absent: %s",
        kind, y.size, dict(zip(present, np.bincount(y).tolist(), strict=True)),
        cv_report["macro_f1"], ece_before, ece_after, seed_report["absent_classes"] or "none",
    )
    extras["graph"] = graph
    return model, labels_full, seed_report, extras


