"""Symbol repair (outdated and spreadsheet-mangled symbols) and orthologue mapping."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from .._errors import SignatureError
from ._tables import alias_table, orthologue_table

__all__ = ["is_mangled", "orthologues", "repair_mangled", "repair_symbol", "to_species"]

SPECIES = ("human", "mouse")

_MONTHS = "jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec"
# "1-Mar", "2-Sep", "04-Sep"  |  "Sep-04", "Sep.04", "Mar-1", "Sep 4"
_DAY_FIRST = re.compile(rf"^(\d{{1,2}})[-./ ]?({_MONTHS})[a-z]*$", re.IGNORECASE)
_MONTH_FIRST = re.compile(rf"^({_MONTHS})[a-z]*[-./ ](\d{{1,2}})$", re.IGNORECASE)
# families whose members Excel turns into dates; (human prefix, mouse prefix, highest member)
_FAMILIES = {"sep": ("SEPTIN", "Septin", 14), "mar": ("MARCHF", "Marchf", 11)}


def is_mangled(symbol: str) -> bool:
    """Whether ``symbol`` looks like a gene name a spreadsheet turned into a date.

    Parameters
    ----------
    symbol
        A gene name, e.g. ``"1-Mar"``, ``"2-Sep"``, ``"Sep.04"``, ``"Sep-04"``, ``"1-Dec"``.

    Returns
    -------
    bool
        True for date-like names; genuine symbols without a separator (``"SEP15"``)
        are not flagged.
    """
    s = symbol.strip()
    return bool(_DAY_FIRST.match(s) or _MONTH_FIRST.match(s))


def repair_mangled(symbol: str, species: str = "human") -> str | None:
    """Repair a date-mangled symbol, or return ``None`` if it cannot be repaired.

    Parameters
    ----------
    symbol
        A gene name.
    species
        ``"human"`` (``SEPTIN4``) or ``"mouse"`` (``Septin4``) spelling.

    Returns
    -------
    str or None
        ``"Sep.04"`` -> ``"SEPTIN4"`` (human) / ``"Septin4"`` (mouse); ``"1-Mar"``
        -> ``"MARCHF1"``. Months other than September and March (e.g. ``"1-Dec"``,
        which may stand for DELEC1 or BHLHE40) are ambiguous and give ``None``.
        Non-mangled symbols are returned unchanged.
    """
    s = symbol.strip()
    m = _DAY_FIRST.match(s)
    if m:
        num, month = m.group(1), m.group(2)
    else:
        m = _MONTH_FIRST.match(s)
        if not m:
            return s
        month, num = m.group(1), m.group(2)
    fam = _FAMILIES.get(month[:3].lower())
    n = int(num)
    if fam is None or not 1 <= n <= fam[2]:
        return None
    prefix = fam[1] if species == "mouse" else fam[0]
    return f"{prefix}{n}"


def repair_symbol(symbol: str, species: str) -> str:
    """Return the current symbol for an outdated one (``IL8`` -> ``CXCL8``).

    Parameters
    ----------
    symbol
        A gene symbol.
    species
        ``"human"`` or ``"mouse"``; for any other value the symbol is only
        stripped of surrounding white space.

    Returns
    -------
    The current symbol, or ``symbol`` itself when it is current or unknown.
    Date-mangled symbols (``"Sep.04"``) are repaired when possible.
    """
    s = str(symbol).strip()
    if species not in SPECIES:
        return s
    if is_mangled(s):
        fixed = repair_mangled(s, species)
        if fixed is not None:
            s = fixed
    return alias_table().get(species, {}).get(s, s)


def _check_species(value: str, name: str) -> None:
    if value not in SPECIES:
        raise SignatureError(
            f"{name}={value!r} is not a supported species.",
            fix="use 'human' or 'mouse'.",
        )


def orthologues(symbol: str, *, source: str, target: str) -> tuple[str, ...]:
    """All orthologues of ``symbol`` in ``target``, best first (may be empty).

    Parameters
    ----------
    symbol
        Gene symbol of species ``source`` (outdated symbols are repaired first).
    source, target
        ``"human"`` or ``"mouse"``.

    Returns
    -------
    tuple of str
        Candidates in order of preference: hand-curated pairs, then the candidate
        with the same name (ignoring case), then candidates whose name starts with
        the symbol (``MMP1`` -> ``Mmp1a``, ``Mmp1b``), then the Ensembl table order.
    """
    _check_species(source, "source")
    _check_species(target, "target")
    s = repair_symbol(symbol, source)
    if source == target:
        return (s,)
    h2m, m2h = orthologue_table()
    table = h2m if source == "human" else m2h
    return tuple(repair_symbol(c, target) for c in table.get(s, ()))


def to_species(
    symbols: Sequence[str] | Iterable[str], *, source: str, target: str
) -> dict[str, str]:
    """Map symbols from one species to another through the orthologue table.

    Parameters
    ----------
    symbols
        Gene symbols of species ``source``.
    source, target
        ``"human"`` or ``"mouse"``.

    Returns
    -------
    dict
        ``{input symbol: best orthologue}`` for every symbol with at least one
        orthologue (1:1 where the table has one; otherwise the best candidate, see
        :func:`orthologues`). Symbols without an orthologue (e.g. human ``CXCL8``
        in mouse) are absent. Never derived by changing letter case.
    """
    out: dict[str, str] = {}
    for sym in symbols:
        cands = orthologues(sym, source=source, target=target)
        if cands:
            out[sym] = cands[0]
    return out
