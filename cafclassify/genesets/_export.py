"""Write a signature library as a GMT or long table that loads back to the same scores.

The formats and their conventions are those :func:`~cafclassify.genesets.load_signatures`
reads (see :mod:`cafclassify.genesets._library`): the group and minimum coverage of a
set go into the GMT description field (``group=subtype; min_coverage=0.5; ...``) or
the ``group``/``min_coverage`` columns of the long table; gene weights other than 1
are written ``GENE:weight`` in GMT and in the ``weight`` column of the table; the
table also keeps the curated mouse orthologue, tier and sources of each gene.

The GMT keeps what scoring and classification use on human data (genes in order,
weights, groups, coverage thresholds). On mouse data the built-in library maps
genes through its curated mouse column, which only the long table carries, so the
table is the lossless export; the GMT relies on the orthologue table for mouse data.
"""

from __future__ import annotations

import os
from pathlib import Path

from .._errors import SignatureError
from ._library import SignatureLibrary, load_signatures

__all__ = ["EXPORT_FORMATS", "export_signatures"]

#: formats :func:`export_signatures` writes
EXPORT_FORMATS = ("gmt", "tsv")
_TABLE_COLUMNS = ("source", "target", "weight", "group", "min_coverage", "mouse", "tier", "sources")


def _clean(text: str) -> str:
    """Free text for a GMT field: no tabs, line ends or ';' (the item separator)."""
    return " ".join(str(text).replace(";", ",").split())


def _gmt_lines(lib: SignatureLibrary) -> list[str]:
    lines = []
    for gs in lib.sets.values():
        items = [f"group={gs.group}", f"min_coverage={gs.min_coverage:g}"]
        about = _clean(f"{lib.name} {lib.version}: {gs.description}".strip())
        if about:
            items.append(about)
        genes = [g if w == 1.0 else f"{g}:{w:g}" for g, w in zip(gs.genes, gs.weights, strict=True)]
        lines.append("\t".join([gs.name, "; ".join(items), *genes]))
    return lines


def _table_lines(lib: SignatureLibrary) -> list[str]:
    lines = ["\t".join(_TABLE_COLUMNS)]
    for gs in lib.sets.values():
        for g, m, w, t, s in zip(gs.genes, gs.mouse, gs.weights, gs.tiers, gs.sources, strict=True):
            lines.append("\t".join([gs.name, g, f"{w:g}", gs.group, f"{gs.min_coverage:g}", m or "",
                                    t, s]))
    return lines


def export_signatures(library="caf_v1", path: str | os.PathLike = "signatures.gmt", *,
                      format: str | None = None) -> Path:
    """Write a signature library to a GMT file or a long (decoupler-style) TSV table.

    Parameters
    ----------
    library
        Anything :func:`~cafclassify.genesets.load_signatures` accepts.
    path
        Output file (written atomically).
    format
        ``"gmt"`` or ``"tsv"``; by default from the extension (``.gmt``: GMT, else TSV).

    Returns
    -------
    The path written. Loading it with ``load_signatures(path)`` gives sets with the
    same genes, weights, groups and coverage thresholds, hence the same scores and
    subtype calls.
    """
    from .._atomic import atomic_path

    lib = load_signatures(library)
    fmt = format or ("gmt" if str(path).lower().endswith(".gmt") else "tsv")
    if fmt not in EXPORT_FORMATS:
        raise SignatureError(f"export format {fmt!r} is not supported.", path=path,
                             fix=f"use one of {', '.join(EXPORT_FORMATS)}.")
    lines = _gmt_lines(lib) if fmt == "gmt" else _table_lines(lib)
    with atomic_path(path) as tmp:
        tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return Path(path)
