"""The gated fibroblasts as the classifier reads them: masks, rows, values, statistics.

Shared by the seed rule, the features, training and prediction: which cells are
fibroblasts (``obs["caf_lineage"] == "fibroblast"``), their rows as CSR (in memory or
read once from a backed file: :func:`fibroblasts_in_memory`), log-normalisation of raw
counts on the fly (counts per 10,000, ``log1p``), z-scores, and values that can be
written to ``uns``.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.sparse as sp

from .. import _keys as K
from .._utils import GatheredRows, _is_backed_matrix, get_matrix, stored_row_bytes, take_rows

if TYPE_CHECKING:
    from anndata import AnnData

logger = logging.getLogger(__name__)


#: sets of the "subtype" group that are separate axes, not competing classes
AXIS_SETS = ("LTBP2_CAF",)
STATE_SETS = ("senescence", "cycling")
_CHUNK = 20000
#: fibroblasts per prediction block: per-cell work, so the block size changes memory only
#: (dense blocks of cells x model genes, several copies), never the results
_PREDICT_CHUNK = 5000


#: training on a backed file gathers the fibroblasts' rows into memory once when they take
#: at most this much (CSR values + indices); above it they are re-read from disk per use
GATHER_MAX_BYTES = 4 * 2**30

#: rows gathered for the current train/classify call: {(id(adata), layer): GatheredRows}
_GATHERED: contextvars.ContextVar[dict | None] = contextvars.ContextVar("cafclassify_gathered", default=None)


def _matrix(adata: AnnData, layer: str | None):
    gathered = (_GATHERED.get() or {}).get((id(adata), layer))
    return gathered if gathered is not None else get_matrix(adata, layer)[0]


@contextlib.contextmanager
def _fibroblasts_in_memory(adata: AnnData, layer: str | None, rows: np.ndarray) -> Iterator[None]:
    """Read the fibroblasts of an on-disk matrix once for the duration of a training run.

    Training visits the fibroblasts' rows several times (HVGs, feature statistics, seeds,
    self-training, prediction, the LTBP2 axis); on a backed file each visit re-reads
    scattered rows. In memory, and for rows above :data:`GATHER_MAX_BYTES`, nothing
    changes. The results are the same either way.
    """
    X = get_matrix(adata, layer)[0]
    if not _is_backed_matrix(X) or rows.size == 0:
        yield
        return
    need = stored_row_bytes(X, rows)
    if need > GATHER_MAX_BYTES:
        logger.info("fibroblast rows take %.1f GB (> %.1f GB): read from disk per use",
                    need / 2**30, GATHER_MAX_BYTES / 2**30)
        yield
        return
    gathered = GatheredRows(X, rows)
    gathered.value_type = _value_type(X)
    logger.info("read %d fibroblasts (%.2f GB) from disk once for training", rows.size, gathered.nbytes / 2**30)
    token = _GATHERED.set({**(_GATHERED.get() or {}), (id(adata), layer): gathered})
    try:
        yield
    finally:
        _GATHERED.reset(token)


def _fibroblast_mask(adata: AnnData, lineage_key: str | None, *, warn: bool = True) -> tuple[np.ndarray, bool]:
    if lineage_key is not None and lineage_key in adata.obs:
        mask = (adata.obs[lineage_key].astype(str) == "fibroblast").to_numpy()
        return mask, True
    if warn:
        logger.warning(
            "obs[%r] not found: treating ALL %d cells as fibroblasts. Run cafclassify.gate first "
            "unless the data are already fibroblast-only.", lineage_key, adata.n_obs,
        )
    return np.ones(adata.n_obs, dtype=bool), False


def _load_library(signatures):
    from ..genesets import load_signatures

    return load_signatures(signatures)


def _symbols(adata: AnnData) -> np.ndarray:
    names = adata.var_names.astype(str).to_numpy()
    if K.VAR_SYMBOL in adata.var:
        sym = adata.var[K.VAR_SYMBOL].astype(str).to_numpy()
        bad = (sym == "") | (sym == "nan")
        return np.where(bad, names, sym)
    return names


def _value_type(X) -> str:
    if isinstance(X, GatheredRows):  # decided once, on the whole matrix
        return X.value_type
    from ..io._valuetype import detect_value_type

    return detect_value_type(X)


def _rows_csr(X, rows: np.ndarray) -> sp.csr_matrix:
    """Rows of X (in-memory or backed) as CSR, without densifying all genes."""
    block = take_rows(X, rows)
    return sp.csr_matrix(block) if sp.issparse(block) else sp.csr_matrix(np.asarray(block))


#: rows scaled at a time by :func:`_lognorm`
_LOGNORM_ROWS = 10_000


def _float64_csr(block) -> sp.csr_matrix:
    """A float64 CSR copy of ``block`` that shares no array with it (scipy's
    ``csr_matrix(block, dtype=float64, copy=True)`` also copies the float32 values it
    then casts: 1.4 GB more at 150,000 fibroblasts)."""
    if not sp.issparse(block):
        return sp.csr_matrix(np.asarray(block, dtype=np.float64))
    b = sp.csr_matrix(block)
    return sp.csr_matrix((b.data.astype(np.float64, copy=True), b.indices.copy(), b.indptr.copy()),
                         shape=b.shape)


def _lognorm(block: sp.csr_matrix, counts: bool, *, copy: bool = False, dtype=np.float64) -> sp.csr_matrix:
    """``ln(1 + x * 1e4 / total)`` of counts (log values are only cast), as ``dtype``
    (``copy=True`` guarantees the result shares no memory with ``block``; counts always
    give arrays of their own).

    The arithmetic is float64 whatever ``dtype``, ``_LOGNORM_ROWS`` rows at a time, each
    value written once into the result (``block`` itself is not modified): the former
    ``diags(1e4 / total) @ block`` held three copies at once, and on the 1M-cell
    benchmark's 150,074 fibroblasts (3.4e8 stored values) the classify step peaked at
    13.0 GB. A float32 result is the float64 value rounded once, and no float64 copy of
    the whole matrix is held for it. Stored zeros are dropped, as the product did.
    """
    dtype = np.dtype(dtype)
    if not counts and dtype == np.float64:
        return _float64_csr(block) if copy else sp.csr_matrix(block, dtype=np.float64)
    block = sp.csr_matrix(block)
    data = np.empty(block.data.size, dtype=dtype)
    for a in range(0, block.shape[0], _LOGNORM_ROWS):
        b = min(a + _LOGNORM_ROWS, block.shape[0])
        lo, hi = block.indptr[a], block.indptr[b]
        rows = sp.csr_matrix((block.data[lo:hi].astype(np.float64), block.indices[lo:hi],
                              block.indptr[a : b + 1] - lo), shape=(b - a, block.shape[1]))
        if counts:
            tot = np.asarray(rows.sum(axis=1)).ravel()
            tot[tot == 0] = 1.0
            rows.data *= np.repeat(1e4 / tot, np.diff(rows.indptr))
            np.log1p(rows.data, out=rows.data)
        data[lo:hi] = rows.data
    out = sp.csr_matrix((data, block.indices.copy(), block.indptr.copy()), shape=block.shape)
    out.eliminate_zeros()
    return out


def _std_z(values: np.ndarray) -> np.ndarray:
    """Column-wise z-score (mean / standard deviation; 1 if the SD is 0)."""
    v = np.asarray(values, dtype=np.float64)
    sd = np.nanstd(v, axis=0)
    return (v - np.nanmean(v, axis=0)) / np.where(sd > 1e-12, sd, 1.0)


def _robust_z(values: np.ndarray, ref: np.ndarray | None = None) -> np.ndarray:
    """Robust z-score (median / 1.4826 MAD; SD if MAD is 0) of a 1-D array, or column-wise
    of a 2-D one; ``ref`` (bool mask of rows) takes the median and MAD from those rows."""
    v = np.asarray(values, dtype=np.float64)
    r = v if ref is None else v[np.asarray(ref, dtype=bool)]
    med = np.nanmedian(r, axis=0)
    mad = 1.4826 * np.nanmedian(np.abs(r - med), axis=0)
    sd = np.nanstd(r, axis=0)
    scale = np.where(mad > 1e-12, mad, np.where(sd > 1e-12, sd, 1.0))
    return (v - med) / scale


def _uns_safe(obj: Any) -> Any:
    """Make a (JSON-like) object writable to h5ad uns."""
    import json

    from ..model import _jsonable

    obj = _jsonable(obj)
    if obj is None:
        return "NA"
    if isinstance(obj, dict):
        return {k: _uns_safe(v) for k, v in obj.items()}
    if isinstance(obj, list):
        if not obj:
            return np.array([], dtype=str)
        if all(isinstance(v, bool) for v in obj):
            return np.array(obj, dtype=bool)
        if all(isinstance(v, int | float) and not isinstance(v, bool) for v in obj):
            return np.array(obj, dtype=np.float64)
        if all(isinstance(v, str) for v in obj):
            return np.array(obj, dtype=object).astype(str)
        if all(isinstance(v, list) and all(isinstance(x, int | float) for x in v) for v in obj):
            try:
                return np.array(obj, dtype=np.float64)
            except ValueError:
                pass
        return json.dumps(obj)
    return obj


def _detect_species(symbols: Sequence[str]) -> str:
    from ..genes import detect_species

    return detect_species(list(symbols))


def _fibroblast_lognorm(adata, rows: np.ndarray, layer) -> sp.csr_matrix:
    """Log-normalised ``rows`` (fibroblast positions in ``adata``) as float32 CSR, in that order.

    float32, scanpy's precision: the values feed the fibroblast graph (which works in
    float32 anyway), the gene audit and the programme evidence (which sum them in
    float64). They are held beside the gathered counts kept for training; float64 values
    of the 1M-cell benchmark's 150,074 fibroblasts took 2.6 GB, float32 ones take half.
    """
    X = _matrix(adata, layer)
    counts = _value_type(X) == "counts"
    if isinstance(X, GatheredRows) and X.holds_exactly(rows):
        # every gathered row, in order: read the gathered block itself (_lognorm copies
        # it) rather than a copy of it, one copy of the fibroblasts fewer (2.6 GB at 1M cells)
        return _lognorm(X.block, counts, copy=True, dtype=np.float32)
    return _lognorm(_rows_csr(X, rows), counts, dtype=np.float32)
