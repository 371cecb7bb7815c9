"""Synthetic data with known truth.

:func:`simulate` builds a tumour-like single-cell count matrix with planted,
overlapping CAF subtype programmes; :func:`simulate_to_h5ad` writes the same
data straight to disk chunk by chunk (for million-cell benchmarks).
"""

from __future__ import annotations

from ._sim_design import SIM_SUBTYPES
from ._simulate import simulate
from ._simulate_h5ad import simulate_to_h5ad

__all__ = ["SIM_SUBTYPES", "simulate", "simulate_to_h5ad"]
