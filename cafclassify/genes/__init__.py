"""Gene identity: species, gene-ID type, symbol repair, orthologues, Ensembl -> symbol.

Tables (shipped in ``cafclassify/_data``, provenance in its README):
GENCODE v44 human Ensembl ID -> symbol, Ensembl 105 human -> mouse orthologues
(plus a short hand-curated supplement), and an outdated-symbol table.
"""

from ._identity import (
    SYMBOL_COLUMN_CANDIDATES,
    GeneIdentity,
    detect_id_type,
    detect_species,
    record_species,
    recorded_species,
    resolve_gene_identity,
)
from ._species import note_model_species, species_evidence, species_mismatch, species_warning
from ._symbols import is_mangled, orthologues, repair_mangled, repair_symbol, to_species

__all__ = [
    "SYMBOL_COLUMN_CANDIDATES",
    "GeneIdentity",
    "detect_id_type",
    "detect_species",
    "is_mangled",
    "note_model_species",
    "orthologues",
    "record_species",
    "recorded_species",
    "repair_mangled",
    "repair_symbol",
    "resolve_gene_identity",
    "species_evidence",
    "species_mismatch",
    "species_warning",
    "to_species",
]
