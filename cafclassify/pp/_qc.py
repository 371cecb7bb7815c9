"""Per-sample cell quality control that marks cells; removal is a separate step.

:func:`qc` computes the usual scanpy QC metrics (``n_genes_by_counts``,
``total_counts``, ``pct_counts_mt``, ``pct_counts_ribo``) chunk by chunk without
densifying, derives outlier thresholds per sample from median absolute
deviations (MAD), and marks every cell with ``obs["qc_pass"]`` and the first
failing reason in ``obs["qc_reason"]``. :func:`filter_cells` removes the failing
cells, explicitly.

Thresholds (per sample, unless given explicitly, which then apply to all samples):

- ``low_genes`` / ``high_genes``: ``log1p(n_genes_by_counts)`` outside
  median +- ``nmads`` x MAD;
- ``low_counts`` / ``high_counts``: the same on ``log1p(total_counts)`` (counts only);
- ``high_mt``: ``pct_counts_mt`` above median + ``nmads`` x MAD, but never below
  :data:`MT_FLOOR` percent (so well-behaved samples are not trimmed); automatic only
  for data with at least :data:`MIN_GENES_FOR_PCT` genes (on a gene panel or a
  gene subset the percentage is relative to the panel and not comparable);
- ``high_ribo``: only with an explicit ``max_pct_ribo`` (ribosomal content is
  biology as much as quality);
- ``doublet``: Scrublet's call (``doublets=True``, counts only).

MAD is the plain median absolute deviation (not scaled to a standard deviation),
as in the single-cell best-practices book (Heumos et al. 2023, Nat Rev Genet),
with ``nmads=5`` as default: only clear outliers are marked.

Data without counts (already log-normalised) have no meaningful library size,
so the count thresholds and doublet detection are skipped (recorded and logged).
The number of detected genes is unchanged by normalisation and log transforms
(zeros stay zeros), so the gene thresholds still apply; mitochondrial and
ribosomal percentages are computed on ``expm1(X)``, which is exact for
log1p(normalize_total) data (per-cell scaling cancels in a fraction) and an
approximation for other log transforms.

Out of core
-----------
:func:`qc` also accepts a backed AnnData (:func:`cafclassify.io._lazy.open_lazy`,
or ``anndata.read_h5ad(path, backed="r")``): the matrix is read from disk in row
blocks of ``chunk_size`` cells (the metrics are per cell, so the result is
identical to the in-memory run) and only ``obs``/``uns`` are written, in memory.
:func:`filter_cells_to_h5ad` then writes the passing cells to a new file block by
block (:func:`cafclassify.io._shard.filter_cells_h5ad`). Scrublet on a backed
object reads one sample at a time into memory and refuses samples of more than
:data:`MAX_CELLS_DOUBLETS_BACKED` cells.

The thresholds, marks and per-sample table are computed from the per-cell metric
columns by one function, :func:`qc_thresholds_from_metrics`, used by :func:`qc` and
by the shard merge (:func:`cafclassify.io._shard.requalify_qc`).
"""

from __future__ import annotations

import logging
import os
import re
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData

from .. import _keys as K
from .._errors import DataError
from ..io._canonical import canonical
from ..io._lazy import is_lazy, lazy_layer, lazy_layer_names

__all__ = [
    "MAX_CELLS_DOUBLETS_BACKED",
    "MIN_GENES_FOR_PCT",
    "MT_FLOOR",
    "OBS_N_GENES",
    "OBS_PCT_MT",
    "OBS_PCT_RIBO",
    "OBS_PREDICTED_DOUBLET",
    "OBS_TOTAL_COUNTS",
    "QC_REASONS",
    "QCMarks",
    "filter_cells",
    "filter_cells_to_h5ad",
    "qc",
    "qc_thresholds_from_metrics",
]

logger = logging.getLogger(__name__)

# metric columns (scanpy's names), from the key registry
OBS_N_GENES = K.OBS_N_GENES
OBS_TOTAL_COUNTS = K.OBS_TOTAL_COUNTS
OBS_PCT_MT = K.OBS_PCT_MT
OBS_PCT_RIBO = K.OBS_PCT_RIBO
OBS_PREDICTED_DOUBLET = K.OBS_PREDICTED_DOUBLET

#: categories of ``obs["qc_reason"]``, in the order they are checked
QC_REASONS = (
    "pass",
    "low_genes",
    "high_genes",
    "low_counts",
    "high_counts",
    "high_mt",
    "high_ribo",
    "doublet",
)
#: the automatic mitochondrial threshold is never below this percentage
MT_FLOOR = 20.0
#: automatic mt threshold only for (near) whole-transcriptome data: on a gene panel the
#: percentages are relative to the panel, not to the cell's transcriptome
MIN_GENES_FOR_PCT = 10000
#: Scrublet on a backed AnnData loads one sample at a time; larger samples are refused
MAX_CELLS_DOUBLETS_BACKED = 200_000
_CHUNK = 10_000  # cells per block: same speed as 50k on disk, a fifth of the memory
_MIN_CELLS_SCRUBLET = 100

