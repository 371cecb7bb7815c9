"""Build the per-dataset QC report and the cross-dataset summary page.

Both pages are single self-contained HTML files: figures are embedded as base64
PNG, CSS is inline, there is no JavaScript and nothing is fetched from a network.
Every section reads the AnnData defensively: a step that did not run, or wrote a
shape this code does not know, renders as "not run" (or "could not be drawn")
with a note instead of failing the report.
"""

from __future__ import annotations

import datetime as _dt
import logging
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .. import _keys as K
from .._atomic import atomic_path, write_text_atomic
from .._errors import ConfigError, InputFileError
from . import _figures as F
from ._colors import color_for
from ._uns import as_frame, as_list, as_mapping, find, find_parent, find_table, fmt, get, to_py

logger = logging.getLogger(__name__)

__all__ = ["write_report", "write_summary"]

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


def _sample_key(adata) -> str | None:
    root = _root(adata)
    candidates = [
        find(get(root, K.UNS_QC), "sample_key"),
        find(get(root, K.UNS_READ), "sample_column", "sample_key"),
        find(get(root, K.UNS_CLASSIFY), "batch_key", "sample_key"),
        find(get(root, K.UNS_PROVENANCE), "sample_key", "sample_column"),
        find(get(root, K.UNS_CLASSIFY), "sample_key"),
        "sample", "sample_id", "batch", "orig.ident",
    ]
    for c in candidates:
        if isinstance(c, str) and c in adata.obs.columns:
            return c
    return None


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


def collect_warnings(adata) -> list[dict]:
    """Plain-words warnings about this dataset (needs obs and uns only)."""
    warns: list[dict] = []

    def add(text: str, level: str = "warn", key: str = "") -> None:
        warns.append({"text": text, "level": level, "key": key})

    root = _root(adata)
    nums = key_numbers(adata)
    n_fib = nums["n_fibroblasts"]
    if n_fib is not None:
        if n_fib == 0:
            add("No fibroblasts were found: there is nothing to classify into CAF subtypes. "
                "Check the lineage gate section below and whether this tissue should contain stroma.",
                "error", "few_fibroblasts")
        elif n_fib < MIN_FIBROBLASTS:
            add(f"Only {n_fib:,} fibroblasts were found (of {nums['n_cells']:,} cells). Subtype "
                "proportions from so few cells are uncertain.", key="few_fibroblasts")
    removed, total = _qc_removed(adata)
    if removed is not None and total:
        frac = removed / total
        if frac > QC_REMOVED:
            add(f"QC removed {removed:,} of {total:,} cells ({frac:.0%}). Check the QC thresholds "
                "and the reasons per sample below.", key="qc_removed")
    warned_sets: set[str] = set()
    for key, df in _coverage_frames(adata).items():
        low = df[(df["coverage"] < LOW_COVERAGE) | (~df["status"].astype(str).str.lower().isin(["ok", "used", "pass"]))]
        for _, r in low.iterrows():
            if str(r["set"]) in warned_sets:
                continue
            warned_sets.add(str(r["set"]))
            missing = ", ".join(r["missing"][:8]) + (" …" if len(r["missing"]) > 8 else "")
            add(f"Gene set {r['set']} ({key}): only {_n_or0(r['n_found'])} of {_n_or0(r['n_genes'])} genes "
                f"found ({float(r['coverage']):.0%}); status: {r['status']}. Missing: {missing or '—'}.",
                key="low_coverage")
    counts = nums["subtype_counts"]
    classify = as_mapping(root.get(K.UNS_CLASSIFY))
    absent = set(as_list(find(classify, "absent_classes", "absent")))
    if counts is not None and n_fib:
        zero = [c for c, v in counts.items() if v == 0 and c not in TAIL]
        absent |= set(zero)
    if absent:
        add("No cells were assigned to: " + ", ".join(_subtype_order(absent)) + ". Either these "
            "subtypes are absent from this sample or their markers were not measured (see coverage).",
            "info", "subtype_absent")
    frac_un = nums.get("unassigned_fraction")
    if frac_un is not None and frac_un > MANY_UNASSIGNED:
        add(f"{frac_un:.0%} of fibroblasts are 'unassigned' (no subtype reached the confidence "
            "threshold).", key="many_unassigned")
    ltbp2_thin = []
    fib = _fibro_mask(adata)
    if K.OBS_LTBP2 in adata.obs.columns and fib is not None and n_fib:
        n_pos = int(adata.obs[K.OBS_LTBP2].astype(bool).to_numpy()[fib].sum())
        if n_pos < MIN_LTBP2_CELLS:
            ltbp2_thin.append(f"only {n_pos} LTBP2+ fibroblasts")
    for df in _coverage_frames(adata).values():
        row = df[df["set"].astype(str).str.upper().str.startswith("LTBP2")]
        if len(row) and float(row["coverage"].iloc[0]) < LOW_COVERAGE:
            ltbp2_thin.append(f"LTBP2 gene set coverage {float(row['coverage'].iloc[0]):.0%}")
    if ltbp2_thin:
        caveat = _ltbp2_caveat(classify)
        add("LTBP2+ CAF evidence is thin (" + "; ".join(ltbp2_thin) + ")."
            + (f" {caveat}" if isinstance(caveat, str) and caveat else ""), key="ltbp2_thin")
    f1 = find(classify, "cv_macro_f1", "macro_f1")
    try:
        f1 = float(to_py(f1)) if f1 is not None else None
    except (TypeError, ValueError):
        f1 = None
    if f1 is not None and np.isfinite(f1) and f1 < LOW_MACRO_F1:
        add(f"The classifier reproduces its own seed labels poorly in cross-validation "
            f"(macro-F1 {f1:.2f}): subtype calls, especially of small classes, are uncertain. "
            "See the confusion matrix below.", key="low_f1")
    read = as_mapping(root.get(K.UNS_READ))
    for rec in (read.get("species_warning"), find(classify, "species_warning")):
        rec = as_mapping(rec)
        if rec.get("message"):
            add(f"Species: {rec['message']}", key="species")
    layer = as_mapping(as_mapping(read.get("details")).get("counts_layer") or read.get("counts_layer"))
    if layer.get("reason"):
        add(f"layers['counts'] of the input does not hold counts ({layer['reason']}); it was not used "
            "as counts.", key="counts_layer")
    for w in as_list(find(as_mapping(root.get(K.UNS_GATE)), "warnings")):
        add(f"Gate: {w}", key="gate")
    for w in as_list(find(classify, "warnings")):
        add(f"Classifier: {w}", key="classify")
    missing_steps = [s for s in (K.UNS_READ, K.UNS_QC, K.UNS_GATE, K.UNS_SCORE, K.UNS_CLASSIFY)
                     if s not in root]
    if missing_steps:
        add("These pipeline steps left no record in this file: " + ", ".join(missing_steps)
            + ". Their sections are marked 'not run'.", "info", "not_run")
    return warns


