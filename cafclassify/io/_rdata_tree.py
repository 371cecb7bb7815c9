"""The R side of :mod:`cafclassify.io._rdata`: parse an R file, find its object, convert it.

An ``.rds``/``.rda``/``.RData`` file is parsed with the pure-Python ``rdata`` package.
The parsed tree is *peeked* before anything is converted: each top-level object's type,
``class`` attribute (and the class's ``package``), ``dim`` and slot names say what it
is, so a file with no single-cell object is refused with a message that says what it
holds, and an ``.RData`` file with several objects is read only when exactly one is a
single-cell object or one is named. Only the chosen object is converted; sparse matrices
(``dgCMatrix``, ``dgTMatrix``, ``dgRMatrix``) become SciPy matrices built on R's own
arrays (a genes x cells CSC *is* the cells x genes CSR: nothing is copied or densified).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from .._errors import InputFileError

_SEURAT = ("Seurat",)
_SE = ("SingleCellExperiment", "SummarizedExperiment", "RangedSummarizedExperiment")
_SPARSE = ("dgCMatrix", "dgTMatrix", "dgRMatrix")
_EXACT_F32 = 2**24  # integers below this are exact in float32
_R_OBJECT_FIX = (
    "name the object to read with --r-object NAME (r_object= in Python; the r_object column "
    "of config/datasets.tsv)"
)
_SAVE_FIX = (
    "in R, save the single-cell object itself: saveRDS(obj, 'data.rds') for a Seurat object, "
    "a SingleCellExperiment/SummarizedExperiment or a (sparse) genes x cells matrix"
)


# ---------------------------------------------------------------------------
# small helpers on converted values
# ---------------------------------------------------------------------------
def _is_null(v: Any) -> bool:
    # a NULL S4 slot is stored as the symbol "\001NULL\001"
    return v is None or (isinstance(v, str) and v == "\x01NULL\x01")


def _strings(v: Any) -> list[str] | None:
    if _is_null(v):
        return None
    arr = np.asarray(getattr(v, "values", v)).ravel()
    return [str(x) for x in arr]


def _scalar_str(v: Any) -> str | None:
    s = _strings(v)
    return s[0] if s else None


def _version(v: Any) -> str | None:
    """A converted R ``package_version`` (list of one int vector) as "4.1.3"."""
    if _is_null(v):
        return None
    if isinstance(v, list) and v:
        v = v[0]
    try:
        return ".".join(str(int(x)) for x in np.asarray(v).ravel())
    except (TypeError, ValueError):
        return None


def _slots(obj: Any) -> dict:
    return vars(obj) if isinstance(obj, SimpleNamespace) else {}


def _klass(obj: Any) -> str:
    c = _slots(obj).get("class")
    return str(np.asarray(c).ravel()[0]) if c is not None and np.asarray(c).size else ""


@dataclass
class _RMatrix:
    """An R matrix transposed to cells x genes (``T``), with R's row and column names."""

    T: Any  # sp.csr_matrix or np.ndarray, shape (R ncol, R nrow)
    rownames: list[str] | None  # R rows (genes)
    colnames: list[str] | None  # R columns (cells)
    r_class: str


def _f32_if_exact(x: np.ndarray) -> np.ndarray:
    if x.dtype.kind == "f" and x.size and x.dtype != np.float32:
        if np.all(np.abs(x) < _EXACT_F32) and np.array_equal(x, np.rint(x)):
            return x.astype(np.float32)
    return x


def _dimnames(v: Any) -> tuple[list[str] | None, list[str] | None]:
    if _is_null(v) or not isinstance(v, (list, dict)):
        return None, None
    vals = list(v.values()) if isinstance(v, dict) else list(v)
    vals += [None] * (2 - len(vals))
    return _strings(vals[0]), _strings(vals[1])


def _sparse_constructor(kind: str):
    def build(obj: Any, attrs: dict) -> _RMatrix:
        nrow, ncol = (int(d) for d in np.asarray(attrs["Dim"]).ravel())
        x = _f32_if_exact(np.asarray(attrs["x"]))
        if kind == "dgCMatrix":
            # R's CSC of genes x cells is the CSR of cells x genes: same arrays, no copy
            T = sp.csr_matrix(
                (x, np.asarray(attrs["i"]), np.asarray(attrs["p"])), shape=(ncol, nrow)
            )
        elif kind == "dgRMatrix":
            T = sp.csc_matrix(
                (x, np.asarray(attrs["j"]), np.asarray(attrs["p"])), shape=(ncol, nrow)
            ).tocsr()
        else:  # dgTMatrix: triplets (duplicates are summed, as in R)
            T = sp.coo_matrix(
                (x, (np.asarray(attrs["j"]), np.asarray(attrs["i"]))), shape=(ncol, nrow)
            ).tocsr()
        rows, cols = _dimnames(attrs.get("Dimnames"))
        return _RMatrix(T, rows, cols, kind)

    return build


