"""Defensive readers for what the pipeline writes under ``uns["cafclassify"]``.

The nested shapes of the ``uns`` sections are written by several modules and pass
through an ``.h5ad`` round trip (lists become arrays, lists of records cannot be
stored and arrive as DataFrames or dicts of columns, ``None`` may be missing).
These helpers accept every reasonable shape and never raise on odd input: the
report shows what it can and says what it could not read.
"""

from __future__ import annotations

import ast
import json
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["as_frame", "as_list", "as_mapping", "find", "find_parent", "find_table", "fmt", "get", "to_py"]


def to_py(x: Any) -> Any:
    """Convert numpy scalars/arrays (recursively) to plain Python objects."""
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, np.ndarray):
        return [to_py(v) for v in x.tolist()] if x.dtype == object else x.tolist()
    if isinstance(x, Mapping):
        return {str(k): to_py(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [to_py(v) for v in x]
    return x


def as_mapping(x: Any) -> dict:
    """``x`` as a dict (parsing a JSON string); ``{}`` for anything else."""
    if isinstance(x, str | bytes):
        try:
            x = json.loads(x)
        except (ValueError, TypeError):
            return {}
    return dict(x) if isinstance(x, Mapping) else {}


def get(d: Any, *names: str, default: Any = None) -> Any:
    """First value in mapping ``d`` under one of ``names`` (case-insensitive)."""
    if not isinstance(d, Mapping):
        return default
    for name in names:
        if name in d:
            return d[name]
    lower = {str(k).lower(): k for k in d}
    for name in names:
        if name.lower() in lower:
            return d[lower[name.lower()]]
    return default


def find_parent(d: Any, *names: str, depth: int = 3, accept=None) -> tuple[Any, dict | None]:
    """``(value, mapping holding it)`` for the first of ``names`` found breadth first.

    ``accept(value)`` can reject hits (e.g. a count where a table was wanted);
    returns ``(None, None)`` when nothing is found.
    """
    level = [d]
    for _ in range(depth + 1):
        nxt = []
        for item in level:
            if not isinstance(item, Mapping):
                continue
            for name in names:
                value = get(item, name, default=_MISSING)
                if value is not _MISSING and (accept is None or accept(value)):
                    return value, item
            nxt.extend(v for v in item.values() if isinstance(v, Mapping))
        level = nxt
        if not level:
            break
    return None, None


def find(d: Any, *names: str, depth: int = 3, default: Any = None) -> Any:
    """Like :func:`get`, but also looks inside nested mappings (breadth first)."""
    value, parent = find_parent(d, *names, depth=depth)
    return default if parent is None else value


def find_table(d: Any, *names: str, depth: int = 3) -> Any:
    """Like :func:`find`, but only accepts non-empty mappings or tables (not counts)."""
    def ok(v: Any) -> bool:
        return (isinstance(v, Mapping) and len(v) > 0) or as_frame(v) is not None

    value, parent = find_parent(d, *names, depth=depth, accept=ok)
    return None if parent is None else value


_MISSING = object()


def as_list(x: Any) -> list[str]:
    """A list of strings from a list, array, ``;``/``,``-joined string or ``None``."""
    if x is None:
        return []
    if isinstance(x, float) and np.isnan(x):
        return []
    if isinstance(x, bytes):
        x = x.decode()
    if isinstance(x, str):
        s = x.strip()
        if not s:
            return []
        if s.startswith("["):
            try:
                return [str(v) for v in json.loads(s)]
            except ValueError:
                try:  # Python repr of a list, e.g. "['COL1A1', 'DCN']"
                    return [str(v) for v in ast.literal_eval(s)]
                except (ValueError, SyntaxError):
                    pass
        sep = ";" if ";" in s else ","
        return [p.strip() for p in s.split(sep) if p.strip()]
    if isinstance(x, np.ndarray | Sequence | pd.Index | pd.Series):
        return [str(v) for v in list(x) if not (isinstance(v, float) and np.isnan(v))]
    return [str(x)]


def as_frame(obj: Any, *, index_name: str | None = None) -> pd.DataFrame | None:
    """A DataFrame from a DataFrame, list of records, dict of columns or dict of rows.

    Returns ``None`` if ``obj`` cannot be read as a table.
    """
    if obj is None:
        return None
    if isinstance(obj, pd.DataFrame):
        return obj.copy()
    if isinstance(obj, str | bytes):
        try:
            obj = json.loads(obj)
        except (ValueError, TypeError):
            return None
    if isinstance(obj, np.ndarray) and obj.dtype.names:
        return pd.DataFrame.from_records(obj)
    if isinstance(obj, list | tuple | np.ndarray):
        items = list(obj)
        if items and all(isinstance(r, Mapping) for r in items):
            return pd.DataFrame([to_py(dict(r)) for r in items])
        return None
    if isinstance(obj, Mapping):
        if not obj:
            return None
        values = list(obj.values())
        if all(isinstance(v, Mapping) for v in values):
            df = pd.DataFrame.from_dict({str(k): to_py(dict(v)) for k, v in obj.items()},
                                        orient="index")
            df.index.name = index_name
            return df.reset_index() if index_name else df
        lengths = set()
        for v in values:
            if isinstance(v, np.ndarray | list | tuple | pd.Series | pd.Index):
                lengths.add(len(v))
            else:
                return None
        if len(lengths) == 1:
            return pd.DataFrame({str(k): list(v) for k, v in obj.items()})
    return None


def fmt(v: Any, *, max_items: int = 12, max_chars: int = 300) -> str:
    """Short human-readable text for a value shown in a table."""
    v = to_py(v)
    if v is None:
        return "—"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        if np.isnan(v):
            return "—"
        if v != 0 and (abs(v) < 1e-3 or abs(v) >= 1e6):
            return f"{v:.3g}"
        return f"{v:.4g}"
    if isinstance(v, Mapping):
        items = list(v.items())
        text = "; ".join(f"{k}={fmt(val, max_items=4, max_chars=60)}" for k, val in items[:max_items])
        if len(items) > max_items:
            text += f"; … ({len(items) - max_items} more)"
        return text[:max_chars]
    if isinstance(v, list | tuple):
        text = ", ".join(fmt(x, max_items=4, max_chars=60) for x in v[:max_items])
        if len(v) > max_items:
            text += f", … ({len(v) - max_items} more)"
        return text[:max_chars] if len(text) > max_chars else text
    s = str(v)
    return s if len(s) <= max_chars else s[: max_chars - 1] + "…"
