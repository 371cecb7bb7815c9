"""Registry of scoring methods: one place for names, descriptions, references and properties."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

__all__ = ["METHODS", "ScoringMethod", "get_method", "list_methods"]


@dataclass(frozen=True)
class ScoringMethod:
    """A scoring method and what it assumes about the input values."""

    name: str
    description: str
    reference: str
    rank_based: bool  # invariant to monotone per-cell transforms (counts == log-normalised)
    needs_gene_stats: bool  # needs a pass over all cells before scoring
    exact_peer: str  # the implementation it reproduces exactly


METHODS: dict[str, ScoringMethod] = {
    m.name: m
    for m in (
        ScoringMethod(
            name="ucell",
            description=(
                "UCell: normalised Mann-Whitney U of the set genes' per-cell ranks "
                "(ranks capped at max_rank); up minus down, clipped at 0."
            ),
            reference="Andreatta M, Carmona SJ. Comput Struct Biotechnol J 2021;19:3796-3798. "
            "doi:10.1016/j.csbj.2021.06.043",
            rank_based=True,
            needs_gene_stats=False,
            exact_peer="pyucell.compute_ucell_scores (ties_method='average')",
        ),
        ScoringMethod(
            name="aucell",
            description=(
                "AUCell: area under the recovery curve of the set genes within the top "
                "5% of per-cell ranks; up minus down."
            ),
            reference="Aibar S et al. Nat Methods 2017;14:1083-1086. doi:10.1038/nmeth.4463",
            rank_based=True,
            needs_gene_stats=True,  # genes detected in no cell are excluded, as in decoupler
            exact_peer="decoupler.mt.aucell (decoupler 2.x)",
        ),
        ScoringMethod(
            name="scanpy",
            description=(
                "Seurat/scanpy module score: mean of the set genes minus the mean of "
                "expression-binned random control genes; up minus down."
            ),
            reference="Satija R et al. Nat Biotechnol 2015;33:495-502 (Seurat AddModuleScore); "
            "Tirosh I et al. Science 2016;352:189-196. doi:10.1038/nbt.3192",
            rank_based=False,
            needs_gene_stats=True,
            exact_peer="scanpy.tl.score_genes (scanpy 1.11)",
        ),
        ScoringMethod(
            name="zmean",
            description=(
                "Weighted mean of per-gene z-scores (gene mean and SD over all cells); "
                "down genes count against the score."
            ),
            reference="Lee E et al. PLoS Comput Biol 2008;4:e1000217 (z-score gene-set activity). "
            "doi:10.1371/journal.pcbi.1000217",
            rank_based=False,
            needs_gene_stats=True,
            exact_peer="dense numpy reference (tests/test_scoring_kernels.py)",
        ),
    )
}


def get_method(name: str) -> ScoringMethod:
    """Return the registered method ``name`` (KeyError if unknown)."""
    return METHODS[name]


def list_methods() -> pd.DataFrame:
    """Scoring methods available to :func:`cafclassify.score`.

    Returns
    -------
    DataFrame with columns ``method``, ``description``, ``reference`` (one row per method).
    """
    return pd.DataFrame(
        [{"method": m.name, "description": m.description, "reference": m.reference}
         for m in METHODS.values()],
        columns=["method", "description", "reference"],
    )
