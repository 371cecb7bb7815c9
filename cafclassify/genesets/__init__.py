"""Signature libraries: load (built-in ``caf_v1``, GMT, gene lists, long tables, dicts),
match to a dataset's genes, and report coverage."""

from ._export import EXPORT_FORMATS, export_signatures
from ._library import (
    GROUPS,
    TIERS,
    GeneSet,
    SignatureLibrary,
    check_subtype_sets,
    list_signatures,
    load_signatures,
)
from ._match import COVERAGE_COLUMNS, MatchedSet, coverage_table, match_signatures

__all__ = [
    "COVERAGE_COLUMNS",
    "EXPORT_FORMATS",
    "GROUPS",
    "TIERS",
    "GeneSet",
    "MatchedSet",
    "SignatureLibrary",
    "check_subtype_sets",
    "coverage_table",
    "export_signatures",
    "list_signatures",
    "load_signatures",
    "match_signatures",
]
