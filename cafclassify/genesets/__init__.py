"""Signature libraries: load (built-in ``caf_v1``, GMT, gene lists, long tables, dicts),
match to a dataset's genes, and report coverage."""

from ._library import (
    GROUPS,
    TIERS,
    GeneSet,
    SignatureLibrary,
    list_signatures,
    load_signatures,
)
from ._match import COVERAGE_COLUMNS, MatchedSet, coverage_table, match_signatures

__all__ = [
    "COVERAGE_COLUMNS",
    "GROUPS",
    "TIERS",
    "GeneSet",
    "MatchedSet",
    "SignatureLibrary",
    "coverage_table",
    "list_signatures",
    "load_signatures",
    "match_signatures",
]
