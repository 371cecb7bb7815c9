"""Shared helpers of the report pages: reading the AnnData defensively, label orders,
key numbers, coverage records and table cells for the templates."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .. import _keys as K
from .._errors import InputFileError
from ._colors import color_for
from ._uns import as_frame, as_list, as_mapping, find, fmt, get, to_py

# plain-words thresholds for the warnings box
MIN_FIBROBLASTS = 50  # fewer fibroblasts than this: subtype calls are fragile
LOW_COVERAGE = 0.5  # signature coverage below this: the set is unreliable
MANY_UNASSIGNED = 0.30  # more unassigned fibroblasts than this
QC_REMOVED = 0.20  # QC removed more than this fraction of cells
MIN_LTBP2_CELLS = 10  # fewer LTBP2+ fibroblasts than this: LTBP2 evidence is thin
MIN_CELLS_FIBRO_UMAP = 30  # fewer plotted fibroblasts: show them on the whole-data embedding
LOW_MACRO_F1 = 0.5  # cross-validated macro-F1 on the seed cells below this

SUBTYPE_ORDER = (
    "myCAF", "iCAF", "apCAF", "meCAF", "vCAF", "dCAF", "dCAF_developmental",
    "LTBP2_CAF", "LRRC15_myCAF",
)
STATE_SETS = ("senescence", "senescent_CAF", "cycling", "state_cycling")
TAIL = (K.UNASSIGNED, K.NOT_FIBROBLAST)

# lineage label -> names the lineage gene set may have in a signature library
LINEAGE_SETS = {
    "fibroblast": ("fibroblast", "GATE_panCAF", "panCAF", "fibroblast_lineage"),
    "mural": ("mural", "NEG_mural"),
    "epithelial": ("epithelial", "NEG_epithelial"),
    "immune": ("immune", "NEG_immune"),
    "endothelial": ("endothelial", "NEG_endothelial"),
    "other": ("other_lineage", "other", "NEG_other"),
}
SUBTYPE_SET_ALIASES = {"dCAF": ("dCAF", "dCAF_developmental"), "LTBP2_CAF": ("LTBP2_CAF", "LTBP2")}

FIBRO = "fibroblast"
GATE_BLOCK = "lineage gate"  # coverage block name for uns["cafclassify"]["gate"]["coverage"]


# ============================================================================ utils
def _root(adata) -> dict:
    return as_mapping(adata.uns.get(K.UNS, {}))


def _section(adata, step: str) -> dict:
    return as_mapping(_root(adata).get(step))


def _cat(series: pd.Series) -> pd.Series:
    return series.astype("object").where(series.notna(), "NA").astype(str)


def _ordered(labels: Iterable[str], first: Sequence[str]) -> list[str]:
    labels = list(dict.fromkeys(str(x) for x in labels))
    head = [x for x in first if x in labels]
    tail = [x for x in TAIL if x in labels and x not in head]
    mid = sorted(x for x in labels if x not in head and x not in tail)
    return head + mid + tail


def _lineage_order(labels: Iterable[str]) -> list[str]:
    return _ordered(labels, K.LINEAGES)


def _subtype_order(labels: Iterable[str]) -> list[str]:
    return _ordered(labels, SUBTYPE_ORDER)


def cell(text: Any, *, cls: str = "", data: Mapping[str, Any] | None = None,
         title: str = "", swatch: str | None = None) -> dict:
    """One table cell for the templates."""
    return {"text": text if isinstance(text, str) else fmt(text), "cls": cls,
            "data": {k: str(v) for k, v in (data or {}).items()}, "title": title, "swatch": swatch}


def frame_table(df: pd.DataFrame, *, max_rows: int = 200, swatch_cols: Sequence[str] = (),
                cls_fn: Callable[[str, Any], str] | None = None) -> dict:
    """A DataFrame as a template table (strings formatted, long tables truncated)."""
    first = [c for c in df.columns if str(c) in ("sample", "set", "class", "cluster", "dataset")]
    df = df[first + [c for c in df.columns if c not in first]]
    columns = [str(c) for c in df.columns]
    rows = []
    for _, r in df.head(max_rows).iterrows():
        row = []
        for c, orig in zip(columns, df.columns, strict=False):
            v = r[orig]
            row.append(cell(fmt(v), cls=cls_fn(c, v) if cls_fn else "",
                            swatch=color_for(v) if c in swatch_cols else None))
        rows.append(row)
    note = f"first {max_rows} of {len(df):,} rows shown" if len(df) > max_rows else ""
    return {"columns": columns, "rows": rows, "note": note}


def kv_table(d: Mapping, *, skip: Iterable[str] = ()) -> dict:
    """A flat key/value table from a (possibly nested) mapping."""
    skip = set(skip)
    rows = []

    def walk(prefix: str, m: Mapping, depth: int) -> None:
        for k, v in m.items():
            if k in skip:
                continue
            key = f"{prefix}{k}"
            if isinstance(v, Mapping) and depth < 2 and v and not _is_small_mapping(v):
                walk(key + ".", v, depth + 1)
            else:
                rows.append([cell(key, cls="key"), cell(fmt(v))])

    walk("", to_py(dict(d)), 0)
    return {"columns": ["field", "value"], "rows": rows, "note": ""}


def _is_small_mapping(m: Mapping) -> bool:
    return len(m) <= 4 and all(not isinstance(v, Mapping | list) for v in m.values())


def _n(x: Any) -> int:
    return int(x) if x is not None else 0


def classification_skipped(adata) -> bool:
    """Whether the classify step recorded that it was skipped (``on_insufficient="skip"``)."""
    return str(as_mapping(_section(adata, K.UNS_CLASSIFY)).get("status", "")) == "skipped"


def refusal_kind(reason: str) -> str:
    """What a skipped classification's recorded reason is about, read from its words:
    ``"no_subtype"`` / ``"one_subtype"`` (no or one learnable subtype; its reason ends with
    gene-coverage advice, so it is read first), ``"coverage"``, ``"fibroblasts"`` (too few
    fibroblasts or seeds) or ``"other"``. One reading for the report's card and the
    summary's status."""
    r = reason.lower()
    if "seed" in r and "subtype(s)" in r:
        return "no_subtype" if "only 0 subtype(s)" in r else "one_subtype"
    if "score" in r or "coverage" in r or "gene" in r:
        return "coverage"
    if "fibroblast" in r or "seed" in r or "too few" in r:
        return "fibroblasts"
    return "other"


