"""Signature libraries: the built-in versioned ``caf_v1``, and user gene-set files.

A :class:`SignatureLibrary` holds :class:`GeneSet` objects in groups (``lineage``,
``subtype``, ``state``, ``optional``, ``user``): the gate takes its lineages from the
``lineage`` group, the classifier its classes from ``subtype``.
:func:`load_signatures` reads the built-in folders here and user files (GMT, gene
lists, long tables, dicts) with :mod:`cafclassify.genesets._userfiles`, whose
conventions let a user file say which sets are subtypes, lineages and states.
"""

from __future__ import annotations

import csv
import hashlib
import io
import logging
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path

from .._errors import SignatureError

__all__ = [
    "GROUPS",
    "LIBRARY_FILES",
    "TIERS",
    "GeneSet",
    "SignatureLibrary",
    "list_signatures",
    "load_signatures",
]

logger = logging.getLogger(__name__)

GROUPS = ("lineage", "subtype", "state", "optional", "user")
TIERS = ("seed", "literature", "inferred", "user")
#: files that define a library folder, hashed in this order
LIBRARY_FILES = ("VERSION", "sets.tsv", "genes.tsv", "sources.tsv")
_SET_COLUMNS = ("set", "group", "display_name", "description", "evidence", "min_coverage")
_GENE_COLUMNS = ("set", "human", "mouse", "direction", "tier", "sources", "note")
_SOURCE_COLUMNS = ("key", "citation", "status")
_SOURCE_STATUS = (
    "seed",
    "verified list",
    "third-party transcription",
    "recall/unverified",
    "standard marker",
    "inference",
)


@dataclass(frozen=True)
class GeneSet:
    """One gene set with per-gene provenance.

    Attributes
    ----------
    name
        Set name, e.g. ``"myCAF"``.
    group
        ``"lineage"``, ``"subtype"``, ``"state"``, ``"optional"`` or ``"user"``.
    genes
        Human symbols (built-in libraries) or the user's symbols as given.
    mouse
        Mouse orthologue per gene (``None`` if none or unknown).
    weights
        ``+1``/``-1`` (direction) for built-in sets, or the user's weights.
    tiers
        Evidence tier per gene: ``"seed"``, ``"literature"``, ``"inferred"``, ``"user"``.
    sources
        Per gene, ``";"``-joined source keys (see :attr:`SignatureLibrary.sources`).
    description
        What the set is meant to capture.
    evidence
        How strong the evidence is, in plain words.
    min_coverage
        Smallest fraction of the genes that must be found in a dataset for the set
        to be used (see :func:`~cafclassify.genesets.match_signatures`).
    display_name
        Name for plots and reports.
    notes
        Per-gene note (may be empty strings).
    """

    name: str
    group: str
    genes: tuple[str, ...]
    mouse: tuple[str | None, ...]
    weights: tuple[float, ...]
    tiers: tuple[str, ...]
    sources: tuple[str, ...]
    description: str = ""
    evidence: str = ""
    min_coverage: float = 0.5
    display_name: str = ""
    notes: tuple[str, ...] = ()

    def __len__(self) -> int:
        return len(self.genes)

    @property
    def tier_counts(self) -> dict[str, int]:
        """Number of genes per evidence tier."""
        out: dict[str, int] = {}
        for t in self.tiers:
            out[t] = out.get(t, 0) + 1
        return out