# ====================================================================== sections
class _Ctx:
    """Shared state while building one report."""

    def __init__(self, adata, *, max_cells_plot: int, random_state: int) -> None:
        self.adata = adata
        self.random_state = random_state
        self.idx = _subsample(adata, max_cells_plot, random_state)
        self.n_plot = len(self.idx)
        self._sub = None
        self._coords: np.ndarray | None = None
        self.basis = "UMAP"
        self.embedding_note = ""
        self.errors: list[str] = []

    @property
    def sub(self):
        if self._sub is None:
            self._sub = _materialise(self.adata, self.idx)
        return self._sub

    def _stored(self) -> bool:
        return any(k in self.adata.obsm and np.asarray(self.adata.obsm[k]).shape[1] >= 2
                   for k in ("X_umap", "X_tsne"))

    def coords(self) -> np.ndarray | None:
        if self._coords is not None:
            return self._coords
        for key, basis in (("X_umap", "UMAP"), ("X_tsne", "t-SNE")):
            if key in self.adata.obsm and np.asarray(self.adata.obsm[key]).shape[1] >= 2:
                self._coords = np.asarray(self.adata.obsm[key])[self.idx, :2].astype(float)
                self.basis = basis
                self.embedding_note = f"stored {basis} (obsm['{key}'])"
                return self._coords
        if self.n_plot < 10:
            self.embedding_note = "too few cells for an embedding"
            return None
        try:
            self._coords = F.compute_umap(self.sub, random_state=self.random_state)
        except Exception as exc:
            logger.warning("could not compute a UMAP for the report: %s", exc)
            self.embedding_note = f"no embedding: UMAP failed ({type(exc).__name__}: {exc})"
            return None
        self.embedding_note = (f"UMAP computed for this report on {self.n_plot:,} cells "
                               f"(random_state={self.random_state})")
        return self._coords

    def fibro_coords(self, mask: np.ndarray) -> tuple[np.ndarray | None, str]:
        """Embedding of the plotted fibroblasts only (subtypes are invisible on a whole-tumour map).

        A stored embedding is reused (drawing only fibroblasts zooms onto them);
        otherwise a UMAP of the plotted fibroblasts is computed.
        """
        coords = self.coords() if self._stored() else None
        if coords is not None:
            return coords[mask], self.embedding_note + ", fibroblasts only"
        if mask.sum() >= MIN_CELLS_FIBRO_UMAP:
            try:
                coords = F.compute_umap(self.sub[mask], random_state=self.random_state)
                return coords, (f"UMAP of the {int(mask.sum()):,} plotted fibroblasts, computed for "
                                f"this report (random_state={self.random_state})")
            except Exception as exc:
                logger.warning("could not compute a fibroblast UMAP for the report: %s", exc)
        coords = self.coords()
        if coords is None:
            return None, self.embedding_note
        return coords[mask], self.embedding_note

    def figure(self, name: str, fn: Callable[[], str | None]) -> dict | None:
        try:
            uri = fn()
        except Exception as exc:
            logger.warning("report figure %r failed: %s", name, exc, exc_info=True)
            self.errors.append(f"{name}: {type(exc).__name__}: {exc}")
            return {"uri": None, "error": f"could not be drawn ({type(exc).__name__}: {exc})",
                    "name": name}
        if uri is None:
            return None
        size = F.png_display_size(uri) or (None, None)
        return {"uri": uri, "error": None, "name": name, "width": size[0], "height": size[1]}


def _not_run(step: str, note: str) -> dict:
    return {"ran": False, "note": note or f"The {step} step left no record in this file."}


def _input_section(ctx: _Ctx, source: Path | None) -> dict:
    adata = ctx.adata
    root = _root(adata)
    read = as_mapping(root.get(K.UNS_READ))
    prov = as_mapping(root.get(K.UNS_PROVENANCE))
    facts = []
    path = get(read, "path", "file", "input")
    facts.append(("input file", fmt(path) if path else (str(source) if source else "in-memory AnnData")))
    if source is not None:
        facts.append(("annotated file", str(source)))
    sha = get(read, "sha256", "checksum") or find(prov, "input_sha256", "sha256")
    facts.append(("input sha256", fmt(sha) if sha else "—"))
    facts.append(("cells x genes (this file)", f"{adata.n_obs:,} x {adata.n_vars:,}"))
    if get(read, "n_cells") is not None:
        facts.append(("cells x genes (as read)", f"{fmt(get(read, 'n_cells'))} x {fmt(get(read, 'n_genes'))}"))
    for label, names in (("format", ("format",)), ("species", ("species",)),
                         ("gene ID type", ("id_type",)), ("value type detected", ("value_type",))):
        facts.append((label, fmt(get(read, *names))))
    n_rep = find(read, "n_symbols_repaired", "n_repaired")
    repaired = as_mapping(find(read, "symbols_repaired", "repaired", "repaired_symbols"))
    if set(repaired) >= {"old", "new"}:
        repaired = dict(zip(as_list(repaired["old"]), as_list(repaired["new"]), strict=False))
    rep_text = fmt(n_rep) if n_rep is not None else "—"
    if repaired:
        items = list(repaired.items())
        rep_text += " (" + ", ".join(f"{k}→{v}" for k, v in items[:15]) + (", …" if len(items) > 15 else "") + ")"
    facts.append(("outdated gene symbols repaired", rep_text))
    facts.append(("genes without a current symbol", fmt(find(read, "n_unmapped"))))
    rows = [[cell(k, cls="key"), cell(v)] for k, v in facts]
    extra = {k: v for k, v in read.items() if k not in {
        "path", "file", "input", "sha256", "checksum", "n_cells", "n_genes", "format", "species",
        "id_type", "value_type", "n_repaired", "repaired", "repaired_symbols", "n_unmapped",
        "n_symbols_repaired", "symbols_repaired"}}
    history = as_mapping(prov.get("history")) if prov else {}
    prov_rows = kv_table({k: v for k, v in prov.items() if k != "history"}) if prov else None
    return {
        "ran": bool(read) or bool(prov),
        "facts": {"columns": ["", ""], "rows": rows, "note": ""},
        "read_extra": kv_table(extra) if extra else None,
        "provenance": prov_rows,
        "history": kv_table(history) if history else None,
        "note": "" if read else "No record of the read step (uns['cafclassify']['read']).",
        "prov_note": "" if prov else "No provenance record (uns['cafclassify']['provenance']).",
    }