# ribosomal protein genes: RPL3, RPL7A, RPL36AL, RPL22L1, RPS4X, RPS4Y1, RPLP0, RPSA ...
# (not RPS6KA1 or other kinases whose names only start with RPS/RPL)
_RIBO_RE = re.compile(r"^RP[SL]\d+(A|L|AL|L1|X|Y\d?)?$|^RPLP[0-2]$|^RPSA$", re.IGNORECASE)


def _symbols_and_species(adata: AnnData) -> tuple[np.ndarray, str, str]:
    """Current gene symbols, species and where the symbols came from."""
    from .._errors import CafClassifyError
    from ..genes import detect_species, resolve_gene_identity

    root = adata.uns.get(K.UNS)
    rec = root.get(K.UNS_READ, {}) if isinstance(root, dict) else {}
    species = rec.get("species") if isinstance(rec, dict) else None
    if K.VAR_SYMBOL in adata.var.columns:
        symbols = adata.var[K.VAR_SYMBOL].astype(str).to_numpy()
        src = f"var[{K.VAR_SYMBOL!r}]"
    else:
        try:
            ident = resolve_gene_identity(adata)
            symbols = np.asarray([str(x) for x in ident.symbols], dtype=object)
            species = species or ident.species
            src = "resolve_gene_identity(var_names)"
        except CafClassifyError as exc:
            logger.warning("qc: gene symbols could not be resolved (%s); using var_names.",
                           exc.problem)
            symbols = np.asarray(adata.var_names.astype(str))
            src = "var_names"
    if species not in ("human", "mouse"):
        species = detect_species(list(symbols))
    return symbols, species, src


def _gene_masks(symbols: np.ndarray, species: str) -> tuple[np.ndarray, np.ndarray]:
    if species == "human":
        mt = np.array([s.startswith("MT-") for s in symbols], dtype=bool)
    elif species == "mouse":
        mt = np.array([s.startswith("mt-") for s in symbols], dtype=bool)
    else:
        mt = np.array([s.lower().startswith("mt-") for s in symbols], dtype=bool)
    ribo = np.array([bool(_RIBO_RE.match(s)) for s in symbols], dtype=bool)
    return mt, ribo


def _metrics(X, mt: np.ndarray, ribo: np.ndarray, *, expm1: bool, chunk_size: int = _CHUNK) -> dict[str, np.ndarray]:
    """n_genes, total, pct_mt, pct_ribo per cell; chunked, sparse stays sparse.

    ``X`` may be in memory or on disk (a backed dataset): it is only read in row
    blocks ``X[start:stop]`` of ``chunk_size`` cells. Every metric of a cell depends on
    its row only, so the result does not depend on ``chunk_size``.
    """
    n = X.shape[0]
    n_genes = np.zeros(n, dtype=np.int64)
    total = np.zeros(n, dtype=np.float64)
    mt_sum = np.zeros(n, dtype=np.float64)
    ribo_sum = np.zeros(n, dtype=np.float64)
    mt_idx, ribo_idx = np.flatnonzero(mt), np.flatnonzero(ribo)
    for start in range(0, n, chunk_size):
        stop = min(start + chunk_size, n)
        block = X[start:stop]
        if sp.issparse(block):
            block = canonical(sp.csr_matrix(block, dtype=np.float64), copy=False)
            block.eliminate_zeros()  # detected genes: stored, non-zero, unique entries
            if expm1:
                block.data = np.expm1(block.data)
            n_genes[start:stop] = np.diff(block.indptr)
            total[start:stop] = np.asarray(block.sum(axis=1)).ravel()
            if len(mt_idx):
                mt_sum[start:stop] = np.asarray(block[:, mt_idx].sum(axis=1)).ravel()
            if len(ribo_idx):
                ribo_sum[start:stop] = np.asarray(block[:, ribo_idx].sum(axis=1)).ravel()
        else:
            block = np.asarray(block, dtype=np.float64)
            if expm1:
                block = np.expm1(block)
            n_genes[start:stop] = (block != 0).sum(axis=1)
            total[start:stop] = block.sum(axis=1)
            mt_sum[start:stop] = block[:, mt_idx].sum(axis=1)
            ribo_sum[start:stop] = block[:, ribo_idx].sum(axis=1)
        del block
    with np.errstate(divide="ignore", invalid="ignore"):
        pct_mt = np.where(total > 0, 100.0 * mt_sum / total, 0.0)
        pct_ribo = np.where(total > 0, 100.0 * ribo_sum / total, 0.0)
    return {"n_genes": n_genes, "total": total, "pct_mt": pct_mt, "pct_ribo": pct_ribo}


