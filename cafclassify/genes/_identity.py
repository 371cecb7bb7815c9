"""Gene identity of a dataset: species, ID type, one current symbol per gene.

The species is decided once: ``read`` records it (given with ``species=`` or
detected) in ``uns['cafclassify']['read']['species']`` and every later step that
resolves genes without an explicit ``species`` uses that record
(:func:`recorded_species`), so a species the user gave at ``read`` is not guessed
again downstream; a step given a species records it for the steps after it
(:func:`record_species`).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import pandas as pd

from .._errors import SignatureError
from ._symbols import SPECIES, repair_symbol
from ._tables import ensembl_human_to_symbol, human_symbols, mouse_symbols

if TYPE_CHECKING:
    from anndata import AnnData

__all__ = [
    "SYMBOL_COLUMN_CANDIDATES",
    "GeneIdentity",
    "detect_id_type",
    "detect_species",
    "record_species",
    "recorded_species",
    "resolve_gene_identity",
]

logger = logging.getLogger(__name__)

_ENSG = re.compile(r"^ENSG\d{11}(\.\d+)?(_PAR_Y)?$")
_ENSMUSG = re.compile(r"^ENSMUSG\d{11}(\.\d+)?$")

#: var columns searched (case-insensitively, in this order) for gene symbols
SYMBOL_COLUMN_CANDIDATES = (
    "gene_symbols",
    "gene_symbol",
    "symbol",
    "symbols",
    "feature_name",
    "gene_name",
    "gene_names",
    "gene",
    "genes",
    "name",
    "features",
    "gene_ids",
    "gene_id",
)


def _clean(names: Sequence[str]) -> list[str]:
    out = []
    for n in names:
        if n is None or (isinstance(n, float) and n != n):
            out.append("")
        else:
            out.append(str(n).strip())
    return out


def detect_id_type(names: Sequence[str]) -> str:
    """Tell symbols from Ensembl gene IDs.

    Parameters
    ----------
    names
        Gene names (e.g. ``adata.var_names``).

    Returns
    -------
    ``"ensembl_human"`` (ENSG..., with or without version suffix) or
    ``"ensembl_mouse"`` (ENSMUSG...) when at least 80% of the non-empty names are
    of that kind, ``"symbol"`` when at most 20% are Ensembl IDs, else ``"mixed"``.
    """
    vals = [n for n in _clean(names) if n]
    if not vals:
        return "symbol"
    nh = sum(1 for n in vals if _ENSG.match(n))
    nm = sum(1 for n in vals if _ENSMUSG.match(n))
    total = len(vals)
    if nh >= 0.8 * total:
        return "ensembl_human"
    if nm >= 0.8 * total:
        return "ensembl_mouse"
    if nh + nm <= 0.2 * total:
        return "symbol"
    return "mixed"


def detect_species(names: Sequence[str]) -> str:
    """Guess the species from gene names.

    Ensembl IDs count for their species. Symbols are looked up, case-sensitively,
    in the human (GENCODE v44 / orthologue table) and mouse (orthologue table)
    symbol lists, after repairing outdated symbols.

    Parameters
    ----------
    names
        Gene names (e.g. ``adata.var_names``).

    Returns
    -------
    ``"human"`` or ``"mouse"`` when at least 20% of the non-empty names are known
    symbols of that species and clearly more than of the other; else
    ``"unknown"`` (e.g. zebrafish-style lower-case names such as ``col1a1a``).
    """
    vals = [n for n in _clean(names) if n]
    if not vals:
        return "unknown"
    hs, ms = human_symbols(), mouse_symbols()
    nh = nm = 0
    for n in vals:
        if _ENSG.match(n):
            nh += 1
        elif _ENSMUSG.match(n):
            nm += 1
        else:
            if n in hs or repair_symbol(n, "human") in hs:
                nh += 1
            if n in ms or repair_symbol(n, "mouse") in ms:
                nm += 1
    total = len(vals)
    if nh >= 0.2 * total and nh > 2 * nm:
        return "human"
    if nm >= 0.2 * total and nm > 2 * nh:
        return "mouse"
    return "unknown"


@dataclass
class GeneIdentity:
    """One current symbol per gene of a dataset, and how it was obtained.

    Attributes
    ----------
    species
        ``"human"``, ``"mouse"`` or ``"unknown"``.
    id_type
        ID type of the names that were resolved (see :func:`detect_id_type`).
    symbols
        One current symbol per var, in ``var_names`` order; ``""`` if unmapped.
    n_repaired
        Number of genes whose outdated symbol was repaired (e.g. IL8 -> CXCL8).
    repaired
        ``{old: new}`` for the report.
    n_unmapped
        Number of genes without a symbol (e.g. Ensembl IDs missing from the table).
    source_column
        The ``var`` column the symbols came from, or ``None`` for ``var_names``.
    """

    species: str
    id_type: str
    symbols: pd.Index
    n_repaired: int = 0
    repaired: dict[str, str] = field(default_factory=dict)
    n_unmapped: int = 0
    source_column: str | None = None

    @property
    def mapping_rate(self) -> float:
        """Fraction of genes with a symbol."""
        n = len(self.symbols)
        return 1.0 if n == 0 else 1.0 - self.n_unmapped / n


def recorded_species(adata: AnnData) -> str | None:
    """The species recorded in ``uns['cafclassify']['read']`` (``None`` if none or unknown)."""
    from .._keys import UNS, UNS_READ

    root = getattr(adata, "uns", {}).get(UNS)
    rec = root.get(UNS_READ) if hasattr(root, "get") else None
    value = rec.get("species") if hasattr(rec, "get") else None
    return str(value) if value in SPECIES else None


def record_species(adata: AnnData, species: str, *, source: str) -> None:
    """Record ``species`` (with where it came from) for the later steps."""
    from .._keys import UNS, UNS_READ

    if species not in SPECIES:
        raise SignatureError(f"species={species!r} is not supported.",
                             fix="use species='human' or species='mouse'.")
    rec = adata.uns.setdefault(UNS, {}).setdefault(UNS_READ, {})
    rec["species"] = species
    rec["species_source"] = source


def _find_symbol_column(var: pd.DataFrame) -> str | None:
    lower = {str(c).lower(): c for c in var.columns}
    for cand in SYMBOL_COLUMN_CANDIDATES:
        col = lower.get(cand)
        if col is None:
            continue
        s = var[col]
        if not (
            pd.api.types.is_object_dtype(s)
            or isinstance(s.dtype, pd.CategoricalDtype)
            or pd.api.types.is_string_dtype(s)
        ):
            continue
        vals = _clean(list(s.astype(object)))
        if detect_id_type(vals) == "symbol" and detect_species(vals) != "unknown":
            return str(col)
    return None


def _recorded_species(adata) -> str | None:
    """The species the read step recorded in ``uns["cafclassify"]["read"]``, if any."""
    from .._keys import UNS, UNS_READ

    try:
        rec = adata.uns.get(UNS, {}).get(UNS_READ, {}).get("species")
    except AttributeError:
        return None
    return str(rec) if str(rec) in ("human", "mouse") else None


def resolve_gene_identity(
    adata: AnnData, *, species: str | None = None, symbol_column: str | None = None
) -> GeneIdentity:
    """Work out species, ID type and one current gene symbol per gene.

    Parameters
    ----------
    adata
        The data; only ``var_names`` and ``var`` are read, nothing is written.
    species
        ``"human"`` or ``"mouse"``; detected from the gene names when ``None``.
    symbol_column
        ``var`` column with gene symbols. When ``None`` and ``var_names`` are
        Ensembl IDs, a column with a common name (``gene_symbols``,
        ``gene_symbol``, ``symbol``, ``feature_name``, ``gene_name``, ...) is used
        if it holds symbols.

    Returns
    -------
    GeneIdentity
        Human Ensembl IDs are mapped with the GENCODE v44 table; outdated
        symbols are repaired with the alias table.

    Raises
    ------
    SignatureError
        If ``symbol_column`` is not in ``var``, if ``species`` is not supported,
        or if the genes are mouse Ensembl IDs and no symbol column was found.
    """
    if species is not None and species not in SPECIES:
        raise SignatureError(
            f"species={species!r} is not supported.",
            fix="use species='human' or species='mouse' (or leave it unset to detect it).",
        )
    var_names = _clean(list(adata.var_names))
    source_column: str | None = None
    if symbol_column is not None:
        if symbol_column not in adata.var.columns:
            cols = ", ".join(map(str, adata.var.columns)) or "(none)"
            raise SignatureError(
                f"var has no column {symbol_column!r}.",
                path="adata.var",
                fix=f"pass one of the existing columns ({cols}) or leave symbol_column unset.",
            )
        raw = _clean(list(adata.var[symbol_column].astype(object)))
        source_column = symbol_column
    elif detect_id_type(var_names) != "symbol":
        col = _find_symbol_column(adata.var)
        if col is not None:
            raw = _clean(list(adata.var[col].astype(object)))
            source_column = col
            logger.info("using gene symbols from var[%r]", col)
        else:
            raw = var_names
    else:
        raw = var_names

    id_type = detect_id_type(raw)
    if id_type == "ensembl_mouse":
        raise SignatureError(
            "the genes are mouse Ensembl IDs (ENSMUSG...) and var has no gene-symbol column; "
            "cafclassify ships no mouse Ensembl-to-symbol table.",
            path="adata.var_names" if source_column is None else f"adata.var[{source_column!r}]",
            fix="pass symbol_column='<var column with gene symbols>' or set var_names to gene symbols.",
        )
    if species is None and recorded_species(adata) is not None:
        species = recorded_species(adata)
        logger.info("species: %s (recorded in uns['cafclassify']['read'])", species)
    if species is None:
        recorded = _recorded_species(adata)
        if recorded is not None:  # decided once, by the read step; not detected (and logged) again
            species = recorded
            logger.debug("species %s, as recorded by the read step", species)
        else:
            species = detect_species(raw)
            logger.info("detected species: %s", species)

    ens = ensembl_human_to_symbol()
    symbols: list[str] = []
    repaired: dict[str, str] = {}
    n_repaired = 0
    for name in raw:
        if not name:
            symbols.append("")
            continue
        if _ENSG.match(name):
            sym = ens.get(name.split(".", 1)[0].split("_", 1)[0], "")
        elif _ENSMUSG.match(name):
            sym = ""
        else:
            sym = name
        if sym and species in SPECIES:
            cur = repair_symbol(sym, species)
            if cur != sym:
                repaired[sym] = cur
                n_repaired += 1
                sym = cur
        symbols.append(sym)
    n_unmapped = sum(1 for s in symbols if not s)
    if n_unmapped:
        logger.info("%d of %d genes have no symbol", n_unmapped, len(symbols))
    return GeneIdentity(
        species=species,
        id_type=id_type,
        symbols=pd.Index(symbols, dtype=object),
        n_repaired=n_repaired,
        repaired=repaired,
        n_unmapped=n_unmapped,
        source_column=source_column,
    )