def _thresholds(qc: Mapping) -> dict[str, dict[str, float]]:
    raw = find(qc, "thresholds")
    out: dict[str, dict[str, float]] = {}
    df = as_frame(raw, index_name="sample")
    if df is not None and not df.empty:
        scol = next((c for c in ("sample", "batch", "index") if c in df.columns), None)
        for i, r in df.iterrows():
            sample = str(r[scol]) if scol else str(i)
            vals = {}
            for c, v in r.items():
                if c == scol:
                    continue
                try:
                    fv = float(v)
                except (TypeError, ValueError):
                    continue
                if np.isfinite(fv):
                    vals[str(c)] = fv
            out[sample] = vals
        return out
    m = as_mapping(raw)
    if m and all(not isinstance(v, Mapping) for v in m.values()):
        m = {"all": m}
    for s, vals in m.items():
        vals = as_mapping(vals)
        clean = {}
        for k, v in vals.items():
            try:
                fv = float(to_py(v))
            except (TypeError, ValueError):
                continue
            if np.isfinite(fv):
                clean[str(k)] = fv
        out[str(s)] = clean
    return out


def _qc_section(ctx: _Ctx) -> dict:
    adata = ctx.adata
    qc = _section(adata, K.UNS_QC)
    has_cols = any(c in adata.obs.columns for c in ("n_genes_by_counts", "total_counts", "pct_counts_mt"))
    if not qc and not has_cols and K.OBS_QC_PASS not in adata.obs.columns:
        return _not_run("QC", "QC was not run (no uns['cafclassify']['qc'] and no QC columns in obs).")
    thr = _thresholds(qc)
    obs = adata.obs.iloc[ctx.idx]
    fig = ctx.figure("qc distributions", lambda: F.fig_qc_distributions(
        obs, thresholds=thr, pass_key=K.OBS_QC_PASS if K.OBS_QC_PASS in obs.columns else None))
    table = as_frame(find(qc, "table", "per_sample", "summary"), index_name="sample")
    source = "uns['cafclassify']['qc']"
    if (table is None or table.empty) and K.OBS_QC_PASS in adata.obs.columns:
        skey = _sample_key(adata)
        reason = (_cat(adata.obs[K.OBS_QC_REASON]) if K.OBS_QC_REASON in adata.obs.columns
                  else adata.obs[K.OBS_QC_PASS].map({True: "pass", False: "fail"}).astype(str))
        df = pd.DataFrame({"sample": _cat(adata.obs[skey]) if skey else "all", "reason": reason,
                           "kept": adata.obs[K.OBS_QC_PASS].astype(bool)})
        table = (df.groupby(["sample", "reason"], observed=True).size().rename("n_cells").reset_index())
        source = "obs['qc_pass'] / obs['qc_reason'] of this file"
    thr_table = None
    if thr:
        tdf = pd.DataFrame.from_dict(thr, orient="index")
        tdf.index.name = "sample"
        thr_table = frame_table(tdf.reset_index())
    removed, total = _qc_removed(adata)
    params = as_mapping(find(qc, "params"))
    return {
        "ran": True,
        "figure": fig,
        "table": frame_table(table) if table is not None and not table.empty else None,
        "table_source": source,
        "thresholds": thr_table,
        "params": kv_table(params) if params else None,
        "removed": removed, "total": total,
        "failed_in_file": bool(K.OBS_QC_PASS in adata.obs.columns
                               and not adata.obs[K.OBS_QC_PASS].astype(bool).all()),
        "note": "" if qc else "No QC record in uns; distributions from obs only.",
        "n_plot": len(obs),
    }


def _marker_genes(ctx: _Ctx, set_names: Mapping[str, Sequence[str]], *, groupby: pd.Series,
                  n_top: int, mask: np.ndarray | None = None) -> dict[str, list[str]]:
    """Top found genes per set, ranked by specificity for their own label.

    ``set_names`` maps a label (lineage/subtype) to candidate gene-set names. Genes
    come from the coverage record (genes found in the data), else from the
    built-in signature library.
    """
    cov = _coverage_frames(ctx.adata)
    found: dict[str, list[str]] = {}
    for frame in cov.values():
        byset = {str(s): f for s, f in zip(frame["set"], frame["found"], strict=False)}
        for label, names in set_names.items():
            if label in found:
                continue
            for nm in names:
                if nm in byset and byset[nm]:
                    found[label] = list(byset[nm])
                    break
    if len(found) < len(set_names):
        try:  # fall back to the built-in library when it exists
            from ..genesets import load_signatures

            lib = load_signatures("caf_v1")
            for label, names in set_names.items():
                if label not in found:
                    for nm in names:
                        if nm in lib.sets:
                            found[label] = list(lib.sets[nm].genes)
                            break
        except Exception as exc:  # library not available: dot plot shows what we have
            logger.debug("built-in signatures not available for the report: %s", exc)
    lookup = _var_lookup(ctx.adata)
    sub = ctx.sub
    labels = groupby.to_numpy()
    sel = np.ones(len(labels), bool) if mask is None else mask
    out: dict[str, list[str]] = {}
    used: set[str] = set()
    for label, genes in found.items():
        names = [lookup[g] for g in genes if g in lookup]
        names = [n for n in dict.fromkeys(names) if n not in used]
        if not names:
            continue
        cols = sub[:, names].X
        cols = cols.toarray() if hasattr(cols, "toarray") else np.asarray(cols)
        inside = sel & (labels == label)
        outside = sel & (labels != label)
        if inside.any() and outside.any():
            spec = cols[inside].mean(axis=0) - cols[outside].mean(axis=0)
        elif inside.any():
            spec = cols[inside].mean(axis=0)
        else:
            spec = cols[sel].mean(axis=0) if sel.any() else np.zeros(len(names))
        order = np.argsort(-np.asarray(spec).ravel(), kind="stable")[:n_top]
        out[label] = [names[i] for i in order]
        used.update(out[label])
    return out