def _mad_bounds(x: np.ndarray, nmads: float) -> tuple[float, float, float, float]:
    med = float(np.median(x))
    mad = float(np.median(np.abs(x - med)))
    return med - nmads * mad, med + nmads * mad, med, mad


def _choose_matrix(adata: AnnData, layer: str | None):
    """Return (matrix, description, value type); on disk for a backed AnnData."""
    from ..io import detect_value_type

    names = lazy_layer_names(adata)  # on disk too for a backed AnnData
    if layer is not None:
        if layer not in names:
            raise DataError(
                f"layer {layer!r} is not in the data (layers: {names or 'none'}).",
                path="adata.layers",
                fix="pass one of the existing layers, or layer=None.",
            )
        X, desc = lazy_layer(adata, layer), f"layers[{layer!r}]"
    elif K.LAYER_COUNTS in names:
        X, desc = lazy_layer(adata, K.LAYER_COUNTS), f"layers[{K.LAYER_COUNTS!r}]"
    else:
        X, desc = adata.X, "X"
    if X is None:
        raise DataError("the data have no expression matrix (X is None) and no counts layer.",
                        path="adata.X", fix="pass data with counts in X or layers['counts'].")
    vt = detect_value_type(X)
    if layer is None and desc != "X" and vt != "counts":
        logger.warning("layers[%r] does not hold counts (values look %s); QC uses X instead.",
                       K.LAYER_COUNTS, vt)
        X, desc = adata.X, "X"
        vt = detect_value_type(X)
    if vt == "scaled":
        raise DataError(
            f"{desc} holds scaled values (negative numbers); QC metrics need counts or "
            "log-normalised values.",
            path=f"adata.{desc}",
            fix="pass layer= with counts, or run QC before scaling.",
        )
    return X, desc, vt


def _sample_labels(obs: pd.DataFrame, sample_key: str | None, *, where: str = "adata.obs") -> np.ndarray:
    """Sample label (str) of every cell; one sample "all" without ``sample_key``."""
    if sample_key is None:
        return np.full(obs.shape[0], "all", dtype=object)
    if sample_key not in obs.columns:
        raise DataError(
            f"sample_key={sample_key!r} is not an obs column.",
            path=where,
            fix=f"use one of {list(obs.columns)[:20]} or sample_key=None.",
        )
    if obs[sample_key].isna().any():
        raise DataError(
            f"obs[{sample_key!r}] has missing values.",
            path=where,
            fix="give every cell a sample label.",
        )
    return obs[sample_key].astype(str).to_numpy()


def auto_mt_threshold(n_mt_genes: int, n_vars: int) -> bool:
    """Whether the automatic (MAD + floor) mitochondrial threshold applies.

    Parameters
    ----------
    n_mt_genes
        Number of mitochondrial genes in the data.
    n_vars
        Number of genes in the data.

    Returns
    -------
    True for (near) whole-transcriptome data (at least :data:`MIN_GENES_FOR_PCT`
    genes) with mitochondrial genes.
    """
    return int(n_mt_genes) > 0 and int(n_vars) >= MIN_GENES_FOR_PCT


class QCMarks(NamedTuple):
    """Result of :func:`qc_thresholds_from_metrics` (a named tuple)."""

    #: bool per cell: passes every threshold
    qc_pass: np.ndarray
    #: categorical per cell: ``"pass"`` or the first failing reason (categories :data:`QC_REASONS`)
    qc_reason: pd.Categorical
    #: per sample (``/`` replaced by ``_``): the thresholds applied and the medians they came from
    thresholds: dict[str, dict]
    #: per-sample table as a dict of columns (``sample``, ``n_cells``, ``n_kept``, ``n_removed``,
    #: ``removed_<reason>``)
    table: dict[str, list]
    #: samples in order of first appearance
    samples: list[str]


