"""Preprocessing: per-sample cell QC (:func:`qc`) and explicit removal (:func:`filter_cells`)."""

from __future__ import annotations

from ._qc import QC_REASONS, filter_cells, qc

__all__ = ["QC_REASONS", "filter_cells", "qc"]