def _gate_section(ctx: _Ctx, nums: dict) -> dict:
    adata = ctx.adata
    gate = _section(adata, K.UNS_GATE)
    lin = _lineage_series(adata)
    if lin is None:
        return _not_run("gate", "The lineage gate was not run (no obs['caf_lineage']).")
    counts = lin.value_counts()
    order = _lineage_order(counts.index)
    n = adata.n_obs
    rows = [[cell(lab, swatch=color_for(lab)),
             cell(f"{int(counts[lab]):,}", cls="num", data={"lineage-count": lab, "value": int(counts[lab])}),
             cell(f"{counts[lab] / n:.1%}", cls="num")] for lab in order]
    count_table = {"columns": ["lineage", "cells", "fraction"], "rows": rows, "note": ""}
    coords = ctx.coords()
    sub_lin = lin.iloc[ctx.idx].reset_index(drop=True)
    emb = None
    if coords is not None:
        emb = ctx.figure("lineage embedding", lambda: F.fig_embedding_categorical(
            coords, sub_lin, title="lineage (gate)", order=order, basis=ctx.basis))
    conf = None
    if coords is not None and K.OBS_LINEAGE_CONF in adata.obs.columns:
        vals = pd.to_numeric(adata.obs[K.OBS_LINEAGE_CONF], errors="coerce").to_numpy()[ctx.idx]
        conf = ctx.figure("lineage confidence", lambda: F.fig_embedding_continuous(
            coords, vals, title="lineage confidence", basis=ctx.basis))

    def dot():
        genes = _marker_genes(ctx, {lab: LINEAGE_SETS.get(lab, (lab,)) for lab in order},
                              groupby=sub_lin, n_top=4)
        genes = {lab: genes[lab] for lab in order if lab in genes}
        if not genes:
            return None
        s = ctx.sub
        s.obs["_lineage"] = pd.Categorical(sub_lin.to_numpy(), categories=order)
        return F.fig_dotplot(s, genes, groupby="_lineage", title="lineage markers",
                             categories_order=order)

    dotplot = ctx.figure("lineage dot plot", dot)
    clusters = as_frame(find(gate, "clusters", "per_cluster", "cluster_table"), index_name="cluster")
    missing = as_mapping(find(gate, "missing_markers", "missing"))
    missing_rows = [[cell(k, cls="key"), cell(", ".join(as_list(v)), cls="missing")]
                    for k, v in missing.items() if as_list(v)]
    stored_counts = as_mapping(find(gate, "counts"))
    params = as_mapping(find(gate, "params"))
    return {
        "ran": True,
        "counts": count_table,
        "embedding": emb, "confidence": conf, "dotplot": dotplot,
        "clusters": frame_table(clusters, swatch_cols=("lineage", "caf_lineage", "label")) if clusters is not None and not clusters.empty else None,
        "missing": {"columns": ["lineage set", "markers not in the data"], "rows": missing_rows, "note": ""} if missing_rows else None,
        "stored_counts": kv_table(stored_counts) if stored_counts else None,
        "params": kv_table(params) if params else None,
        "warnings": as_list(find(gate, "warnings")),
        "note": "" if gate else "No gate record in uns; counts from obs only.",
    }


def _coverage_section(ctx: _Ctx) -> dict:
    frames = _coverage_frames(ctx.adata)
    if not frames:
        return _not_run("scoring", "No signature coverage record (uns['cafclassify']['score'][...]['coverage']).")
    blocks = []
    score = _section(ctx.adata, K.UNS_SCORE)
    for key, df in frames.items():
        rows = []
        for _, r in df.iterrows():
            cov = float(r["coverage"]) if pd.notna(r["coverage"]) else float("nan")
            status = str(r["status"])
            low = not (cov >= LOW_COVERAGE) or status.lower() not in ("ok", "used", "pass")
            missing = list(r["missing"])
            rows.append({
                "set": str(r["set"]), "group": str(r.get("group", "")) if "group" in df.columns else "",
                "n_genes": _n_or0(r["n_genes"]), "n_found": _n_or0(r["n_found"]),
                "coverage": "—" if np.isnan(cov) else f"{cov:.0%}", "status": status, "low": low,
                "found": list(r["found"]), "missing": missing, "swatch": color_for(r["set"]),
            })
        block = (as_mapping(score.get(key)) if key in score else
                 {} if key == GATE_BLOCK else score)
        params = as_mapping(get(block, "params"))
        blocks.append({"key": key, "rows": rows, "has_group": "group" in df.columns,
                       "params": kv_table(params) if params else None})
    return {"ran": True, "blocks": blocks}


def _score_frame(adata, key: str) -> pd.DataFrame | None:
    if key not in adata.obsm:
        return None
    m = adata.obsm[key]
    if isinstance(m, pd.DataFrame):
        return m
    return None