def qc_thresholds_from_metrics(
    obs: pd.DataFrame,
    *,
    sample_key: str | None = None,
    nmads: float = 5.0,
    min_genes: float | None = None,
    max_genes: float | None = None,
    min_counts: float | None = None,
    max_pct_mt: float | None = None,
    max_pct_ribo: float | None = None,
    has_counts: bool = True,
    n_mt_genes: int = 0,
    n_vars: int = 0,
    predicted_doublet: np.ndarray | None = None,
) -> QCMarks:
    """Per-sample QC thresholds, marks and table from the per-cell metric columns.

    The one place where the QC rules live: :func:`qc` calls it after computing the
    metrics, and the shard merge (:func:`cafclassify.io._shard.requalify_qc`) calls
    it on the metrics of all shards. Rules, per sample (all cells of the sample):
    MAD bounds on ``log1p(n_genes_by_counts)`` and (counts only) ``log1p(total_counts)``,
    a zero MAD meaning no bound; explicit bounds replace the MAD bounds (all samples);
    no automatic upper bound on total counts is replaced by ``min_counts``; the
    mitochondrial bound is median + ``nmads`` x MAD but at least :data:`MT_FLOOR`,
    only when :func:`auto_mt_threshold` holds (else only an explicit ``max_pct_mt``);
    ribosomal only with ``max_pct_ribo``; the first failing reason of
    :data:`QC_REASONS` wins.

    Parameters
    ----------
    obs
        Cell metadata with ``n_genes_by_counts``, ``total_counts``, ``pct_counts_mt``,
        ``pct_counts_ribo`` (and the sample column). Not modified.
    sample_key
        ``obs`` column with the sample of each cell; ``None``: one sample ``"all"``.
    nmads
        Number of median absolute deviations beyond which a cell is an outlier.
    min_genes, max_genes, min_counts, max_pct_mt, max_pct_ribo
        Explicit bounds (replace the automatic ones, all samples); ``None``: automatic
        (or none, for ``max_pct_ribo``).
    has_counts
        Whether the metrics come from counts; otherwise the count bounds are skipped.
    n_mt_genes, n_vars
        Number of mitochondrial genes and of genes (for :func:`auto_mt_threshold`).
    predicted_doublet
        Optional bool per cell (Scrublet's call), marked with reason ``"doublet"``.

    Returns
    -------
    :class:`QCMarks` ``(qc_pass, qc_reason, thresholds, table, samples)``.

    Raises
    ------
    DataError
        Missing metric or sample columns, or missing sample labels.
    """
    needed = [OBS_N_GENES, OBS_TOTAL_COUNTS, OBS_PCT_MT, OBS_PCT_RIBO]
    missing = [c for c in needed if c not in obs.columns]
    if missing:
        raise DataError(f"the QC metric columns {missing} are missing from obs.", path="obs",
                        fix="compute the metrics with cafclassify.qc() first.")
    samples = _sample_labels(obs, sample_key, where="obs")
    n = obs.shape[0]
    auto_mt = auto_mt_threshold(n_mt_genes, n_vars)
    n_genes = obs[OBS_N_GENES].to_numpy()
    total = obs[OBS_TOTAL_COUNTS].to_numpy()
    pct_mt = obs[OBS_PCT_MT].to_numpy()
    pct_ribo = obs[OBS_PCT_RIBO].to_numpy()
    log_genes = np.log1p(n_genes.astype(np.float64))
    log_total = np.log1p(total)

    def _lt(v, t):
        return (v < t) if t is not None else np.zeros_like(v, dtype=bool)

    def _gt(v, t):
        return (v > t) if t is not None else np.zeros_like(v, dtype=bool)

    fails = {r: np.zeros(n, dtype=bool) for r in QC_REASONS[1:]}
    thresholds: dict[str, dict] = {}
    sample_order = [str(s) for s in pd.unique(samples)]
    for s in sample_order:
        idx = samples == s
        th: dict[str, Any] = {"n_cells": int(idx.sum())}
        lo, hi, med, mad = _mad_bounds(log_genes[idx], nmads)
        th["median_genes"] = float(np.expm1(med))
        if mad == 0:
            lo, hi = -np.inf, np.inf
        th["min_genes"] = float(min_genes) if min_genes is not None else _finite(np.expm1(lo))
        th["max_genes"] = float(max_genes) if max_genes is not None else _finite(np.expm1(hi))
        if has_counts:
            lo, hi, med, mad = _mad_bounds(log_total[idx], nmads)
            th["median_counts"] = float(np.expm1(med))
            if mad == 0:
                lo, hi = -np.inf, np.inf
            th["min_counts"] = float(min_counts) if min_counts is not None else _finite(np.expm1(lo))
            th["max_counts"] = _finite(np.expm1(hi))
        else:
            th["min_counts"] = th["max_counts"] = None
        if max_pct_mt is not None:
            th["max_pct_mt"] = float(max_pct_mt)
        elif auto_mt:
            _, hi, med, mad = _mad_bounds(pct_mt[idx], nmads)
            th["median_pct_mt"] = float(med)
            th["max_pct_mt"] = float(max(hi, MT_FLOOR))
        else:
            th["max_pct_mt"] = None
        th["max_pct_ribo"] = float(max_pct_ribo) if max_pct_ribo is not None else None
        fails["low_genes"][idx] = _lt(n_genes[idx], th["min_genes"])
        fails["high_genes"][idx] = _gt(n_genes[idx], th["max_genes"])
        fails["low_counts"][idx] = _lt(total[idx], th["min_counts"])
        fails["high_counts"][idx] = _gt(total[idx], th["max_counts"])
        fails["high_mt"][idx] = _gt(pct_mt[idx], th["max_pct_mt"])
        fails["high_ribo"][idx] = _gt(pct_ribo[idx], th["max_pct_ribo"])
        thresholds[s.replace("/", "_")] = th  # '/' is not allowed in h5ad keys
    if predicted_doublet is not None:
        fails["doublet"] = np.asarray(predicted_doublet, dtype=bool)

    reason = np.full(n, "pass", dtype=object)
    for r in reversed(QC_REASONS[1:]):  # first failing reason wins
        reason[fails[r]] = r
    table: dict[str, list] = {"sample": [], "n_cells": [], "n_kept": [], "n_removed": []}
    for r in QC_REASONS[1:]:
        table[f"removed_{r}"] = []
    for s in sample_order:
        idx = samples == s
        table["sample"].append(s)
        table["n_cells"].append(int(idx.sum()))
        table["n_kept"].append(int((reason[idx] == "pass").sum()))
        table["n_removed"].append(int((reason[idx] != "pass").sum()))
        for r in QC_REASONS[1:]:
            table[f"removed_{r}"].append(int((reason[idx] == r).sum()))
    return QCMarks(reason == "pass", pd.Categorical(reason, categories=list(QC_REASONS)),
                   thresholds, table, sample_order)


