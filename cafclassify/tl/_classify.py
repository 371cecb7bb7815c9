"""Weakly supervised CAF subtype classifier: weak labels, training, prediction.

The classifier never sees author labels. It is trained on *weak labels*:
fibroblasts whose signature scores point clearly at one subtype.

Weak-label (seed) rule
----------------------
Among gated fibroblasts (``obs[lineage_key] == "fibroblast"``), each subtype
score is standardised across fibroblasts, ``z = (s - mean) / SD`` by default
(``z_method="std"``). A robust median/MAD z-score is available
(``z_method="robust"``) but is NOT the default: for a rare subtype most
fibroblasts sit at the background level, the MAD measures only that
background and any partial programme (mixed cells, ambient RNA) then gets a
huge z; on the synthetic benchmark this made apCAF/dCAF seeds only 40-55 %
pure, against 90-100 % with mean/SD. A cell is a confident seed of subtype
*k* when

* ``z_k >= z_min`` (default 1.0: clearly above the fibroblast median), and
* ``z_k - z_runner_up >= margin`` (default 1.0: clearly ahead of every other
  subtype; 0.5 let through many mixed cells on the synthetic benchmark, seed
  purity 0.89 vs 0.92 and lower true-label F1 of the classifier).

Seeds are capped per class (``max_seeds_per_class``, the cells with the largest
margin are kept) so that the commonest subtype does not dominate. A subtype
with fewer than ``max(min_seeds, min_per_fold * cv)`` seeds is reported as
ABSENT (WARNING log and ``uns``) and is not a class of the model: it is not
invented from too few cells.

Features and model
------------------
Features are the highly variable genes among fibroblasts (``n_hvg``) plus every
signature gene of the library's subtype and state sets present in the data
(genes with zero variance among fibroblasts are dropped and counted in the
summary; nothing else is excluded). Values are log-normalised (raw counts are
normalised to 10,000 per cell and log1p-transformed on the fly), then scaled
per gene with the mean/standard deviation of the training fibroblasts (clipped
to +-10). Only the fibroblasts x features block is ever dense, in chunks.

Estimators: multinomial L2 logistic regression with balanced class weights
(``"logreg"``; an ``SGDClassifier(loss="log_loss")`` mini-batch path is used when
there are more than ``sgd_threshold`` seeds) or ``HistGradientBoostingClassifier``
(``"hgb"``). Stratified K-fold cross-validation on the seeds gives macro-F1,
per-class precision/recall and a confusion matrix. **These measure agreement
with the weak labels only**, not with the truth; the synthetic benchmark
(``benchmarks/bench_classifier.py``) measures agreement with planted truth.

Calibration: temperature scaling fitted on the out-of-fold logits (default) or
one-vs-rest isotonic regression on the out-of-fold probabilities; ECE (15 bins)
and reliability curves before/after are stored in the model summary. Isotonic
ECE "after" is measured on the data it was fitted on and is optimistic.

Pooling datasets (``batch_key``): HVGs are selected per batch
(``scanpy.pp.highly_variable_genes(batch_key=...)``), features are standardised
within each batch (so that batch-wide shifts do not become subtype signal), CV
folds are stratified by class x batch where every combination is large enough,
and the model remembers ``scaling="per_batch"``: new data are then standardised
by their own fibroblasts (per batch if ``batch_key`` is given to
:func:`classify`). This assumes each batch contains a mix of subtypes.

Separate axes (never competing with the subtype)
------------------------------------------------
* LTBP2+: the evidence for an LTBP2+ CAF rests on ONE seed gene (LTBP2). The call
  is therefore based on LTBP2 expression itself: a two-component Gaussian mixture
  on log-expression of LTBP2-detected fibroblasts; a cell is positive when its
  posterior for the high component is >= 0.5, or >= 0.25 with support from the
  (largely inferred) LTBP2_CAF module (robust z >= 1). ``ltbp2_score`` is the
  z-score of LTBP2 expression among fibroblasts. This caveat is written to uns.
* Senescent / cycling: the state score's robust z among fibroblasts
  >= ``state_z`` (default 2.5). Relative to the fibroblasts of the same dataset.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from .. import _keys as K
from .._errors import DataError, ModelError
from .._utils import GatheredRows, _is_backed_matrix, get_matrix, stored_row_bytes, take_rows
from ._compartment import MURAL_LABEL, VCAF, lineage_confidence, perivascular_labels

if TYPE_CHECKING:
    from anndata import AnnData

    from ..model import CafModel

__all__ = ["classify", "train", "weak_labels"]

logger = logging.getLogger(__name__)

#: sets of the "subtype" group that are separate axes, not competing classes
AXIS_SETS = ("LTBP2_CAF",)
STATE_SETS = ("senescence", "cycling")
_FALLBACK_CLASSES = ("myCAF", "iCAF", "apCAF", "meCAF", "vCAF", "dCAF")
_CHUNK = 20000
#: fibroblasts per prediction block: per-cell work, so the block size changes memory only
#: (dense blocks of cells x model genes, several copies), never the results
_PREDICT_CHUNK = 5000
_LTBP2_CAVEAT = (
    "LTBP2+ CAF calls rest on ONE seed gene (LTBP2; Zhan et al. 2025, ESCC). The call is based on "
    "LTBP2 expression itself (two-component mixture among LTBP2-detected fibroblasts); the "
    "LTBP2_CAF module beyond LTBP2 is largely inferred and only supports borderline cells. "
    "Treat LTBP2+ calls as a hypothesis to confirm (protein, spatial or an ESCC reference)."
)


# =========================================================================== helpers


#: training on a backed file gathers the fibroblasts' rows into memory once when they take
#: at most this much (CSR values + indices); above it they are re-read from disk per use
GATHER_MAX_BYTES = 4 * 2**30

#: rows gathered for the current train/classify call: {(id(adata), layer): GatheredRows}
_GATHERED: contextvars.ContextVar[dict | None] = contextvars.ContextVar("cafclassify_gathered", default=None)


def _matrix(adata: AnnData, layer: str | None):
    gathered = (_GATHERED.get() or {}).get((id(adata), layer))
    return gathered if gathered is not None else get_matrix(adata, layer)[0]


@contextlib.contextmanager
def _fibroblasts_in_memory(adata: AnnData, layer: str | None, rows: np.ndarray) -> Iterator[None]:
    """Read the fibroblasts of an on-disk matrix once for the duration of a training run.

    Training visits the fibroblasts' rows several times (HVGs, feature statistics, seeds,
    self-training, prediction, the LTBP2 axis); on a backed file each visit re-reads
    scattered rows. In memory, and for rows above :data:`GATHER_MAX_BYTES`, nothing
    changes. The results are the same either way.
    """
    X = get_matrix(adata, layer)[0]
    if not _is_backed_matrix(X) or rows.size == 0:
        yield
        return
    need = stored_row_bytes(X, rows)
    if need > GATHER_MAX_BYTES:
        logger.info("fibroblast rows take %.1f GB (> %.1f GB): read from disk per use",
                    need / 2**30, GATHER_MAX_BYTES / 2**30)
        yield
        return
    gathered = GatheredRows(X, rows)
    gathered.value_type = _value_type(X)
    logger.info("read %d fibroblasts (%.2f GB) from disk once for training", rows.size, gathered.nbytes / 2**30)
    token = _GATHERED.set({**(_GATHERED.get() or {}), (id(adata), layer): gathered})
    try:
        yield
    finally:
        _GATHERED.reset(token)


def _fibroblast_mask(adata: AnnData, lineage_key: str | None, *, warn: bool = True) -> tuple[np.ndarray, bool]:
    if lineage_key is not None and lineage_key in adata.obs:
        mask = (adata.obs[lineage_key].astype(str) == "fibroblast").to_numpy()
        return mask, True
    if warn:
        logger.warning(
            "obs[%r] not found: treating ALL %d cells as fibroblasts. Run cafclassify.gate first "
            "unless the data are already fibroblast-only.", lineage_key, adata.n_obs,
        )
    return np.ones(adata.n_obs, dtype=bool), False


def _load_library(signatures):
    from ..genesets import load_signatures

    return load_signatures(signatures)


def _symbols(adata: AnnData) -> np.ndarray:
    names = adata.var_names.astype(str).to_numpy()
    if K.VAR_SYMBOL in adata.var:
        sym = adata.var[K.VAR_SYMBOL].astype(str).to_numpy()
        bad = (sym == "") | (sym == "nan")
        return np.where(bad, names, sym)
    return names


def _value_type(X) -> str:
    if isinstance(X, GatheredRows):  # decided once, on the whole matrix
        return X.value_type
    try:
        from ..io import detect_value_type
    except ImportError:  # pragma: no cover - io not installed
        from ..io._valuetype import detect_value_type
    return detect_value_type(X)


def _rows_csr(X, rows: np.ndarray) -> sp.csr_matrix:
    """Rows of X (in-memory or backed) as CSR, without densifying all genes."""
    block = take_rows(X, rows)
    return sp.csr_matrix(block) if sp.issparse(block) else sp.csr_matrix(np.asarray(block))


def _lognorm(block: sp.csr_matrix, counts: bool) -> sp.csr_matrix:
    block = sp.csr_matrix(block, dtype=np.float64)
    if not counts:
        return block
    tot = np.asarray(block.sum(axis=1)).ravel()
    tot[tot == 0] = 1.0
    out = sp.diags(1e4 / tot) @ block
    out = sp.csr_matrix(out)
    out.data = np.log1p(out.data)
    return out


def _std_z(values: np.ndarray) -> np.ndarray:
    """Column-wise z-score (mean / standard deviation; 1 if the SD is 0)."""
    v = np.asarray(values, dtype=np.float64)
    sd = np.nanstd(v, axis=0)
    return (v - np.nanmean(v, axis=0)) / np.where(sd > 1e-12, sd, 1.0)


def _robust_z(values: np.ndarray, ref: np.ndarray | None = None) -> np.ndarray:
    """Robust z-score (median / 1.4826 MAD; SD if MAD is 0) of a 1-D array, or column-wise
    of a 2-D one; ``ref`` (bool mask of rows) takes the median and MAD from those rows."""
    v = np.asarray(values, dtype=np.float64)
    r = v if ref is None else v[np.asarray(ref, dtype=bool)]
    med = np.nanmedian(r, axis=0)
    mad = 1.4826 * np.nanmedian(np.abs(r - med), axis=0)
    sd = np.nanstd(r, axis=0)
    scale = np.where(mad > 1e-12, mad, np.where(sd > 1e-12, sd, 1.0))
    return (v - med) / scale


def _uns_safe(obj: Any) -> Any:
    """Make a (JSON-like) object writable to h5ad uns."""
    import json

    from ..model import _jsonable

    obj = _jsonable(obj)
    if obj is None:
        return "NA"
    if isinstance(obj, dict):
        return {k: _uns_safe(v) for k, v in obj.items()}
    if isinstance(obj, list):
        if not obj:
            return np.array([], dtype=str)
        if all(isinstance(v, bool) for v in obj):
            return np.array(obj, dtype=bool)
        if all(isinstance(v, int | float) and not isinstance(v, bool) for v in obj):
            return np.array(obj, dtype=np.float64)
        if all(isinstance(v, str) for v in obj):
            return np.array(obj, dtype=object).astype(str)
        if all(isinstance(v, list) and all(isinstance(x, int | float) for x in v) for v in obj):
            try:
                return np.array(obj, dtype=np.float64)
            except ValueError:
                pass
        return json.dumps(obj)
    return obj


def _detect_species(symbols: Sequence[str]) -> str:
    try:
        from ..genes import detect_species
    except ImportError:  # pragma: no cover
        return "unknown"
    return detect_species(list(symbols))


# =========================================================================== scores & seeds


def _subtype_classes(library, score_columns: Sequence[str], classes: Sequence[str] | None) -> list[str]:
    if classes is not None:
        missing = [c for c in classes if c not in score_columns]
        if missing:
            raise DataError(f"classes {missing} have no score column.", path="obsm scores",
                            fix="score these sets first or drop them from classes.")
        return list(classes)
    if library is not None:
        names = [n for n, gs in library.sets.items() if gs.group == "subtype" and n not in AXIS_SETS]
    else:
        names = list(_FALLBACK_CLASSES)
    return [n for n in names if n in score_columns]


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
    min_seeds: int = 15,
    min_per_fold: int = 3,
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
        Cap per class (largest margin kept); ``None`` for no cap.
    min_seeds, min_per_fold, cv
        A class needs ``max(min_seeds, min_per_fold * cv)`` seeds, else it is absent.
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
        z_method=z_method, seed_rule=seed_rule,
    )[:2]
    _write_seeds(adata, labels_full, report, key_added)
    return adata if copy else None


def _weak_labels_impl(adata, *, signatures, score_key, lineage_key, layer, classes, z_min, margin,
                      max_seeds_per_class, min_required, random_state, z_method="std",
                      seed_rule="evidence"):
    fib, gated = _fibroblast_mask(adata, lineage_key)
    if fib.sum() == 0:
        raise DataError("no cells are labelled 'fibroblast', so there is nothing to classify.",
                        path=f"obs[{lineage_key!r}]",
                        fix="check the gate (cafclassify.gate) or pass pre-gated fibroblasts.")
    try:
        library = _load_library(signatures)
    except ImportError:  # pragma: no cover - genesets missing
        library = None
    needed_all = list(library.sets) if library is not None else list(_FALLBACK_CLASSES)
    scores, source = _get_scores(adata, fib, score_key=score_key, signatures=signatures, layer=layer,
                                 needed=needed_all, random_state=random_state)
    cls = _subtype_classes(library, list(scores.columns), classes)
    if len(cls) < 2:
        raise DataError(f"fewer than two subtype scores are available ({cls}).",
                        path=f"obsm[{score_key!r}]",
                        fix="score the subtype sets (cafclassify.score) with enough gene coverage.")
    if z_method not in ("std", "robust"):
        raise DataError(f"z_method must be 'std' or 'robust', got {z_method!r}.", fix="pass 'std' (default).")
    if seed_rule not in ("evidence", "zscore"):
        raise DataError(f"seed_rule must be 'evidence' or 'zscore', got {seed_rule!r}.",
                        fix="pass seed_rule='evidence' (default).")
    extras: dict = {}
    if seed_rule == "evidence" and library is not None:
        labels, report, extras = _evidence_seeds(adata, fib, library, cls, layer=layer,
                                                 max_per_class=max_seeds_per_class,
                                                 min_required=min_required, random_state=random_state)
    else:
        labels, report = _select_seeds(scores[cls], z_min=z_min, margin=margin,
                                       max_per_class=max_seeds_per_class, min_required=min_required,
                                       z_method=z_method)
        report["seed_rule"] = "zscore"
    report["score_source"] = source
    report["gated"] = bool(gated)
    for c in report["absent_classes"]:
        why = report.get("absent_reasons", {}).get(
            c, f"only {report['candidate_counts'][c]} confident seed cells (need {min_required})")
        logger.warning("subtype %s is ABSENT: %s. It is not a class of the model and will never "
                       "be called.", c, why)
    full = np.full(adata.n_obs, None, dtype=object)
    full[np.flatnonzero(fib)] = labels
    return full, report, fib, scores, library, cls, extras


def _fibroblast_lognorm(adata, fib: np.ndarray, layer) -> sp.csr_matrix:
    X = _matrix(adata, layer)
    return _lognorm(_rows_csr(X, np.flatnonzero(fib)), _value_type(X) == "counts")


def _evidence_seeds(adata, fib, library, cls, *, layer, max_per_class, min_required, random_state):
    """Seeds from programme evidence against random gene sets (``_evidence`` module)."""
    from ..genesets import match_signatures
    from ._evidence import audit_genes, evidence_seeds, fibroblast_graph, programme_evidence

    Xf = _fibroblast_lognorm(adata, fib, layer)
    matched = match_signatures(library.subset(names=cls), adata, min_coverage=0.0, on_low_coverage="keep")
    sets = {c: (np.asarray(matched[c].indices), np.asarray(matched[c].weights)) for c in cls if c in matched}
    W = fibroblast_graph(Xf, random_state=random_state)
    audited, audit = audit_genes(Xf, W, sets, _symbols(adata))
    usable = [c for c in cls if c in audited and audited[c][0].size >= 2]
    for c in cls:
        if c not in usable:
            logger.warning("subtype %s: fewer than 2 of its genes agree with the set in these data; "
                           "it cannot be evidenced here.", c)
    E, E_null = programme_evidence(Xf, W, {c: audited[c] for c in usable}, random_state=random_state)
    labels, report = evidence_seeds(E, E_null, usable, max_per_class=max_per_class,
                                    min_required=min_required)
    for c in cls:
        if c not in usable:
            report["candidate_counts"][c] = 0
            report["seed_counts"][c] = 0
            report["absent_classes"].append(c)
            report["absent_reasons"][c] = "fewer than 2 of its genes agree with the set in these data"
    report["gene_audit"] = {c: audit[c].tolist() for c in audit.columns}
    extras = {"graph": W, "evidence": pd.DataFrame(E, columns=usable), "Xf": Xf}
    return labels, report, extras


def _write_seeds(adata, labels_full, report, key_added):
    present = [c for c, n in report["seed_counts"].items() if n > 0]
    adata.obs[key_added] = pd.Categorical(labels_full, categories=present)
    sec = K.uns_section(adata, K.UNS_CLASSIFY)
    sec["weak_labels"] = _uns_safe(report)


# =========================================================================== features


class _Features:
    """Maps model genes to data columns and produces scaled dense blocks."""

    def __init__(self, adata, genes: Sequence[str], layer, *, model_species: str = "unknown",
                 model_path: str | None = None, min_overlap: float = 0.0):
        self.X = _matrix(adata, layer)
        sym = _symbols(adata)
        data_species = _detect_species(sym)
        target = list(genes)
        self.mapped_from = None
        if model_species in ("human", "mouse") and data_species in ("human", "mouse") and model_species != data_species:
            from ..genes import to_species

            m = to_species(list(genes), source=model_species, target=data_species)
            target = [m.get(g, "") for g in genes]
            self.mapped_from = f"{model_species}->{data_species}"
        first: dict[str, int] = {}
        for i, s in enumerate(sym):
            first.setdefault(s, i)
        self.col = np.array([first.get(g, -1) if g else -1 for g in target], dtype=np.int64)
        self.found = self.col >= 0
        self.overlap = float(self.found.mean()) if len(genes) else 0.0
        self.missing = [g for g, f in zip(genes, self.found, strict=True) if not f]
        self.counts = _value_type(self.X) == "counts"
        self.report = {
            "n_model_genes": len(genes), "n_found": int(self.found.sum()),
            "overlap": self.overlap, "species_mapping": self.mapped_from or "none",
            "data_species": data_species, "missing_examples": self.missing[:25],
            "input_counts_normalised": bool(self.counts),
        }
        if self.overlap < min_overlap:
            raise ModelError(
                f"only {self.found.sum()} of {len(genes)} model genes ({self.overlap:.0%}) are in "
                f"the data, below the minimum overlap {min_overlap:.0%}"
                + (f" (after {self.mapped_from} orthologue mapping)" if self.mapped_from else "") + ".",
                path=model_path or "<in-memory CafModel>",
                fix="check the gene identifiers/species of the data (var_names or "
                    "var['cafclassify_symbol']), or train a model on data measured like these.",
            )

    def raw_block(self, rows: np.ndarray) -> np.ndarray:
        """Log-normalised values of the found features (missing -> NaN), dense rows x features."""
        block = _lognorm(_rows_csr(self.X, rows), self.counts)
        out = np.full((rows.size, self.col.size), np.nan, dtype=np.float64)
        out[:, self.found] = block[:, self.col[self.found]].toarray()
        return out

    def stats(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        s = np.zeros(self.col.size)
        ss = np.zeros(self.col.size)
        for start in range(0, rows.size, _CHUNK):
            b = np.nan_to_num(self.raw_block(rows[start:start + _CHUNK]))
            s += b.sum(axis=0)
            ss += (b * b).sum(axis=0)
        n = max(rows.size, 1)
        mean = s / n
        sd = np.sqrt(np.maximum(ss / n - mean * mean, 0.0))
        return mean, sd


def _smoothed(graph: sp.csr_matrix, rows_fn, n: int, n_features: int) -> np.ndarray:
    """``graph @ Z`` for the features ``Z`` of all ``n`` fibroblasts (``rows_fn(positions)``)."""
    Z = np.empty((n, n_features), dtype=np.float64)
    for start in range(0, n, _PREDICT_CHUNK):
        p = np.arange(start, min(start + _PREDICT_CHUNK, n))
        Z[p] = rows_fn(p)
    return np.asarray(graph @ Z)


def _scale(raw: np.ndarray, mean: np.ndarray, sd: np.ndarray) -> np.ndarray:
    safe = np.where(sd > 1e-8, sd, 1.0)
    z = (raw - mean[None, :]) / safe[None, :]
    z[np.isnan(z)] = 0.0  # missing genes sit at the training mean
    return np.clip(z, -10.0, 10.0)


def _batch_scaled(feats: _Features, rows: np.ndarray, batches: np.ndarray | None,
                  mean: np.ndarray, sd: np.ndarray, per_batch: bool) -> np.ndarray:
    """Dense scaled block for ``rows`` (per-batch statistics if ``per_batch``)."""
    raw = feats.raw_block(rows)
    if not per_batch:
        return _scale(raw, mean, sd)
    out = np.empty_like(raw)
    groups = np.zeros(rows.size, dtype=int) if batches is None else pd.factorize(batches)[0]
    for g in np.unique(groups):
        m = groups == g
        mu = np.nanmean(raw[m], axis=0)
        s = np.nanstd(raw[m], axis=0)
        out[m] = _scale(raw[m], np.nan_to_num(mu), np.nan_to_num(s))
    return out


#: HVGs are chosen on at most this many fibroblasts (a seeded random subsample above it),
#: so atlas-scale data never load every fibroblast's profile at once
HVG_MAX_CELLS = 50_000


def _hvg(adata, fib_rows, layer, counts: bool, n_hvg: int, batch_key: str | None,
         random_state: int = 0) -> np.ndarray:
    import anndata as ad
    import scanpy as sc

    if int(n_hvg) <= 0:
        return np.array([], dtype=np.int64)
    X = _matrix(adata, layer)
    if fib_rows.size > HVG_MAX_CELLS:
        rng = np.random.default_rng(random_state)
        fib_rows = np.sort(rng.choice(fib_rows, size=HVG_MAX_CELLS, replace=False))
        logger.info("HVGs chosen on a random subsample of %d fibroblasts", HVG_MAX_CELLS)
    block = _lognorm(_rows_csr(X, fib_rows), counts)
    tmp = ad.AnnData(X=sp.csr_matrix(block, dtype=np.float32))
    if batch_key is not None:
        tmp.obs["batch"] = adata.obs[batch_key].to_numpy()[fib_rows].astype(str)
    n_top = int(min(n_hvg, adata.n_vars))
    nz = np.asarray((block != 0).sum(axis=0)).ravel()
    try:
        sc.pp.highly_variable_genes(tmp, n_top_genes=n_top, flavor="seurat",
                                    batch_key="batch" if batch_key is not None else None)
        hv = tmp.var["highly_variable"].to_numpy()
    except (ValueError, IndexError) as exc:  # tiny data: fall back to variance ranking
        logger.info("HVG selection fell back to variance ranking (%s)", exc)
        mean = np.asarray(block.mean(axis=0)).ravel()
        var = np.asarray(block.multiply(block).mean(axis=0)).ravel() - mean**2
        hv = np.zeros(adata.n_vars, dtype=bool)
        hv[np.argsort(-var, kind="stable")[:n_top]] = True
    return np.flatnonzero(hv & (nz > 0))


def _signature_gene_idx(adata, library, set_names) -> tuple[np.ndarray, dict]:
    from ..genesets import match_signatures

    sub = library.subset(names=[s for s in set_names if s in library.sets])
    matched = match_signatures(sub, adata, min_coverage=0.0, on_low_coverage="keep")
    idx, missing = [], {}
    for name, ms in matched.items():
        w = np.asarray(ms.weights)
        idx.extend(np.asarray(ms.indices)[w != 0].tolist())
        if ms.missing:
            missing[name] = list(ms.missing)
    return np.unique(np.asarray(idx, dtype=np.int64)), missing


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
    min_seeds: int = 15,
    min_per_fold: int = 3,
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
        raise DataError(f"estimator must be 'logreg' or 'hgb', got {estimator!r}.",
                        fix="pass estimator='logreg' or 'hgb'.")
    if calibration not in ("temperature", "isotonic", None, "none"):
        raise DataError(f"calibration must be 'temperature', 'isotonic' or None, got {calibration!r}.",
                        fix="pass one of these.")
    calibration = "none" if calibration in (None, "none") else calibration
    if int(cv) < 2:
        raise DataError(f"cv must be >= 2, got {cv}.", fix="pass cv=5 (default) or another value >= 2.")
    if batch_key is not None and batch_key not in adata.obs:
        raise DataError(f"batch_key {batch_key!r} is not an obs column.", path="adata.obs",
                        fix="pass an existing obs column or batch_key=None.")
    min_required = max(int(min_seeds), int(min_per_fold) * int(cv))
    labels_full, seed_report, fib, scores, library, cls, extras = _weak_labels_impl(
        adata, signatures=signatures, score_key=score_key, lineage_key=lineage_key, layer=layer,
        classes=classes, z_min=z_min, margin=margin, max_seeds_per_class=max_seeds_per_class,
        min_required=min_required, random_state=random_state, z_method=z_method,
        seed_rule=seed_rule,
    )
    present = [c for c in cls if seed_report["seed_counts"][c] > 0]
    if len(present) < 2:
        raise DataError(
            f"only {len(present)} subtype(s) have at least {min_required} confident seed cells "
            f"(seed counts: {seed_report['candidate_counts']}); a classifier needs two or more.",
            path="adata", fix="lower z_min/margin/min_seeds, add cells, or check the gate and scores.",
        )
    fib_rows = np.flatnonzero(fib)
    X = _matrix(adata, layer)
    counts = _value_type(X) == "counts"

    # ---- features
    hvg = _hvg(adata, fib_rows, layer, counts, n_hvg, batch_key, random_state)
    sig_missing: dict = {}
    sig_idx = np.array([], dtype=np.int64)
    if library is not None:
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

            graph = fibroblast_graph(_fibroblast_lognorm(adata, fib, layer), random_state=random_state)
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
    species = _detect_species(genes)
    model = CafModel(
        kind=kind, genes=genes, classes=present, feature_mean=mean, feature_scale=sd, coef=coef,
        intercept=intercept, estimator=est if kind == "hgb" else None, species=species,
        scaling="per_batch" if per_batch else "train", calibration=calibration,
        temperature=temperature, isotonic=iso,
        signature_name=getattr(library, "name", str(signatures)),
        signature_version=getattr(library, "version", ""),
        signature_sha256=getattr(library, "sha256", ""), package_version=__version__,
        summary=summary,
    )
    logger.info(
        "trained %s on %d seeds (%s); CV macro-F1 vs weak labels %.3f; ECE %.3f -> %.3f; absent: %s",
        kind, y.size, dict(zip(present, np.bincount(y).tolist(), strict=True)),
        cv_report["macro_f1"], ece_before, ece_after, seed_report["absent_classes"] or "none",
    )
    extras["graph"] = graph
    return model, labels_full, seed_report, extras


# =========================================================================== classify


def _predict_proba(adata, model: CafModel, fib_rows: np.ndarray, *, layer, batch_key,
                   min_gene_overlap: float, keep_features: bool, graph=None):
    feats = _Features(adata, model.genes, layer, model_species=model.species, model_path=model.path,
                      min_overlap=min_gene_overlap)
    logger.info("model genes found in the data: %d of %d (%.1f%%)%s", feats.found.sum(),
                len(model.genes), 100 * feats.overlap,
                f"; mapped {feats.mapped_from}" if feats.mapped_from else "")
    proba = np.zeros((fib_rows.size, len(model.classes)))
    Zkeep = [] if keep_features else None
    if model.summary.get("params", {}).get("feature_smoothing", False):
        if graph is None:
            from ._evidence import fibroblast_graph

            X = _matrix(adata, layer)
            graph = fibroblast_graph(_lognorm(_rows_csr(X, fib_rows), _value_type(X) == "counts"))
        if model.scaling == "per_batch":
            batches = adata.obs[batch_key].to_numpy()[fib_rows] if batch_key is not None else None
            groups = np.zeros(fib_rows.size, dtype=int) if batches is None else pd.factorize(batches)[0]
            stats_g = {g: feats.stats(fib_rows[groups == g]) for g in np.unique(groups)}

            def rows_fn(p):
                raw = feats.raw_block(fib_rows[p])
                out = np.empty_like(raw)
                for g, (mu, s) in stats_g.items():
                    m = groups[p] == g
                    out[m] = _scale(raw[m], mu, s)
                return out
        else:
            def rows_fn(p):
                return _scale(feats.raw_block(fib_rows[p]), model.feature_mean, model.feature_scale)
        Zfull = _smoothed(graph, rows_fn, fib_rows.size, len(model.genes))
        for start in range(0, fib_rows.size, _PREDICT_CHUNK):
            p = np.arange(start, min(start + _PREDICT_CHUNK, fib_rows.size))
            proba[p] = model.predict_proba(Zfull[p])
        return proba, feats.report, (Zfull if keep_features else None)
    if model.scaling == "per_batch":
        batches = adata.obs[batch_key].to_numpy()[fib_rows] if batch_key is not None else None
        groups = np.zeros(fib_rows.size, dtype=int) if batches is None else pd.factorize(batches)[0]
        for g in np.unique(groups):
            pos = np.flatnonzero(groups == g)
            mu, s = feats.stats(fib_rows[pos])
            for start in range(0, pos.size, _PREDICT_CHUNK):
                p = pos[start:start + _PREDICT_CHUNK]
                Z = _scale(feats.raw_block(fib_rows[p]), mu, s)
                proba[p] = model.predict_proba(Z)
                if keep_features:
                    Zkeep.append((p, Z))
    else:
        for start in range(0, fib_rows.size, _PREDICT_CHUNK):
            p = np.arange(start, min(start + _PREDICT_CHUNK, fib_rows.size))
            Z = _scale(feats.raw_block(fib_rows[p]), model.feature_mean, model.feature_scale)
            proba[p] = model.predict_proba(Z)
            if keep_features:
                Zkeep.append((p, Z))
    Zfull = None
    if keep_features:
        Zfull = np.zeros((fib_rows.size, len(model.genes)))
        for p, Z in Zkeep:
            Zfull[p] = Z
    return proba, feats.report, Zfull


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


def _smooth(labels_fib: np.ndarray, Z: np.ndarray | None, adata, fib_rows, smooth_key, resolution,
            random_state) -> tuple[np.ndarray, dict]:
    if smooth_key is not None:
        if smooth_key not in adata.obs:
            raise DataError(f"smooth_key {smooth_key!r} is not an obs column.", path="adata.obs",
                            fix="pass an existing cluster column or smooth_key=None.")
        clusters = adata.obs[smooth_key].astype(str).to_numpy()[fib_rows]
        how = f"obs[{smooth_key!r}]"
    else:
        import anndata as ad
        import scanpy as sc
        from sklearn.decomposition import PCA

        n_comp = int(min(30, Z.shape[1] - 1, Z.shape[0] - 1))
        pcs = PCA(n_components=n_comp, random_state=random_state).fit_transform(Z)
        tmp = ad.AnnData(X=np.zeros((Z.shape[0], 1), dtype=np.float32))
        tmp.obsm["X_pca"] = pcs
        sc.pp.neighbors(tmp, n_neighbors=min(15, Z.shape[0] - 1), use_rep="X_pca",
                        random_state=random_state)
        sc.tl.leiden(tmp, resolution=resolution, random_state=random_state, flavor="igraph",
                     n_iterations=2, directed=False)
        clusters = tmp.obs["leiden"].astype(str).to_numpy()
        how = f"leiden(resolution={resolution}) on PCA of the classifier features"
    out = labels_fib.copy()
    for c in np.unique(clusters):
        m = clusters == c
        lab = pd.Series(labels_fib[m])
        assigned = lab[lab != K.UNASSIGNED]
        if len(assigned):
            vc = assigned.value_counts()
            out[m] = sorted(vc.index[vc == vc.max()])[0]
    return out, {"clusters": how, "n_clusters": int(np.unique(clusters).size)}


def classify(
    adata: AnnData,
    model: CafModel | str | None = None,
    *,
    threshold: float = 0.5,
    smooth: bool = False,
    smooth_key: str | None = None,
    smooth_resolution: float = 5.0,
    lineage_key: str = K.OBS_LINEAGE,
    score_key: str = K.OBSM_SCORES,
    layer: str | None = None,
    batch_key: str | None = None,
    min_gene_overlap: float = 0.5,
    state_z: float = 2.5,
    perivascular: str = "vcaf",
    tissue_key: str | None = None,
    signatures="caf_v1",
    key_added: str = K.OBS_SUBTYPE,
    random_state: int = 0,
    copy: bool = False,
    **train_kwargs,
) -> AnnData | None:
    """Classify gated fibroblasts into CAF subtypes with calibrated probabilities.

    Parameters
    ----------
    adata
        Log-normalised (or raw-count) data with ``obs[lineage_key]``.
    model
        A :class:`~cafclassify.model.CafModel`, a path to a saved model, or
        ``None`` to train on ``adata`` itself (``train_kwargs`` go to :func:`train`;
        the seeds are written to ``obs["caf_seed_label"]``).
    threshold
        Cells whose highest calibrated probability is below this are ``"unassigned"``.
    smooth
        Also write a cluster majority vote (never overwrites the per-cell call).
    smooth_key
        obs column with clusters for the vote (default: Leiden over-clustering of fibroblasts).
    smooth_resolution
        Leiden resolution of the over-clustering.
    lineage_key, score_key, layer
        Gate labels, signature scores (for seeds and state/LTBP2 axes) and expression layer.
    batch_key
        For models trained with ``batch_key``: standardise each batch of ``adata`` separately.
    min_gene_overlap
        Refuse (ModelError) when fewer than this fraction of model genes are in the data.
    state_z
        Robust-z threshold of the senescence/cycling flags (reference: the fibroblasts'
        median/MAD; flags are set for fibroblasts and mural cells: cycling is a state, and
        a cycling pericyte stays in its compartment with the flag set).
    perivascular
        What ``obs[key_added]`` says for mural (perivascular) cells: ``"vcaf"`` (default,
        the seed review's definition: vCAFs originate from perivascular cells) or
        ``"separate"`` (``"mural"``, as Wu 2021 / Cords 2023). See
        :mod:`cafclassify.tl._compartment`.
    tissue_key
        obs column with tumour/normal annotation: mural cells of normal tissue are
        ``"mural"`` under either reading.
    signatures
        Signature library (for scores computed on the fly and training).
    key_added
        obs key of the subtype call.
    random_state
        Seed.
    copy
        Return a modified copy instead of writing in place.

    Returns
    -------
    ``None`` (or a copy if ``copy=True``) with

    ``obs["caf_subtype"]``
        categorical: model classes, ``"unassigned"``, ``"not_fibroblast"``.
    ``obs["caf_subtype_confidence"]``
        highest calibrated probability (NaN for non-fibroblasts).
    ``obsm["caf_subtype_proba"]``
        DataFrame cells x classes (rows sum to 1 for fibroblasts, NaN otherwise).
    ``obs["ltbp2_positive"]``, ``obs["ltbp2_score"]``
        LTBP2+ axis (see module docstring for the rule and its caveat).
    ``obs["senescent_flag"]``, ``obs["cycling_flag"]``
        state flags (robust z of the state score among fibroblasts >= ``state_z``).
    ``obs["caf_seed_label"]``
        seeds (only when the model was trained here).
    ``obs["caf_subtype_smoothed"]``
        cluster majority vote (only with ``smooth=True``).
    ``uns["cafclassify"]["classify"]``
        parameters, gene overlap, absent classes, LTBP2 caveat, flag rules,
        counts and the model's training summary.
    """
    from ..model import CafModel

    if not 0.0 <= float(threshold) <= 1.0:
        raise DataError(f"threshold must be in [0, 1], got {threshold}.", fix="pass a probability.")
    adata = adata.copy() if copy else adata
    fib, gated = _fibroblast_mask(adata, lineage_key)
    fib_rows = np.flatnonzero(fib)
    if fib_rows.size == 0:
        raise DataError("no cells are labelled 'fibroblast', so there is nothing to classify.",
                        path=f"obs[{lineage_key!r}]",
                        fix="check the gate (cafclassify.gate) or pass pre-gated fibroblasts.")
    with contextlib.ExitStack() as stack:
        if model is None:  # training reads the fibroblasts several times: read them once
            stack.enter_context(_fibroblasts_in_memory(adata, layer, fib_rows))
        trained_here = False
        graph = None
        if model is None:
            model, labels_full, seed_report, extras = _train_impl(
                adata, **_train_defaults(signatures=signatures, score_key=score_key,
                                         lineage_key=lineage_key, layer=layer, batch_key=batch_key,
                                         random_state=random_state, **train_kwargs),
            )
            _write_seeds(adata, labels_full, seed_report, K.OBS_SEED)
            graph = extras.get("graph")
            if "evidence" in extras:  # programme evidence of every fibroblast (seed rule)
                ev = pd.DataFrame(np.nan, index=adata.obs_names, columns=extras["evidence"].columns)
                ev.iloc[fib_rows] = extras["evidence"].to_numpy()
                adata.obsm[K.OBSM_SUBTYPE_EVIDENCE] = ev
            trained_here = True
        elif isinstance(model, str | bytes) or hasattr(model, "__fspath__"):
            model = CafModel.load(model)
        elif train_kwargs:
            raise DataError(f"training options {sorted(train_kwargs)} given together with a model.",
                            fix="pass either a model or training options, not both.")
        proba, overlap, Z = _predict_proba(adata, model, fib_rows, layer=layer, batch_key=batch_key,
                                           min_gene_overlap=min_gene_overlap,
                                           keep_features=smooth and smooth_key is None, graph=graph)
        classes = list(model.classes)
        conf = proba.max(axis=1)
        lab_fib = np.where(conf >= threshold, np.asarray(classes, dtype=object)[proba.argmax(axis=1)],
                           K.UNASSIGNED)
        labels = np.full(adata.n_obs, K.NOT_FIBROBLAST, dtype=object)
        labels[fib_rows] = lab_fib
        mural, mural_lab, peri_info = perivascular_labels(adata, lineage_key=lineage_key,
                                                          perivascular=perivascular, tissue_key=tissue_key)
        labels[mural] = mural_lab[mural]
        if perivascular == "vcaf" and VCAF not in classes and (labels == VCAF).any():
            classes = [*classes, VCAF]
            proba = np.column_stack([proba, np.zeros(fib_rows.size)])
        cats = [*classes, K.UNASSIGNED, MURAL_LABEL, K.NOT_FIBROBLAST]
        conf_key = K.OBS_SUBTYPE_CONF if key_added == K.OBS_SUBTYPE else f"{key_added}_confidence"
        proba_key = K.OBSM_SUBTYPE_PROBA if key_added == K.OBS_SUBTYPE else f"{key_added}_proba"
        adata.obs[key_added] = pd.Categorical(labels, categories=cats)
        conf_full = np.full(adata.n_obs, np.nan)
        conf_full[fib_rows] = conf
        pfull = np.full((adata.n_obs, len(classes)), np.nan)
        pfull[fib_rows] = proba
        is_v = mural & (labels == VCAF)
        if is_v.any():  # the compartment decides these: the gate's confidence
            conf_full[is_v] = lineage_confidence(adata, is_v)
            pfull[is_v, classes.index(VCAF)] = conf_full[is_v]
        adata.obs[conf_key] = conf_full
        adata.obsm[proba_key] = pd.DataFrame(pfull, index=adata.obs_names, columns=classes)

        # ---- separate axes: LTBP2, senescence, cycling
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
        lt_pos, lt_score, lt_info = _ltbp2_axis(adata, fib_rows, layer, module, random_state)
        adata.obs[K.OBS_LTBP2] = lt_pos
        adata.obs[K.OBS_LTBP2_SCORE] = lt_score
    flags_info = {}
    for st, key in (("senescence", K.OBS_SENESCENT), ("cycling", K.OBS_CYCLING)):
        flag = np.zeros(adata.n_obs, dtype=bool)
        if st in axis_scores:
            flag[stroma] = _robust_z(axis_scores[st].to_numpy(), ref=fib_in_stroma) >= state_z
            flags_info[st] = {"status": "called", "n_flagged": int(flag.sum())}
        else:
            logger.warning("no %r score: %s is False for all cells.", st, key)
            flags_info[st] = {"status": "score unavailable", "n_flagged": 0}
        adata.obs[key] = flag
    flags_info["rule"] = (f"flag if the state score's robust z (median/MAD of the fibroblasts of "
                          f"this dataset) >= {state_z}, for fibroblasts and mural cells; relative, so "
                          "a dataset has its top tail flagged only if it stands out by this much")
    flags_info["score_source"] = axis_src

    smooth_info = None
    if smooth:
        sm, smooth_info = _smooth(lab_fib, Z, adata, fib_rows, smooth_key, smooth_resolution,
                                  random_state)
        sm_full = np.full(adata.n_obs, K.NOT_FIBROBLAST, dtype=object)
        sm_full[fib_rows] = sm
        adata.obs[K.OBS_SUBTYPE_SMOOTHED] = pd.Categorical(sm_full, categories=cats)

    absent = list(model.summary.get("absent_classes", []))
    if absent:
        logger.warning("classes absent from the model (never called): %s", absent)
    sec = K.uns_section(adata, K.UNS_CLASSIFY)
    sec.update(_uns_safe({
        "params": {"threshold": float(threshold), "smooth": bool(smooth), "smooth_key": smooth_key or "",
                   "perivascular": perivascular, "tissue_key": tissue_key or "",
                   "lineage_key": lineage_key, "score_key": score_key, "layer": layer or "",
                   "batch_key": batch_key or "", "min_gene_overlap": float(min_gene_overlap),
                   "state_z": float(state_z), "key_added": key_added, "random_state": int(random_state),
                   "gated": bool(gated)},
        "model": {"kind": model.kind, "classes": classes, "signature_name": model.signature_name,
                  "signature_sha256": model.signature_sha256, "package_version": model.package_version,
                  "calibration": model.calibration, "temperature": float(model.temperature),
                  "path": model.path or "", "trained_on_this_data": trained_here,
                  "scaling": model.scaling},
        "gene_overlap": overlap,
        "absent_classes": absent,
        "perivascular": peri_info,
        "unassigned": _unassigned_report(proba, classes, conf, threshold),
        "counts": pd.Series(labels).value_counts().to_dict(),
        "ltbp2": lt_info,
        "state_flags": flags_info,
        "smoothing": smooth_info or {},
        "training_summary": model.summary,
    }))
    return adata if copy else None


def _unassigned_report(proba: np.ndarray, classes: list[str], conf: np.ndarray, threshold: float) -> dict:
    """Why fibroblasts are ``unassigned``: no class reaches ``threshold``; the two classes
    they hesitate between (the top two probabilities) and how often."""
    un = conf < threshold
    n = int(conf.size)
    pairs: dict[str, int] = {}
    if un.any() and proba.shape[1] >= 2:
        top2 = np.argsort(-proba[un], axis=1)[:, :2]
        for a, b in top2:
            key = " / ".join(sorted((classes[a], classes[b])))
            pairs[key] = pairs.get(key, 0) + 1
    return {
        "n": int(un.sum()), "fraction_of_fibroblasts": float(un.mean()) if n else 0.0,
        "meaning": (f"ambiguous: no subtype reaches calibrated probability {threshold}; the cell "
                    "lies between the classes named in between"),
        "between": dict(sorted(pairs.items(), key=lambda kv: -kv[1])),
    }


def _train_defaults(**kw) -> dict:
    defaults = dict(
        signatures="caf_v1", score_key=K.OBSM_SCORES, lineage_key=K.OBS_LINEAGE, layer=None,
        estimator="logreg", n_hvg=0, batch_key=None, calibration="temperature", cv=5,
        classes=None, z_min=1.0, margin=1.0, z_method="std", seed_rule="evidence",
        feature_smoothing=False, max_seeds_per_class=2000, min_seeds=15,
        min_per_fold=3, C=0.2, self_training=1, pseudo_min_proba=0.9, sgd_threshold=200_000,
        random_state=0,
    )
    unknown = set(kw) - set(defaults)
    if unknown:
        raise DataError(f"unknown training option(s): {sorted(unknown)}.",
                        fix=f"use options of cafclassify.train: {sorted(defaults)}.")
    defaults.update(kw)
    return defaults