def _scores_section(ctx: _Ctx) -> dict:
    adata = ctx.adata
    scores = _score_frame(adata, K.OBSM_SCORES)
    lin_scores = _score_frame(adata, K.OBSM_LINEAGE_SCORES)
    if scores is None and lin_scores is None:
        return _not_run("scoring", "No per-cell scores (obsm['caf_scores'] / obsm['caf_lineage_scores']).")
    out: dict[str, Any] = {"ran": True, "figures": []}
    lin = _lineage_series(adata)
    sub = _subtype_series(adata)
    fib = _fibro_mask(adata)
    idx = ctx.idx
    # gate check: lineage scores by assigned lineage, on all plotted cells
    gate_src = lin_scores if lin_scores is not None else scores
    if gate_src is not None and lin is not None:
        cols = [c for c in gate_src.columns if any(c in names for names in LINEAGE_SETS.values())
                or c in K.LINEAGES]
        order = _lineage_order(lin.unique())
        if cols:
            src = gate_src.iloc[idx]
            out["figures"].append(ctx.figure("lineage scores by lineage", lambda: F.fig_score_distributions(
                src, lin.iloc[idx], columns=cols, order=order,
                title="lineage scores per assigned lineage (the fibroblast score should be "
                      "highest in fibroblasts)")))
    if scores is not None and sub is not None and fib is not None and fib.any():
        sel = idx[fib[idx]]
        cols_sub = [c for c in scores.columns if c in SUBTYPE_ORDER or c.startswith("LTBP2")
                    or c in {a for v in SUBTYPE_SET_ALIASES.values() for a in v}]
        order = _subtype_order(sub.iloc[sel].unique())
        if cols_sub and len(sel):
            out["figures"].append(ctx.figure("subtype scores by subtype", lambda: F.fig_score_distributions(
                scores.iloc[sel], sub.iloc[sel], columns=cols_sub, order=order,
                title="subtype scores per assigned subtype (fibroblasts)")))
        cols_state = [c for c in scores.columns if c in STATE_SETS]
        if cols_state and len(sel):
            out["figures"].append(ctx.figure("state scores by subtype", lambda: F.fig_score_distributions(
                scores.iloc[sel], sub.iloc[sel], columns=cols_state, order=order,
                title="state scores per assigned subtype (fibroblasts)")))
    out["figures"] = [f for f in out["figures"] if f]
    out["note"] = (f"Distributions drawn from {ctx.n_plot:,} of {adata.n_obs:,} cells."
                   if ctx.n_plot < adata.n_obs else "")
    return out


def _per_sample_table(adata, mask: np.ndarray, sample_key: str | None,
                      categories: Sequence[str]) -> pd.DataFrame:
    sub = _subtype_series(adata)[mask]
    samples = _cat(adata.obs[sample_key])[mask] if sample_key else pd.Series("all", index=sub.index)
    df = pd.DataFrame({"sample": samples.to_numpy(), "subtype": sub.to_numpy()})
    counts = df.groupby(["sample", "subtype"]).size()
    rows = []
    for s in sorted(df["sample"].unique()):
        total = int((df["sample"] == s).sum())
        for c in categories:
            n = int(counts.get((s, c), 0))
            rows.append({"sample": s, "subtype": c, "n_cells": n, "fraction": n / total if total else np.nan})
    return pd.DataFrame(rows, columns=["sample", "subtype", "n_cells", "fraction"])


def _subtypes_section(ctx: _Ctx, nums: dict) -> dict:
    adata = ctx.adata
    sub = _subtype_series(adata)
    if sub is None:
        return _not_run("classify", "Subtypes were not assigned (no obs['caf_subtype']).")
    fib = _fibro_mask(adata)
    n_fib = int(fib.sum())
    cats = _subtype_categories(adata)
    counts = nums["subtype_counts"] or {}
    rows = []
    for c in cats:
        n = counts.get(c, 0)
        frac = (f"{n / n_fib:.1%}" if n_fib and c != K.NOT_FIBROBLAST else "")
        rows.append([cell(c, swatch=color_for(c)),
                     cell(f"{n:,}", cls="num", data={"subtype-count": c, "value": n}),
                     cell(frac, cls="num")])
    table = {"columns": ["subtype", "cells", "fraction of fibroblasts"], "rows": rows, "note": ""}
    out: dict[str, Any] = {"ran": True, "counts": table, "n_fibroblasts": n_fib}
    sub_plot = sub.iloc[ctx.idx].reset_index(drop=True)
    order = _subtype_order(cats)
    fib_plot = fib[ctx.idx]
    coords, note = ctx.fibro_coords(fib_plot) if fib_plot.any() else (None, "")
    out["embedding_note"] = note
    if coords is not None:
        labels_f = sub_plot[fib_plot].reset_index(drop=True)
        out["embedding"] = ctx.figure("subtype embedding", lambda: F.fig_embedding_categorical(
            coords, labels_f, title="CAF subtype (fibroblasts)", order=order,
            background=(K.NOT_FIBROBLAST, "NA"), basis="UMAP"))
        if K.OBS_SUBTYPE_CONF in adata.obs.columns:
            vals = pd.to_numeric(adata.obs[K.OBS_SUBTYPE_CONF], errors="coerce").to_numpy()[ctx.idx][fib_plot]
            out["confidence"] = ctx.figure("subtype confidence", lambda: F.fig_embedding_continuous(
                coords, vals, title="subtype confidence (max calibrated probability)", basis="UMAP"))
    # proportions per sample (on all cells)
    skey = _sample_key(adata)
    prop_cats = [c for c in cats if c != K.NOT_FIBROBLAST]
    if n_fib:
        tidy = _per_sample_table(adata, fib, skey, prop_cats)
        out["sample_key"] = skey
        if skey and tidy["sample"].nunique() > 1:
            wide = tidy.pivot(index="sample", columns="subtype", values="n_cells")[prop_cats]
            wide.insert(0, "fibroblasts", wide.sum(axis=1))
            out["per_sample"] = frame_table(wide.reset_index())
            out["proportions"] = ctx.figure("subtype proportions", lambda: F.fig_proportions(
                tidy, group_col="sample", order=order, title=f"subtype proportions per {skey}"))
    # dot plot of subtype markers among fibroblasts
    if fib_plot.sum() >= 2:
        def dot():
            labels = [c for c in order if c not in TAIL]
            genes = _marker_genes(ctx, {c: SUBTYPE_SET_ALIASES.get(c, (c,)) for c in labels},
                                  groupby=sub_plot, n_top=3, mask=fib_plot)
            genes = {c: genes[c] for c in labels if c in genes}
            if not genes:
                return None
            s = ctx.sub[fib_plot].copy()
            present = [c for c in order if c in set(sub_plot[fib_plot])]
            s.obs["_subtype"] = pd.Categorical(sub_plot[fib_plot].to_numpy(), categories=present)
            return F.fig_dotplot(s, genes, groupby="_subtype", title="subtype markers (fibroblasts)",
                                 categories_order=present)

        out["dotplot"] = ctx.figure("subtype dot plot", dot)
    # LTBP2 and state flags among fibroblasts, per subtype
    flags = [(K.OBS_LTBP2, "LTBP2+"), (K.OBS_SENESCENT, "senescent"), (K.OBS_CYCLING, "cycling")]
    flags = [(k, lab) for k, lab in flags if k in adata.obs.columns]
    if flags and n_fib:
        frows = []
        fsub = sub[fib]
        for c in [x for x in cats if x != K.NOT_FIBROBLAST] + ["all fibroblasts"]:
            m = (fsub == c).to_numpy() if c != "all fibroblasts" else np.ones(n_fib, bool)
            if not m.any():
                continue
            row = [cell(c, swatch=color_for(c) if c != "all fibroblasts" else None),
                   cell(f"{int(m.sum()):,}", cls="num")]
            for k, lab in flags:
                v = adata.obs[k].astype(bool).to_numpy()[fib][m]
                data = {"flag-count": lab, "value": int(v.sum())} if c == "all fibroblasts" else None
                row.append(cell(f"{int(v.sum()):,} ({v.mean():.1%})", cls="num", data=data))
            frows.append(row)
        out["flags"] = {"columns": ["subtype", "cells"] + [lab for _, lab in flags], "rows": frows,
                        "note": ""}
    out["ltbp2_caveat"] = _ltbp2_caveat(_section(adata, K.UNS_CLASSIFY))
    return out


