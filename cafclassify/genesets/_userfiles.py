"""User gene-set files: GMT, plain gene lists, long tables and dicts.

User files are first-class: each format can say which sets are lineages, subtypes
and states (the classifier takes its classes from the ``subtype`` group, the gate
its lineages from ``lineage``), with a documented convention per format:

* GMT: ``key=value`` items in the description field (2nd column), separated by
  ``;``: ``group=subtype; min_coverage=0.5; free description``. A gene may carry a
  weight as ``GENE:weight`` (``ACTA2:-1``: a gene that speaks *against* the set);
* plain gene list: a comment line ``# group=subtype`` (and ``# min_coverage=0.4``);
* long table (decoupler ``source``/``target``/``weight``): optional columns
  ``group``, ``min_coverage`` and ``mouse`` (curated mouse orthologue).

Sets without a group are in group ``user``. Text files may start with a byte-order
mark and use CRLF line ends. :func:`~cafclassify.genesets.export_signatures` writes
any library (also the built-in one) in these conventions such that loading the file
back gives the same scores. Spreadsheet-mangled gene names (``1-Mar``) are repaired
or dropped with a warning.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections.abc import Iterable, Mapping
from pathlib import Path

from .._errors import SignatureError
from ..genes._symbols import is_mangled, repair_mangled
from ._library import GROUPS, GeneSet, SignatureLibrary

logger = logging.getLogger(__name__)


def _check_group(group: str, *, where: str, path=None) -> str:
    if group not in GROUPS:
        raise SignatureError(
            f"{where}: group {group!r} is not one of {', '.join(GROUPS)}.",
            path=path,
            fix="write group=lineage, subtype, state or optional (or leave it out: group 'user').",
        )
    return group


def _to_float(value) -> float:
    """``float(value)``, or NaN when ``value`` is not a number (callers then refuse it)."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


def _check_fraction(value: str, *, where: str, path=None) -> float:
    mc = _to_float(value)
    if not 0.0 <= mc <= 1.0:
        raise SignatureError(f"{where}: min_coverage {value!r} is not a fraction in [0, 1].", path=path,
                             fix="write e.g. min_coverage=0.5.")
    return mc


#: keys of the GMT description / list comment convention
_PROPS = ("group", "min_coverage")


def _parse_props(text: str, *, where: str, path) -> tuple[dict, str]:
    """``group=subtype; min_coverage=0.5; free text`` -> ({group, min_coverage}, free text)."""
    props: dict = {}
    rest = []
    for item in text.split(";"):
        key, eq, value = item.partition("=")
        key = key.strip().lower()
        if eq and key in _PROPS:
            value = value.strip()
            if key == "group":
                props["group"] = _check_group(value, where=where, path=path)
            else:
                props["min_coverage"] = _check_fraction(value, where=where, path=path)
        elif item.strip():
            rest.append(item.strip())
    return props, "; ".join(rest)


def _gene_weight(token: str) -> tuple[str, float | None]:
    """``GENE:-1`` -> ("GENE", -1.0); a token without a numeric ``:weight`` -> (token, None)."""
    gene, colon, w = token.rpartition(":")
    if colon and gene:
        try:
            wf = float(w)
        except ValueError:
            return token, None
        if math.isfinite(wf):
            return gene, wf
    return token, None


def _guess_case_species(genes: Iterable[str]) -> str:
    vals = [g for g in genes if g and any(c.isalpha() for c in g) and not is_mangled(g)]
    if not vals:
        return "human"
    n_upper = sum(1 for g in vals if g == g.upper())
    return "human" if n_upper >= len(vals) / 2 else "mouse"


def _clean_user_genes(genes: list[str], *, set_name: str, origin: str) -> list[str]:
    """Strip, drop empties, repair or drop spreadsheet-mangled symbols, de-duplicate."""
    species = _guess_case_species(genes)
    out: list[str] = []
    for g in genes:
        g = str(g).strip()
        if not g:
            continue
        if is_mangled(g):
            fixed = repair_mangled(g, species)
            if fixed is None:
                logger.warning(
                    "%s: set %r: dropped %r, a gene name a spreadsheet turned into a date "
                    "that cannot be repaired unambiguously.",
                    origin,
                    set_name,
                    g,
                )
                continue
            logger.warning(
                "%s: set %r: repaired spreadsheet-mangled gene name %r -> %r.",
                origin,
                set_name,
                g,
                fixed,
            )
            g = fixed
        if g in out:
            logger.info("%s: set %r: duplicate gene %r ignored.", origin, set_name, g)
            continue
        out.append(g)
    return out