def learnt_from_cells_alone(section: Any) -> dict[str, Mapping]:
    """Subtypes the seed rule learnt from cells alone (``weak_labels["learnt_from_cells_alone"]``
    records with ``learnt`` true), found anywhere under ``section``."""
    recs = as_mapping(find(section, "learnt_from_cells_alone"))
    return {str(k): as_mapping(v) for k, v in recs.items() if as_mapping(v).get("learnt") in (True, 1)}


def _n_or0(x: Any) -> int:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return 0
    return int(v) if np.isfinite(v) else 0


# ===================================================================== load inputs
def _load(adata_or_path, *, what: str = "annotated data"):
    """Return ``(adata, path_or_None)``; paths are opened backed (X stays on disk)."""
    import anndata as ad

    if isinstance(adata_or_path, ad.AnnData):
        return adata_or_path, None
    if not isinstance(adata_or_path, str | os.PathLike):
        raise InputFileError(
            f"expected an AnnData or the path of an .h5ad file for the {what}, got "
            f"{type(adata_or_path).__name__}.",
            fix="pass the AnnData returned by cafclassify.classify() or the annotated .h5ad it was saved to.",
        )
    path = Path(adata_or_path).expanduser()
    if not path.is_file():
        raise InputFileError(
            "file not found.", path=path,
            fix="check the path; reports are made from the annotated .h5ad written by the pipeline.",
        )
    from ..io._lazy import open_lazy

    try:
        # every matrix (X and the layers) stays on disk; cells are read for the subsample
        return open_lazy(path), path
    except Exception as exc:
        raise InputFileError(
            f"cannot be read as an .h5ad file ({type(exc).__name__}: {exc}).", path=path,
            fix="pass the annotated .h5ad written by the cafclassify pipeline.",
        ) from None


def _subsample(adata, max_cells: int, random_state: int) -> np.ndarray:
    n = adata.n_obs
    if n <= max_cells:
        return np.arange(n)
    rng = np.random.default_rng(random_state)
    return np.sort(rng.choice(n, size=max_cells, replace=False))


