"""Per-sample cell quality control that marks cells; removal is a separate step.

:func:`qc` computes the usual scanpy QC metrics (``n_genes_by_counts``,
``total_counts``, ``pct_counts_mt``, ``pct_counts_ribo``) chunk by chunk without
densifying (:mod:`cafclassify.pp._qc_metrics`), derives outlier thresholds per
sample from median absolute deviations (MAD), and marks every cell with
``obs["qc_pass"]`` and the first failing reason in ``obs["qc_reason"]``.
:func:`~cafclassify.pp.filter_cells` removes the failing cells, explicitly
(:mod:`cafclassify.pp._filter`).

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
- ``doublet``: Scrublet's call (``doublets=True``, counts only;
  :mod:`cafclassify.pp._doublets`).

MAD is the plain median absolute deviation (not scaled to a standard deviation),
as in the single-cell best-practices book (Heumos et al. 2023, Nat Rev Genet),
with ``nmads=5`` as default: only clear outliers are marked.

Data without counts (already log-normalised) have no meaningful library size,
so the count thresholds are skipped (recorded and logged); doublet detection, which
needs counts, is refused with an error that says to pass a counts ``layer=`` or
``doublets=False``.
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
:func:`~cafclassify.pp.filter_cells_to_h5ad` then writes the passing cells to a new
file block by block (:func:`cafclassify.io._filter_h5ad.filter_cells_h5ad`). Scrublet
on a backed object reads one sample at a time into memory and refuses samples of
more than :data:`MAX_CELLS_DOUBLETS_BACKED` cells.

The thresholds, marks and per-sample table are computed from the per-cell metric
columns by one function, :func:`qc_thresholds_from_metrics`, used by :func:`qc` and
by the shard merge (:func:`cafclassify.io._shard.requalify_qc`).
"""

from __future__ import annotations

import logging
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
from anndata import AnnData

from .. import _keys as K
from .._errors import DataError
from ..io._lazy import is_lazy
from ._doublets import _scrublet
from ._qc_metrics import _CHUNK, _choose_matrix, _gene_masks, _metrics, _symbols_and_species

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


def _mad_bounds(x: np.ndarray, nmads: float) -> tuple[float, float, float, float]:
    med = float(np.median(x))
    mad = float(np.median(np.abs(x - med)))
    return med - nmads * mad, med + nmads * mad, med, mad


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
