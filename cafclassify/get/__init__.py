"""Getters: the annotations as tidy tables (as scanpy's ``sc.get``)."""

from __future__ import annotations

from ._samples import CONVENTIONAL_SAMPLE_COLUMNS, recorded_sample_key
from ._tables import cell_table, proportion_table

__all__ = ["CONVENTIONAL_SAMPLE_COLUMNS", "cell_table", "proportion_table", "recorded_sample_key"]