def _materialise(adata, idx: np.ndarray):
    """In-memory AnnData of the rows ``idx`` (works for backed objects)."""
    view = adata[idx]
    if getattr(adata, "isbacked", False):
        return view.to_memory()
    return view.copy()


def _var_lookup(adata) -> dict[str, str]:
    """symbol -> var_name (var_names first, then the resolved-symbol column)."""
    lookup = {str(v): str(v) for v in adata.var_names}
    if K.VAR_SYMBOL in adata.var.columns:
        for name, sym in zip(adata.var_names, adata.var[K.VAR_SYMBOL].astype(str), strict=False):
            if sym and sym not in lookup:
                lookup[sym] = str(name)
    return lookup


# ===================================================================== summaries
def _lineage_series(adata) -> pd.Series | None:
    if K.OBS_LINEAGE in adata.obs.columns:
        return _cat(adata.obs[K.OBS_LINEAGE])
    return None


def _subtype_series(adata) -> pd.Series | None:
    if K.OBS_SUBTYPE in adata.obs.columns:
        return _cat(adata.obs[K.OBS_SUBTYPE])
    return None


def _fibro_mask(adata) -> np.ndarray | None:
    lin = _lineage_series(adata)
    if lin is not None:
        return (lin == FIBRO).to_numpy()
    sub = _subtype_series(adata)
    if sub is not None:
        return (~sub.isin([K.NOT_FIBROBLAST, "NA"])).to_numpy()
    return None


def _subtype_categories(adata) -> list[str]:
    s = adata.obs.get(K.OBS_SUBTYPE)
    if s is None:
        return []
    cats = list(s.cat.categories) if isinstance(s.dtype, pd.CategoricalDtype) else list(pd.unique(s.dropna()))
    return _subtype_order(str(c) for c in cats)


def key_numbers(adata) -> dict:
    """Counts shown on the page (all cells, never the plotting subsample)."""
    out: dict[str, Any] = {"n_cells": int(adata.n_obs), "n_genes": int(adata.n_vars),
                           "n_unassigned": None, "unassigned_fraction": None}
    fib = _fibro_mask(adata)
    out["n_fibroblasts"] = None if fib is None else int(fib.sum())
    sub = _subtype_series(adata)
    if sub is not None:
        counts = sub.value_counts()
        out["subtype_counts"] = {c: int(counts.get(c, 0)) for c in _subtype_categories(adata)}
        n_fib = out["n_fibroblasts"] or 0
        out["n_unassigned"] = int(counts.get(K.UNASSIGNED, 0))
        out["unassigned_fraction"] = (out["n_unassigned"] / n_fib) if n_fib else None
    else:
        out["subtype_counts"] = None
    return out


# ====================================================================== warnings
def _ltbp2_caveat(classify: Mapping) -> str:
    lt = as_mapping(get(classify, "ltbp2"))
    caveat = get(lt, "caveat", "note") if lt else None
    if caveat is None:
        caveat = find(classify, "ltbp2_caveat", "ltbp2_note")
    return str(caveat) if isinstance(caveat, str) and caveat else ""


def subtype_definitions(classify: Mapping) -> dict[str, dict]:
    """Subtype set -> the signature library's rating of its definition (``rating``, ``thin``,
    ``evidence``, ``display_name``; :mod:`cafclassify.tl._definitions`), ``{}`` if not recorded."""
    out = {}
    for name, rec in as_mapping(get(classify, "definitions")).items():
        rec = to_py(as_mapping(rec))
        if rec:
            out[str(name)] = {"rating": str(rec.get("rating", "")), "thin": bool(rec.get("thin", False)),
                              "evidence": str(rec.get("evidence", "")),
                              "display_name": str(rec.get("display_name", name))}
    return out


