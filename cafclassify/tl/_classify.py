"""CAF subtype classification of gated fibroblasts (and the perivascular compartment).

:func:`classify` trains a model on the data's own weak labels (:mod:`._seeds`, seed rule in
:mod:`._evidence`; features :mod:`._features`; training and calibration :mod:`._train`)
or applies a saved one, re-weights its calibrated probabilities to the subtype composition
of these fibroblasts (:mod:`._prior`), writes per-cell probabilities and calls, says what
``unassigned`` cells hesitate between, labels mural cells under the chosen perivascular
reading (:mod:`._compartment`), adds the separate axes (:mod:`._axes`) and records how well
the signature library rates each subtype's definition (:mod:`._definitions`).
"""

from __future__ import annotations

import contextlib
import inspect
import logging
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from .. import _keys as K
from .._errors import ConfigError, DataError, SignatureError
from ._axes import separate_axes
from ._compartment import MURAL_LABEL, VCAF, lineage_confidence, perivascular_labels
from ._definitions import NOT_STATED, definition_records
from ._features import _Features, _scale, _smoothed
from ._fibroblasts import (
    _PREDICT_CHUNK,
    _fibroblast_lognorm,
    _fibroblast_mask,
    _fibroblasts_in_memory,
    _uns_safe,
)
from ._prior import PRIORS, adjust_to_prior
from ._seeds import _write_seeds, weak_labels
from ._train import _train_impl, train

if TYPE_CHECKING:
    from anndata import AnnData

    from ..model import CafModel

__all__ = ["classify", "train", "weak_labels"]

logger = logging.getLogger(__name__)


def _predict_proba(adata, model: CafModel, fib_rows: np.ndarray, *, layer, batch_key,
                   min_gene_overlap: float, keep_features: bool, graph=None):
    """Calibrated probabilities of the fibroblasts (and their scaled features if asked).

    Features are scaled with the model's training statistics, or per batch of ``adata``
    for ``scaling="per_batch"`` models, and kNN-averaged over ``graph`` (built here when
    not given) for models trained with ``feature_smoothing``.
    """
    feats = _Features(adata, model.genes, layer, model_species=model.species, model_path=model.path,
                      min_overlap=min_gene_overlap)
    logger.info("model genes found in the data: %d of %d (%.1f%%)%s", feats.found.sum(),
                len(model.genes), 100 * feats.overlap,
                f"; mapped {feats.mapped_from}" if feats.mapped_from else "")
    if model.scaling == "per_batch":
        batches = adata.obs[batch_key].to_numpy()[fib_rows] if batch_key is not None else None
        groups = np.zeros(fib_rows.size, dtype=int) if batches is None else pd.factorize(batches)[0]
        group_stats = {g: feats.stats(fib_rows[groups == g]) for g in np.unique(groups)}

        def scaled(p: np.ndarray) -> np.ndarray:
            raw = feats.raw_block(fib_rows[p])
            out = np.empty_like(raw)
            for g, (mu, sd) in group_stats.items():
                m = groups[p] == g
                out[m] = _scale(raw[m], mu, sd)
            return out
    else:
        def scaled(p: np.ndarray) -> np.ndarray:
            return _scale(feats.raw_block(fib_rows[p]), model.feature_mean, model.feature_scale)

    Zfull = None
    if model.summary.get("params", {}).get("feature_smoothing", False):
        if graph is None:
            from ._evidence import fibroblast_graph

            graph = fibroblast_graph(_fibroblast_lognorm(adata, fib_rows, layer))
        Zfull = _smoothed(graph, scaled, fib_rows.size, len(model.genes))
        scaled = Zfull.__getitem__
    elif keep_features:
        Zfull = np.zeros((fib_rows.size, len(model.genes)))
    proba = np.zeros((fib_rows.size, len(model.classes)))
    for start in range(0, fib_rows.size, _PREDICT_CHUNK):
        p = np.arange(start, min(start + _PREDICT_CHUNK, fib_rows.size))
        Z = scaled(p)
        proba[p] = model.predict_proba(Z)
        if keep_features and Zfull is not None:
            Zfull[p] = Z
    return proba, feats.report, (Zfull if keep_features else None)


