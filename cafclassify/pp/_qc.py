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
"""

from __future__ import annotations

import logging
import re
import warnings

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData

from .. import _keys as K
from .._errors import DataError

__all__ = [
    "MIN_GENES_FOR_PCT",
    "MT_FLOOR",
    "OBS_N_GENES",
    "OBS_PCT_MT",
    "OBS_PCT_RIBO",
    "OBS_PREDICTED_DOUBLET",
    "OBS_TOTAL_COUNTS",
    "QC_REASONS",
    "filter_cells",
    "qc",
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
_CHUNK = 10000
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


def _metrics(X, mt: np.ndarray, ribo: np.ndarray, *, expm1: bool) -> dict[str, np.ndarray]:
    """n_genes, total, pct_mt, pct_ribo per cell; chunked, sparse stays sparse."""
    n = X.shape[0]
    n_genes = np.zeros(n, dtype=np.int64)
    total = np.zeros(n, dtype=np.float64)
    mt_sum = np.zeros(n, dtype=np.float64)
    ribo_sum = np.zeros(n, dtype=np.float64)
    mt_idx, ribo_idx = np.flatnonzero(mt), np.flatnonzero(ribo)
    for start in range(0, n, _CHUNK):
        stop = min(start + _CHUNK, n)
        block = X[start:stop]
        if sp.issparse(block):
            block = sp.csr_matrix(block, dtype=np.float64)
            block.eliminate_zeros()
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
    with np.errstate(divide="ignore", invalid="ignore"):
        pct_mt = np.where(total > 0, 100.0 * mt_sum / total, 0.0)
        pct_ribo = np.where(total > 0, 100.0 * ribo_sum / total, 0.0)
    return {"n_genes": n_genes, "total": total, "pct_mt": pct_mt, "pct_ribo": pct_ribo}


def _mad_bounds(x: np.ndarray, nmads: float) -> tuple[float, float, float, float]:
    med = float(np.median(x))
    mad = float(np.median(np.abs(x - med)))
    return med - nmads * mad, med + nmads * mad, med, mad


def _choose_matrix(adata: AnnData, layer: str | None):
    """Return (matrix, description, has_counts)."""
    from ..io import detect_value_type

    if layer is not None:
        if layer not in adata.layers:
            raise DataError(
                f"layer {layer!r} is not in the data (layers: {list(adata.layers.keys()) or 'none'}).",
                path="adata.layers",
                fix="pass one of the existing layers, or layer=None.",
            )
        X, desc = adata.layers[layer], f"layers[{layer!r}]"
    elif K.LAYER_COUNTS in adata.layers:
        X, desc = adata.layers[K.LAYER_COUNTS], f"layers[{K.LAYER_COUNTS!r}]"
    else:
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
    random_state: int = 0,
    copy: bool = False,
) -> AnnData | None:
    """Mark low-quality cells per sample (nothing is removed; see :func:`filter_cells`).

    Parameters
    ----------
    adata
        Cells x genes. Counts are taken from ``layer``, else ``layers["counts"]``,
        else ``X``; if they are not counts (log-normalised data), the count-based
        parts are skipped (see the module docstring).
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
        Run Scrublet (``scanpy.pp.scrublet``) per sample on the counts.
    layer
        Layer holding counts (or the values to use).
    random_state
        Seed for Scrublet.
    copy
        Return a modified copy instead of modifying ``adata``.

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
        scaled values, or ``doublets=True`` without counts.
    """
    if copy:
        adata = adata.copy()
    elif adata.is_view:
        adata._init_as_actual(adata.copy())
    read_rec = adata.uns.get(K.UNS, {}).get(K.UNS_READ, {}) if isinstance(adata.uns.get(K.UNS), dict) else {}
    if sample_key is None and isinstance(read_rec, dict) and read_rec.get("sample_column"):
        sample_key = read_rec["sample_column"]
        logger.info("qc: using sample column %r recorded at read time", sample_key)
    if sample_key is not None:
        if sample_key not in adata.obs.columns:
            raise DataError(
                f"sample_key={sample_key!r} is not an obs column.",
                path="adata.obs",
                fix=f"use one of {list(adata.obs.columns)[:20]} or sample_key=None.",
            )
        if adata.obs[sample_key].isna().any():
            raise DataError(
                f"obs[{sample_key!r}] has missing values.",
                path="adata.obs",
                fix="give every cell a sample label.",
            )
        samples = adata.obs[sample_key].astype(str).to_numpy()
    else:
        samples = np.full(adata.n_obs, "all", dtype=object)

    X, desc, vt = _choose_matrix(adata, layer)
    has_counts = vt == "counts"
    symbols, species, sym_src = _symbols_and_species(adata)
    mt, ribo = _gene_masks(symbols, species)
    m = _metrics(X, mt, ribo, expm1=not has_counts and vt == "lognorm")
    skipped: dict[str, str] = {}
    if not has_counts:
        skipped["count_thresholds"] = (
            f"{desc} holds {vt} values, not counts: total-count thresholds skipped; gene "
            "thresholds kept (detected genes do not depend on normalisation); mt/ribo % "
            "computed on expm1(values)"
        )
        logger.info("qc: %s", skipped["count_thresholds"])
    auto_mt = bool(mt.any()) and adata.n_vars >= MIN_GENES_FOR_PCT
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
    if doublets and not has_counts:
        raise DataError(
            "doublet detection (Scrublet) needs raw counts, and these data hold "
            f"{vt} values in {desc}.",
            path=f"adata.{desc}",
            fix="pass layer= with raw counts, or doublets=False.",
        )

    obs = adata.obs
    obs[OBS_N_GENES] = m["n_genes"]
    obs[OBS_TOTAL_COUNTS] = m["total"]
    obs[OBS_PCT_MT] = m["pct_mt"]
    obs[OBS_PCT_RIBO] = m["pct_ribo"]

    fails = {r: np.zeros(adata.n_obs, dtype=bool) for r in QC_REASONS[1:]}
    thresholds: dict[str, dict] = {}
    log_genes = np.log1p(m["n_genes"].astype(np.float64))
    log_total = np.log1p(m["total"])
    sample_order = list(pd.unique(samples))
    for s in sample_order:
        idx = samples == s
        th: dict = {"n_cells": int(idx.sum())}
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
            _, hi, med, mad = _mad_bounds(m["pct_mt"][idx], nmads)
            th["median_pct_mt"] = float(med)
            th["max_pct_mt"] = float(max(hi, MT_FLOOR))
        else:
            th["max_pct_mt"] = None
        th["max_pct_ribo"] = float(max_pct_ribo) if max_pct_ribo is not None else None

        def _lt(v, t):
            return (v < t) if t is not None else np.zeros_like(v, dtype=bool)

        def _gt(v, t):
            return (v > t) if t is not None else np.zeros_like(v, dtype=bool)

        fails["low_genes"][idx] = _lt(m["n_genes"][idx], th["min_genes"])
        fails["high_genes"][idx] = _gt(m["n_genes"][idx], th["max_genes"])
        fails["low_counts"][idx] = _lt(m["total"][idx], th["min_counts"])
        fails["high_counts"][idx] = _gt(m["total"][idx], th["max_counts"])
        fails["high_mt"][idx] = _gt(m["pct_mt"][idx], th["max_pct_mt"])
        fails["high_ribo"][idx] = _gt(m["pct_ribo"][idx], th["max_pct_ribo"])
        thresholds[str(s).replace("/", "_")] = th  # '/' is not allowed in h5ad keys

    if doublets:
        scores, predicted, doublet_info = _scrublet(X, samples, sample_order, random_state)
        obs[K.OBS_DOUBLET_SCORE] = scores
        obs[OBS_PREDICTED_DOUBLET] = predicted
        fails["doublet"] = predicted
        for s, msg in doublet_info.items():
            thresholds[str(s).replace("/", "_")]["doublets"] = msg

    reason = np.full(adata.n_obs, "pass", dtype=object)
    for r in reversed(QC_REASONS[1:]):  # first failing reason wins
        reason[fails[r]] = r
    obs[K.OBS_QC_PASS] = reason == "pass"
    obs[K.OBS_QC_REASON] = pd.Categorical(reason, categories=list(QC_REASONS))

    table: dict[str, list] = {"sample": [], "n_cells": [], "n_kept": [], "n_removed": []}
    for r in QC_REASONS[1:]:
        table[f"removed_{r}"] = []
    for s in sample_order:
        idx = samples == s
        table["sample"].append(str(s))
        table["n_cells"].append(int(idx.sum()))
        table["n_kept"].append(int((reason[idx] == "pass").sum()))
        table["n_removed"].append(int((reason[idx] != "pass").sum()))
        for r in QC_REASONS[1:]:
            table[f"removed_{r}"].append(int((reason[idx] == r).sum()))

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
    sec["table"] = table
    sec["skipped"] = skipped
    n_pass = int((reason == "pass").sum())
    logger.info(
        "qc: %d of %d cells pass in %d sample(s) (%s)",
        n_pass, adata.n_obs, len(sample_order),
        ", ".join(f"{r} {int((reason == r).sum())}" for r in QC_REASONS[1:] if (reason == r).any())
        or "no outliers",
    )
    return adata if copy else None


def _finite(v: float) -> float | None:
    return float(v) if np.isfinite(v) else None


def _scrublet(X, samples: np.ndarray, order: list, random_state: int):
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
        sub = AnnData(X=sp.csr_matrix(X[idx], dtype=np.float32))
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
    return scores, predicted, info


def filter_cells(adata: AnnData, *, copy: bool = False) -> AnnData | None:
    """Remove the cells :func:`qc` marked as failing (``obs["qc_pass"] == False``).

    Parameters
    ----------
    adata
        Data on which :func:`qc` was run.
    copy
        Return a filtered copy instead of subsetting ``adata`` in place.

    Returns
    -------
    ``None`` (or the filtered copy); records ``uns["cafclassify"]["qc"]["filtered"]``
    = ``{"n_before", "n_after"}``.

    Raises
    ------
    DataError
        If :func:`qc` has not been run, or if no cell would remain.
    """
    if K.OBS_QC_PASS not in adata.obs.columns:
        raise DataError(
            f"obs[{K.OBS_QC_PASS!r}] is missing: cells have not been marked.",
            path="adata.obs",
            fix="run cafclassify.qc(adata) first.",
        )
    keep = adata.obs[K.OBS_QC_PASS].to_numpy(dtype=bool)
    n_before, n_after = int(adata.n_obs), int(keep.sum())
    if n_after == 0:
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
    if copy:
        out = adata[keep].copy()
    else:
        adata._inplace_subset_obs(keep)
        out = adata
    K.uns_section(out, K.UNS_QC)["filtered"] = {"n_before": n_before, "n_after": n_after}
    logger.info("filter_cells: kept %d of %d cells (%d removed).", n_after, n_before,
                n_before - n_after)
    return out if copy else None