def _classifier_section(ctx: _Ctx, nums: dict) -> dict:
    cl = _section(ctx.adata, K.UNS_CLASSIFY)
    if not cl:
        return _not_run("classify", "No classifier record (uns['cafclassify']['classify']).")
    out: dict[str, Any] = {"ran": True}
    seeds = find_table(cl, "seed_counts", "seeds_per_class", "seeds", "n_seeds_per_class")
    seeds_m = as_mapping(seeds)
    if not seeds_m:
        df = as_frame(seeds)
        if df is not None and df.shape[1] >= 2:
            seeds_m = dict(zip(df.iloc[:, 0].astype(str), df.iloc[:, 1], strict=False))
    if seeds_m:
        order = _subtype_order(seeds_m)
        rows = [[cell(k, swatch=color_for(k)),
                 cell(fmt(seeds_m[k]), cls="num", data={"seed-count": k, "value": fmt(seeds_m[k])})]
                for k in order]
        out["seeds"] = {"columns": ["class", "seed cells"], "rows": rows, "note": ""}
    f1 = find(cl, "cv_macro_f1", "macro_f1", "cv_f1")
    out["macro_f1"] = _f3(f1)
    ece_b = find(cl, "ece_before", "ece_uncalibrated", "ece_raw")
    ece_a = find(cl, "ece_after", "ece_calibrated", "ece")
    out["ece_before"] = _f3(ece_b)
    out["ece_after"] = _f3(ece_a)
    per_class = as_frame(find_table(cl, "per_class", "per_class_metrics"), index_name="class")
    if per_class is not None and not per_class.empty:
        if "class" in per_class.columns:
            rank = {c: i for i, c in enumerate(_subtype_order(per_class["class"].astype(str)))}
            per_class = per_class.sort_values("class", key=lambda c: c.astype(str).map(rank))
        out["per_class"] = frame_table(per_class, swatch_cols=("class", "label"))
    cm, holder = find_parent(cl, "confusion_matrix", "confusion")
    labels = as_list(get(holder, "confusion_labels", "labels", "classes")) if holder else []
    if isinstance(cm, Mapping):
        labels = as_list(get(cm, "labels", "classes")) or labels
        cm = get(cm, "matrix", "values", "counts")
    if isinstance(cm, pd.DataFrame):
        labels = [str(c) for c in cm.columns]
        cm = cm.to_numpy()
    if cm is not None:
        m = np.asarray(to_py(cm), dtype=float)
        out["confusion"] = ctx.figure("confusion matrix", lambda: F.fig_confusion(
            m, labels, title="cross-validated confusion matrix (seed cells)"))
    curves = _reliability_curves(cl)
    if curves:
        out["reliability"] = ctx.figure("reliability diagram", lambda: F.fig_reliability(
            curves, title="reliability diagram (seed cells, out-of-fold)"))
    absent = as_list(find(cl, "absent_classes", "absent"))
    out["absent"] = ", ".join(_subtype_order(absent)) if absent else ""
    uf = find(cl, "unassigned_fraction")
    out["unassigned_stored"] = fmt(uf) if uf is not None else None
    out["unassigned"] = (f"{nums['unassigned_fraction']:.1%}" if nums.get("unassigned_fraction") is not None
                         else "—")
    params = as_mapping(get(cl, "params"))
    out["params"] = kv_table(params) if params else None
    skip = {"params", "absent_classes", "absent", "unassigned_fraction", "ltbp2_caveat", "warnings"}
    rest = {k: v for k, v in cl.items() if k not in skip}
    out["other"] = kv_table(rest) if rest else None
    return out


def _f3(x: Any) -> str | None:
    try:
        v = float(to_py(x))
    except (TypeError, ValueError):
        return None if x is None else fmt(x)
    return f"{v:.3f}" if np.isfinite(v) else "—"


def _one_curve(m: Mapping) -> dict | None:
    conf = get(m, "confidence", "mean_confidence", "mean_predicted")
    acc = get(m, "accuracy", "fraction_correct", "observed")
    if conf is None or acc is None:
        return None
    conf = np.asarray(to_py(conf), float).ravel()
    acc = np.asarray(to_py(acc), float).ravel()
    if conf.size != acc.size or conf.size == 0:
        return None
    d = {"confidence": conf, "accuracy": acc}
    cnt = get(m, "count", "counts", "n")
    cen = get(m, "bin_centre", "bin_centres", "bin_center", "bin_centers", "centres", "centers")
    if cnt is not None:
        d["counts"] = np.asarray(to_py(cnt), float).ravel()
    if cen is not None:
        d["centres"] = np.asarray(to_py(cen), float).ravel()
    return d


