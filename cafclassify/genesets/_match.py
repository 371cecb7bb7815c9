"""Match signature genes to a dataset's genes and report coverage."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from .._errors import DataError, SignatureError
from ..genes._identity import GeneIdentity, detect_species, resolve_gene_identity
from ..genes._symbols import orthologues, repair_symbol
from ._library import load_signatures

if TYPE_CHECKING:
    from anndata import AnnData

__all__ = [
    "COVERAGE_COLUMNS",
    "MatchedSet",
    "coverage_table",
    "match_signatures",
    "match_with_coverage",
]

logger = logging.getLogger(__name__)

_ON_LOW = ("warn", "raise", "keep")
COVERAGE_COLUMNS = (
    "set",
    "group",
    "n_genes",
    "n_found",
    "coverage",
    "min_coverage",
    "status",
    "found",
    "missing",
    "renamed",
)


@dataclass
class MatchedSet:
    """A gene set matched to the genes of one dataset.

    Attributes
    ----------
    name
        Set name.
    indices
        Integer positions into ``adata.var_names`` (unique, in the set's gene order).
    weights
        Weight per index (+1/-1 direction or user weights).
    found
        Signature genes found (the signature's symbols).
    missing
        Signature genes not found (incl. genes without an orthologue).
    renamed
        ``{signature symbol: data var name}`` where they differ (alias, orthologue,
        Ensembl ID).
    coverage
        ``len(found) / n_genes``.
    n_genes
        Number of genes in the set.
    status
        ``"ok"`` or ``"low_coverage_kept"``.
    notes
        Other remarks (e.g. two signature genes mapping to the same data gene).
    """

    name: str
    indices: np.ndarray
    weights: np.ndarray
    found: list[str]
    missing: list[str]
    renamed: dict[str, str]
    coverage: float
    n_genes: int
    status: str = "ok"
    notes: list[str] = field(default_factory=list)


def _is_user_set(gs) -> bool:
    """A set from a user file (any group): its genes are in the user's species."""
    return gs.group == "user" or (len(gs.tiers) > 0 and all(t == "user" for t in gs.tiers))


def _set_species(gs, identity_species: str, lib_species: str | None) -> str:
    if not _is_user_set(gs):
        return "human"
    return lib_species or identity_species


def _symbol_index(identity: GeneIdentity) -> tuple[dict[str, int], dict[str, list[int]]]:
    """symbol -> first var position; symbol -> later positions (duplicates)."""
    first: dict[str, int] = {}
    dups: dict[str, list[int]] = {}
    for i, s in enumerate(identity.symbols):
        if not s:
            continue
        if s in first:
            dups.setdefault(s, []).append(i)
        else:
            first[s] = i
    return first, dups


def _expressed_markers(adata: AnnData, identity: GeneIdentity) -> dict[str, tuple[int, list[str]]]:
    """``lineage set -> (n markers, markers expressed)``, names compared case-insensitively.

    Uses the built-in library's lineage sets (human and mouse names), so it works before
    the species is known. A marker counts as expressed when its column is not all zero.
    """
    import scipy.sparse as sp

    lib = load_signatures("caf_v1")
    names = [str(s).upper() for s in identity.symbols]
    names_v = [str(s).upper() for s in adata.var_names]
    where: dict[str, int] = {}
    for i, n in enumerate(names_v):
        where.setdefault(n, i)
    for i, n in enumerate(names):
        where.setdefault(n, i)
    out: dict[str, tuple[int, list[str]]] = {}
    for name, gs in lib.sets.items():
        if gs.group != "lineage":
            continue
        markers = sorted({str(g).upper() for g in [*gs.genes, *(gs.mouse or [])] if g})
        cols = {m: where[m] for m in markers if m in where}
        expressed = []
        if cols:
            try:
                block = adata.X[:, sorted(set(cols.values()))]
                nz = np.asarray((abs(block) if sp.issparse(block) else np.abs(np.asarray(block))).sum(axis=0)).ravel()
                on = {c for c, v in zip(sorted(set(cols.values())), nz, strict=True) if v > 0}
            except Exception:  # evidence only: then count present markers as expressed
                on = set(cols.values())
            expressed = [m for m, c in cols.items() if c in on]
        out[name] = (len(set(gs.genes)), expressed)
    return out


def _refuse_if_no_fibroblast_markers(adata: AnnData, identity: GeneIdentity) -> None:
    """Before guessing the species: say so when other lineages' markers are expressed but
    no fibroblast marker is (blood, sorted immune cells)."""
    evidence = _expressed_markers(adata, identity)
    n_fib, fib = evidence.get("fibroblast", (0, []))
    others = {k: v[1] for k, v in evidence.items() if v[1] and k != "fibroblast"}
    if fib or not others:  # fibroblast markers, or no evidence of any cell type: ask the species
        return
    seen = "; the lineage markers that are expressed are those of " + ", ".join(
        f"{k} ({', '.join(v[:5])})" for k, v in others.items())
    raise DataError(
        f"none of the {n_fib} fibroblast marker genes (COL1A1, COL1A2, DCN, LUM, PDGFRA, ...) "
        f"is expressed in these data{seen}. There are no fibroblasts here (e.g. blood or "
        "sorted immune cells), so there is nothing to gate or classify; the species could not "
        "be told from the gene names either.",
        path="adata.var_names",
        fix="run cafclassify on tissue that contains fibroblasts (tumour or stroma); if these "
        "data should hold fibroblasts, check that the genes are human or mouse symbols and "
        "pass species='human' or species='mouse'.",
    )


def _match_all(
    library,
    adata: AnnData,
    *,
    species: str | None,
    symbol_column: str | None,
    min_coverage: float | None,
    min_genes: int,
    on_low_coverage: str,
) -> tuple[dict[str, MatchedSet], pd.DataFrame, dict]:
    if on_low_coverage not in _ON_LOW:
        raise SignatureError(
            f"on_low_coverage={on_low_coverage!r} is not supported.",
            fix="use 'warn' (skip the set), 'raise' or 'keep'.",
        )
    if min_coverage is not None and not 0.0 <= float(min_coverage) <= 1.0:
        raise SignatureError(
            f"min_coverage={min_coverage!r} is not a fraction in [0, 1].",
            fix="pass e.g. min_coverage=0.5, or None to use each set's own threshold.",
        )
    if int(min_genes) < 1:
        raise SignatureError(f"min_genes={min_genes!r} must be at least 1.")
    lib = load_signatures(library)
    identity = resolve_gene_identity(adata, species=species, symbol_column=symbol_column)
    if identity.species not in ("human", "mouse"):
        _refuse_if_no_fibroblast_markers(adata, identity)
        raise SignatureError(
            "could not tell whether the genes are human or mouse symbols; cafclassify has no "
            "markers for this species.",
            path="adata.var_names"
            if identity.source_column is None
            else f"adata.var[{identity.source_column!r}]",
            fix="pass species='human' or species='mouse' if the gene names are human or mouse "
            "symbols; for other species, map genes to human or mouse orthologues first.",
        )
    data_species = identity.species
    var_names = np.asarray(adata.var_names).astype(str)
    first, dups = _symbol_index(identity)
    if dups:
        ex = ", ".join(f"{k} (x{len(v) + 1})" for k, v in list(dups.items())[:5])
        logger.info(
            "%d gene symbols occur more than once in the data; the first occurrence is used: %s",
            len(dups),
            ex,
        )
    # species of user gene sets: detect once from all their genes
    user_genes = [g for gs in lib for g in gs.genes if _is_user_set(gs)]
    lib_species = None
    if user_genes:
        det = detect_species(user_genes)
        lib_species = det if det in ("human", "mouse") else data_species

    matched: dict[str, MatchedSet] = {}
    rows = []
    any_found = False
    for gs in lib:
        sp = _set_species(gs, data_species, lib_species)
        idx: list[int] = []
        w: list[float] = []
        found: list[str] = []
        missing: list[str] = []
        renamed: dict[str, str] = {}
        notes: list[str] = []
        used: dict[int, str] = {}
        for gi, gene in enumerate(gs.genes):
            if sp == data_species:
                cands: tuple[str, ...] = (repair_symbol(gene, sp),)
            elif sp == "human" and data_species == "mouse" and any(gs.mouse):  # curated orthologues
                m = gs.mouse[gi]
                cands = (repair_symbol(m, "mouse"),) if m else ()
            else:
                cands = orthologues(gene, source=sp, target=data_species)
            pos = next((first[c] for c in cands if c in first), None)
            if pos is None:
                missing.append(gene)
                continue
            if pos in used:
                notes.append(
                    f"{gene} and {used[pos]} both map to {var_names[pos]}; {gene} counted as missing"
                )
                missing.append(gene)
                continue
            used[pos] = gene
            idx.append(pos)
            w.append(gs.weights[gi])
            found.append(gene)
            if var_names[pos] != gene:
                renamed[gene] = str(var_names[pos])
            sym = identity.symbols[pos]
            if sym in dups:
                notes.append(
                    f"{gene}: {len(dups[sym]) + 1} data genes map to {sym}; used the first ({var_names[pos]})"
                )
        n = len(gs.genes)
        cov = len(found) / n if n else 0.0
        thr = gs.min_coverage if min_coverage is None else float(min_coverage)
        any_found = any_found or bool(found)
        low = cov < thr or len(found) < min_genes
        if not found:
            status = "no_genes_found"
        elif not low:
            status = "ok"
        elif on_low_coverage == "keep":
            status = "low_coverage_kept"
        elif on_low_coverage == "warn":
            status = "low_coverage_skipped"
        else:
            status = "low_coverage"
        ms = MatchedSet(
            name=gs.name,
            indices=np.asarray(idx, dtype=np.int64),
            weights=np.asarray(w, dtype=np.float64),
            found=found,
            missing=missing,
            renamed=renamed,
            coverage=cov,
            n_genes=n,
            status=status,
            notes=notes,
        )
        if status in ("ok", "low_coverage_kept"):
            matched[gs.name] = ms
        rows.append(
            {
                "set": gs.name,
                "group": gs.group,
                "n_genes": n,
                "n_found": len(found),
                "coverage": cov,
                "min_coverage": thr,
                "status": status,
                "found": ";".join(found),
                "missing": ";".join(missing),
                "renamed": ";".join(f"{k}->{v}" for k, v in renamed.items()),
            }
        )
    if len(lib) and not any_found:
        raise SignatureError(
            f"none of the genes of signature library {lib.name!r} were found in the data "
            f"({data_species} {identity.id_type}, {adata.n_vars} genes).",
            path=lib.origin or lib.name,
            fix="check that the gene sets and the data use the same kind of gene names "
            "(symbols vs Ensembl IDs), pass species= / symbol_column= if detection was wrong.",
        )
    table = pd.DataFrame(rows, columns=list(COVERAGE_COLUMNS))
    info = {"species": data_species, "id_type": identity.id_type, "identity": identity}
    return matched, table, info


def match_signatures(
    library,
    adata: AnnData,
    *,
    species: str | None = None,
    symbol_column: str | None = None,
    min_coverage: float | None = None,
    min_genes: int = 1,
    on_low_coverage: str = "warn",
) -> dict[str, MatchedSet]:
    """Find the genes of each signature set in ``adata``.

    Signature symbols (human for built-in libraries) are repaired (outdated ->
    current), mapped to the data's species through the orthologue table (the
    curated ``mouse`` column for built-in libraries; never by changing case),
    and looked up among the data's current symbols (see
    :func:`cafclassify.genes.resolve_gene_identity`). Duplicate data genes with
    the same symbol: the first is used and the fact is recorded in ``notes``.

    Parameters
    ----------
    library
        Anything :func:`load_signatures` accepts (name, path, dict, library).
    adata
        The data; not modified.
    species
        ``"human"`` or ``"mouse"``; detected from the gene names if ``None``.
    symbol_column
        ``var`` column with gene symbols (auto-detected for Ensembl var_names).
    min_coverage
        Smallest fraction of a set's genes that must be found. ``None`` (default)
        uses each set's own ``min_coverage`` from the library (0.5 for subtype
        sets and user sets, 0.15 for the large lineage sets); a number applies to
        every set.
    min_genes
        Smallest number of genes that must be found.
    on_low_coverage
        ``"warn"``: skip the set and log a WARNING naming it and its missing
        genes; ``"raise"``: raise :class:`~cafclassify._errors.SignatureError`;
        ``"keep"``: keep the set (still logged). Sets with no gene found are always
        skipped.

    Returns
    -------
    dict[str, MatchedSet]
        The usable sets, in library order. :func:`coverage_table` lists all sets
        with their status.

    Raises
    ------
    SignatureError
        If the species cannot be told, if no gene of the library is found at all,
        or for low coverage with ``on_low_coverage="raise"``.
    """
    return match_with_coverage(
        library,
        adata,
        species=species,
        symbol_column=symbol_column,
        min_coverage=min_coverage,
        min_genes=min_genes,
        on_low_coverage=on_low_coverage,
    )[0]



def match_with_coverage(
    library,
    adata: AnnData,
    *,
    species: str | None = None,
    symbol_column: str | None = None,
    min_coverage: float | None = None,
    min_genes: int = 1,
    on_low_coverage: str = "warn",
) -> tuple[dict[str, MatchedSet], pd.DataFrame]:
    """:func:`match_signatures` and :func:`coverage_table` from one matching pass.

    Parameters
    ----------
    library, adata, species, symbol_column, min_coverage, min_genes, on_low_coverage
        As in :func:`match_signatures` (which logs and raises the same way).

    Returns
    -------
    The usable sets (as :func:`match_signatures`) and the coverage table of every set
    (as :func:`coverage_table`).
    """
    matched, table, _ = _match_all(
        library,
        adata,
        species=species,
        symbol_column=symbol_column,
        min_coverage=min_coverage,
        min_genes=min_genes,
        on_low_coverage=on_low_coverage,
    )
    low = table[table["status"] != "ok"]
    for row in low.itertuples(index=False):
        msg = (
            f"gene set {row.set!r}: {row.n_found} of {row.n_genes} genes found "
            f"(coverage {row.coverage:.2f}, needed {row.min_coverage:.2f}, at least {min_genes} gene(s)); "
            f"missing: {row.missing.replace(';', ', ') or '(none)'}"
        )
        if row.status == "low_coverage":
            raise SignatureError(
                msg + ".",
                fix="use on_low_coverage='warn' to skip such sets or 'keep' to use them anyway, "
                "or lower min_coverage.",
            )
        action = "kept anyway" if row.status == "low_coverage_kept" else "skipped"
        logger.warning("%s; %s.", msg, action)
    for ms in matched.values():
        for note in ms.notes:
            logger.info("gene set %r: %s", ms.name, note)
    return matched, table


def coverage_table(
    library,
    adata: AnnData,
    *,
    species: str | None = None,
    symbol_column: str | None = None,
    min_coverage: float | None = None,
    min_genes: int = 1,
    on_low_coverage: str = "warn",
) -> pd.DataFrame:
    """One row per set: how many of its genes the data have, and what happens to it.

    Takes the same arguments as :func:`match_signatures`, but never raises for
    low coverage and logs nothing.

    Parameters
    ----------
    library
        Anything :func:`load_signatures` accepts (name, path, dict, library).
    adata
        The data; not modified.
    species, symbol_column, min_coverage, min_genes, on_low_coverage
        As in :func:`match_signatures`.

    Returns
    -------
    pandas.DataFrame
        Columns ``set, group, n_genes, n_found, coverage, min_coverage, status,
        found, missing, renamed`` (gene lists ``";"``-joined, ``renamed`` as
        ``"SIG->var"``). ``status`` is ``"ok"``, ``"low_coverage_skipped"``
        (``"warn"``), ``"low_coverage"`` (``"raise"``), ``"low_coverage_kept"``
        (``"keep"``) or ``"no_genes_found"``. Every set of the library appears.
    """
    _, table, _ = _match_all(
        library,
        adata,
        species=species,
        symbol_column=symbol_column,
        min_coverage=min_coverage,
        min_genes=min_genes,
        on_low_coverage=on_low_coverage,
    )
    return table
