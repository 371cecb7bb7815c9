"""Signature scoring: UCell, AUCell, scanpy-compatible module score and z-score mean.

:func:`score` is the AnnData-level entry point (also ``cafclassify.score``); the
kernels work on any cells x genes matrix (CSR, CSC, dense or backed) and a mapping
of set name -> ``(indices, weights)``.
"""

from ._gene_stats import GeneStats, gene_stats
from ._kernels import aucell_scores, decoupler_tie_order, default_n_up, ucell_scores
from ._linear import scanpy_control_genes, scanpy_scores, zmean_scores
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