def qc(
    adata: AnnData,
    *,
    sample_key: str | None = None,
    nmads: float = 5.0,
    min_genes: int | None = None,
    max_genes: int | None = None,
    min_counts: float | None = None,
    max_pct_mt: float | None = None,
    max_pct_ribo: float | None = None,
    doublets: bool = False,
    layer: str | None = None,
    chunk_size: int = _CHUNK,
    random_state: int = 0,
    copy: bool = False,
) -> AnnData | None:
    """Mark low-quality cells per sample (nothing is removed; see :func:`filter_cells`).

    Parameters
    ----------
    adata
        Cells x genes, in memory or backed (:func:`cafclassify.io._lazy.open_lazy`:
        the matrix is then read from disk in blocks of ``chunk_size`` cells and only
        ``obs``/``uns`` are written, in memory). Counts are taken from ``layer``,
        else ``layers["counts"]``, else ``X``; if they are not counts
        (log-normalised data), the count-based parts are skipped (see the module
        docstring).
    sample_key
        ``obs`` column with the sample of each cell; thresholds are computed per
        sample. Defaults to the ``sample_column`` recorded by :func:`cafclassify.read`,
        else all cells are one sample.
    nmads
        Number of median absolute deviations beyond which a cell is an outlier.
    min_genes, max_genes
        Explicit bounds on detected genes (replace the MAD bounds, all samples).
    min_counts
        Explicit lower bound on total counts (replaces the MAD bound).
    max_pct_mt
        Explicit upper bound on the mitochondrial percentage (replaces MAD + floor).
    max_pct_ribo
        Upper bound on the ribosomal percentage; no ribosomal filter by default.
    doublets
        Run Scrublet (``scanpy.pp.scrublet``) per sample on the counts. On a backed
        AnnData each sample is loaded into memory in turn; samples of more than
        :data:`MAX_CELLS_DOUBLETS_BACKED` cells are refused.
    layer
        Layer holding counts (or the values to use).
    chunk_size
        Cells per block read to compute the metrics (results do not depend on it).
    random_state
        Seed for Scrublet.
    copy
        Return a modified copy instead of modifying ``adata`` (in-memory data only).

    Returns
    -------
    ``None`` (or the copy if ``copy=True``); writes

    - ``obs["n_genes_by_counts"]``, ``obs["total_counts"]``, ``obs["pct_counts_mt"]``,
      ``obs["pct_counts_ribo"]``;
    - ``obs["qc_pass"]`` (bool) and ``obs["qc_reason"]`` (categorical: ``"pass"`` or
      the first failing reason of :data:`QC_REASONS`);
    - ``obs["doublet_score"]``, ``obs["predicted_doublet"]`` (``doublets=True``);
    - ``uns["cafclassify"]["qc"]``: ``params``, ``thresholds`` (per sample),
      ``table`` (per sample: n_cells, n_kept, n_removed and removed per reason, as
      a dict of columns; ``pandas.DataFrame(table)`` gives the table), ``skipped``
      (parts skipped and why), ``matrix`` used.

    Raises
    ------
    DataError
        For an unknown ``sample_key`` or ``layer``, missing sample labels,
        scaled values, ``doublets=True`` without counts (or with a backed sample
        too large for memory), or ``copy=True``/a view on a backed AnnData.
    """
    backed = is_lazy(adata)
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int | np.integer) or chunk_size < 1:
        raise DataError(f"chunk_size must be a positive integer, got {chunk_size!r}.",
                        path="qc(chunk_size=)", fix="pass a positive number of cells per block.")
    if backed and (copy or adata.is_view):
        what = "copy=True" if copy else "a view (subset)"
        raise DataError(
            f"qc() cannot work on {what} of a backed AnnData: its matrix stays on disk and "
            "cannot be copied or subset in memory.",
            path=str(getattr(adata, "filename", "adata")),
            fix="run qc(adata) (copy=False) on the backed object itself; its obs and uns "
            "are updated in memory (write them with cafclassify.io._lazy.write_annotated or "
            "filter_cells_to_h5ad), or load the file into memory first.",
        )
    if copy:
        adata = adata.copy()
    elif adata.is_view:
        adata._init_as_actual(adata.copy())
    read_rec = adata.uns.get(K.UNS, {}).get(K.UNS_READ, {}) if isinstance(adata.uns.get(K.UNS), dict) else {}
    if sample_key is None and isinstance(read_rec, dict) and read_rec.get("sample_column"):
        sample_key = read_rec["sample_column"]
        logger.info("qc: using sample column %r recorded at read time", sample_key)
    samples = _sample_labels(adata.obs, sample_key)

    X, desc, vt = _choose_matrix(adata, layer)
    has_counts = vt == "counts"
    symbols, species, sym_src = _symbols_and_species(adata)
    mt, ribo = _gene_masks(symbols, species)
    if doublets and not has_counts:
        raise DataError(
            "doublet detection (Scrublet) needs raw counts, and these data hold "
            f"{vt} values in {desc}.",
            path=f"adata.{desc}",
            fix="pass layer= with raw counts, or doublets=False.",
        )
    if doublets and backed:
        sizes = pd.Series(samples).value_counts()
        if int(sizes.iloc[0]) > MAX_CELLS_DOUBLETS_BACKED:
            raise DataError(
                f"doublet detection on a backed (on-disk) AnnData loads one sample at a time, "
                f"and sample {sizes.index[0]!r} has {int(sizes.iloc[0])} cells (more than "
                f"{MAX_CELLS_DOUBLETS_BACKED}); Scrublet on it would need too much memory.",
                path=str(adata.filename),
                fix="pass sample_key= with a finer sample column, run qc without doublets, or "
                "load the file into memory (cafclassify.read) if the machine has the memory.",
            )
    m = _metrics(X, mt, ribo, expm1=not has_counts and vt == "lognorm", chunk_size=int(chunk_size))
    skipped: dict[str, str] = {}
    if not has_counts:
        skipped["count_thresholds"] = (
            f"{desc} holds {vt} values, not counts: total-count thresholds skipped; gene "
            "thresholds kept (detected genes do not depend on normalisation); mt/ribo % "
            "computed on expm1(values)"
        )
        logger.info("qc: %s", skipped["count_thresholds"])
    auto_mt = auto_mt_threshold(int(mt.sum()), adata.n_vars)
    if not mt.any():
        skipped["mt"] = "no mitochondrial genes (MT-/mt-) in the data"
        logger.info("qc: no mitochondrial genes found; no mitochondrial threshold.")
    elif not auto_mt and max_pct_mt is None:
        skipped["mt"] = (
            f"only {adata.n_vars} genes (< {MIN_GENES_FOR_PCT}): a gene panel or subset, so "
            "mitochondrial percentages are not comparable to whole-transcriptome values; no "
            "automatic threshold (pass max_pct_mt= to apply one)"
        )
        logger.info("qc: %s", skipped["mt"])

    obs = adata.obs
    obs[OBS_N_GENES] = m["n_genes"]
    obs[OBS_TOTAL_COUNTS] = m["total"]
    obs[OBS_PCT_MT] = m["pct_mt"]
    obs[OBS_PCT_RIBO] = m["pct_ribo"]

    predicted = doublet_info = None
    if doublets:
        order = [str(s) for s in pd.unique(samples)]
        scores, predicted, doublet_info = _scrublet(X, samples, order, random_state,
                                                    chunk_size=int(chunk_size), backed=backed)
        obs[K.OBS_DOUBLET_SCORE] = scores
        obs[OBS_PREDICTED_DOUBLET] = predicted

    marks = qc_thresholds_from_metrics(
        obs, sample_key=sample_key, nmads=nmads, min_genes=min_genes, max_genes=max_genes,
        min_counts=min_counts, max_pct_mt=max_pct_mt, max_pct_ribo=max_pct_ribo,
        has_counts=has_counts, n_mt_genes=int(mt.sum()), n_vars=adata.n_vars,
        predicted_doublet=predicted,
    )
    thresholds = marks.thresholds
    for s, msg in (doublet_info or {}).items():
        thresholds[str(s).replace("/", "_")]["doublets"] = msg
    obs[K.OBS_QC_PASS] = marks.qc_pass
    obs[K.OBS_QC_REASON] = marks.qc_reason

    sec = K.uns_section(adata, K.UNS_QC)
    sec.clear()
    sec["params"] = {
        "sample_key": sample_key,
        "nmads": float(nmads),
        "min_genes": min_genes,
        "max_genes": max_genes,
        "min_counts": min_counts,
        "max_pct_mt": max_pct_mt,
        "max_pct_ribo": max_pct_ribo,
        "doublets": bool(doublets),
        "layer": layer,
        "random_state": int(random_state),
        "mt_floor": MT_FLOOR,
        "min_genes_for_auto_mt": MIN_GENES_FOR_PCT,
        "mad": "unscaled median absolute deviation; log1p scale for genes and counts",
    }
    sec["matrix"] = desc
    sec["value_type"] = vt
    sec["species"] = species
    sec["symbols_from"] = sym_src
    sec["n_mt_genes"] = int(mt.sum())
    sec["n_ribo_genes"] = int(ribo.sum())
    sec["thresholds"] = thresholds
    sec["table"] = marks.table
    sec["skipped"] = skipped
    reason = np.asarray(marks.qc_reason)
    logger.info(
        "qc: %d of %d cells pass in %d sample(s)%s (%s)",
        int(marks.qc_pass.sum()), adata.n_obs, len(marks.samples),
        f", read from disk in blocks of {int(chunk_size)} cells" if backed else "",
        ", ".join(f"{r} {int((reason == r).sum())}" for r in QC_REASONS[1:] if (reason == r).any())
        or "no outliers",
    )
    return adata if copy else None