def _user_set(
    name: str, genes: list[str], weights: list[float], *, origin: str, description: str = "",
    group: str = "user", min_coverage: float = 0.5, mouse: list[str | None] | None = None,
) -> GeneSet:
    n = len(genes)
    return GeneSet(
        name=name,
        group=group,
        genes=tuple(genes),
        mouse=(None,) * n if mouse is None else tuple(mouse),
        weights=tuple(float(w) for w in weights),
        tiers=("user",) * n,
        sources=(f"user:{origin}",) * n,
        description=description,
        evidence="user-supplied gene set; evidence not assessed by cafclassify",
        min_coverage=min_coverage,
        display_name=name,
        notes=("",) * n,
    )


def _finish_user_set(
    name: str,
    genes: list[str],
    weights: list[float] | None,
    *,
    origin: str,
    description: str = "",
    path=None,
    group: str = "user",
    min_coverage: float = 0.5,
    mouse: list[str | None] | None = None,
) -> GeneSet:
    mmap: dict[str, str | None] = {}
    if weights is None and mouse is None:
        cleaned = _clean_user_genes(genes, set_name=name, origin=origin)
        wmap = dict.fromkeys(cleaned, 1.0)
    else:
        wmap = {}
        weights = [1.0] * len(genes) if weights is None else weights
        for i, (g, w) in enumerate(zip(genes, weights, strict=True)):
            cg = _clean_user_genes([g], set_name=name, origin=origin)
            if cg and cg[0] not in wmap:
                wmap[cg[0]] = w
                mmap[cg[0]] = None if mouse is None else mouse[i]
    if not wmap:
        raise SignatureError(
            f"gene set {name!r} has no genes.",
            path=path or origin,
            fix="give at least one gene per set.",
        )
    return _user_set(name, list(wmap), list(wmap.values()), origin=origin, description=description,
                     group=group, min_coverage=min_coverage,
                     mouse=None if mouse is None else [mmap[g] for g in wmap])


def _read_gmt(path: Path) -> dict[str, GeneSet]:
    sets: dict[str, GeneSet] = {}
    for lineno, line in enumerate(path.read_text(encoding="utf-8-sig").splitlines(), start=1):
        if not line.strip() or line.startswith("#"):
            continue
        fields = line.rstrip("\n\r").split("\t")
        if len(fields) < 3 or not fields[0].strip():
            raise SignatureError(
                f"line {lineno} is not a GMT record (need: name<TAB>description<TAB>gene1<TAB>gene2...; "
                f"found {len(fields)} tab-separated field(s)).",
                path=path,
                fix="separate the set name, the description and each gene by a tab.",
            )
        name = fields[0].strip()
        if name in sets:
            raise SignatureError(f"line {lineno}: set {name!r} appears twice.", path=path)
        tokens = [_gene_weight(g.strip()) for g in fields[2:] if g.strip()]
        if not tokens:
            raise SignatureError(f"line {lineno}: set {name!r} has no genes.", path=path)
        props, description = _parse_props(fields[1], where=f"line {lineno} (set {name!r})", path=path)
        weighted = any(w is not None for _, w in tokens)
        sets[name] = _finish_user_set(
            name, [g for g, _ in tokens], [1.0 if w is None else w for _, w in tokens] if weighted else None,
            origin=path.name, description=description, path=path, **props,
        )
    if not sets:
        raise SignatureError("no gene sets found in the GMT file.", path=path)
    return sets


def _read_gene_list(path: Path) -> dict[str, GeneSet]:
    genes = []
    props: dict = {}
    for lineno, line in enumerate(path.read_text(encoding="utf-8-sig").splitlines(), start=1):
        line, _, comment = line.partition("#")
        if comment.strip():  # "# group=subtype", "# min_coverage=0.4"
            found, _ = _parse_props(comment, where=f"line {lineno}", path=path)
            props.update(found)
        line = line.strip()
        if not line:
            continue
        genes.append(line.replace(",", " ").replace("\t", " ").split()[0])
    return {path.stem: _finish_user_set(path.stem, genes, None, origin=path.name, path=path, **props)}