@dataclass(frozen=True)
class SignatureLibrary:
    """A named, versioned collection of gene sets.

    Attributes
    ----------
    name
        ``"caf_v1"`` for the built-in library, the file stem for user files.
    version
        Library version (``VERSION`` file for built-in libraries).
    sha256
        Hash of the files that define the library (recorded in every output).
    sets
        ``{set name: GeneSet}`` in file order.
    sources
        ``{source key: citation}``.
    source_status
        ``{source key: status}`` (seed, verified list, third-party transcription, ...).
    origin
        Where the library came from (folder, file path or ``"<dict>"``).
    """

    name: str
    version: str
    sha256: str
    sets: dict[str, GeneSet]
    sources: dict[str, str] = field(default_factory=dict)
    source_status: dict[str, str] = field(default_factory=dict)
    origin: str = ""

    def __len__(self) -> int:
        return len(self.sets)

    def __iter__(self):
        return iter(self.sets.values())

    def __getitem__(self, name: str) -> GeneSet:
        try:
            return self.sets[name]
        except KeyError:
            raise SignatureError(
                f"no set {name!r} in signature library {self.name!r}.",
                fix=f"use one of: {', '.join(self.sets)}.",
            ) from None

    def subset(
        self, names: Iterable[str] | None = None, groups: Iterable[str] | None = None
    ) -> SignatureLibrary:
        """Return a library with only the named sets and/or groups (file order kept).

        Raises
        ------
        SignatureError
            If a name or group is not in the library.
        """
        keep = dict(self.sets)
        if names is not None:
            names = [names] if isinstance(names, str) else list(names)
            unknown = [n for n in names if n not in self.sets]
            if unknown:
                raise SignatureError(
                    f"set(s) {', '.join(map(repr, unknown))} not in signature library {self.name!r}.",
                    fix=f"use some of: {', '.join(self.sets)}.",
                )
            keep = {k: v for k, v in keep.items() if k in set(names)}
        if groups is not None:
            groups = [groups] if isinstance(groups, str) else list(groups)
            present = {gs.group for gs in self.sets.values()}
            unknown = [g for g in groups if g not in present]
            if unknown:
                raise SignatureError(
                    f"group(s) {', '.join(map(repr, unknown))} not in signature library {self.name!r}.",
                    fix=f"use some of: {', '.join(sorted(present))}.",
                )
            keep = {k: v for k, v in keep.items() if v.group in set(groups)}
        return replace(self, sets=keep)

    def with_groups(self, groups: Mapping[str, Iterable[str]]) -> SignatureLibrary:
        """Return a library in which the named sets are moved to the given groups.

        Parameters
        ----------
        groups
            ``{group: [set names]}``, e.g. ``{"subtype": ["iCAF", "myCAF"]}`` (what the
            CLI's ``--subtype-sets`` does for a user file without groups).

        Raises
        ------
        SignatureError
            For an unknown group or set name.
        """
        from ._userfiles import _check_group

        sets = dict(self.sets)
        for group, names in groups.items():
            _check_group(group, where=f"signature library {self.name!r}")
            for n in [names] if isinstance(names, str) else names:
                if n not in sets:
                    raise SignatureError(
                        f"set {n!r} is not in signature library {self.name!r}.",
                        path=self.origin or None,
                        fix=f"use some of: {', '.join(self.sets)}.",
                    )
                sets[n] = replace(sets[n], group=group)
        return replace(self, sets=sets)

    def table(self):
        """Long table, one row per (set, gene): set, group, gene, mouse, weight, tier, sources."""
        import pandas as pd

        rows = [
            {
                "set": gs.name,
                "group": gs.group,
                "gene": g,
                "mouse": m,
                "weight": w,
                "tier": t,
                "sources": s,
            }
            for gs in self.sets.values()
            for g, m, w, t, s in zip(
                gs.genes, gs.mouse, gs.weights, gs.tiers, gs.sources, strict=True
            )
        ]
        return pd.DataFrame(
            rows, columns=["set", "group", "gene", "mouse", "weight", "tier", "sources"]
        )

    def provenance(self) -> dict:
        """Small dict for ``uns``: name, version, sha256, origin, set names."""
        return {
            "name": self.name,
            "version": self.version,
            "sha256": self.sha256,
            "origin": self.origin,
            "sets": list(self.sets),
        }


# --------------------------------------------------------------------------
# built-in libraries


