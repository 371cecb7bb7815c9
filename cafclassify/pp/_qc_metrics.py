"""Per-cell QC metrics, computed chunk by chunk without densifying.

:func:`cafclassify.pp.qc` marks cells from the usual scanpy QC metrics
(``n_genes_by_counts``, ``total_counts``, ``pct_counts_mt``, ``pct_counts_ribo``);
this module chooses the matrix they are computed on (:func:`_choose_matrix`: the
``layer`` asked for, else ``layers["counts"]``, else ``X``), finds the mitochondrial
(``MT-``/``mt-``) and ribosomal protein genes (:func:`_gene_masks`) and computes the
metrics (:func:`_metrics`).

Data without counts (already log-normalised) have no meaningful library size; the
number of detected genes is unchanged by normalisation and log transforms (zeros stay
zeros), and mitochondrial and ribosomal percentages are computed on ``expm1(X)``, which
is exact for log1p(normalize_total) data (per-cell scaling cancels in a fraction) and
an approximation for other log transforms.

Out of core: on a backed AnnData the matrix is read from disk in row blocks of
``chunk_size`` cells; every metric is per cell, so the result is identical to the
in-memory run whatever the block size. ``_CHUNK`` is the default block size of every
QC step (:func:`~cafclassify.pp.qc`, Scrublet's reads in :mod:`cafclassify.pp._doublets`,
:func:`~cafclassify.pp.filter_cells_to_h5ad`).
"""

from __future__ import annotations

import logging
import re

import numpy as np
import scipy.sparse as sp
from anndata import AnnData

from .. import _keys as K
from .._errors import DataError
from ..io._canonical import canonical
from ..io._lazy import lazy_layer, lazy_layer_names

logger = logging.getLogger(__name__)

_CHUNK = 10_000  # cells per block: same speed as 50k on disk, a fifth of the memory

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
