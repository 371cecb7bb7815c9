"""Gene tables shipped in ``cafclassify/_data`` (read once, cached).

All tables are plain text files inside the package, read with
:mod:`importlib.resources`; nothing is fetched at run time. Provenance and
licences are in ``cafclassify/_data/README.md``.
"""

from __future__ import annotations

import csv
import gzip
import io
from functools import lru_cache
from importlib import resources

__all__ = [
    "alias_table",
    "ensembl_human_to_symbol",
    "human_symbols",
    "mouse_symbols",
    "orthologue_table",
]

_DATA = "_data"


def _open_text(name: str) -> io.TextIOBase:
    ref = resources.files("cafclassify").joinpath(_DATA, name)
    raw = ref.read_bytes()
    if name.endswith(".gz"):
        raw = gzip.decompress(raw)
    return io.StringIO(raw.decode("utf-8"))


@lru_cache(maxsize=1)
def ensembl_human_to_symbol() -> dict[str, str]:
    """Human Ensembl gene ID (no version) -> GENCODE v44 gene name."""
    out: dict[str, str] = {}
    for row in csv.reader(_open_text("gencode_v44_gene_id2name.csv.gz")):
        if len(row) >= 2 and row[0] and row[1]:
            out.setdefault(row[0].split(".", 1)[0], row[1])
    return out


@lru_cache(maxsize=1)
def human_symbols() -> frozenset[str]:
    """Every human symbol we know (GENCODE v44 names and the orthologue table)."""
    names = set(ensembl_human_to_symbol().values())
    names.update(h for h in orthologue_table()[0] if h)
    return frozenset(names)


@lru_cache(maxsize=1)
def mouse_symbols() -> frozenset[str]:
    """Every mouse symbol in the orthologue table (Ensembl 105 + curated supplement)."""
    names: set[str] = set()
    for cands in orthologue_table()[0].values():
        names.update(cands)
    names.update(orthologue_table()[1].keys())
    return frozenset(names)


@lru_cache(maxsize=1)
def orthologue_table() -> tuple[dict[str, tuple[str, ...]], dict[str, tuple[str, ...]]]:
    """Human -> mouse and mouse -> human candidates, curated supplement first.

    Returns two dicts (human -> mouse candidates, mouse -> human candidates).
    Rows of the curated supplement come before the Ensembl rows, then each list
    keeps file order. A human symbol listed with no mouse partner maps to ``()``.
    """
    h2m: dict[str, list[str]] = {}
    m2h: dict[str, list[str]] = {}
    curated: set[tuple[str, str]] = set()

    def add(h: str, m: str) -> None:
        if h:
            lst = h2m.setdefault(h, [])
            if m and m not in lst:
                lst.append(m)
        if h and m:
            lst2 = m2h.setdefault(m, [])
            if h not in lst2:
                lst2.append(h)

    for row in csv.DictReader(_open_text("orthologue_supplement.tsv"), delimiter="\t"):
        add(row["human"].strip(), row["mouse"].strip())
        curated.add((row["human"].strip(), row["mouse"].strip()))
    for row in csv.reader(_open_text("ensembl105_human2mouse.csv.gz")):
        if len(row) >= 2:
            add(row[0].strip(), row[1].strip())

    def order(key: str, cands: list[str], pair) -> tuple[str, ...]:
        # curated pairs first (file order), then the same name (ignoring case), then names that
        # start with the key (Mmp1a, Mmp1b for MMP1; alphabetical), then file order.
        # This only breaks ties between real orthologues; it never invents one.
        k = key.upper()

        def rank(item: tuple[int, str]) -> tuple:
            i, c = item
            cu = c.upper()
            if pair(key, c) in curated:
                return (0, 0, "", i)
            cur = 1
            if cu == k:
                return (cur, 0, "", i)
            if cu.startswith(k):
                return (cur, 1, cu, i)
            return (cur, 2, "", i)

        return tuple(c for _, c in sorted(enumerate(cands), key=rank))

    return (
        {k: order(k, v, lambda a, b: (a, b)) for k, v in h2m.items()},
        {k: order(k, v, lambda a, b: (b, a)) for k, v in m2h.items()},
    )


@lru_cache(maxsize=1)
def alias_table() -> dict[str, dict[str, str]]:
    """``{"human": {old: current}, "mouse": {old: current}}`` from ``symbol_aliases.tsv``."""
    out: dict[str, dict[str, str]] = {"human": {}, "mouse": {}}
    for row in csv.DictReader(_open_text("symbol_aliases.tsv"), delimiter="\t"):
        out.setdefault(row["species"], {})[row["old_symbol"]] = row["current_symbol"]
    return out
