"""Stage 2 of the lineage gate: weakly supervised refinement on the whole profile.

Stage 1 (:mod:`cafclassify.tl._gate_decide`) calls lineages from marker-set scores at the
cluster level. Its confidently called cells become training *seeds* for two
regularised multinomial logistic regressions on the expression profile (highly
variable genes *minus* the lineage markers, so the second view is independent of
the marker rule that chose the seeds, as in co-training), in the spirit of Garnett
and CellTypist applied to lineages:

* the **lineage model** knows only the seeded lineages;
* the **open-set model** also knows an ``unmarked`` class, seeded by the cells of
  clusters where stage 1 found no lineage at all and which have no marker evidence
  of their own (for example epithelium when no epithelial marker is measured).

A cell gets a stage-2 lineage only when the lineage model is confident *and* the
open-set model agrees that the cell is more like that lineage's seeds than like the
unmarked cells; a lineage without seeds can never be predicted, and cells of an
unseeded population stay ``other``. Seed cells are predicted by models that did not
see them (5-fold cross-fitting), so a seed can be corrected only by out-of-sample
evidence. See ``docs/gate.md`` for the rule and its conventions.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from .._utils import take_rows

__all__ = ["col_sums", "log_block", "refine_lineages"]

logger = logging.getLogger(__name__)

# Conventions (not fitted to any dataset):
SEED_MARGIN = 0.5  # cluster margin 1 - E2/E1 >= 0.5: winner has >= 2x the runner-up (= override ratio)
MIN_SEEDS = 10  # a class needs >= 10 seeds (two per cross-fitting fold) to be learnt
MAX_SEEDS = 2000  # training seeds per class (random subsample above; atlas scale)
N_FOLDS = 5  # cross-fitting folds for the seeds' own predictions and the CV metric
C_REG = 1.0  # inverse L2 penalty of the logistic regressions (scikit-learn's default)
P_SWITCH = 0.9  # probability needed to give a stage-1-uncertain cell the stage-2 call
P_OVERRIDE = 0.99  # probability needed to overturn a confident (seed) stage-1 call
CLIP = 10.0  # standardised values are clipped at 10 SD (scanpy's scale() convention)
CHUNK = 20_000  # cells per prediction chunk
_SUM_STEP = 1 << 22  # values per segment of col_sums (bounds its float64 temporaries)

UNMARKED = "unmarked"


def log_block(block, value_type: str):
    """Float32 copy of a block of cells; counts are normalised to 1e4 and log1p'd."""
    block = sp.csr_matrix(block, dtype=np.float32) if sp.issparse(block) else np.asarray(block, dtype=np.float32)
    if value_type == "counts":
        tot = np.asarray(block.sum(axis=1)).ravel()
        tot[tot == 0] = 1
        scale = (1e4 / tot).astype(np.float32)
        if sp.issparse(block):
            block = sp.csr_matrix(sp.diags(scale) @ block)
            block.data = np.log1p(block.data)
        else:
            block = np.log1p(block * scale[:, None])
    return block


