"""Write the kept cells of an ``.h5ad`` file to a new file, block by block: :func:`filter_cells_h5ad`.

The out-of-core counterpart of ``adata[mask].copy()`` written with anndata, and the
same file: the matrices (``X``, every layer, ``raw.X``) are copied in row blocks of
``chunk_size`` cells (only the kept rows are written; blocks without a kept cell are
not read), while the annotations, which are small, are subset by anndata itself. The
whole matrix is never held in memory.

:func:`cafclassify.pp.filter_cells_to_h5ad` (``cafclassify qc --filter`` on a backed
AnnData) writes the cells that pass QC with it. With ``n_jobs`` > 1, matrices
of at least :data:`~cafclassify.io._part_writer.PARALLEL_MIN_VALUES` stored values in
all are written at the same time by :class:`~cafclassify.io._part_writer.PartWriter`
processes; same output either way.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .._errors import DataError, InputFileError
from . import _part_writer
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
from ._part_writer import PART_KEY, PartWriter, stored_values

__all__ = ["filter_cells_h5ad"]

logger = logging.getLogger(__name__)


def _keep_mask(mask_or_obs_column, obs: pd.DataFrame, where: str) -> np.ndarray:
    """Boolean keep-mask from a bool array or the name of a bool obs column."""
    if isinstance(mask_or_obs_column, str):
        col = mask_or_obs_column
        if col not in obs.columns:
            raise DataError(f"obs column {col!r} (cells to keep) does not exist.", path=f"{where}: obs",
                            fix=f"pass a boolean mask or one of {list(obs.columns)[:20]}.")
        values = obs[col]
        if values.isna().any() or not (pd.api.types.is_bool_dtype(values.dtype)):
            raise DataError(f"obs column {col!r} is not boolean without missing values "
                            f"(dtype {values.dtype}).", path=f"{where}: obs",
                            fix="pass a True/False column (e.g. 'qc_pass' written by cafclassify qc).")
        keep = values.to_numpy(dtype=bool)
    else:
        keep = np.asarray(mask_or_obs_column)
        if keep.dtype != bool or keep.ndim != 1:
            raise DataError(f"the cells to keep must be a 1-d boolean mask, got dtype {keep.dtype} "
                            f"with shape {keep.shape}.", path=where,
                            fix="pass a boolean array with one value per cell, or an obs column name.")
    if keep.shape[0] != obs.shape[0]:
        raise DataError(f"the mask has {keep.shape[0]} values for {obs.shape[0]} cells.", path=where,
                        fix="pass one True/False value per cell, in the file's cell order.")
    if not keep.any():
        raise DataError("no cell is kept by the mask.", path=where,
                        fix="check the mask (e.g. relax the QC thresholds); an empty file is not written.")
    return keep


def _copy_rows(f, key: str, keep: np.ndarray, g, dst_key: str, *, chunk_size: int,
               compression: str | None) -> None:
    """Write the kept rows of matrix ``key`` of open file ``f`` to ``dst_key`` of open file ``g``."""
    reader = _reader(f[key])
    writer = _MatrixWriter(g, dst_key, int(keep.sum()), int(reader.shape[1]), compression)
    for a in range(0, keep.shape[0], chunk_size):
        b = min(a + chunk_size, keep.shape[0])
        rows = keep[a:b]
        if not rows.any():  # blocks without a kept cell are not read
            continue
        block = _block(reader, a, b)
        writer.append(block if rows.all() else block[rows])
    writer.finish()


def _copy_rows_to_part(src_path: str, key: str, keep: np.ndarray, chunk_size: int,
                       compression: str | None, part: str) -> None:
    """Worker process: the kept rows of one matrix of ``src_path`` into the file ``part``."""
    import h5py

    f = _open(src_path)  # read-only; the parent holds the same file open read-only
    try:
        with h5py.File(part, "w") as g:
            _copy_rows(f, key, keep, g, PART_KEY, chunk_size=chunk_size, compression=compression)
    finally:
        f.close()


def _copy_matrices(f, src_path: Path, keys: list[str], keep: np.ndarray, g, tmp: Path, *,
                   chunk_size: int, compression: str | None, n_jobs: int) -> None:
    """Copy the kept rows of every matrix in ``keys``; with ``n_jobs`` > 1, several at once.

    Up to ``n_jobs - 1`` matrices are written by :class:`PartWriter` processes while this
    process writes the first (not below :data:`PARALLEL_MIN_VALUES` values in all); the
    result is the same as writing them one by one.
    """
    n_parts = min(max(int(n_jobs), 1), len(keys)) - 1
    if sum(stored_values(f[k]) for k in keys) < _part_writer.PARALLEL_MIN_VALUES:
        n_parts = 0
    local, remote = keys[: len(keys) - n_parts], keys[len(keys) - n_parts:]
    writers: dict[str, PartWriter] = {}
    try:
        for i, key in enumerate(remote):
            writers[key] = PartWriter(_copy_rows_to_part, (str(src_path), key, keep, chunk_size, compression),
                                      tmp.with_name(f"{tmp.name}.part{i}"))
        for key in local:
            _copy_rows(f, key, keep, g, key, chunk_size=chunk_size, compression=compression)
        for key, w in writers.items():
            w.collect(g, key)
    finally:
        for w in writers.values():
            w.close()


def filter_cells_h5ad(
    src,
    out: str | os.PathLike,
    mask_or_obs_column,
    *,
    chunk_size: int = _DEFAULT_CHUNK,
    compression: str | None = "gzip",
    stamp: Callable[[Any], None] | None = None,
    n_jobs: int = 1,
) -> Path:
    """Write the kept cells of an ``.h5ad`` file to a new file, block by block.

    The result equals ``adata[mask].copy()`` written with anndata: ``X``, every layer
    and ``raw.X`` are copied in row blocks of ``chunk_size`` cells (only the kept rows
    are written; blocks without a kept cell are not read), ``obs``, ``obsm`` and
    ``obsp`` are subset as anndata subsets them (unused categories dropped, matching
    ``uns["<column>_colors"]`` entries too), ``var``, ``varm``, ``varp`` and ``uns``
    are kept. The whole matrix is never held in memory. The output is written
    atomically.

    Parameters
    ----------
    src
        Input ``.h5ad`` path (annotations and matrices from the file), or a backed
        AnnData (:func:`cafclassify.io._lazy.open_lazy`): its in-memory ``obs``,
        ``var``, ``obsm``, ``varm``, ``uns`` (e.g. with the QC marks just computed) and
        the matrices of its file. The source is not modified.
    out
        Output ``.h5ad`` (must differ from the source file).
    mask_or_obs_column
        Boolean array (one value per cell) or the name of a boolean ``obs`` column
        (e.g. ``"qc_pass"``): the cells to keep.
    chunk_size
        Cells per block read and written.
    compression
        h5py compression of the matrices (``"gzip"`` or ``None``).
    stamp
        Called with the filtered AnnData without its matrices just before it is
        written (e.g. to record provenance in ``uns``).
    n_jobs
        Processes that write matrices at the same time (``X`` and each layer are
        independent); 1 writes them one after the other. Same output either way.

    Returns
    -------
    The path written.

    Raises
    ------
    DataError
        Bad mask (not boolean, wrong length, no cell kept) or an in-memory AnnData.
    InputFileError
        Unreadable input, or ``out`` is the input file.
    """
    import copy as _copy

    import anndata as ad
    import h5py
    from anndata.io import read_elem

    from .._atomic import atomic_path

    chunk_size = _check_chunk(chunk_size)
    if isinstance(src, ad.AnnData):
        if not getattr(src, "isbacked", False):
            raise DataError("filter_cells_h5ad() streams matrices from a file; this AnnData is in memory.",
                            path="adata", fix="write adata[mask].copy() instead, or pass the .h5ad path.")
        if src.is_view:
            raise DataError("cannot filter a view of a backed AnnData.", path=str(src.filename),
                            fix="pass the backed object itself (open_lazy(path)) and a mask over all its cells.")
        f, own, src_path = src.file._file, False, Path(src.filename)
        obs, var, uns = src.obs.copy(), src.var.copy(), _copy.deepcopy(dict(src.uns))
        obsm, varm = dict(src.obsm.items()), dict(src.varm.items())
        obsp = dict(src.obsp.items())
    else:
        src_path = Path(src)
        f, own = _open(src_path), True
        obs, var = _read_frame(f, "obs"), _read_frame(f, "var")
        uns, obsm, varm = _read_mapping(f, "uns"), _read_mapping(f, "obsm"), _read_mapping(f, "varm")
        obsp = {}
    try:
        if Path(out).expanduser().resolve() == src_path.expanduser().resolve():
            raise InputFileError("the output file is the input file.", path=out,
                                 fix="write the result to a new path (inputs are never modified).")
        keep = _keep_mask(mask_or_obs_column, obs, str(src_path))
        if not obsp and "obsp" in f:
            obsp = {k: read_elem(v) for k, v in f["obsp"].items()}
        # annotations: subset exactly as anndata does (categories, colours, obsm, obsp)
        skeleton = ad.AnnData(obs=obs, var=var, uns=uns, obsm=obsm, varm=varm, obsp=obsp)
        sub = skeleton[keep].copy()
        del skeleton
        if stamp is not None:
            stamp(sub)
        keys = _matrix_keys(f)
        with atomic_path(out, suffix=".h5ad") as tmp:
            sub.write_h5ad(tmp)
            with h5py.File(tmp, "a") as g:
                for key in ("X", "raw", "varp"):
                    if key in g:
                        del g[key]
                if "varp" in f:
                    f.copy(f["varp"], g, name="varp")
                if "raw" in f and "X" in f["raw"]:
                    raw = g.create_group("raw")
                    for k, v in f["raw"].attrs.items():
                        raw.attrs[k] = v
                    for k in f["raw"]:
                        if k != "X":
                            f.copy(f["raw"][k], raw, name=k)
                    keys.append("raw/X")
                _copy_matrices(f, src_path, keys, keep, g, tmp, chunk_size=chunk_size,
                               compression=compression, n_jobs=n_jobs)
    finally:
        if own:
            f.close()
    logger.info("filter: kept %d of %d cells -> %s", int(keep.sum()), keep.shape[0], out)
    return Path(out)