def _finite(v: float) -> float | None:
    return float(v) if np.isfinite(v) else None


def _sample_rows(X, idx: np.ndarray, *, chunk_size: int, backed: bool):
    """CSR float32 of the rows ``idx`` (sorted) of ``X``; on disk: read in row blocks."""
    if not backed:
        return sp.csr_matrix(X[idx], dtype=np.float32)
    parts = []
    lo, hi = int(idx[0]), int(idx[-1]) + 1
    for start in range(lo, hi, chunk_size):
        stop = min(start + chunk_size, hi)
        rows = idx[(idx >= start) & (idx < stop)] - start
        if len(rows) == 0:
            continue
        block = X[start:stop]
        block = block[rows] if sp.issparse(block) else np.asarray(block)[rows]
        parts.append(sp.csr_matrix(block, dtype=np.float32))
    return sp.vstack(parts, format="csr")


def _scrublet(X, samples: np.ndarray, order: list, random_state: int, *,
              chunk_size: int = _CHUNK, backed: bool = False):
    import scanpy as sc

    n = X.shape[0]
    scores = np.full(n, np.nan)
    predicted = np.zeros(n, dtype=bool)
    info: dict[str, str] = {}
    for s in order:
        idx = np.flatnonzero(samples == s)
        if len(idx) < _MIN_CELLS_SCRUBLET:
            info[str(s)] = f"skipped: {len(idx)} cells (< {_MIN_CELLS_SCRUBLET})"
            logger.warning("qc: sample %s has %d cells; doublet detection skipped.", s, len(idx))
            continue
        sub = AnnData(X=_sample_rows(X, idx, chunk_size=chunk_size, backed=backed))
        error = None
        # fewer principal components if the sample has few cells or variable genes
        for n_comps in (30, 10):
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    sc.pp.scrublet(
                        sub, random_state=random_state, verbose=False,
                        n_prin_comps=min(n_comps, len(idx) - 1),
                    )
                error = None
                break
            except Exception as exc:  # scrublet can fail on tiny or degenerate samples
                error = " ".join(str(exc).split())[:200]
        if error is not None:
            info[str(s)] = f"failed: {error}"
            logger.warning("qc: doublet detection failed for sample %s (%s).", s, error)
            continue
        scores[idx] = sub.obs["doublet_score"].to_numpy()
        pred = sub.obs["predicted_doublet"].to_numpy()
        predicted[idx] = np.asarray(pred, dtype=bool)
        info[str(s)] = f"scrublet: {int(predicted[idx].sum())} predicted doublets"
        del sub
    return scores, predicted, info