def _builtin_root() -> Path | None:
    """Folder holding built-in libraries: packaged ``_signatures`` or the repo's ``signatures``."""
    try:
        ref = resources.files("cafclassify").joinpath("_signatures")
        if ref.is_dir():
            return Path(str(ref))
    except (ModuleNotFoundError, FileNotFoundError, NotADirectoryError):  # pragma: no cover
        pass
    import cafclassify

    repo = Path(cafclassify.__file__).resolve().parents[1] / "signatures"
    return repo if repo.is_dir() else None


def _is_library_dir(path: Path) -> bool:
    return path.is_dir() and all(
        (path / f).is_file() for f in ("sets.tsv", "genes.tsv", "sources.tsv")
    )


def list_signatures() -> list[str]:
    """Names of the built-in signature libraries.

    Returns
    -------
    list of str
        Sorted library names, e.g. ``["caf_v1"]``; load one with :func:`load_signatures`.
    """
    root = _builtin_root()
    if root is None:
        return []
    return sorted(p.name for p in root.iterdir() if _is_library_dir(p))


def _hash_files(paths: Iterable[Path]) -> str:
    h = hashlib.sha256()
    for p in paths:
        h.update(p.name.encode())
        h.update(b"\0")
        h.update(p.read_bytes().replace(b"\r\n", b"\n"))
        h.update(b"\0")
    return h.hexdigest()


def _read_tsv(path: Path, columns: tuple[str, ...]) -> list[tuple[int, dict[str, str]]]:
    text = path.read_text(encoding="utf-8-sig")
    reader = csv.reader(io.StringIO(text), delimiter="\t")
    try:
        header = next(reader)
    except StopIteration:
        raise SignatureError("the file is empty.", path=path, fix="restore the file.") from None
    header = [h.strip() for h in header]
    missing = [c for c in columns if c not in header]
    if missing:
        raise SignatureError(
            f"missing column(s) {', '.join(missing)} (found: {', '.join(header)}).",
            path=path,
            fix=f"the header must be: {chr(9).join(columns)} (tab-separated).",
        )
    rows = []
    for lineno, fields in enumerate(reader, start=2):
        if not fields or all(not f.strip() for f in fields) or fields[0].startswith("#"):
            continue
        if len(fields) != len(header):
            raise SignatureError(
                f"line {lineno} has {len(fields)} fields, the header has {len(header)}.",
                path=path,
                fix="use exactly one tab between fields and no tabs inside a field.",
            )
        rows.append((lineno, {k: v.strip() for k, v in zip(header, fields, strict=True)}))
    return rows


