"""Removal of the cells :func:`cafclassify.pp.qc` marked as failing: a separate, explicit step.

:func:`cafclassify.pp.qc` only marks cells (``obs["qc_pass"]``, ``obs["qc_reason"]``);
:func:`filter_cells` removes the failing cells, explicitly, from data in memory. For a
backed AnnData (matrix on disk), :func:`filter_cells_to_h5ad` writes the passing cells
to a new file block by block (:func:`cafclassify.io._filter_h5ad.filter_cells_h5ad`).
Both refuse unmarked data and data where no cell passes, and record
``uns["cafclassify"]["qc"]["filtered"]``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
from anndata import AnnData

from .. import _keys as K
from .._errors import DataError
from ..io._lazy import is_lazy
from ._qc_metrics import _CHUNK

__all__ = ["filter_cells", "filter_cells_to_h5ad"]

logger = logging.getLogger(__name__)


def _check_marked(adata: AnnData) -> np.ndarray:
    """``obs["qc_pass"]`` as bool; refuses unmarked data and data where no cell passes."""
    if K.OBS_QC_PASS not in adata.obs.columns:
        raise DataError(
            f"obs[{K.OBS_QC_PASS!r}] is missing: cells have not been marked.",
            path="adata.obs",
            fix="run cafclassify.qc(adata) first.",
        )
    keep = adata.obs[K.OBS_QC_PASS].to_numpy(dtype=bool)
    if not keep.any():
        n_before = int(adata.n_obs)
        sec = adata.uns.get(K.UNS, {}).get(K.UNS_QC, {})
        th = sec.get("thresholds", {})
        reasons = adata.obs[K.OBS_QC_REASON].value_counts()
        reasons = ", ".join(f"{k} {v}" for k, v in reasons.items() if v)
        th = "; ".join(
            f"{sample}: " + ", ".join(
                f"{k}={v:.6g}" if isinstance(v, float) else f"{k}={v}"
                for k, v in (t.items() if isinstance(t, dict) else [])
                if k.startswith(("min_", "max_")) and v is not None
            )
            for sample, t in th.items()
        ) or "none"
        raise DataError(
            f"no cell passes QC ({n_before} cells: {reasons}; thresholds per sample: {th}).",
            path="adata",
            fix="check that the data hold what you expect (e.g. counts, the right species for "
            "MT- genes); relax the thresholds (larger nmads, or explicit min_genes=, "
            "min_counts=, max_pct_mt=) and run qc() again.",
        )
    return keep


def filter_cells(adata: AnnData, *, copy: bool = False) -> AnnData | None:
    """Remove the cells :func:`qc` marked as failing (``obs["qc_pass"] == False``).

    Parameters
    ----------
    adata
        Data on which :func:`qc` was run (in memory; for a backed AnnData use
        :func:`filter_cells_to_h5ad`).
    copy
        Return a filtered copy instead of subsetting ``adata`` in place.

    Returns
    -------
    ``None`` (or the filtered copy); records ``uns["cafclassify"]["qc"]["filtered"]``
    = ``{"n_before", "n_after"}``.

    Raises
    ------
    DataError
        If :func:`qc` has not been run, if no cell would remain, or for a backed AnnData.
    """
    keep = _check_marked(adata)
    if is_lazy(adata):
        raise DataError(
            "filter_cells() cannot subset a backed AnnData in memory (its matrix is on disk).",
            path=str(adata.filename),
            fix="write the passing cells to a new file with "
            "cafclassify.pp.filter_cells_to_h5ad(adata, out).",
        )
    n_before, n_after = int(adata.n_obs), int(keep.sum())
    if copy:
        out = adata[keep].copy()
    else:
        adata._inplace_subset_obs(keep)
        out = adata
    K.uns_section(out, K.UNS_QC)["filtered"] = {"n_before": n_before, "n_after": n_after}
    logger.info("filter_cells: kept %d of %d cells (%d removed).", n_after, n_before,
                n_before - n_after)
    return out if copy else None


def filter_cells_to_h5ad(
    adata: AnnData,
    out: str | os.PathLike,
    *,
    chunk_size: int = _CHUNK,
    compression: str | None = "gzip",
    stamp: Callable[[AnnData], None] | None = None,
    n_jobs: int = 1,
) -> Path:
    """Write the cells :func:`qc` marked as passing to a new ``.h5ad``, block by block.

    The out-of-core counterpart of ``filter_cells(adata, copy=True)`` followed by
    writing: the result file equals that copy written with anndata (same checks,
    same ``uns["cafclassify"]["qc"]["filtered"]`` record), but the matrices are
    copied from the source file in blocks of ``chunk_size`` cells
    (:func:`cafclassify.io._filter_h5ad.filter_cells_h5ad`). ``adata`` is not modified.

    Parameters
    ----------
    adata
        Backed AnnData (:func:`cafclassify.io._lazy.open_lazy`) on which :func:`qc` was
        run; its in-memory ``obs``, ``obsm``, ``var``, ``varm`` and ``uns`` are written
        (subset to the passing cells), its matrices are read from its file.
    out
        Output ``.h5ad`` (written atomically; must differ from the source file).
    chunk_size
        Cells per block read and written.
    compression
        h5py compression of the matrices (``"gzip"`` or ``None``).
    stamp
        Called with the filtered AnnData without its matrices just before it is
        written (e.g. provenance).
    n_jobs
        Processes writing the matrices (``X`` and each layer) at the same time.

    Returns
    -------
    The path written.

    Raises
    ------
    DataError
        If :func:`qc` has not been run, or no cell passes.
    """
    from ..io._filter_h5ad import filter_cells_h5ad

    keep = _check_marked(adata)
    n_before, n_after = int(adata.n_obs), int(keep.sum())

    def _stamp(sub: AnnData) -> None:
        K.uns_section(sub, K.UNS_QC)["filtered"] = {"n_before": n_before, "n_after": n_after}
        if stamp is not None:
            stamp(sub)

    path = filter_cells_h5ad(adata, out, keep, chunk_size=chunk_size, compression=compression,
                             stamp=_stamp, n_jobs=n_jobs)
    logger.info("filter_cells_to_h5ad: kept %d of %d cells (%d removed) -> %s", n_after, n_before,
                n_before - n_after, out)
    return path