def _smooth(labels_fib: np.ndarray, Z: np.ndarray | None, adata, fib_rows, smooth_key, resolution,
            random_state) -> tuple[np.ndarray, dict]:
    if smooth_key is not None:  # checked by classify before anything was written
        clusters = adata.obs[smooth_key].astype(str).to_numpy()[fib_rows]
        how = f"obs[{smooth_key!r}]"
    else:
        import anndata as ad
        import scanpy as sc
        from sklearn.decomposition import PCA

        from ._knn import neighbors

        n_comp = int(min(30, Z.shape[1] - 1, Z.shape[0] - 1))
        pcs = PCA(n_components=n_comp, random_state=random_state).fit_transform(Z)
        tmp = ad.AnnData(X=np.zeros((Z.shape[0], 1), dtype=np.float32))
        tmp.obsm["X_pca"] = pcs
        neighbors(tmp, n_neighbors=min(15, Z.shape[0] - 1), use_rep="X_pca", random_state=random_state)
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
    prior: str = "estimate",
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
    prior
        Class prior of the calls: ``"estimate"`` (default) re-weights the calibrated
        probabilities to the subtype composition estimated on these fibroblasts (EM,
        Saerens et al. 2002; the model is trained with balanced class weights, i.e. as
        if every subtype were equally common); ``"uniform"`` keeps the training prior.
        See :mod:`cafclassify.tl._prior`.
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
        counts, the model's training summary and ``definitions``: the signature
        library's rating of each subtype's definition (:mod:`cafclassify.tl._definitions`).
    """
    from ..model import CafModel

    if not 0.0 <= float(threshold) <= 1.0:
        raise ConfigError(f"threshold must be in [0, 1], got {threshold}.", fix="pass a probability.")
    if smooth and smooth_key is not None and smooth_key not in adata.obs:
        raise ConfigError(f"smooth_key {smooth_key!r} is not an obs column.", path="adata.obs",
                          fix="pass an existing cluster column or smooth_key=None.")
    if prior not in PRIORS:
        raise ConfigError(f"prior must be one of {PRIORS}, got {prior!r}.",
                          fix="pass prior='estimate' (default) or 'uniform'.")
    # the perivascular reading is checked (and decided) before any training
    mural, mural_lab, peri_info = perivascular_labels(adata, lineage_key=lineage_key,
                                                      perivascular=perivascular, tissue_key=tissue_key)
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
            raise ConfigError(f"training options {sorted(train_kwargs)} given together with a model.",
                              fix="pass either a model or training options, not both.")
        proba, overlap, Z = _predict_proba(adata, model, fib_rows, layer=layer, batch_key=batch_key,
                                           min_gene_overlap=min_gene_overlap,
                                           keep_features=smooth and smooth_key is None, graph=graph)
        classes = list(model.classes)
        if prior == "estimate":
            proba, pi, em = adjust_to_prior(proba)
            prior_info = {"method": "estimated on these fibroblasts (EM, Saerens et al. 2002)",
                          "prior": {c: float(v) for c, v in zip(classes, pi, strict=True)}, **em}
        else:
            prior_info = {"method": "uniform (the training prior: balanced class weights)",
                          "prior": {c: 1.0 / len(classes) for c in classes}}
        conf = proba.max(axis=1)
        lab_fib = np.where(conf >= threshold, np.asarray(classes, dtype=object)[proba.argmax(axis=1)],
                           K.UNASSIGNED)
        labels = np.full(adata.n_obs, K.NOT_FIBROBLAST, dtype=object)
        labels[fib_rows] = lab_fib
        labels[mural] = mural_lab[mural]
        if perivascular == "vcaf" and VCAF not in classes and (labels == VCAF).any():
            classes = [*classes, VCAF]
            proba = np.column_stack([proba, np.zeros(fib_rows.size)])
        cats = [*classes, K.UNASSIGNED, MURAL_LABEL, K.NOT_FIBROBLAST]
        conf_key, proba_key = K.subtype_keys(key_added)
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

        # ---- separate axes: LTBP2, senescence, cycling (they do not read the model)
        lt_info, flags_info = separate_axes(adata, fib, mural, score_key=score_key, signatures=signatures,
                                            layer=layer, state_z=state_z, random_state=random_state)

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
                   "perivascular": perivascular, "tissue_key": tissue_key or "", "prior": prior,
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
        **({"species_warning": overlap["species_warning"]} if "species_warning" in overlap else {}),
        "absent_classes": absent,
        "perivascular": peri_info,
        "prior": prior_info,
        "unassigned": _unassigned_report(proba, classes, conf, threshold),
        "counts": pd.Series(labels).value_counts().to_dict(),
        "ltbp2": lt_info,
        "state_flags": flags_info,
        "smoothing": smooth_info or {},
        "training_summary": _without_audit(model.summary),
        "definitions": _definitions(signatures if trained_here else model.signature_name, classes),
    }))
    return adata if copy else None


def _definitions(library, classes: list[str]) -> dict[str, dict]:
    """The library's rating of every subtype definition (:mod:`._definitions`); a class the
    library does not rate (or a library that cannot be loaded again) is "not stated"."""
    try:
        recs = definition_records(library)
    except (SignatureError, OSError, TypeError, ValueError) as exc:
        logger.info("subtype definitions not recorded: the signature library could not be read (%s)", exc)
        recs = {}
    for c in classes:
        recs.setdefault(c, {"display_name": c, "rating": NOT_STATED, "thin": False, "evidence": ""})
    return recs


def _without_audit(summary: dict) -> dict:
    """The training summary for uns: the per-gene audit is written once, as a table."""
    wl = summary.get("weak_labels", {})
    if "gene_audit" not in wl:
        return summary
    return {**summary, "weak_labels": {k: v for k, v in wl.items() if k != "gene_audit"}}


def _unassigned_report(proba: np.ndarray, classes: list[str], conf: np.ndarray, threshold: float) -> dict:
    """Why fibroblasts are ``unassigned``: no class reaches ``threshold``; the two classes
    they hesitate between (the top two probabilities) and how often."""
    un = conf < threshold
    n = int(conf.size)
    pairs: dict[str, int] = {}
    if un.any() and proba.shape[1] >= 2:
        top2 = np.argsort(-proba[un], axis=1)[:, :2]
        for a, b in top2:
            key = " vs ".join(sorted((classes[a], classes[b])))  # no '/': h5ad nests such keys
            pairs[key] = pairs.get(key, 0) + 1
    return {
        "n": int(un.sum()), "fraction_of_fibroblasts": float(un.mean()) if n else 0.0,
        "meaning": (f"ambiguous: no subtype reaches calibrated probability {threshold}; "
                    "'between' counts the two most probable classes of these cells"),
        "between": dict(sorted(pairs.items(), key=lambda kv: -kv[1])),
    }


def _train_defaults(**kw) -> dict:
    """:func:`train`'s options: its own defaults (one place) updated with ``kw``."""
    defaults = {k: p.default for k, p in inspect.signature(train).parameters.items() if k != "adata"}
    unknown = set(kw) - set(defaults)
    if unknown:
        raise ConfigError(f"unknown training option(s): {sorted(unknown)}.",
                          fix=f"use options of cafclassify.train: {sorted(defaults)}.")
    defaults.update(kw)
    return defaults