def _check_marked(adata: AnnData) -> np.ndarray:
    """``obs["qc_pass"]`` as bool; refuses unmarked data and data where no cell passes."""
    if K.OBS_QC_PASS not in adata.obs.columns:
        raise DataError(
            f"obs[{K.OBS_QC_PASS!r}] is missing: cells have not been marked.",
            path="adata.obs",
            fix="run cafclassify.qc(adata) first.",
        )
    keep = adata.obs[K.OBS_QC_PASS].to_numpy(dtype=bool)
    if not keep.any():
        n_before = int(adata.n_obs)
        sec = adata.uns.get(K.UNS, {}).get(K.UNS_QC, {})
        th = sec.get("thresholds", {})
        reasons = adata.obs[K.OBS_QC_REASON].value_counts()
        reasons = ", ".join(f"{k} {v}" for k, v in reasons.items() if v)
        th = "; ".join(
            f"{sample}: " + ", ".join(
                f"{k}={v:.6g}" if isinstance(v, float) else f"{k}={v}"
                for k, v in (t.items() if isinstance(t, dict) else [])
                if k.startswith(("min_", "max_")) and v is not None
            )
            for sample, t in th.items()
        ) or "none"
        raise DataError(
            f"no cell passes QC ({n_before} cells: {reasons}; thresholds per sample: {th}).",
            path="adata",
            fix="check that the data hold what you expect (e.g. counts, the right species for "
            "MT- genes); relax the thresholds (larger nmads, or explicit min_genes=, "
            "min_counts=, max_pct_mt=) and run qc() again.",
        )
    return keep


