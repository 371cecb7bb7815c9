"""What the values of a matrix read are, and what :func:`~cafclassify.read` does with them.

The value type is detected from the numbers by :mod:`cafclassify.io._valuetype` (which
states the rules); this module turns the detection into the decision the readers act
on (:func:`_decide_value_type`), refuses what cannot be used, and normalises:

* NaN or infinite values are refused, with their number over the whole matrix
  (:func:`_check_finite`);
* scaled (z-scored) values and broken counts (negative integers) are refused;
  detected / not-detected (binary) matrices are refused unless ``value_type=`` is
  given (boolean matrices always); values whose type cannot be told are
  refused unless ``value_type=`` (one of :data:`VALUE_TYPE_OVERRIDES`) says what they
  are. A ``value_type`` that differs from the detected one is used, with a WARNING;
* values or cell totals beyond what float32 can hold are refused before normalising
  (:func:`_check_float32_range`): they would normalise to NaN;
* counts and linear values are normalised with ``normalize_total`` to
  :data:`TARGET_SUM` per cell and ``log1p`` (:func:`_normalise`), the counts kept in
  ``layers["counts"]``; log-normalised values are used as they are, except that values
  of another identified log base or scale (``log2(1 + TPM)``, ``ln(1 + CPM)`` ...:
  :func:`~cafclassify.io.log_scale_details`) are rewritten as ``ln(1 + CP10k)``
  (:func:`log_rewrite`), the scale every later step assumes (QC's ``expm1``, the
  gate's and the classifier's null gene sets, the classifier's features);
* a ``layers["counts"]`` that does not hold counts (:func:`counts_layer_verdict`)
  loses the name: it is kept as :data:`LAYER_NOT_COUNTS`, so QC and the classifier
  never take normalised values for counts (:func:`_check_counts_layer`).

Every refusal is an :class:`~cafclassify._errors.InputFileError` naming the file, what
is wrong and what to do. The same functions serve :func:`~cafclassify.read`,
:func:`~cafclassify.io.read_backed` (the decision and the counts-layer verdict only: a
backed matrix is not normalised) and the streamed read (:mod:`cafclassify.io._stream`,
block by block), so all three decide alike.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import anndata as ad
import numpy as np
import scipy.sparse as sp

from .. import _keys as K
from .._errors import DataError, InputFileError
from ._valuetype import LOG_BASES, log_label, reads_note, value_type_details

__all__ = ["LAYER_NOT_COUNTS", "TARGET_SUM", "VALUE_TYPE_OVERRIDES", "counts_layer_verdict", "log_rewrite"]

logger = logging.getLogger(__name__)

#: accepted values of ``read(value_type=...)``
VALUE_TYPE_OVERRIDES = ("counts", "lognorm", "linear")
TARGET_SUM = 1e4


# ---------------------------------------------------------------------------
# NaN and infinity
# ---------------------------------------------------------------------------
def _count_nonfinite(X) -> int:
    """Number of NaN / infinite values in X (0 for integer matrices; chunked for dense)."""
    if sp.issparse(X):
        data = X.data
        return int((~np.isfinite(data)).sum()) if data.dtype.kind == "f" else 0
    arr = np.asarray(X)
    if arr.dtype.kind != "f":
        return 0
    n_bad = 0
    for start in range(0, arr.shape[0], 10000):
        n_bad += int((~np.isfinite(arr[start : start + 10000])).sum())
    return n_bad


def _nonfinite_error(n_bad: int, path: Path) -> InputFileError:
    return InputFileError(
        f"the expression matrix contains {n_bad} NaN or infinite value(s).",
        path=path,
        fix="replace missing values by 0 if they mean 'not detected', or remove the affected "
        "cells/genes, then read the file again.",
    )


def _check_finite(X, path: Path) -> None:
    """Refuse NaN / infinity anywhere in X (chunked for dense matrices)."""
    n_bad = _count_nonfinite(X)
    if n_bad:
        raise _nonfinite_error(n_bad, path)


# ---------------------------------------------------------------------------
# value type and normalisation
# ---------------------------------------------------------------------------
def _scaled_fix(info: dict) -> str:
    hints = []
    if info.get("has_raw"):
        hints.append("this file has adata.raw: read it with layer='raw'")
    layers = [x for x in info.get("layers_present", []) if x != info.get("source_matrix")]
    if layers:
        hints.append(f"this file has layers {layers}: read one with layer=<name>")
    hint = ("; " + "; ".join(hints)) if hints else ""
    return (
        "provide raw counts or log-normalised values (for example adata.raw or "
        "layers['counts'] of a processed object)" + hint
        + (" (in the workflow: the layer column of config/datasets.tsv)" if hints else "") + "."
    )


def _decide_value_type(X, path: Path, value_type: str | None, info: dict) -> tuple[str, dict]:
    try:
        details = value_type_details(X)
    except DataError as exc:
        raise InputFileError(exc.problem, path=path, fix=exc.fix) from None
    detected = details["value_type"]
    if value_type is not None and value_type not in VALUE_TYPE_OVERRIDES:
        raise InputFileError(
            f"value_type={value_type!r} is not understood.",
            path=path,
            fix=f"use one of {VALUE_TYPE_OVERRIDES} or leave it None to detect.",
        )
    if details.get("invalid_counts"):
        raise InputFileError(
            f"the values are not valid counts ({details['reason']}).",
            path=path,
            fix="a count matrix holds whole numbers >= 0: the file was damaged or edited (or an "
            "export wrote a sentinel such as -1 for missing values); produce it again from the "
            "source, or replace the negative entries by 0 if they mean 'not detected'.",
        )
    if detected == "scaled":
        raise InputFileError(
            f"the values look scaled/z-scored ({details['reason']}); cell-type scores need "
            "counts or log-normalised expression, and scaling cannot be undone.",
            path=path,
            fix=_scaled_fix(info),
        )
    if details.get("binary") and (value_type is None or getattr(X, "dtype", None) == np.bool_):
        raise InputFileError(
            f"the matrix holds detected / not-detected values, not counts ({details['reason']}); "
            "normalising them would give every detected gene of a cell the same expression.",
            path=path,
            fix="provide the count matrix (e.g. the Cell Ranger output, or a counts layer with "
            "layer=NAME)" + ("" if getattr(X, "dtype", None) == np.bool_ else
                             "; if these really are counts of a very shallow experiment, say so "
                             "with value_type='counts'") + ".",
        )
    note = reads_note(details) if (value_type or detected) == "counts" else None
    if note is not None:
        logger.warning("%s: %s.", path, note)
    if value_type is None:
        if detected == "unknown":
            raise InputFileError(
                f"cannot tell what the values are ({details['reason']}).",
                path=path,
                fix="say what they are: value_type='linear' for TPM/CPM-like normalised values "
                "(they will be rescaled to 10,000 per cell and log1p-transformed), "
                "value_type='counts' for (estimated) counts, value_type='lognorm' to use them as "
                "they are (in the workflow: the value_type column of config/datasets.tsv).",
            )
        return detected, details
    if value_type != detected:
        logger.warning(
            "%s: values look like %s (%s) but value_type=%r was given; using %r.",
            path, detected, details["reason"], value_type, value_type,
        )
    return value_type, details


def _check_float32_range(X, path: Path) -> None:
    """Refuse values (or cell totals) that a float32 matrix cannot hold: they normalise to NaN."""
    limit = float(np.finfo(np.float32).max)
    if sp.issparse(X):
        data = X.data
        vmax = float(data.max()) if data.size else 0.0
        totals = np.asarray(X.sum(axis=1, dtype=np.float64)).ravel()
    else:
        arr = np.asarray(X)
        vmax = float(arr.max()) if arr.size else 0.0
        totals = arr.sum(axis=1, dtype=np.float64)
    tmax = float(totals.max()) if totals.size else 0.0
    if vmax > limit or tmax > limit:
        n_cells = int((totals > limit).sum())
        raise InputFileError(
            f"the matrix holds values up to {vmax:.4g} (cell totals up to {tmax:.4g}), beyond what "
            f"a float32 expression matrix can hold ({limit:.4g}); {n_cells} cell(s) cannot be "
            "normalised.",
            path=path,
            fix="these are not counts or normalised expression (an export or unit error): "
            "export the count matrix again and check its values.",
        )


#: an identified ``ln(1 + x)`` scale within this relative distance of :data:`TARGET_SUM`
#: is used as it is (e.g. ``ln(1 + CP10k)`` with the mitochondrial genes removed)
_SCALE_TOLERANCE = 0.1


def log_rewrite(details: dict | None) -> tuple[str, float] | None:
    """``(base, total)`` when log-normalised values must be rewritten as ``ln(1 + CP10k)``.

    ``details`` is :func:`~cafclassify.io.value_type_details`' record. ``None`` when the
    values are already natural-log values of about :data:`TARGET_SUM` per cell, or when
    their base cannot be told (:func:`~cafclassify.io.log_scale_details`): those are used
    as they are.
    """
    scale = (details or {}).get("log_scale") or {}
    base, total = scale.get("base", "unknown"), scale.get("total")
    if base not in LOG_BASES or not total:
        return None
    if base == "e" and abs(total / TARGET_SUM - 1.0) <= _SCALE_TOLERANCE:
        return None
    return base, float(total)


def _rewrite_log(X, base: str, total: float):
    """``ln(1 + (b^x - 1) * TARGET_SUM / total)`` of every stored value (float32; dense in
    blocks of rows, sparse on its stored values in blocks: zeros stay zeros)."""
    ln_b, factor = float(np.log(LOG_BASES[base])), TARGET_SUM / total

    def f(v):
        return np.log1p(np.expm1(v.astype(np.float64) * ln_b) * factor).astype(np.float32)

    if sp.issparse(X):
        X = X.astype(np.float32) if X.dtype != np.float32 else X.copy()
        step = 1 << 24  # float64 work arrays of 128 MB, not of every stored value at once
        for start in range(0, X.data.size, step):
            X.data[start : start + step] = f(X.data[start : start + step])
        return X
    X = np.asarray(X, dtype=np.float32).copy()
    for start in range(0, X.shape[0], 10000):
        X[start : start + 10000] = f(X[start : start + 10000])
    return X


def _normalise(adata: ad.AnnData, value_type: str, normalize: bool, details: dict | None = None) -> str:
    import scanpy as sc

    if value_type == "lognorm":
        rewrite = log_rewrite(details) if normalize else None
        if rewrite is None:
            return "none (already log-normalised)"
        base, total = rewrite
        adata.X = _rewrite_log(adata.X, base, total)
        return (f"{log_label(base)}(1 + x) values of {total:,.0f} per cell rewritten as ln(1 + x) of "
                f"{TARGET_SUM:,.0f} per cell (each value v: ln(1 + ({base}^v - 1) * "
                f"{TARGET_SUM:,.0f} / {total:,.0f}))")
    if not normalize:
        return f"none (normalize=False; X holds {value_type} values)"
    if sp.issparse(adata.X):
        X = adata.X.astype(np.float32) if adata.X.dtype != np.float32 else adata.X.copy()
    else:
        X = np.asarray(adata.X, dtype=np.float32).copy()
    if value_type == "counts":
        if K.LAYER_COUNTS in adata.layers:
            logger.info("replacing the existing layers['counts'] by the counts read from X")
        adata.layers[K.LAYER_COUNTS] = adata.X
    adata.X = X
    adata.uns.pop("log1p", None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        sc.pp.normalize_total(adata, target_sum=TARGET_SUM)
        sc.pp.log1p(adata)
    if value_type == "counts":
        return f"normalize_total(target_sum={TARGET_SUM:g}) + log1p; raw counts in layers['counts']"
    return f"linear values rescaled with normalize_total(target_sum={TARGET_SUM:g}) + log1p"


#: where a ``layers["counts"]`` that does not hold counts is moved to by :func:`read`
LAYER_NOT_COUNTS = "counts_noninteger"


def counts_layer_verdict(M) -> dict | None:
    """``None`` if ``M`` looks like counts; otherwise the evidence (value type details)."""
    try:
        details = value_type_details(M)
    except DataError as exc:
        return {"value_type": "invalid", "reason": exc.problem}
    if details["value_type"] == "counts" and not details.get("binary"):
        return None
    return details


def _check_counts_layer(adata: ad.AnnData, p: Path, vtype: str, normalize: bool, info: dict) -> None:
    """A ``layers['counts']`` read from the file that does not hold counts loses the name.

    Kept under :data:`LAYER_NOT_COUNTS` with a WARNING (and ``details.counts_layer`` in
    the read record), so QC and the classifier never take normalised values for counts.
    Not checked when X holds counts and is normalised: the layer is then replaced.
    """
    if K.LAYER_COUNTS not in adata.layers or (vtype == "counts" and normalize):
        return
    verdict = counts_layer_verdict(adata.layers[K.LAYER_COUNTS])
    if verdict is None:
        return
    adata.layers[LAYER_NOT_COUNTS] = adata.layers.pop(K.LAYER_COUNTS)
    info["counts_layer"] = {"renamed_to": LAYER_NOT_COUNTS, "value_type": verdict["value_type"],
                            "reason": verdict["reason"]}
    logger.warning(
        "%s: layers['counts'] does not hold counts (%s); kept as layers[%r] and not used as "
        "counts.", p, verdict["reason"], LAYER_NOT_COUNTS,
    )
