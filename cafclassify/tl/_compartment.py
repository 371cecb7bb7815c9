"""The perivascular compartment in subtype calls: two readings of "vCAF", one output.

The seed review (Badran et al. 2025, section 3.5) defines vascular CAFs as cells that
"originate from perivascular stromal cells and are found near tumor blood vessels"; in the
study that named them (Bartoschek et al. 2018, sorted mouse breast CAFs) vCAFs express
pericyte genes (Rgs5, Higd1b, Notch3, Des, Nid1) and are the majority of CAFs. Other
authors keep perivascular cells apart from CAFs (Wu et al. 2021 label them PVL; Cords et
al. 2023 separate pericytes from their vCAF class). Both readings are legitimate, so the
gate keeps ``fibroblast`` and ``mural`` apart in ``obs["caf_lineage"]`` in every case and
``perivascular`` only decides what ``obs["caf_subtype"]`` says for mural cells:

``"vcaf"`` (default: the seed review's definition)
    mural cells of tumour tissue are ``vCAF``; their subtype confidence (and the ``vCAF``
    column of ``obsm["caf_subtype_proba"]``) is the gate's confidence in the mural call,
    the other columns are NaN: the classifier did not see them.
``"separate"``
    mural cells are ``mural`` (not a CAF subtype), as in Wu 2021 / Cords 2023.

**Normal tissue stays normal.** With ``tissue_key`` (an obs column with tumour/normal
annotation), mural cells whose value reads as normal tissue (``normal``, ``adjacent``,
``healthy``, ``non-tumour``/``non-malignant``, case-insensitive, at the start of the
value) are ``mural`` under either reading: pericytes of normal tissue are not CAFs.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

from .. import _keys as K
from .._errors import ConfigError

__all__ = ["MURAL_LABEL", "PERIVASCULAR_READINGS", "caf_mask", "lineage_confidence", "normal_tissue_mask",
           "perivascular_labels"]

PERIVASCULAR_READINGS = ("vcaf", "separate")
MURAL_LABEL = "mural"
VCAF = "vCAF"
_NORMAL = re.compile(r"^\s*(normal|adjacent|healthy|non[-_ ]?(tumou?r|malignant|cancer))", re.IGNORECASE)


def normal_tissue_mask(adata, tissue_key: str | None) -> np.ndarray:
    """Cells whose ``obs[tissue_key]`` reads as normal tissue (all False without a key)."""
    if tissue_key is None:
        return np.zeros(adata.n_obs, dtype=bool)
    if tissue_key not in adata.obs:
        # a configuration mistake, not data that cannot be subtyped: never "skipped"
        raise ConfigError(f"tissue_key {tissue_key!r} is not an obs column.", path="adata.obs",
                        fix=f"pass one of {list(adata.obs.columns)[:15]} or tissue_key=None.")
    vals = adata.obs[tissue_key].astype(str).to_numpy()
    return np.array([bool(_NORMAL.match(v)) for v in vals], dtype=bool)


def perivascular_labels(adata, *, lineage_key: str, perivascular: str, tissue_key: str | None
                        ) -> tuple[np.ndarray, np.ndarray, dict]:
    """Subtype label of each mural cell under the chosen reading.

    Returns
    -------
    ``mural`` (bool mask of mural cells), ``labels`` (object array, only meaningful where
    ``mural``) and a record for ``uns``.
    """
    if perivascular not in PERIVASCULAR_READINGS:
        raise ConfigError(f"perivascular must be one of {PERIVASCULAR_READINGS}, got {perivascular!r}.",
                        fix="pass perivascular='vcaf' (default) or 'separate'.")
    if lineage_key in adata.obs:
        mural = (adata.obs[lineage_key].astype(str) == "mural").to_numpy()
    else:
        mural = np.zeros(adata.n_obs, dtype=bool)
    normal = normal_tissue_mask(adata, tissue_key)
    labels = np.full(adata.n_obs, MURAL_LABEL, dtype=object)
    if perivascular == "vcaf":
        labels[mural & ~normal] = VCAF
    info = {
        "reading": perivascular,
        "rule": ("mural cells of tumour tissue are vCAF (seed review: vCAFs originate from "
                 "perivascular cells); of normal tissue: mural" if perivascular == "vcaf" else
                 "mural cells are kept apart from CAFs (subtype 'mural')"),
        "tissue_key": tissue_key or "",
        "n_mural": int(mural.sum()),
        "n_vcaf": int((mural & (labels == VCAF)).sum()),
        "n_mural_normal_tissue": int((mural & normal).sum()),
        "confidence": "vCAF probability of a mural cell = the gate's confidence in its mural call",
    }
    return mural, labels, info


def lineage_confidence(adata, mask: np.ndarray) -> np.ndarray:
    """The gate's confidence for ``mask`` cells (1.0 where the gate recorded none)."""
    if K.OBS_LINEAGE_CONF in adata.obs:
        return pd.to_numeric(adata.obs[K.OBS_LINEAGE_CONF], errors="coerce").fillna(1.0).to_numpy()[mask]
    return np.ones(int(mask.sum()))


def caf_mask(calls) -> np.ndarray:
    """The CAFs among cells with subtype ``calls``: every call but ``not_fibroblast``, ``mural``
    and a missing one.

    That is the fibroblasts and, under the ``"vcaf"`` reading, the mural cells of tumour
    tissue called ``vCAF``. Every proportion of CAF subtypes (the report's first screen and
    subtype table, the summary page, ``proportions.csv``) is a fraction of these cells, so
    the same sample gives the same fractions everywhere. Pass the calls as stored (a cell
    without a call, NaN, is not a CAF), not converted to strings.
    """
    s = pd.Series(calls)
    return (s.notna() & ~s.astype(str).isin([K.NOT_FIBROBLAST, MURAL_LABEL])).to_numpy()