def filter_cells(adata: AnnData, *, copy: bool = False) -> AnnData | None:
    """Remove the cells :func:`qc` marked as failing (``obs["qc_pass"] == False``).

    Parameters
    ----------
    adata
        Data on which :func:`qc` was run (in memory; for a backed AnnData use
        :func:`filter_cells_to_h5ad`).
    copy
        Return a filtered copy instead of subsetting ``adata`` in place.

    Returns
    -------
    ``None`` (or the filtered copy); records ``uns["cafclassify"]["qc"]["filtered"]``
    = ``{"n_before", "n_after"}``.

    Raises
    ------
    DataError
        If :func:`qc` has not been run, if no cell would remain, or for a backed AnnData.
    """
    keep = _check_marked(adata)
    if is_lazy(adata):
        raise DataError(
            "filter_cells() cannot subset a backed AnnData in memory (its matrix is on disk).",
            path=str(adata.filename),
            fix="write the passing cells to a new file with "
            "cafclassify.pp.filter_cells_to_h5ad(adata, out).",
        )
    n_before, n_after = int(adata.n_obs), int(keep.sum())
    if copy:
        out = adata[keep].copy()
    else:
        adata._inplace_subset_obs(keep)
        out = adata
    K.uns_section(out, K.UNS_QC)["filtered"] = {"n_before": n_before, "n_after": n_after}
    logger.info("filter_cells: kept %d of %d cells (%d removed).", n_after, n_before,
                n_before - n_after)
    return out if copy else None


def filter_cells_to_h5ad(
    adata: AnnData,
    out: str | os.PathLike,
    *,
    chunk_size: int = _CHUNK,
    compression: str | None = "gzip",
    stamp: Callable[[AnnData], None] | None = None,
    n_jobs: int = 1,
) -> Path:
    """Write the cells :func:`qc` marked as passing to a new ``.h5ad``, block by block.

    The out-of-core counterpart of ``filter_cells(adata, copy=True)`` followed by
    writing: the result file equals that copy written with anndata (same checks,
    same ``uns["cafclassify"]["qc"]["filtered"]`` record), but the matrices are
    copied from the source file in blocks of ``chunk_size`` cells
    (:func:`cafclassify.io._shard.filter_cells_h5ad`). ``adata`` is not modified.

    Parameters
    ----------
    adata
        Backed AnnData (:func:`cafclassify.io._lazy.open_lazy`) on which :func:`qc` was
        run; its in-memory ``obs``, ``obsm``, ``var``, ``varm`` and ``uns`` are written
        (subset to the passing cells), its matrices are read from its file.
    out
        Output ``.h5ad`` (written atomically; must differ from the source file).
    chunk_size
        Cells per block read and written.
    compression
        h5py compression of the matrices (``"gzip"`` or ``None``).
    stamp
        Called with the filtered AnnData without its matrices just before it is
        written (e.g. provenance).
    n_jobs
        Processes writing the matrices (``X`` and each layer) at the same time.

    Returns
    -------
    The path written.

    Raises
    ------
    DataError
        If :func:`qc` has not been run, or no cell passes.
    """
    from ..io._shard import filter_cells_h5ad

    keep = _check_marked(adata)
    n_before, n_after = int(adata.n_obs), int(keep.sum())

    def _stamp(sub: AnnData) -> None:
        K.uns_section(sub, K.UNS_QC)["filtered"] = {"n_before": n_before, "n_after": n_after}
        if stamp is not None:
            stamp(sub)

    path = filter_cells_h5ad(adata, out, keep, chunk_size=chunk_size, compression=compression,
                             stamp=_stamp, n_jobs=n_jobs)
    logger.info("filter_cells_to_h5ad: kept %d of %d cells (%d removed) -> %s", n_after, n_before,
                n_before - n_after, out)
    return path