def _load_library_dir(folder: Path, name: str | None = None) -> SignatureLibrary:
    name = name or folder.name
    sets_p, genes_p, sources_p = folder / "sets.tsv", folder / "genes.tsv", folder / "sources.tsv"
    version_p = folder / "VERSION"
    version = (
        version_p.read_text(encoding="utf-8").strip() if version_p.is_file() else "unversioned"
    )

    sources: dict[str, str] = {}
    status: dict[str, str] = {}
    for lineno, row in _read_tsv(sources_p, _SOURCE_COLUMNS):
        if row["status"] not in _SOURCE_STATUS:
            raise SignatureError(
                f"line {lineno}: status {row['status']!r} is not one of {', '.join(_SOURCE_STATUS)}.",
                path=sources_p,
            )
        if row["key"] in sources:
            raise SignatureError(
                f"line {lineno}: duplicate source key {row['key']!r}.", path=sources_p
            )
        sources[row["key"]] = row["citation"]
        status[row["key"]] = row["status"]

    meta: dict[str, dict[str, str]] = {}
    for lineno, row in _read_tsv(sets_p, _SET_COLUMNS):
        if row["group"] not in GROUPS:
            raise SignatureError(
                f"line {lineno}: group {row['group']!r} of set {row['set']!r} is not one of "
                f"{', '.join(GROUPS)}.",
                path=sets_p,
            )
        try:
            mc = float(row["min_coverage"])
        except ValueError:
            mc = float("nan")
        if not 0.0 <= mc <= 1.0:
            raise SignatureError(
                f"line {lineno}: min_coverage {row['min_coverage']!r} is not a fraction in [0, 1].",
                path=sets_p,
            )
        if row["set"] in meta:
            raise SignatureError(f"line {lineno}: duplicate set {row['set']!r}.", path=sets_p)
        meta[row["set"]] = row

    per_set: dict[str, list[dict[str, str]]] = {k: [] for k in meta}
    seen: set[tuple[str, str]] = set()
    for lineno, row in _read_tsv(genes_p, _GENE_COLUMNS):
        s, g = row["set"], row["human"]
        where = f"line {lineno} ({s}/{g})"
        if s not in meta:
            raise SignatureError(f"{where}: set {s!r} is not in sets.tsv.", path=genes_p)
        if (s, g) in seen:
            raise SignatureError(f"{where}: duplicate gene in set.", path=genes_p)
        seen.add((s, g))
        if row["direction"] not in ("+", "-"):
            raise SignatureError(f"{where}: direction must be '+' or '-'.", path=genes_p)
        if row["tier"] not in ("seed", "literature", "inferred"):
            raise SignatureError(
                f"{where}: tier must be seed, literature or inferred.", path=genes_p
            )
        keys = [k for k in row["sources"].split(";") if k]
        unknown = [k for k in keys if k not in sources]
        if not keys or unknown:
            raise SignatureError(
                f"{where}: source key(s) {unknown or '(none)'} not in sources.tsv.", path=genes_p
            )
        per_set[s].append(row)

    sets: dict[str, GeneSet] = {}
    for s, m in meta.items():
        rows = per_set[s]
        if not rows:
            raise SignatureError(f"set {s!r} has no genes in genes.tsv.", path=genes_p)
        sets[s] = GeneSet(
            name=s,
            group=m["group"],
            genes=tuple(r["human"] for r in rows),
            mouse=tuple(None if r["mouse"] in ("", "-") else r["mouse"] for r in rows),
            weights=tuple(1.0 if r["direction"] == "+" else -1.0 for r in rows),
            tiers=tuple(r["tier"] for r in rows),
            sources=tuple(r["sources"] for r in rows),
            description=m["description"],
            evidence=m["evidence"],
            min_coverage=float(m["min_coverage"]),
            display_name=m["display_name"] or s,
            notes=tuple(r["note"] for r in rows),
        )
    files = [folder / f for f in LIBRARY_FILES if (folder / f).is_file()]
    return SignatureLibrary(
        name=name,
        version=version,
        sha256=_hash_files(files),
        sets=sets,
        sources=sources,
        source_status=status,
        origin=str(folder),
    )


_FORMATS = {
    "gmt": "gmt",
    "txt": "list",
    "grp": "list",
    "list": "list",
    "tsv": "tsv",
    "csv": "csv",
    "library": "library",
}