def _coverage_frames(adata) -> dict[str, pd.DataFrame]:
    """score key -> coverage table (set, n_genes, n_found, coverage, found, missing, status)."""
    score = _section(adata, K.UNS_SCORE)
    blocks: dict[str, Any] = {}
    if "coverage" in score or "params" in score:  # a single, un-keyed score block
        blocks[K.OBSM_SCORES] = score
    else:
        blocks = {str(k): as_mapping(v) for k, v in score.items()}
    gate = _section(adata, K.UNS_GATE)
    if as_frame(get(gate, "coverage"), index_name="set") is not None:
        blocks[GATE_BLOCK] = gate
    out = {}
    for key, block in blocks.items():
        df = as_frame(get(block, "coverage"), index_name="set")
        if df is None or df.empty:
            continue
        if "set" not in df.columns:
            name_col = next((c for c in ("name", "gene_set", "source") if c in df.columns), None)
            df = df.rename(columns={name_col: "set"}) if name_col else df.reset_index(names="set")
        for col in ("found", "missing"):
            if col in df.columns:
                df[col] = [as_list(v) for v in df[col]]
            else:
                df[col] = [[] for _ in range(len(df))]
        if "n_found" not in df.columns:
            df["n_found"] = [len(v) for v in df["found"]]
        if "n_genes" not in df.columns:
            df["n_genes"] = [len(f) + len(m) for f, m in zip(df["found"], df["missing"], strict=False)]
        if "coverage" not in df.columns:
            with np.errstate(invalid="ignore", divide="ignore"):
                df["coverage"] = df["n_found"].astype(float) / df["n_genes"].replace(0, np.nan)
        for col in ("coverage", "n_found", "n_genes"):
            df[col] = pd.to_numeric(df[col], errors="coerce")
        if "status" not in df.columns:
            df["status"] = np.where(df["coverage"] >= LOW_COVERAGE, "ok", "low coverage")
        out[key] = _sort_sets(df).reset_index(drop=True)
    return out


_GROUP_RANK = {"gate": 0, "lineage": 0, "negative": 1, "subtype": 2, "state": 3, "optional": 4, "user": 5}
_SET_ORDER = [n for names in LINEAGE_SETS.values() for n in names] + list(SUBTYPE_ORDER) + list(STATE_SETS)


def _sort_sets(df: pd.DataFrame) -> pd.DataFrame:
    group = df["group"].astype(str).map(_GROUP_RANK).fillna(9) if "group" in df.columns else 0
    name = df["set"].astype(str)
    pos = name.map({n: i for i, n in enumerate(_SET_ORDER)}).fillna(len(_SET_ORDER))
    return df.assign(_g=group, _p=pos, _n=name.str.lower()).sort_values(["_g", "_p", "_n"]).drop(
        columns=["_g", "_p", "_n"])


def _qc_removed(adata) -> tuple[int | None, int | None]:
    """(removed, total) cells from the QC table, else from obs."""
    qc = _section(adata, K.UNS_QC)
    table = as_frame(find(qc, "table", "per_sample", "summary"), index_name="sample")
    if table is not None and not table.empty:
        cols = {c.lower(): c for c in table.columns}
        total_c = next((cols[c] for c in ("n_cells", "n_total", "n_before", "total", "n_input") if c in cols), None)
        rem_c = next((cols[c] for c in ("n_removed", "removed", "n_fail", "n_failed") if c in cols), None)
        kept_c = next((cols[c] for c in ("n_kept", "kept", "n_pass", "n_passed", "n_after") if c in cols), None)
        try:
            if rem_c is not None and total_c is not None:
                return int(pd.to_numeric(table[rem_c]).sum()), int(pd.to_numeric(table[total_c]).sum())
            if rem_c is not None and kept_c is not None:
                rem = int(pd.to_numeric(table[rem_c]).sum())
                return rem, rem + int(pd.to_numeric(table[kept_c]).sum())
            if kept_c is not None and total_c is not None:
                tot = int(pd.to_numeric(table[total_c]).sum())
                return tot - int(pd.to_numeric(table[kept_c]).sum()), tot
        except (ValueError, TypeError):
            pass
    if K.OBS_QC_PASS in adata.obs.columns:
        passed = adata.obs[K.OBS_QC_PASS].astype(bool)
        return int((~passed).sum()), int(len(passed))
    return None, None


def _env():
    """The Jinja2 environment of the report templates (autoescaped, with the ``fmt`` filter)."""
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("cafclassify.report", "templates"),
        autoescape=jinja2.select_autoescape(["html", "j2", "html.j2"], default=True),
        trim_blocks=True, lstrip_blocks=True, undefined=jinja2.ChainableUndefined,
    )
    env.filters["fmt"] = fmt
    return env


def _version() -> str:
    """The package version stamped on every page."""
    from .. import __version__

    return __version__
