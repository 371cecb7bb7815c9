"""Getters: the annotations as tidy tables (as scanpy's ``sc.get``)."""

from __future__ import annotations

from ._tables import cell_table, proportion_table, recorded_sample_key

__all__ = ["cell_table", "proportion_table", "recorded_sample_key"]