def _reliability_curves(cl: Mapping) -> dict[str, dict[str, np.ndarray]]:
    """Reliability curves found in the classify record, "before" first."""
    curves: dict[str, dict] = {}
    for name, label in (("reliability_before", "before calibration"),
                        ("reliability_after", "after calibration")):
        c = find(cl, name)
        c = _one_curve(as_mapping(c) or _frame_as_mapping(c))
        if c is not None:
            curves[label] = c
    if curves:
        return curves
    rel = find(cl, "reliability", "reliability_curve", "calibration_curve")
    rel_m = as_mapping(rel) or _frame_as_mapping(rel)
    direct = _one_curve(rel_m)
    if direct is not None:
        return {"calibrated": direct}
    named = {str(k): _one_curve(as_mapping(v)) for k, v in rel_m.items() if isinstance(v, Mapping)}
    named = {k: v for k, v in named.items() if v is not None}
    first = [k for k in named if "before" in k.lower() or "uncal" in k.lower() or "raw" in k.lower()]
    return {(f"{k} calibration" if k in ("before", "after") else k): named[k]
            for k in first + [k for k in named if k not in first]}


def _frame_as_mapping(x: Any) -> dict:
    df = as_frame(x)
    return {} if df is None else {c: df[c].to_numpy() for c in df.columns}


# ======================================================================= render
def _env():
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("cafclassify.report", "templates"),
        autoescape=jinja2.select_autoescape(["html", "j2", "html.j2"], default=True),
        trim_blocks=True, lstrip_blocks=True, undefined=jinja2.ChainableUndefined,
    )
    env.filters["fmt"] = fmt
    return env


def _version() -> str:
    try:
        from .. import __version__

        return __version__
    except Exception:  # pragma: no cover
        return "unknown"


def _check_int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ConfigError(f"{name} must be an integer >= {minimum}, got {value!r}.",
                          fix=f"pass {name}= as a whole number of at least {minimum}.")
    return int(value)


def write_report(
    adata,
    out_html: str | os.PathLike,
    *,
    title: str | None = None,
    max_cells_plot: int = 20000,
    random_state: int = 0,
) -> Path:
    """Write a self-contained HTML QC report for one annotated dataset.

    The page has a warnings box, the input and provenance record, QC distributions
    with thresholds, the lineage gate (embedding, marker dot plot, counts), the
    coverage of every signature set, score distributions, the subtype calls
    (embedding, confidence, proportions, markers, LTBP2+ and state flags) and the
    classifier's training summary (seeds, cross-validated macro-F1, confusion
    matrix, reliability diagram, ECE). Sections for steps that did not run are
    marked "not run". Figures are embedded PNGs; there is no JavaScript and
    nothing is loaded from the network.

    Parameters
    ----------
    adata
        Annotated :class:`~anndata.AnnData`, or the path of the annotated ``.h5ad``
        (opened backed: the expression matrix stays on disk). Not modified.
    out_html
        Where to write the report (atomically: a complete file or none).
    title
        Page title; defaults to the input file name.
    max_cells_plot
        At most this many cells (a seeded random subsample) are drawn in
        embeddings, dot plots and distributions. All counts and tables always use
        every cell.
    random_state
        Seed for the plotting subsample and for a UMAP computed when none is stored.

    Returns
    -------
    Path of the written report.
    """
    max_cells_plot = _check_int("max_cells_plot", max_cells_plot, 1)
    random_state = _check_int("random_state", random_state, 0)
    adata, source = _load(adata)
    read = _section(adata, K.UNS_READ)
    if title is None:
        src = source or get(read, "path")
        title = f"cafclassify report: {Path(str(src)).name}" if src else "cafclassify report"
    ctx = _Ctx(adata, max_cells_plot=max_cells_plot, random_state=random_state)
    nums = key_numbers(adata)
    sections: dict[str, Any] = {}
    builders: list[tuple[str, Callable[[], dict]]] = [
        ("input", lambda: _input_section(ctx, source)),
        ("qc", lambda: _qc_section(ctx)),
        ("gate", lambda: _gate_section(ctx, nums)),
        ("coverage", lambda: _coverage_section(ctx)),
        ("scores", lambda: _scores_section(ctx)),
        ("subtypes", lambda: _subtypes_section(ctx, nums)),
        ("classifier", lambda: _classifier_section(ctx, nums)),
    ]
    for name, build in builders:
        try:
            sections[name] = build()
        except Exception as exc:
            logger.warning("report section %r failed: %s", name, exc, exc_info=True)
            ctx.errors.append(f"{name}: {type(exc).__name__}: {exc}")
            sections[name] = {"ran": False, "error": True,
                              "note": f"This section could not be built ({type(exc).__name__}: {exc})."}
    try:
        warnings = collect_warnings(adata)
    except Exception as exc:
        logger.warning("report warnings failed: %s", exc, exc_info=True)
        ctx.errors.append(f"warnings: {type(exc).__name__}: {exc}")
        warnings = []
    html = _env().get_template("report.html.j2").render(
        title=title, nums=nums, warnings=warnings, s=sections, errors=ctx.errors,
        n_plot=ctx.n_plot, embedding_note=ctx.embedding_note,
        version=_version(), generated=_dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        lineage_colors=[(lab, color_for(lab)) for lab in K.LINEAGES],
        subtype_colors=[(lab, color_for(lab)) for lab in (*SUBTYPE_ORDER[:6], "LTBP2_CAF", *TAIL)],
    )
    out = write_text_atomic(html, out_html)
    logger.info("wrote report %s (%.1f kB)", out, len(html) / 1024)
    return Path(out)


