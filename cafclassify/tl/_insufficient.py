"""What happens when a dataset cannot support subtyping (``on_insufficient``).

``classify`` raises :class:`~cafclassify._errors.DataError` when the data cannot
support a classifier (too few fibroblasts or seed cells, too few subtype gene sets
covered by the genes). With ``on_insufficient="skip"`` (the default of the workflow,
the CLI and the API) the dataset keeps its gate and scores, no subtype label is
invented, and the reason is recorded in ``uns["cafclassify"]["classify"]`` for the
report and the summary.
"""

from __future__ import annotations

import logging

logger = logging.getLogger(__name__)

__all__ = ["ON_INSUFFICIENT", "mark_classification_skipped"]

ON_INSUFFICIENT = ("skip", "error")


def mark_classification_skipped(adata, exc: Exception) -> None:
    """Record why no subtypes were assigned; the gate and scores are kept as they are.

    No subtype labels are invented: ``obs["caf_subtype"]`` and friends are absent, the
    report marks the subtype section "not run" and shows the reason as a warning.
    """
    from .. import _keys as K

    reason = getattr(exc, "message", str(exc))
    logger.warning("subtype classification skipped: %s", reason)
    for key in (K.OBS_SUBTYPE, K.OBS_SUBTYPE_CONF, K.OBS_SUBTYPE_SMOOTHED, K.OBS_SEED):
        if key in adata.obs.columns:
            del adata.obs[key]
    if K.OBSM_SUBTYPE_PROBA in adata.obsm:
        del adata.obsm[K.OBSM_SUBTYPE_PROBA]
    adata.uns.setdefault(K.UNS, {})[K.UNS_CLASSIFY] = {
        "status": "skipped",
        "reason": reason,
        "warnings": [f"subtype classification was skipped: {reason}"],
    }