def _factor_constructor(ordered: bool):
    """R factor -> Categorical, vectorised (rdata's own loops over the codes in Python,
    which takes seconds per 100k-cell identity vector when it carries cell names)."""

    def build(obj: Any, attrs: dict) -> pd.Categorical:
        arr = getattr(obj, "values", obj)  # named factor: xarray.DataArray
        mask = np.ma.getmaskarray(arr) if np.ma.isMaskedArray(arr) else None
        codes = np.asarray(np.ma.getdata(arr), dtype=np.int64).ravel()
        levels = [str(x) for x in np.asarray(attrs.get("levels", []), dtype=object).ravel()]
        codes = np.where((codes < 1) | (codes > len(levels)), -1, codes - 1)
        if mask is not None:
            codes[mask.ravel()] = -1
        return pd.Categorical.from_codes(codes, categories=levels, ordered=ordered)

    return build


def _converter():
    from rdata.conversion import DEFAULT_CLASS_MAP, SimpleConverter

    cmap = dict(DEFAULT_CLASS_MAP)
    cmap["factor"] = _factor_constructor(False)
    cmap["ordered"] = _factor_constructor(True)
    for kind in _SPARSE:
        cmap[kind] = _sparse_constructor(kind)
    return SimpleConverter(cmap)


def _convert(robj: Any) -> Any:
    with warnings.catch_warnings():
        # rdata warns for every S4 class it has no constructor for (Seurat, Assay, ...)
        warnings.simplefilter("ignore")
        return _converter().convert(robj)


# ---------------------------------------------------------------------------
# peeking at the parsed tree (no conversion)
# ---------------------------------------------------------------------------
def _deref(o: Any) -> Any:
    from rdata.parser import RObjectType

    while o is not None and o.info.type == RObjectType.REF:
        o = o.referenced_object
    return o


def _sym_name(tag: Any) -> str | None:
    from rdata.parser import RObjectType

    tag = _deref(tag)
    if tag is None or tag.info.type != RObjectType.SYM:
        return None
    return tag.value.value.decode("utf-8", "replace")


def _pairlist(o: Any) -> list[tuple[str | None, Any]]:
    """(tag, value) items of a parsed pairlist (attributes, an .RData's objects)."""
    from rdata.parser import RObjectType

    items = []
    o = _deref(o)
    while o is not None and o.info.type == RObjectType.LIST:
        items.append((_sym_name(o.tag), o.value[0]))
        o = _deref(o.value[1])
    return items


def _char_values(o: Any) -> list[str]:
    o = _deref(o)
    try:
        return [c.value.decode("utf-8", "replace") for c in o.value if c.value is not None]
    except (AttributeError, TypeError):
        return []


def _peek(robj: Any) -> dict:
    """Class, package, type, dim and slot names of a parsed object, without converting it."""
    from rdata.parser import RObjectType

    robj = _deref(robj)
    attrs = _pairlist(robj.attributes) if robj.attributes is not None else []
    out: dict = {"type": robj.info.type.name, "class": [], "package": None, "dim": None,
                 "names": [], "slots": [name for name, _ in attrs], "length": None}
    for name, val in attrs:
        if name == "class":
            out["class"] = _char_values(val)
            v = _deref(val)
            for an, av in _pairlist(v.attributes) if v.attributes is not None else []:
                if an == "package":
                    pk = _char_values(av)
                    out["package"] = pk[0] if pk else None
        elif name == "dim":
            out["dim"] = [int(x) for x in np.asarray(_deref(val).value).ravel()]
        elif name == "names":
            out["names"] = _char_values(val)
    if isinstance(robj.value, (np.ndarray, list, tuple)) and robj.info.type != RObjectType.S4:
        out["length"] = len(robj.value)
    return out


def _kind(peek: dict) -> str:
    """'seurat', 'se', 'matrix' or 'other'."""
    cls, slots = peek["class"], set(peek["slots"])
    if peek["type"] == "S4":
        if any(c in _SEURAT for c in cls) or {"assays", "meta.data", "active.assay"} <= slots:
            return "seurat"
        if any(c in _SE for c in cls) or {"assays", "colData"} <= slots:
            return "se"
        if any(c in _SPARSE for c in cls):
            return "matrix"
        return "other"
    if peek["type"] in ("REAL", "INT", "LGL") and peek["dim"] is not None and len(peek["dim"]) == 2:
        return "matrix"
    return "other"