# ====================================================================== summary
def _summary_inputs(inputs) -> list[tuple[str, Any]]:
    import anndata as ad

    if isinstance(inputs, str | os.PathLike | ad.AnnData):
        inputs = [inputs]
    if isinstance(inputs, Mapping):
        inputs = list(inputs.items())
    out = []
    for item in inputs:
        if isinstance(item, tuple) and len(item) == 2:
            name, obj = item
            out.append((str(name), obj))
        elif isinstance(item, str | os.PathLike):
            stem = Path(item).name
            for suf in (".h5ad", ".annotated", "_annotated"):
                stem = stem[: -len(suf)] if stem.endswith(suf) else stem
            out.append((stem, item))
        elif isinstance(item, ad.AnnData):
            raise InputFileError(
                "an AnnData passed to write_summary needs a dataset name.",
                fix="pass (name, adata) tuples or a {name: adata} dict.",
            )
        else:
            raise InputFileError(f"cannot use {type(item).__name__} as a summary input.",
                                 fix="pass annotated .h5ad paths, (name, adata) tuples or a {name: adata} dict.")
    names = [n for n, _ in out]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise InputFileError(f"dataset names are not unique: {', '.join(dup)}.",
                             fix="give each input a distinct name ((name, path) tuples).")
    if not out:
        raise InputFileError("no inputs given to write_summary.", fix="pass at least one annotated .h5ad.")
    return out


def proportions_table(adata, dataset: str) -> pd.DataFrame:
    """Tidy subtype proportions among fibroblasts: dataset, sample, subtype, n_cells, fraction."""
    cols = ["dataset", "sample", "subtype", "n_cells", "fraction"]
    if _subtype_series(adata) is None:
        return pd.DataFrame(columns=cols)
    fib = _fibro_mask(adata)
    cats = [c for c in _subtype_categories(adata) if c != K.NOT_FIBROBLAST]
    tidy = _per_sample_table(adata, fib, _sample_key(adata), cats)
    tidy.insert(0, "dataset", dataset)
    return tidy[cols]


def _href(link: Any, base: Path) -> str:
    """A link usable from a page in folder ``base``: URLs as given, paths made relative."""
    s = str(link)
    if "://" in s or s.startswith(("#", "data:", "mailto:")):
        return s
    p = Path(s).expanduser().resolve()  # a relative path is relative to the working directory
    return Path(os.path.relpath(p, base)).as_posix()


def write_summary(
    inputs,
    out_html: str | os.PathLike,
    *,
    table_out: str | os.PathLike | None = None,
    figure_out: str | os.PathLike | None = None,
    report_links: Mapping[str, str | os.PathLike] | None = None,
) -> Path:
    """Write the cross-dataset summary: proportions table, figure and an HTML page.

    Parameters
    ----------
    inputs
        Annotated ``.h5ad`` paths (the dataset name is the file stem), ``(name,
        AnnData-or-path)`` tuples, or a ``{name: AnnData-or-path}`` dict.
    out_html
        Where to write the summary page (atomically).
    table_out
        CSV of the tidy proportions table (columns ``dataset, sample, subtype,
        n_cells, fraction``; fraction of the fibroblasts of that dataset and
        sample). Default: ``<out_html stem>_proportions.csv`` beside the page.
    figure_out
        PNG of stacked subtype bars per dataset and sample. Default:
        ``<out_html stem>_proportions.png`` beside the page.
    report_links
        ``{dataset name: report path or URL}``. Paths (absolute, or relative to
        the working directory) are written relative to the summary page, so the
        output folder can be moved as a whole.

    Returns
    -------
    Path of the written summary page.
    """
    items = _summary_inputs(inputs)
    out_html = Path(out_html).expanduser()
    base = out_html.resolve().parent
    table_out = Path(table_out) if table_out is not None else out_html.with_name(f"{out_html.stem}_proportions.csv")
    figure_out = Path(figure_out) if figure_out is not None else out_html.with_name(f"{out_html.stem}_proportions.png")
    links = {str(k): _href(v, base) for k, v in (report_links or {}).items()}
    frames, datasets = [], []
    all_cats: list[str] = []
    for name, obj in items:
        adata, _ = _load(obj, what=f"dataset {name!r}")
        tidy = proportions_table(adata, name)
        frames.append(tidy)
        nums = key_numbers(adata)
        warns = collect_warnings(adata)
        all_cats.extend(c for c in tidy["subtype"].unique() if c not in all_cats)
        n_fib = nums["n_fibroblasts"]
        datasets.append({
            "name": name, "n_cells": nums["n_cells"], "n_fibroblasts": n_fib,
            "unassigned": (f"{nums['unassigned_fraction']:.1%}" if nums.get("unassigned_fraction") is not None else "—"),
            "classified": nums["subtype_counts"] is not None,
            "warnings": [w["text"] for w in warns if w["level"] in ("warn", "error")],
            "link": links.get(name), "color": color_for(FIBRO),
        })
        if getattr(adata, "isbacked", False):
            adata.file.close()
    table = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    order = _subtype_order(all_cats)
    with atomic_path(table_out, suffix=".csv") as tmp:
        table.to_csv(tmp, index=False)
    fig_uri = None
    if not table.empty:
        t = table.assign(group=table["dataset"] + " / " + table["sample"].astype(str))
        fig_uri = F.fig_proportions(t, group_col="group", order=order,
                                    title="CAF subtype proportions per dataset / sample")
    fig_size = F.png_display_size(fig_uri) if fig_uri else None
    if fig_uri is not None:
        import base64

        with atomic_path(figure_out, suffix=".png") as tmp:
            tmp.write_bytes(base64.b64decode(fig_uri.split(",", 1)[1]))
    wide_rows = []
    if not table.empty:
        for (ds, smp), g in table.groupby(["dataset", "sample"], sort=False):
            total = int(g["n_cells"].sum())
            by = dict(zip(g["subtype"], g["n_cells"], strict=False))
            wide_rows.append({"dataset": ds, "sample": smp, "total": total,
                              "cells": [{"subtype": c, "n": int(by.get(c, 0)),
                                         "pct": (f"{by.get(c, 0) / total:.1%}" if total else "—")}
                                        for c in order]})
    html = _env().get_template("summary.html.j2").render(
        title="cafclassify summary", datasets=datasets, order=order, wide_rows=wide_rows,
        figure=fig_uri, figure_size=fig_size, table_href=_href(table_out.resolve(), base),
        figure_href=_href(figure_out.resolve(), base) if fig_uri else None,
        colors={c: color_for(c) for c in order}, version=_version(),
        generated=_dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    )
    out = write_text_atomic(html, out_html)
    logger.info("wrote summary %s", out)
    return Path(out)
