"""Classifier features: which genes, scaled how, read in blocks.

Features are the signature genes of the library's subtype and state sets present in
the data, plus, with ``n_hvg > 0``, the highly variable genes among fibroblasts (genes
with zero variance among fibroblasts are dropped and counted). Values are
log-normalised (raw counts are normalised to 10,000 per cell and log1p-transformed on the
fly), then scaled per gene with the mean/SD of the training fibroblasts (clipped to
+-10). Only the fibroblasts x features block is ever dense, in chunks.

Defaults, measured (``benchmarks/bench_real.py``, docs/classifier.md): signature genes
only (``n_hvg=0``) gave ARI 0.600 on the breast atlas sample and 0.660 on the synthetic
control, against 0.547 / 0.650 with 2,000 HVGs added; kNN-averaged features
(``feature_smoothing=True``) gave 0.541 / 0.648 and are off by default (the neighbourhood
already acts in the seed rule).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp

from .._errors import ModelError
from ._fibroblasts import (
    _CHUNK,
    _PREDICT_CHUNK,
    _detect_species,
    _lognorm,
    _matrix,
    _rows_csr,
    _symbols,
    _value_type,
)

logger = logging.getLogger(__name__)


class _Features:
    """Maps model genes to data columns and produces scaled dense blocks."""

    def __init__(self, adata, genes: Sequence[str], layer, *, model_species: str = "unknown",
                 model_path: str | None = None, min_overlap: float = 0.0):
        self.X = _matrix(adata, layer)
        sym = _symbols(adata)
        from ..genes import recorded_species

        data_species = recorded_species(adata) or _detect_species(sym)
        target = list(genes)
        self.mapped_from = None
        if model_species in ("human", "mouse") and data_species in ("human", "mouse") and model_species != data_species:
            from ..genes import to_species

            m = to_species(list(genes), source=model_species, target=data_species)
            target = [m.get(g, "") for g in genes]
            self.mapped_from = f"{model_species}->{data_species}"
        first: dict[str, int] = {}
        for i, s in enumerate(sym):
            first.setdefault(s, i)
        self.col = np.array([first.get(g, -1) if g else -1 for g in target], dtype=np.int64)
        self.found = self.col >= 0
        self.overlap = float(self.found.mean()) if len(genes) else 0.0
        self.missing = [g for g, f in zip(genes, self.found, strict=True) if not f]
        self.counts = _value_type(self.X) == "counts"
        self.report = {
            "n_model_genes": len(genes), "n_found": int(self.found.sum()),
            "overlap": self.overlap, "species_mapping": self.mapped_from or "none",
            "data_species": data_species, "missing_examples": self.missing[:25],
            "input_counts_normalised": bool(self.counts),
        }
        from ..genes import species_mismatch

        warning = species_mismatch(model_species, data_species, model_path=model_path)
        if warning is not None:  # a model of one species on data of another: WARNING + uns
            self.report["species_warning"] = warning
        if self.overlap < min_overlap:
            raise ModelError(
                f"only {self.found.sum()} of {len(genes)} model genes ({self.overlap:.0%}) are in "
                f"the data, below the minimum overlap {min_overlap:.0%}"
                + (f" (after {self.mapped_from} orthologue mapping)" if self.mapped_from else "") + ".",
                path=model_path or "<in-memory CafModel>",
                fix="check the gene identifiers/species of the data (var_names or "
                    "var['cafclassify_symbol']), or train a model on data measured like these.",
            )

    def raw_block(self, rows: np.ndarray) -> np.ndarray:
        """Log-normalised values of the found features (missing -> NaN), dense rows x features."""
        block = _lognorm(_rows_csr(self.X, rows), self.counts)
        out = np.full((rows.size, self.col.size), np.nan, dtype=np.float64)
        out[:, self.found] = block[:, self.col[self.found]].toarray()
        return out

    def stats(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        s = np.zeros(self.col.size)
        ss = np.zeros(self.col.size)
        for start in range(0, rows.size, _CHUNK):
            b = np.nan_to_num(self.raw_block(rows[start:start + _CHUNK]))
            s += b.sum(axis=0)
            ss += (b * b).sum(axis=0)
        n = max(rows.size, 1)
        mean = s / n
        sd = np.sqrt(np.maximum(ss / n - mean * mean, 0.0))
        return mean, sd


def _smoothed(graph: sp.csr_matrix, rows_fn, n: int, n_features: int) -> np.ndarray:
    """``graph @ Z`` for the features ``Z`` of all ``n`` fibroblasts (``rows_fn(positions)``)."""
    Z = np.empty((n, n_features), dtype=np.float64)
    for start in range(0, n, _PREDICT_CHUNK):
        p = np.arange(start, min(start + _PREDICT_CHUNK, n))
        Z[p] = rows_fn(p)
    return np.asarray(graph @ Z)


def _scale(raw: np.ndarray, mean: np.ndarray, sd: np.ndarray) -> np.ndarray:
    safe = np.where(sd > 1e-8, sd, 1.0)
    z = (raw - mean[None, :]) / safe[None, :]
    z[np.isnan(z)] = 0.0  # missing genes sit at the training mean
    return np.clip(z, -10.0, 10.0)


def _batch_scaled(feats: _Features, rows: np.ndarray, batches: np.ndarray | None,
                  mean: np.ndarray, sd: np.ndarray, per_batch: bool) -> np.ndarray:
    """Dense scaled block for ``rows`` (per-batch statistics if ``per_batch``)."""
    raw = feats.raw_block(rows)
    if not per_batch:
        return _scale(raw, mean, sd)
    out = np.empty_like(raw)
    groups = np.zeros(rows.size, dtype=int) if batches is None else pd.factorize(batches)[0]
    for g in np.unique(groups):
        m = groups == g
        mu = np.nanmean(raw[m], axis=0)
        s = np.nanstd(raw[m], axis=0)
        out[m] = _scale(raw[m], np.nan_to_num(mu), np.nan_to_num(s))
    return out


#: HVGs are chosen on at most this many fibroblasts (a seeded random subsample above it),
#: so atlas-scale data never load every fibroblast's profile at once
HVG_MAX_CELLS = 50_000


def _hvg(adata, fib_rows, layer, counts: bool, n_hvg: int, batch_key: str | None,
         random_state: int = 0) -> np.ndarray:
    import anndata as ad
    import scanpy as sc

    if int(n_hvg) <= 0:
        return np.array([], dtype=np.int64)
    X = _matrix(adata, layer)
    if fib_rows.size > HVG_MAX_CELLS:
        rng = np.random.default_rng(random_state)
        fib_rows = np.sort(rng.choice(fib_rows, size=HVG_MAX_CELLS, replace=False))
        logger.info("HVGs chosen on a random subsample of %d fibroblasts", HVG_MAX_CELLS)
    block = _lognorm(_rows_csr(X, fib_rows), counts)
    tmp = ad.AnnData(X=sp.csr_matrix(block, dtype=np.float32))
    if batch_key is not None:
        tmp.obs["batch"] = adata.obs[batch_key].to_numpy()[fib_rows].astype(str)
    n_top = int(min(n_hvg, adata.n_vars))
    nz = np.asarray((block != 0).sum(axis=0)).ravel()
    try:
        sc.pp.highly_variable_genes(tmp, n_top_genes=n_top, flavor="seurat",
                                    batch_key="batch" if batch_key is not None else None)
        hv = tmp.var["highly_variable"].to_numpy()
    except (ValueError, IndexError) as exc:  # tiny data: fall back to variance ranking
        logger.info("HVG selection fell back to variance ranking (%s)", exc)
        mean = np.asarray(block.mean(axis=0)).ravel()
        var = np.asarray(block.multiply(block).mean(axis=0)).ravel() - mean**2
        hv = np.zeros(adata.n_vars, dtype=bool)
        hv[np.argsort(-var, kind="stable")[:n_top]] = True
    return np.flatnonzero(hv & (nz > 0))


def _signature_gene_idx(adata, library, set_names) -> tuple[np.ndarray, dict]:
    from ..genesets import match_signatures

    sub = library.subset(names=[s for s in set_names if s in library.sets])
    matched = match_signatures(sub, adata, min_coverage=0.0, on_low_coverage="keep")
    idx, missing = [], {}
    for name, ms in matched.items():
        w = np.asarray(ms.weights)
        idx.extend(np.asarray(ms.indices)[w != 0].tolist())
        if ms.missing:
            missing[name] = list(ms.missing)
    return np.unique(np.asarray(idx, dtype=np.int64)), missing


