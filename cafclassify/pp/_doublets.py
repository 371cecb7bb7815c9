"""Doublet detection per sample with Scrublet, for :func:`cafclassify.pp.qc` (``doublets=True``).

Scrublet (``scanpy.pp.scrublet``) runs on the raw counts of each sample in turn (a kNN
graph over the cells of a sample, so it cannot run on shards); its call marks cells
with the QC reason ``doublet``. Data without counts (already log-normalised) have no
meaningful library size, so :func:`~cafclassify.pp.qc` refuses doublet detection on
them. Samples of fewer than ``_MIN_CELLS_SCRUBLET`` cells are skipped, and a sample on
which Scrublet fails (tiny or degenerate samples) is recorded and logged, not raised.

Out of core: Scrublet on a backed object reads one sample at a time into memory (in
row blocks of ``chunk_size`` cells, :func:`_sample_rows`), and
:func:`~cafclassify.pp.qc` refuses samples of more than
:data:`~cafclassify.pp._qc.MAX_CELLS_DOUBLETS_BACKED` cells.
"""

from __future__ import annotations

import logging
import warnings

import numpy as np
import scipy.sparse as sp
from anndata import AnnData

from ._qc_metrics import _CHUNK

logger = logging.getLogger(__name__)

_MIN_CELLS_SCRUBLET = 100


def _sample_rows(X, idx: np.ndarray, *, chunk_size: int, backed: bool):
    """CSR float32 of the rows ``idx`` (sorted) of ``X``; on disk: read in row blocks."""
    if not backed:
        return sp.csr_matrix(X[idx], dtype=np.float32)
    parts = []
    lo, hi = int(idx[0]), int(idx[-1]) + 1
    for start in range(lo, hi, chunk_size):
        stop = min(start + chunk_size, hi)
        rows = idx[(idx >= start) & (idx < stop)] - start
        if len(rows) == 0:
            continue
        block = X[start:stop]
        block = block[rows] if sp.issparse(block) else np.asarray(block)[rows]
        parts.append(sp.csr_matrix(block, dtype=np.float32))
    return sp.vstack(parts, format="csr")


def _scrublet(X, samples: np.ndarray, order: list, random_state: int, *,
              chunk_size: int = _CHUNK, backed: bool = False):
    import scanpy as sc

    n = X.shape[0]
    scores = np.full(n, np.nan)
    predicted = np.zeros(n, dtype=bool)
    info: dict[str, str] = {}
    for s in order:
        idx = np.flatnonzero(samples == s)
        if len(idx) < _MIN_CELLS_SCRUBLET:
            info[str(s)] = f"skipped: {len(idx)} cells (< {_MIN_CELLS_SCRUBLET})"
            logger.warning("qc: sample %s has %d cells; doublet detection skipped.", s, len(idx))
            continue
        sub = AnnData(X=_sample_rows(X, idx, chunk_size=chunk_size, backed=backed))
        error = None
        # fewer principal components if the sample has few cells or variable genes
        for n_comps in (30, 10):
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    sc.pp.scrublet(
                        sub, random_state=random_state, verbose=False,
                        n_prin_comps=min(n_comps, len(idx) - 1),
                    )
                error = None
                break
            except Exception as exc:  # scrublet can fail on tiny or degenerate samples
                error = " ".join(str(exc).split())[:200]
        if error is not None:
            info[str(s)] = f"failed: {error}"
            logger.warning("qc: doublet detection failed for sample %s (%s).", s, error)
            continue
        scores[idx] = sub.obs["doublet_score"].to_numpy()
        pred = sub.obs["predicted_doublet"].to_numpy()
        predicted[idx] = np.asarray(pred, dtype=bool)
        info[str(s)] = f"scrublet: {int(predicted[idx].sum())} predicted doublets"
        del sub
    return scores, predicted, info
