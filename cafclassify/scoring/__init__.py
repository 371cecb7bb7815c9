"""Signature scoring: UCell, AUCell, scanpy-compatible module score and z-score mean.

:func:`score` is the AnnData-level entry point (also ``cafclassify.score``); the
kernels work on any cells x genes matrix (CSR, CSC, dense or backed) and a mapping
of set name -> ``(indices, weights)``.
"""

from ._kernels import (
    GeneStats,
    aucell_scores,
    decoupler_tie_order,
    default_n_up,
    gene_stats,
    scanpy_control_genes,
    scanpy_scores,
    ucell_scores,
    zmean_scores,
)
from ._methods import list_methods
from ._score import score

__all__ = [
    "GeneStats",
    "aucell_scores",
    "decoupler_tie_order",
    "default_n_up",
    "gene_stats",
    "list_methods",
    "scanpy_control_genes",
    "scanpy_scores",
    "score",
    "ucell_scores",
    "zmean_scores",
]