def _table_props(sub, cols: dict, *, name: str, path: Path) -> dict:
    """``group`` / ``min_coverage`` (one value per set) and ``mouse`` columns of a long table."""
    props: dict = {}
    for key in _PROPS:
        if key not in cols:
            continue
        values = sorted({str(v).strip() for v in sub[cols[key]].dropna() if str(v).strip()})
        if len(values) > 1:
            raise SignatureError(f"set {name!r} has several {key} values ({', '.join(values)}).",
                                 path=path, fix=f"give every row of a set the same {key}.")
        if values:
            where = f"set {name!r}"
            props[key] = (_check_group(values[0], where=where, path=path) if key == "group"
                          else _check_fraction(values[0], where=where, path=path))
    if "mouse" in cols:
        props["mouse"] = [None if not isinstance(m, str) or m.strip() in ("", "-") else m.strip()
                          for m in sub[cols["mouse"]]]
    return props


def _read_long_table(path: Path, sep: str) -> dict[str, GeneSet]:
    import pandas as pd

    try:
        df = pd.read_csv(path, sep=sep, dtype=str, comment="#", encoding="utf-8-sig")
    except Exception as exc:  # pandas raises many types for malformed text
        raise SignatureError(
            f"cannot be read as a {'tab' if sep == chr(9) else 'comma'}-separated table ({exc}).",
            path=path,
        ) from None
    cols = {str(c).strip().lower(): c for c in df.columns}
    if "source" not in cols or "target" not in cols:
        raise SignatureError(
            f"a long-format gene-set table needs columns 'source' (set name) and 'target' (gene), "
            f"optionally 'weight'; found: {', '.join(map(str, df.columns))}.",
            path=path,
            fix="rename the columns (decoupler net format), or save the sets as GMT.",
        )
    src, tgt, wcol = cols["source"], cols["target"], cols.get("weight")
    sets: dict[str, GeneSet] = {}
    for name, sub in df.groupby(src, sort=False):
        genes = sub[tgt].fillna("").astype(str).str.strip().tolist()
        props = _table_props(sub, cols, name=str(name), path=path)
        if wcol is None:
            weights = [1.0] * len(genes)
        else:
            weights = []
            for lineno, w in zip(sub.index, sub[wcol], strict=True):
                wf = _to_float(w)
                if not math.isfinite(wf):
                    raise SignatureError(
                        f"line {lineno + 2}: weight {w!r} is not a finite number.", path=path
                    )
                weights.append(wf)
        sets[str(name)] = _finish_user_set(str(name), genes, weights, origin=path.name, path=path, **props)
    if not sets:
        raise SignatureError("the table has no rows.", path=path)
    return sets


def _from_dict(spec: Mapping) -> SignatureLibrary:
    sets: dict[str, GeneSet] = {}
    for name, val in spec.items():
        if not isinstance(name, str) or not name:
            raise SignatureError(f"set name {name!r} is not a non-empty string.", path="<dict>")
        if isinstance(val, Mapping):
            genes, weights = [], []
            for g, w in val.items():
                wf = _to_float(w)
                if not math.isfinite(wf):
                    raise SignatureError(
                        f"set {name!r}: weight {w!r} of gene {g!r} is not a finite number.",
                        path="<dict>",
                    )
                genes.append(str(g))
                weights.append(wf)
            sets[name] = _finish_user_set(name, genes, weights, origin="<dict>")
        elif isinstance(val, (list, tuple, set, frozenset)) or hasattr(val, "__array__"):
            genes = [str(g) for g in val]
            sets[name] = _finish_user_set(name, genes, None, origin="<dict>")
        else:
            raise SignatureError(
                f"set {name!r}: value of type {type(val).__name__} is neither a list of genes "
                "nor a {gene: weight} mapping.",
                path="<dict>",
                fix="pass {name: [genes]} or {name: {gene: weight}}.",
            )
    if not sets:
        raise SignatureError("the dict holds no gene sets.", path="<dict>")
    payload = json.dumps(
        {k: [list(v.genes), list(v.weights)] for k, v in sets.items()}, sort_keys=True
    ).encode()
    return SignatureLibrary(
        name="user_dict",
        version="user",
        sha256=hashlib.sha256(payload).hexdigest(),
        sets=sets,
        sources={},
        origin="<dict>",
    )