def load_signatures(spec="caf_v1", *, format: str | None = None) -> SignatureLibrary:
    """Load a signature library.

    Parameters
    ----------
    spec
        One of

        - a built-in library name (see :func:`list_signatures`), e.g. ``"caf_v1"``;
        - a path to a ``.gmt`` file (name, description, genes... per line);
        - a path to a ``.txt``/``.grp`` file with one gene per line (``#`` starts a
          comment); the set is named after the file stem;
        - a path to a ``.tsv``/``.csv`` long table with columns ``source`` (set),
          ``target`` (gene) and optionally ``weight`` (decoupler format; the sign
          of the weight is the direction);
        - a folder in the built-in format (``sets.tsv``, ``genes.tsv``,
          ``sources.tsv``, optional ``VERSION``);
        - a dict ``{name: [genes]}`` or ``{name: {gene: weight}}``;
        - a :class:`SignatureLibrary` (returned as is).
    format
        Force a file format: ``"gmt"``, ``"list"`` (or ``"txt"``/``"grp"``),
        ``"tsv"``, ``"csv"`` or ``"library"``.

    Returns
    -------
    SignatureLibrary

    Raises
    ------
    SignatureError
        For an unknown name, a missing file, or a malformed file (the message
        names the file and line). Spreadsheet-mangled gene names in user sets
        (``"Sep.04"``, ``"1-Mar"``) are repaired or dropped with a warning.
    """
    if isinstance(spec, SignatureLibrary):
        return spec
    if isinstance(spec, Mapping):
        from ._userfiles import _from_dict

        return _from_dict(spec)
    if not isinstance(spec, (str, os.PathLike)):
        raise SignatureError(
            f"cannot load signatures from an object of type {type(spec).__name__}.",
            fix="pass a built-in library name, a file path, a dict or a SignatureLibrary.",
        )
    fmt = None
    if format is not None:
        fmt = _FORMATS.get(str(format).lower())
        if fmt is None:
            raise SignatureError(
                f"format={format!r} is not supported.", fix=f"use one of: {', '.join(_FORMATS)}."
            )
    builtin = list_signatures()
    if (
        isinstance(spec, str)
        and spec in builtin
        and not Path(spec).exists()
        and fmt in (None, "library")
    ):
        root = _builtin_root()
        if root is not None:  # always true when list_signatures() found the name
            return _load_library_dir(root / spec)
    path = Path(spec).expanduser()
    if not path.exists():
        raise SignatureError(
            "is neither a built-in signature library nor an existing file or folder.",
            path=spec,
            fix=f"use a built-in library ({', '.join(builtin) or 'none installed'}) or a path to a "
            ".gmt, .txt/.grp, .tsv/.csv file or a library folder.",
        )
    if path.is_dir():
        if not _is_library_dir(path):
            raise SignatureError(
                "the folder is not a signature library (needs sets.tsv, genes.tsv and sources.tsv).",
                path=path,
            )
        return _load_library_dir(path)
    if fmt is None:
        suffix = path.suffix.lower().lstrip(".")
        fmt = _FORMATS.get(suffix)
        if fmt is None or fmt == "library":
            raise SignatureError(
                f"cannot tell the gene-set format from the extension '.{suffix}'.",
                path=path,
                fix="use .gmt, .txt/.grp or .tsv/.csv, or pass format=.",
            )
    from ._userfiles import _read_gene_list, _read_gmt, _read_long_table

    try:
        if fmt == "gmt":
            sets = _read_gmt(path)
        elif fmt == "list":
            sets = _read_gene_list(path)
        elif fmt == "library":
            raise SignatureError("format='library' needs a folder.", path=path)
        else:
            sets = _read_long_table(path, "\t" if fmt == "tsv" else ",")
    except UnicodeDecodeError:
        raise SignatureError("is not a UTF-8 text file.", path=path) from None
    return SignatureLibrary(
        name=path.stem,
        version="user",
        sha256=_hash_files([path]),
        sets=sets,
        sources={},
        origin=str(path),
    )


def check_subtype_sets(library, classes: Iterable[str] | None = None) -> list[str]:
    """The subtype sets a classifier would use: ``classes``, or the library's ``subtype`` group.

    Raises
    ------
    SignatureError
        When fewer than two are named or marked (a user file without groups), with
        the conventions that mark them.
    """
    lib = load_signatures(library)
    if classes is not None:
        names = list(classes)
        unknown = [n for n in names if n not in lib.sets]
        if unknown:
            raise SignatureError(f"subtype set(s) {', '.join(map(repr, unknown))} are not in the "
                                 f"signature library {lib.name!r}.", path=lib.origin or None,
                                 fix=f"use some of: {', '.join(lib.sets)}.")
    else:
        names = [n for n, gs in lib.sets.items() if gs.group == "subtype"]
    if len(names) < 2:
        raise SignatureError(
            f"the signature library marks {len(names)} set(s) as CAF subtypes "
            f"({', '.join(names) or 'none'}); a classifier needs two or more.",
            path=lib.origin or lib.name,
            fix="say which sets are subtypes: --subtype-sets A,B,C on the command line "
            "(classes=[...] in Python), or in the file: 'group=subtype' in the description "
            "field of a GMT line, a 'group' column in a table, '# group=subtype' in a gene list.",
        )
    return names