def col_sums(block, n_genes: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-gene sums of the values of a block of cells and of their squares (float64)."""
    s1 = np.zeros(n_genes)
    s2 = np.zeros(n_genes)
    if sp.issparse(block):
        block = sp.csr_matrix(block)
        nnz = block.indptr[-1]
        for a in range(0, nnz, _SUM_STEP):  # float64 temporaries of one segment at a time
            idx = block.indices[a:a + _SUM_STEP]
            v = block.data[a:a + _SUM_STEP].astype(np.float64)
            s1 += np.bincount(idx, weights=v, minlength=n_genes)
            s2 += np.bincount(idx, weights=v * v, minlength=n_genes)
        return s1, s2
    b = np.asarray(block)
    rows = max(1, _SUM_STEP // max(n_genes, 1))
    for a in range(0, b.shape[0], rows):
        part = b[a:a + rows].astype(np.float64)
        s1 += part.sum(axis=0)
        s2 += (part * part).sum(axis=0)
    return s1, s2


def _gene_sd(X, genes: np.ndarray, value_type: str, sums: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """Per-gene SD of the log-normalised values over all cells.

    ``sums``: :func:`col_sums` over all cells (all genes) when the caller has them
    already (the gate accumulates them while it assigns cells to clusters); otherwise
    one chunk-wise pass over ``X`` (sparse stays sparse).
    """
    n = X.shape[0]
    if sums is None:
        s1 = np.zeros(X.shape[1])
        s2 = np.zeros(X.shape[1])
        for start in range(0, n, CHUNK):
            b1, b2 = col_sums(log_block(X[start:start + CHUNK], value_type), X.shape[1])
            s1 += b1
            s2 += b2
    else:
        s1, s2 = sums
    s1, s2 = s1[genes], s2[genes]
    var = np.maximum(s2 / n - (s1 / n) ** 2, 0.0)
    sd = np.sqrt(var)
    sd[sd == 0] = 1.0
    return sd


def _features(X, rows, genes: np.ndarray, sd: np.ndarray, value_type: str):
    """Standardised (not centred), clipped, cell-wise L2-normalised features.

    Dividing by the gene SD without centring keeps sparse data sparse; normalising
    every cell to the same length makes the profile, not the sequencing depth, drive
    the prediction (low-quality cells with few detected genes are not pushed to one
    class by their small norm). Multiplying by sqrt(n_genes) keeps the average
    feature on the unit scale the L2 penalty assumes.
    """
    b = log_block(take_rows(X, rows), value_type)[:, genes]
    if sp.issparse(b):
        b = sp.csr_matrix(b @ sp.diags((1.0 / sd).astype(np.float32)))
        np.minimum(b.data, CLIP, out=b.data)
        norm = np.sqrt(np.asarray(b.multiply(b).sum(axis=1)).ravel())
        norm[norm == 0] = 1.0
        return sp.csr_matrix(sp.diags((np.sqrt(genes.size) / norm).astype(np.float32)) @ b)
    b = np.minimum(b / sd[None, :], CLIP)
    norm = np.linalg.norm(b, axis=1)
    norm[norm == 0] = 1.0
    return b * (np.sqrt(genes.size) / norm)[:, None]


def _fit_predict(X, y: np.ndarray, trains: list[np.ndarray], genes, sd, value_type: str,
                 random_state: int) -> list[tuple[np.ndarray, np.ndarray, float]]:
    """Probabilities for every cell (cross-fitted for the training cells), per model.

    One model per training set in ``trains``; all of them are applied in a single pass
    over the matrix (features computed once per block). Returns, per model, ``P``
    (cells x classes), the class codes and the balanced accuracy of the cross-fitted
    predictions on its training seeds.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold

    def model():
        return LogisticRegression(C=C_REG, class_weight="balanced", max_iter=1000)

    fits = []
    for train in trains:
        Ftr = _features(X, train, genes, sd, value_type)
        ytr = y[train]
        full = model().fit(Ftr, ytr)
        fits.append((train, Ftr, ytr, full))
    n = X.shape[0]
    Ps = [np.zeros((n, full.classes_.size)) for _, _, _, full in fits]
    for start in range(0, n, CHUNK):
        rows = np.arange(start, min(start + CHUNK, n))
        F = _features(X, rows, genes, sd, value_type)
        for P, (_, _, _, full) in zip(Ps, fits, strict=True):
            P[rows] = full.predict_proba(F)
    out = []
    for P, (train, Ftr, ytr, full) in zip(Ps, fits, strict=True):
        classes = full.classes_
        oof = np.zeros((train.size, classes.size))
        folds = StratifiedKFold(n_splits=N_FOLDS, shuffle=True, random_state=random_state)
        for fit_idx, test_idx in folds.split(np.zeros(train.size), ytr):
            m = model().fit(Ftr[fit_idx], ytr[fit_idx])
            # a fold may lack no class (>= MIN_SEEDS >= N_FOLDS per class), but be safe
            cols = np.searchsorted(classes, m.classes_)
            oof[np.ix_(test_idx, cols)] = m.predict_proba(Ftr[test_idx])
        P[train] = oof
        pred = classes[oof.argmax(1)]
        recalls = [(pred[ytr == c] == c).mean() for c in classes]
        out.append((P, classes, float(np.mean(recalls))))
    return out


def refine_lineages(X, *, value_type: str, final: np.ndarray, own: np.ndarray, codes: np.ndarray,
                    cl_call: np.ndarray, margin: np.ndarray, labels: list[str], genes: np.ndarray,
                    random_state: int = 0, gene_sums: tuple[np.ndarray, np.ndarray] | None = None,
                    unplaced: np.ndarray | None = None) -> dict[str, Any]:
    """Second-stage lineage calls from the whole expression profile.

    Parameters
    ----------
    X
        Cells x genes (CSR or dense), log-normalised or counts (``value_type``).
    final, own
        Stage-1 lineage code per cell (index into ``labels``; -1 = other) and the
        lineage of the cell's own marker evidence (-1 = none).
    codes, cl_call, margin
        Cluster index per cell, the cluster's call (-1 = ambiguous) and margin.
    labels
        Lineage names of the codes.
    genes
        Feature gene indices (HVGs without the lineage markers).
    random_state
        Seed of the seed subsampling and the cross-fitting folds.
    gene_sums
        Per-gene sums of the log-normalised values and their squares over all cells
        (:func:`col_sums`), if already computed; otherwise ``X`` is read once for them.
    unplaced
        Cells left ``other`` because their cluster's call is contested and they have no
        evidence of their own (bool). They belong to one of the lineages around them, so
        the lineage model may place them even when no ``unmarked`` class was learnt.

    Returns
    -------
    dict with ``final`` (refined codes), ``prob`` (stage-2 probability of the
    refined call for changed cells, NaN elsewhere), ``changed`` (bool) and ``info``
    (seeds, cross-validated balanced accuracy, change table) for ``uns``.
    """
    n = final.size
    L = len(labels)
    cc = cl_call[codes]
    seed_lin = (cc >= 0) & (margin[codes] >= SEED_MARGIN) & (final == cc) & ((own == cc) | (own < 0))
    seed_unm = (cc < 0) & (own < 0)
    y = np.full(n, -1)
    y[seed_lin] = final[seed_lin]
    y[seed_unm] = L  # the "unmarked" class of the open-set model
    n_seeds = {labels[c]: int((y == c).sum()) for c in range(L)}
    n_seeds[UNMARKED] = int(seed_unm.sum())
    info: dict[str, Any] = {"applied": False, "n_seeds": n_seeds, "n_features": int(genes.size),
                            "conventions": {"seed_margin": SEED_MARGIN, "min_seeds": MIN_SEEDS,
                                            "max_seeds": MAX_SEEDS, "n_folds": N_FOLDS, "C": C_REG,
                                            "p_switch": P_SWITCH, "p_override": P_OVERRIDE}}
    out = {"final": final.copy(), "prob": np.full(n, np.nan), "changed": np.zeros(n, bool), "info": info}

    learnt = [c for c in range(L + 1) if (y == c).sum() >= MIN_SEEDS]
    lin_learnt = [c for c in learnt if c < L]
    info["lineages_learnt"] = [labels[c] for c in lin_learnt]
    info["lineages_not_learnt"] = [labels[c] for c in range(L) if c not in lin_learnt]
    if len(lin_learnt) < 2 or genes.size < 2:
        info["reason"] = (f"only {len(lin_learnt)} lineage(s) with >= {MIN_SEEDS} seeds: "
                          "nothing to learn from; stage-1 calls kept")
        logger.info("Gate stage 2 skipped: %s.", info["reason"])
        return out

    rng = np.random.default_rng(random_state)

    def train_rows(classes: list[int]) -> np.ndarray:
        rows = []
        for c in classes:
            idx = np.flatnonzero(y == c)
            if idx.size > MAX_SEEDS:
                idx = np.sort(rng.choice(idx, size=MAX_SEEDS, replace=False))
            rows.append(idx)
        return np.sort(np.concatenate(rows))

    sd = _gene_sd(X, genes, value_type, gene_sums)
    tr_a = train_rows(lin_learnt)
    tr_b = train_rows(learnt) if L in learnt else None
    fitted = _fit_predict(X, y, [tr_a] if tr_b is None else [tr_a, tr_b], genes, sd, value_type,
                          random_state)
    PA, cls_a, cv_a = fitted[0]
    a_pred = cls_a[PA.argmax(1)]
    a_p = PA.max(1)
    info["n_train"] = {labels[c]: int((y[tr_a] == c).sum()) for c in lin_learnt}
    info["cv_balanced_accuracy"] = {"lineage_model": cv_a}
    if tr_b is not None:
        PB, cls_b, cv_b = fitted[1]
        b_pred = cls_b[PB.argmax(1)]
        b_p = PB.max(1)
        info["n_train"][UNMARKED] = int((y[tr_b] == L).sum())
        info["cv_balanced_accuracy"]["open_set_model"] = cv_b
    else:
        # no ambiguous cluster: every stage-1 cell has a lineage; the open-set check
        # reduces to the lineage model
        b_pred, b_p = a_pred, a_p
        info["cv_balanced_accuracy"]["open_set_model"] = None

    # stage-2 call: lineage when both models agree and the lineage model is sure;
    # "other" when the open-set model is sure the cell is like the unmarked cells
    lin_ok = (b_pred == a_pred) & (a_pred < L)
    unm_ok = b_pred == L
    call = np.where(lin_ok, a_pred, np.where(unm_ok, -1, -2))
    strength = np.where(lin_ok, a_p, np.where(unm_ok, b_p, 0.0))
    need = np.where(seed_lin, P_OVERRIDE, P_SWITCH)
    # a cell is re-judged only when the models could have returned its stage-1 label:
    # its lineage was learnt, or it is "other" and the unmarked class was learnt
    eligible = np.isin(final, lin_learnt) | ((final < 0) & (L in learnt))
    if unplaced is not None:
        eligible |= unplaced
    take = eligible & (call > -2) & (strength >= need) & (call != final)
    new = final.copy()
    new[take] = call[take]
    out["final"] = new
    out["changed"] = take
    out["prob"][take] = strength[take]

    names = np.array([*labels, "other"], dtype=object)
    tab = pd.crosstab(pd.Series(names[final[take]], name="from"), pd.Series(names[new[take]], name="to"))
    info["changes"] = {str(f): {str(t): int(v) for t, v in row.items() if v} for f, row in tab.iterrows()}
    info["n_changed"] = int(take.sum())
    info["n_changed_confident"] = int((take & seed_lin).sum())
    info["applied"] = True
    logger.info("Gate stage 2: %d cells changed (%s); cross-validated balanced accuracy %.3f.",
                int(take.sum()), info["changes"], cv_a)
    return out