def _describe(peek: dict) -> str:
    """What an object is, in words (for error messages)."""
    cls = peek["class"]
    if peek["type"] == "S4":
        pkg = f" (package {peek['package']})" if peek["package"] else ""
        return f"an S4 object of class {cls[0] if cls else '?'!r}{pkg}"
    if "data.frame" in cls:
        return f"a data.frame with {len(peek['names'])} column(s)"
    if "factor" in cls:
        return f"a factor of length {peek['length']}"
    t = peek["type"]
    if t == "VEC":
        names = peek["names"]
        shown = ", ".join(names[:8]) + (", ..." if len(names) > 8 else "")
        return f"an R list of {peek['length']} element(s)" + (f" ({shown})" if names else "")
    if t == "STR":
        return f"a character vector of length {peek['length']}"
    if t in ("REAL", "INT", "LGL", "CPLX"):
        word = {"REAL": "numeric", "INT": "integer", "LGL": "logical", "CPLX": "complex"}[t]
        if peek["dim"]:
            return f"a {word} array of dimensions {' x '.join(map(str, peek['dim']))}"
        article = "an" if word[0] in "aeiou" else "a"
        return f"{article} {word} vector of length {peek['length']}"
    if t in ("CLO", "BUILTIN", "SPECIAL"):
        return "an R function"
    if t == "ENV":
        return "an R environment"
    if t in ("NILVALUE", "NIL"):
        return "NULL"
    return f"an R object of type {t}" + (f" and class {cls[0]!r}" if cls else "")


# ---------------------------------------------------------------------------
# parsing and choosing the object
# ---------------------------------------------------------------------------
def _parse(path: Path) -> Any:
    import rdata

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # rdata warns about extensions it does not expect
            return rdata.parser.parse_file(path)
    except MemoryError:
        raise
    except Exception as exc:  # EOFError, ValueError, zlib/lzma errors, NotImplementedError...
        msg = " ".join(str(exc).split())[:200] or type(exc).__name__
        raise InputFileError(
            f"cannot read the R data file ({type(exc).__name__}: {msg}).",
            path=path,
            fix="the file is probably truncated or corrupted (an incomplete download or copy): "
            "download or export it again and compare its checksum; in R, readRDS()/load() "
            "should open it.",
        ) from None


def _choose(path: Path, fmt: str, parsed: Any, r_object: str | None) -> tuple[str | None, Any, dict]:
    """The object to read: (name or None for .rds, parsed object, peek)."""
    if fmt == "rds":
        if r_object is not None:
            raise InputFileError(
                f"r_object={r_object!r} was given but an .rds file holds one unnamed object.",
                path=path,
                fix="leave --r-object (r_object=) unset for .rds files; it names one object "
                "of an .RData/.rda file.",
            )
        peek = _peek(parsed.object)
        if _kind(peek) == "other":
            raise InputFileError(
                f"the file holds {_describe(peek)}, not a single-cell object.",
                path=path,
                fix=_SAVE_FIX + ".",
            )
        return None, parsed.object, peek
    items = [(n, o, _peek(o)) for n, o in _pairlist(parsed.object)]
    listing = "; ".join(f"{n}: {_describe(p)}" for n, o, p in items[:12]) or "nothing"
    if r_object is not None:
        for n, o, p in items:
            if n == r_object:
                if _kind(p) == "other":
                    raise InputFileError(
                        f"the object {r_object!r} is {_describe(p)}, not a single-cell object.",
                        path=path,
                        fix=f"the file holds {listing}; name a Seurat, SingleCellExperiment or "
                        "matrix object with --r-object NAME.",
                    )
                return n, o, p
        raise InputFileError(
            f"the file has no object named {r_object!r} (it holds {listing}).",
            path=path,
            fix="pass one of the names above with --r-object NAME (r_object= in Python).",
        )
    cells = [(n, o, p) for n, o, p in items if _kind(p) in ("seurat", "se")]
    if not cells:
        cells = [(n, o, p) for n, o, p in items if _kind(p) == "matrix"]
    if len(cells) == 1:
        return cells[0]
    if not cells:
        raise InputFileError(
            f"the file holds no single-cell object (it holds {listing}).",
            path=path,
            fix=_SAVE_FIX + "; or save() it into an .RData file.",
        )
    raise InputFileError(
        f"the file holds {len(cells)} single-cell objects ({listing}), so it is not clear "
        "which one to read.",
        path=path,
        fix=_R_OBJECT_FIX + ".",
    )
