"""What happens when a dataset cannot support subtyping (``on_insufficient``).

``classify`` raises :class:`~cafclassify._errors.DataError` when the data cannot
support a classifier (too few fibroblasts or seed cells, too few subtype gene sets
covered by the genes). With ``on_insufficient="skip"`` (the default of the workflow,
the CLI and the API) the dataset keeps its gate and scores, no fibroblast subtype is
invented, and the reason is recorded in ``uns["cafclassify"]["classify"]`` for the
report and the summary.

**The perivascular compartment does not depend on the classifier.** Under the
``"vcaf"`` reading (:mod:`._compartment`) a mural cell of tumour tissue is a vCAF
because the gate put it in the mural compartment, not because a model learnt it. A
sorted CAF sample in which vCAFs are most of the cells (Bartoschek et al. 2018: 68 %)
often leaves too few fibroblasts of a second subtype to train a classifier; skipping
then used to drop the vCAF calls too, and the sample's main population had no call.
Measured on the breast atlas sample reduced to a sorted-CAF design (its 317 author PVL
cells and 150 of its 379 author CAFs, ``benchmarks/bench_real.py``'s sorted-stroma table,
``random_state`` 1): at one of three random subsets only myCAF had enough seeds, the
classifier was skipped, and the calls' ARI against the authors (PVL read as vCAF) was 0:
no cell had a call. With the compartment's calls kept it is 0.772 (301 of 317 PVL cells
vCAF, the author CAFs 'unassigned'), against 0.818 and 0.843 at the two subsets where
the classifier was trained, and at most 0.04 for argmax marker scores. (Measured before
the few-seed reading of :mod:`._train`, which now trains the classifier on that subset:
0.815. Skips remain wherever no second class passes its existence test.) So when the
classifier is skipped and the reading calls any mural cell vCAF, ``obs["caf_subtype"]``
is still written: ``vCAF`` for those cells (confidence and the ``vCAF`` column of
``obsm["caf_subtype_proba"]``: the gate's confidence, as after a trained
classification), ``unassigned`` for every fibroblast (no subtype could be called:
``uns[...]["unassigned"]["meaning"]`` says so, and the status stays ``"skipped"``),
``mural`` / ``not_fibroblast`` for the rest. Without a vCAF call nothing is written.

**Nor do the separate axes.** The LTBP2+ axis and the senescent / cycling flags
(:mod:`._axes`) read expression and state scores, not the model, so a skipped classifier
still writes them for the fibroblasts and mural cells (``obs["ltbp2_positive"]``,
``obs["senescent_flag"]``, ``obs["cycling_flag"]``; their records under ``ltbp2`` and
``state_flags``), as a trained one does. Until 2026-12-07 a skip left them out.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from .. import _keys as K
from .._errors import CafClassifyError

logger = logging.getLogger(__name__)

__all__ = ["ON_INSUFFICIENT", "mark_classification_skipped"]

ON_INSUFFICIENT = ("skip", "error")


def mark_classification_skipped(adata, exc: Exception, *, lineage_key: str = K.OBS_LINEAGE,
                                perivascular: str = "vcaf", tissue_key: str | None = None,
                                key_added: str = K.OBS_SUBTYPE, signatures="caf_v1",
                                score_key: str = K.OBSM_SCORES, layer: str | None = None,
                                state_z: float = 2.5, random_state: int = 0) -> None:
    """Record why no fibroblast subtypes were assigned; the gate and scores are kept.

    No fibroblast subtype is invented. Stale subtype columns of an earlier run are
    removed. When the perivascular reading calls mural cells vCAF, ``obs[key_added]``
    keeps those calls and marks every fibroblast ``unassigned`` (module docstring);
    otherwise ``obs[key_added]`` and friends are absent. The report marks the subtype
    section "not run" and shows the reason.

    Parameters
    ----------
    adata
        The data ``classify`` was called on (modified in place).
    exc
        The :class:`~cafclassify._errors.DataError` that stopped the classifier.
    lineage_key, perivascular, tissue_key, key_added, signatures
        As given to ``classify`` (``signatures``: for the library's rating of the vCAF
        definition, recorded with kept vCAF calls as a trained classification records it).
    score_key, layer, state_z, random_state
        As given to ``classify``, for the LTBP2+ axis and the state flags.
    """
    from ._axes import AXIS_KEYS, separate_axes
    from ._classify import _definitions
    from ._compartment import MURAL_LABEL, VCAF, lineage_confidence, perivascular_labels
    from ._fibroblasts import _fibroblast_mask, _uns_safe

    reason = getattr(exc, "message", str(exc))
    logger.warning("subtype classification skipped: %s", reason)
    conf_key, proba_key = K.subtype_keys(key_added)
    for key in (key_added, conf_key, K.OBS_SUBTYPE_SMOOTHED, K.OBS_SEED, *AXIS_KEYS):
        if key in adata.obs.columns:
            del adata.obs[key]
    if proba_key in adata.obsm:
        del adata.obsm[proba_key]
    section = {"status": "skipped", "reason": reason,
               "warnings": [f"subtype classification was skipped: {reason}"]}
    try:
        mural, labels, peri = perivascular_labels(adata, lineage_key=lineage_key, perivascular=perivascular,
                                                  tissue_key=tissue_key)
    except CafClassifyError as err:  # the compartment cannot be read either: nothing to keep
        logger.info("no perivascular calls kept: %s", err)
        mural = np.zeros(adata.n_obs, dtype=bool)
    vcaf = mural & (labels == VCAF) if mural.any() else mural
    fib = _fibroblast_mask(adata, lineage_key, warn=False)[0]  # classify's reading, ungated data too
    if fib.any():  # the separate axes do not read the model (module docstring)
        lt_info, flags_info = separate_axes(adata, fib, mural, score_key=score_key, signatures=signatures,
                                            layer=layer, state_z=state_z, random_state=random_state)
        section.update({"ltbp2": lt_info, "state_flags": flags_info})
    if vcaf.any():
        calls = np.full(adata.n_obs, K.NOT_FIBROBLAST, dtype=object)
        calls[fib] = K.UNASSIGNED
        calls[mural] = labels[mural]
        adata.obs[key_added] = pd.Categorical(calls, categories=[VCAF, K.UNASSIGNED, MURAL_LABEL,
                                                                     K.NOT_FIBROBLAST])
        conf = np.full(adata.n_obs, np.nan)
        conf[vcaf] = lineage_confidence(adata, vcaf)
        adata.obs[conf_key] = conf
        adata.obsm[proba_key] = pd.DataFrame({VCAF: conf}, index=adata.obs_names)
        n_fib = int(fib.sum())
        section.update({
            "perivascular": peri,
            "definitions": _definitions(signatures, [VCAF]),
            "counts": pd.Series(calls).value_counts().to_dict(),
            "unassigned": {
                "n": n_fib, "fraction_of_fibroblasts": 1.0 if n_fib else 0.0,
                "meaning": ("not classified: no fibroblast subtype could be called (classification "
                            "skipped, see 'reason'); the perivascular (mural) cells keep their vCAF call"),
                "between": {}},
        })
        logger.warning("kept the perivascular compartment's calls: %d mural cells of tumour tissue are vCAF "
                       "(reading %r: the gate's compartment, not the classifier); the %d fibroblasts are "
                       "'unassigned'", int(vcaf.sum()), perivascular, n_fib)
    adata.uns.setdefault(K.UNS, {})[K.UNS_CLASSIFY] = _uns_safe(section)
