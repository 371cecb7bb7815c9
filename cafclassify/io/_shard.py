"""Split an ``.h5ad`` file by cells into shards and merge per-shard results back.

Large datasets are processed as independent jobs per *shard* (a contiguous range of
cells) and merged in the original cell order. Both directions work chunk by chunk:
the expression matrix ``X`` and every layer are read from the file in blocks of
``chunk_size`` cells and appended to the output, so neither a shard job nor the merge
ever holds the whole matrix in memory (only ``obs``, ``obsm`` and ``uns``, which are
small).

What may be computed per shard, and what must not
-------------------------------------------------
Only per-cell computations give the same result on a shard as on the whole dataset:

* reading/normalisation (per cell) and the QC *metrics* (detected genes, counts,
  mitochondrial and ribosomal percentages) are per cell;
* QC *thresholds* are medians and MADs over all cells of a sample, so
  :func:`merge_h5ad` recomputes them from the merged metrics (:func:`requalify_qc`)
  and marks/filters cells with the global thresholds; Scrublet doublet calls (a kNN
  graph over a sample) cannot be sharded and are refused;
* UCell scores are per cell (ranks within a cell). AUCell leaves out genes detected in
  no cell of the dataset, and the scanpy/zmean methods use gene means over all cells,
  so they must run on the merged file;
* the lineage gate clusters all cells and the classifier is trained on (and its
  dataset-relative LTBP2/state flags are computed over) all fibroblasts: both run on
  the merged file.

The workflow (``workflow/rules/shard.smk``) follows exactly these rules, and
``tests/test_shard.py`` checks that sharded per-cell results equal unsharded ones.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from .. import _keys as K
from .._errors import DataError, InputFileError
from ._h5matrix import (
    _DEFAULT_CHUNK,
    _block,
    _check_chunk,
    _matrix_keys,
    _MatrixWriter,
    _open,
    _read_frame,
    _read_mapping,
    _reader,
)

__all__ = [
    "PER_CELL_METHODS",
    "UNS_SHARD",
    "count_cells",
    "merge_h5ad",
    "n_shards_for",
    "requalify_qc",
    "shard_bounds",
    "shard_h5ad",
    "write_shard",
]

logger = logging.getLogger(__name__)

UNS_SHARD = K.UNS_SHARD
#: scoring methods whose score of a cell depends on that cell only (safe to run per shard)
PER_CELL_METHODS = ("ucell",)


# --------------------------------------------------------------------------- planning


def n_shards_for(n_cells: int, max_cells: int | None) -> int:
    """Number of shards so that no shard has more than ``max_cells`` cells.

    ``max_cells`` of ``None`` or ``0`` means "never shard" (one shard).
    """
    if not max_cells or n_cells <= max_cells:
        return 1
    return int(math.ceil(n_cells / int(max_cells)))


def shard_bounds(n_cells: int, n_shards: int) -> list[tuple[int, int]]:
    """Contiguous, balanced ``[start, stop)`` cell ranges covering ``0 .. n_cells``.

    Shard sizes differ by at most one cell; the first ``n_cells % n_shards`` shards get
    the extra cell.
    """
    if n_shards < 1:
        raise DataError(f"the number of shards must be >= 1, got {n_shards}.",
                        fix="pass a positive number of shards.")
    if n_shards > max(n_cells, 1):
        raise DataError(f"cannot split {n_cells} cells into {n_shards} shards.",
                        fix="use at most as many shards as there are cells.")
    base, extra = divmod(n_cells, n_shards)
    bounds, start = [], 0
    for i in range(n_shards):
        stop = start + base + (1 if i < extra else 0)
        bounds.append((start, stop))
        start = stop
    return bounds


def count_cells(path: str | os.PathLike) -> int | None:
    """Number of cells of a data file, read from its header without loading the matrix.

    Supports ``.h5ad`` (length of the ``obs`` index), 10x ``.h5`` (``matrix/shape``),
    loom (``matrix`` columns) and 10x Matrix Market folders/files (header line).
    Returns ``None`` when the count cannot be read cheaply (text tables, unknown files).
    """
    p = Path(path)
    try:
        if p.is_dir():
            for name in ("matrix.mtx.gz", "matrix.mtx"):
                if (p / name).exists():
                    return _mtx_cells(p / name)
            return None
        if p.name.endswith((".mtx", ".mtx.gz")):
            return _mtx_cells(p)
        import h5py

        if not h5py.is_hdf5(p):
            return None
        with h5py.File(p, "r") as f:
            if "obs" in f and isinstance(f["obs"], h5py.Group):
                index = f["obs"].attrs.get("_index", "_index")
                if index in f["obs"]:
                    return int(f["obs"][index].shape[0])
            if "matrix" in f and isinstance(f["matrix"], h5py.Group) and "shape" in f["matrix"]:
                return int(f["matrix"]["shape"][1])  # 10x: genes x cells
            if "matrix" in f and isinstance(f["matrix"], h5py.Dataset):
                return int(f["matrix"].shape[1])  # loom: genes x cells
    except OSError:
        return None
    return None


def _mtx_cells(path: Path) -> int | None:
    import gzip

    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rt") as fh:
        for line in fh:
            if not line.startswith("%"):
                parts = line.split()
                return int(parts[1]) if len(parts) >= 2 else None  # 10x: genes x cells
    return None


# --------------------------------------------------------------------------- h5ad helpers


def _write_skeleton(tmp: Path, obs: pd.DataFrame, var: pd.DataFrame, uns: dict, obsm: dict, varm: dict,
                    stamp: Callable[[Any], None] | None) -> None:
    import anndata as ad
    import h5py

    skeleton = ad.AnnData(obs=obs, var=var, uns=uns, obsm=obsm, varm=varm)
    if stamp is not None:
        stamp(skeleton)
    skeleton.write_h5ad(tmp)
    with h5py.File(tmp, "a") as f:
        if "X" in f:
            del f["X"]


def _read_shard_record(f) -> dict | None:
    """``uns["cafclassify"]["shard"]`` of an open file, without reading the rest of ``uns``."""
    from anndata.io import read_elem

    key = f"uns/{K.UNS}/{UNS_SHARD}"
    if key not in f:
        return None
    rec = read_elem(f[key])
    return rec if isinstance(rec, dict) and "index" in rec else None


# --------------------------------------------------------------------------- sharding


def write_shard(
    path: str | os.PathLike,
    out: str | os.PathLike,
    *,
    n_shards: int,
    index: int,
    chunk_size: int = _DEFAULT_CHUNK,
    compression: str | None = None,
    stamp: Callable[[Any], None] | None = None,
) -> Path:
    """Write shard ``index`` of ``n_shards`` of an ``.h5ad`` file (a contiguous range of cells).

    The matrix and every layer are copied in blocks of ``chunk_size`` cells; ``obs``,
    ``obsm`` rows, ``var``, ``varm`` and ``uns`` are copied as they are. Cell-cell graphs
    (``obsp``) are not copied (they do not split). The output is written atomically.

    Parameters
    ----------
    path
        Input ``.h5ad`` file (not modified, never loaded as a whole).
    out
        Output ``.h5ad`` file.
    n_shards, index
        Number of shards and which one to write (``0 <= index < n_shards``); the bounds
        come from :func:`shard_bounds`.
    chunk_size
        Cells per block read and written.
    compression
        h5py compression of the matrices (``"gzip"`` or ``None``: shards are temporary).
    stamp
        Called with the output AnnData *without* its matrices (obs, var, uns, obsm)
        just before it is written, e.g. to record provenance in ``uns``.

    Returns
    -------
    The path written. ``uns["cafclassify"]["shard"]`` records ``index``, ``n_shards``,
    ``start``, ``stop``, ``n_cells_total`` and ``source``.
    """
    import h5py

    from .._atomic import atomic_path

    if not 0 <= int(index) < int(n_shards):
        raise DataError(f"shard index {index} is outside 0..{int(n_shards) - 1}.",
                        fix="pass --index between 0 and --n-shards - 1.")
    chunk_size = _check_chunk(chunk_size)
    with _open(path) as f:
        obs = _read_frame(f, "obs")
        n = obs.shape[0]
        start, stop = shard_bounds(n, int(n_shards))[int(index)]
        var = _read_frame(f, "var")
        uns = _read_mapping(f, "uns")
        obsm = {k: _rows(v, start, stop) for k, v in _read_mapping(f, "obsm").items()}
        varm = _read_mapping(f, "varm")
        if "obsp" in f and len(f["obsp"]):
            logger.warning("shard: obsp (%s) is not copied into shards.", ", ".join(f["obsp"].keys()))
        uns.setdefault(K.UNS, {})
        uns[K.UNS] = dict(uns[K.UNS])
        uns[K.UNS][UNS_SHARD] = {
            "index": int(index), "n_shards": int(n_shards), "start": int(start), "stop": int(stop),
            "n_cells_total": int(n), "source": str(path),
        }
        keys = _matrix_keys(f)
        with atomic_path(out, suffix=".h5ad") as tmp:
            _write_skeleton(tmp, obs.iloc[start:stop], var, uns, obsm, varm, stamp)
            with h5py.File(tmp, "a") as g:
                for key in keys:
                    reader = _reader(f[key])
                    writer = _MatrixWriter(g, key, stop - start, var.shape[0], compression)
                    for a in range(start, stop, chunk_size):
                        writer.append(_block(reader, a, min(a + chunk_size, stop)))
                    writer.finish()
    logger.info("shard %d/%d: cells %d-%d of %d written to %s", int(index) + 1, int(n_shards),
                start, stop, n, out)
    return Path(out)


def shard_h5ad(
    path: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    n_shards: int | None = None,
    max_cells: int | None = None,
    chunk_size: int = _DEFAULT_CHUNK,
    compression: str | None = None,
    stamp: Callable[[Any], None] | None = None,
) -> list[Path]:
    """Split an ``.h5ad`` file by cells into shards ``out_dir/shard_000.h5ad`` ...

    Give either ``n_shards`` or ``max_cells`` (the largest shard size allowed). See
    :func:`write_shard` for what each shard holds.

    Returns
    -------
    The shard paths, in cell order.
    """
    if (n_shards is None) == (max_cells is None):
        raise DataError("give exactly one of n_shards and max_cells.",
                        fix="e.g. n_shards=4, or max_cells=200000.")
    if n_shards is None:
        n = count_cells(path)
        if n is None:
            raise InputFileError("cannot read the number of cells.", path=path,
                                 fix="pass an .h5ad file written by anndata.")
        n_shards = n_shards_for(n, max_cells)
    out = [Path(out_dir) / f"shard_{i:03d}.h5ad" for i in range(int(n_shards))]
    for i, o in enumerate(out):
        write_shard(path, o, n_shards=int(n_shards), index=i, chunk_size=chunk_size,
                    compression=compression, stamp=stamp)
    return out


def _rows(value, start: int, stop: int):
    if isinstance(value, pd.DataFrame):
        return value.iloc[start:stop]
    return value[start:stop]


# --------------------------------------------------------------------------- QC on all cells


def requalify_qc(obs: pd.DataFrame, record: dict, *, n_vars: int) -> tuple[np.ndarray, pd.Categorical, dict]:
    """Recompute QC thresholds over all cells from the per-cell metrics of :func:`cafclassify.qc`.

    Shards were marked with thresholds of their own cells; MAD thresholds are per
    *sample*, over all its cells, so they are recomputed here from the merged metric
    columns (``n_genes_by_counts``, ``total_counts``, ``pct_counts_mt``,
    ``pct_counts_ribo``) with the parameters the shards recorded. The rules are those
    of :func:`cafclassify.qc`, applied by the same function
    (:func:`cafclassify.pp.qc_thresholds_from_metrics`); this is a thin wrapper that
    reads the parameters back from the record.

    Parameters
    ----------
    obs
        Merged cell metadata with the metric columns (and the sample column).
    record
        ``uns["cafclassify"]["qc"]`` of a shard (``params``, ``value_type``, ``n_mt_genes``).
    n_vars
        Number of genes (the automatic mitochondrial threshold needs whole-transcriptome data).

    Returns
    -------
    ``(qc_pass, qc_reason, section)``: boolean array, categorical reasons and the new
    ``uns["cafclassify"]["qc"]`` section (``thresholds`` and ``table`` over all cells).

    Raises
    ------
    DataError
        Missing metric columns or parameters, or QC run with doublet detection.
    """
    from ..pp import _qc as Q

    params = dict(record.get("params", {}))
    needed = [Q.OBS_N_GENES, Q.OBS_TOTAL_COUNTS, Q.OBS_PCT_MT, Q.OBS_PCT_RIBO]
    missing = [c for c in needed if c not in obs.columns]
    if missing or not params:
        raise DataError(f"the shards carry no complete QC metrics (missing: {missing or 'params'}).",
                        path="uns['cafclassify']['qc']",
                        fix="run `cafclassify qc` (without --filter) on every shard before merging.")
    if _true(params.get("doublets")):
        raise DataError("QC with doublet detection cannot be sharded: Scrublet compares each cell "
                        "with all cells of its sample.", path="uns['cafclassify']['qc']['params']",
                        fix="run qc with doublets on the merged file, or do not shard this dataset.")
    sample_key = params.get("sample_key")
    sample_key = None if sample_key in (None, "", "None") else str(sample_key)
    if sample_key is not None and sample_key not in obs.columns:
        raise DataError(f"the sample column {sample_key!r} used by QC is not in the merged obs.",
                        path="obs", fix="keep the sample column in every shard.")
    marks = Q.qc_thresholds_from_metrics(
        obs, sample_key=sample_key, nmads=float(params["nmads"]),
        min_genes=_opt(params.get("min_genes")), max_genes=_opt(params.get("max_genes")),
        min_counts=_opt(params.get("min_counts")), max_pct_mt=_opt(params.get("max_pct_mt")),
        max_pct_ribo=_opt(params.get("max_pct_ribo")),
        has_counts=record.get("value_type") == "counts",
        n_mt_genes=int(record.get("n_mt_genes", 0)), n_vars=int(n_vars),
    )
    section = {k: v for k, v in record.items() if k not in ("thresholds", "table", "filtered")}
    section["thresholds"] = marks.thresholds
    section["table"] = marks.table
    return marks.qc_pass, marks.qc_reason, section


def _true(v) -> bool:
    return bool(v) and str(v) not in ("False", "None", "0")


def _opt(v):
    """A parameter read back from .h5ad: ``None`` is stored as the string "None"."""
    if v is None or (isinstance(v, str) and v in ("None", "")):
        return None
    return float(v)


# --------------------------------------------------------------------------- merging


def _concat_obs(frames: list[pd.DataFrame]) -> pd.DataFrame:
    """Concatenate obs frames; categoricals keep their categories (union in first-seen order)."""
    cols = list(frames[0].columns)
    for fr in frames[1:]:
        if list(fr.columns) != cols:
            extra = sorted(set(fr.columns) ^ set(cols))
            raise DataError(f"the shards have different obs columns ({extra}).", path="obs",
                            fix="merge shards that went through the same steps with the same options.")
    out = {}
    for c in cols:
        parts = [fr[c] for fr in frames]
        if all(isinstance(p.dtype, pd.CategoricalDtype) for p in parts):
            cats = list(dict.fromkeys(x for p in parts for x in p.cat.categories))
            ordered = bool(parts[0].cat.ordered)
            codes = [pd.Categorical(p, categories=cats, ordered=ordered) for p in parts]
            out[c] = pd.Categorical(pd.concat([pd.Series(x) for x in codes], ignore_index=True),
                                    categories=cats, ordered=ordered)
        else:
            out[c] = pd.concat([p.reset_index(drop=True) for p in parts], ignore_index=True)
    index = pd.Index(np.concatenate([fr.index.to_numpy() for fr in frames]), name=frames[0].index.name)
    df = pd.DataFrame(out, columns=cols)
    df.index = index
    return df


def _concat_obsm(maps: list[dict], index: pd.Index) -> dict:
    keys = [k for k in maps[0] if all(k in m for m in maps[1:])]
    dropped = sorted(set().union(*map(set, maps)) - set(keys))
    if dropped:
        logger.warning("merge: obsm %s missing from some shards; not merged.", dropped)
    out = {}
    for k in keys:
        parts = [m[k] for m in maps]
        if all(isinstance(p, pd.DataFrame) for p in parts):
            cols = list(parts[0].columns)
            if any(list(p.columns) != cols for p in parts[1:]):
                raise DataError(f"obsm[{k!r}] has different columns in different shards.", path="obsm",
                                fix="score every shard with the same library and options.")
            df = pd.concat(parts, axis=0)
            df.index = index
            out[k] = df
        elif all(sp.issparse(p) for p in parts):
            out[k] = sp.vstack(parts, format="csr")
        else:
            out[k] = np.concatenate([np.asarray(p) for p in parts], axis=0)
    return out


def merge_h5ad(
    inputs: Sequence[str | os.PathLike],
    out: str | os.PathLike,
    *,
    requalify: bool | None = None,
    filter: bool = False,
    chunk_size: int = _DEFAULT_CHUNK,
    compression: str | None = "gzip",
    stamp: Callable[[Any], None] | None = None,
) -> Path:
    """Merge shards (from :func:`write_shard`, then processed) back into one ``.h5ad``.

    Cells are concatenated in shard order, which is the original cell order; ``X`` and
    every layer are copied in blocks of ``chunk_size`` cells, so the merged matrix is
    never held in memory. ``var`` must be identical in every shard; ``obs`` columns and
    ``obsm`` entries are concatenated (categories united); ``uns`` is taken from the
    first shard, except the QC section, which is recomputed over all cells.

    Parameters
    ----------
    inputs
        Shard files. If they carry shard records (``uns["cafclassify"]["shard"]``), they
        must be the complete set ``0 .. n_shards - 1`` of one source (any order given;
        merged in shard order).
    out
        Output ``.h5ad``.
    requalify
        Recompute QC thresholds over all cells (:func:`requalify_qc`) and re-mark
        ``obs["qc_pass"]``/``obs["qc_reason"]``. Default: when the shards carry a QC record.
    filter
        Remove cells failing QC (after requalifying), as ``cafclassify qc --filter``.
    chunk_size
        Cells per block copied.
    compression
        h5py compression of the matrices.
    stamp
        As in :func:`write_shard`.

    Returns
    -------
    The path written. ``uns["cafclassify"]["shard"]`` records ``n_shards``,
    ``inputs``, ``requalified_qc`` and the cell counts.

    Raises
    ------
    DataError
        Incomplete or mixed shard sets, different genes, or no cell passing QC with ``filter``.
    """
    import h5py

    from .._atomic import atomic_path

    chunk_size = _check_chunk(chunk_size)
    paths = [Path(p) for p in inputs]
    if not paths:
        raise DataError("no shard files to merge.", fix="pass the shard .h5ad files.")
    files = [_open(p) for p in paths]
    try:
        recs = [_read_shard_record(f) for f in files]
        if all(r is not None for r in recs):
            order = sorted(range(len(paths)), key=lambda i: int(recs[i]["index"]))
            n_sh = {int(r["n_shards"]) for r in recs}
            srcs = {str(r["source"]) for r in recs}
            idx = sorted(int(r["index"]) for r in recs)
            if len(n_sh) != 1 or len(srcs) != 1 or idx != list(range(next(iter(n_sh)))):
                raise DataError(
                    f"the shard files are not one complete set (shard indices {idx}, n_shards "
                    f"{sorted(n_sh)}, sources {sorted(srcs)}).",
                    path=", ".join(map(str, paths)),
                    fix="pass every shard of one split exactly once.")
        elif any(r is not None for r in recs):
            raise DataError("some inputs are shards and some are not.", path=", ".join(map(str, paths)),
                            fix="merge only the shards of one split.")
        else:
            order = list(range(len(paths)))
        files = [files[i] for i in order]
        paths = [paths[i] for i in order]
        var = _read_frame(files[0], "var")
        for p, f in zip(paths[1:], files[1:], strict=True):
            v = _read_frame(f, "var")
            if not v.index.equals(var.index):
                raise DataError("the shards have different genes (var_names).", path=p,
                                fix="merge shards of the same file processed with the same options.")
        obs_parts = [_read_frame(f, "obs") for f in files]
        sizes = [o.shape[0] for o in obs_parts]
        obs = _concat_obs(obs_parts)
        obsm = _concat_obsm([_read_mapping(f, "obsm") for f in files], obs.index)
        varm = _read_mapping(files[0], "varm")
        uns = _read_mapping(files[0], "uns")
        root = dict(uns.get(K.UNS, {}) or {})
        qc_rec = root.get(K.UNS_QC)
        if requalify is None:
            requalify = isinstance(qc_rec, dict) and K.OBS_QC_PASS in obs.columns
        n_before = obs.shape[0]
        if requalify:
            if not isinstance(qc_rec, dict):
                raise DataError("requalify=True, but the shards carry no QC record.",
                                path=str(paths[0]), fix="run `cafclassify qc` on every shard first.")
            qc_pass, reason, section = requalify_qc(obs, qc_rec, n_vars=var.shape[0])
            n_changed = int((obs[K.OBS_QC_PASS].to_numpy(dtype=bool) != qc_pass).sum())
            obs[K.OBS_QC_PASS] = qc_pass
            obs[K.OBS_QC_REASON] = reason
            root[K.UNS_QC] = section
            logger.info("merge: QC thresholds recomputed over all %d cells (%d cells changed "
                        "pass/fail compared with per-shard thresholds)", n_before, n_changed)
        keep = np.ones(n_before, dtype=bool)
        if filter:
            if K.OBS_QC_PASS not in obs.columns:
                raise DataError("filter=True, but the cells carry no QC marks (obs['qc_pass']).",
                                path=str(paths[0]), fix="run `cafclassify qc` on every shard first.")
            keep = obs[K.OBS_QC_PASS].to_numpy(dtype=bool)
            if not keep.any():
                raise DataError(f"no cell passes QC (thresholds per sample: "
                                f"{root.get(K.UNS_QC, {}).get('thresholds')}).", path=str(out),
                                fix="relax the QC thresholds (larger nmads or explicit bounds).")
            obs = obs.iloc[keep].copy()
            for c in obs.columns:  # as AnnData subsetting does (`cafclassify qc --filter`)
                if isinstance(obs[c].dtype, pd.CategoricalDtype):
                    obs[c] = obs[c].cat.remove_unused_categories()
            obsm = {k: (v.iloc[keep] if isinstance(v, pd.DataFrame) else v[keep]) for k, v in obsm.items()}
            if isinstance(root.get(K.UNS_QC), dict):
                root[K.UNS_QC] = dict(root[K.UNS_QC])
                root[K.UNS_QC]["filtered"] = {"n_before": int(n_before), "n_after": int(keep.sum())}
        root[UNS_SHARD] = {
            "merged": True, "n_shards": len(paths), "inputs": [str(p) for p in paths],
            "cells_per_shard": [int(s) for s in sizes], "requalified_qc": bool(requalify),
            "filtered": bool(filter), "n_cells_before_filter": int(n_before), "n_cells": int(keep.sum()),
        }
        uns = dict(uns)
        uns[K.UNS] = root
        keys = _matrix_keys(files[0])
        for p, f in zip(paths[1:], files[1:], strict=True):
            if _matrix_keys(f) != keys:
                raise DataError(f"the shards have different matrices ({_matrix_keys(f)} vs {keys}).",
                                path=p, fix="merge shards processed with the same options.")
        offsets = np.concatenate([[0], np.cumsum(sizes)])
        with atomic_path(out, suffix=".h5ad") as tmp:
            _write_skeleton(tmp, obs, var, uns, obsm, varm, stamp)
            with h5py.File(tmp, "a") as g:
                for key in keys:
                    writer = _MatrixWriter(g, key, int(keep.sum()), var.shape[0], compression)
                    for s, f in enumerate(files):
                        reader = _reader(f[key])
                        for a in range(0, sizes[s], chunk_size):
                            b = min(a + chunk_size, sizes[s])
                            rows = keep[offsets[s] + a: offsets[s] + b]
                            if not rows.any():
                                continue
                            block = _block(reader, a, b)
                            writer.append(block if rows.all() else block[rows])
                    writer.finish()
    finally:
        for f in files:
            f.close()
    logger.info("merged %d shards into %s (%d cells)", len(paths), out, int(keep.sum()))
    return Path(out)
