"""Preprocessing: per-sample cell QC (:func:`qc`), explicit removal (:func:`filter_cells`)
and pooling datasets for a model trained across them (:func:`pool`).

:func:`qc` also runs on a backed AnnData (matrix read from disk in blocks);
:func:`filter_cells_to_h5ad` writes the passing cells of such an object to a new file
block by block. :func:`qc_thresholds_from_metrics` is the one implementation of the
threshold rules (used by :func:`qc` and by the shard merge).
"""

from __future__ import annotations

from ._filter import filter_cells, filter_cells_to_h5ad
from ._pool import pool
from ._qc import QC_REASONS, QCMarks, qc, qc_thresholds_from_metrics

__all__ = [
    "QC_REASONS",
    "QCMarks",
    "filter_cells",
    "filter_cells_to_h5ad",
    "pool",
    "qc",
    "qc_thresholds_from_metrics",
]
