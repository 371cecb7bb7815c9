"""What kind of values does an expression matrix hold?

Public data arrive as raw counts, log-normalised values, z-scored values or
linear normalised values (TPM/CPM), usually without saying which. The rules
(applied to a deterministic sample of rows, sparse-aware):

=================================================  ===========  ================================
values                                             result       what :func:`cafclassify.read` does
=================================================  ===========  ================================
NaN or +-inf anywhere in the sample                error        refuse (:class:`DataError`)
any value < 0                                      ``scaled``   refuse: z-scored / regressed values
                                                                cannot be log-normalised back
                                                                (all integers: ``invalid_counts``,
                                                                refused as broken counts)
all values integers (within 1e-3), >= 0            ``counts``   keep in ``layers["counts"]``,
                                                                normalise to 1e4 per cell, log1p
non-integer, >= 0, max <= 50                       ``lognorm``  use as is (log1p CP10k, log2 TPM+1 ...)
non-integer, >= 0, max > 50                        ``unknown``  refuse unless told: ``value_type=``
                                                                ``"linear"`` (TPM/CPM: rescale, log1p)
                                                                or ``"counts"`` (estimated counts)
=================================================  ===========  ================================

Two more facts are recorded with the decision, and :func:`cafclassify.read` refuses
on them:

* ``binary``: a boolean matrix, or integers that are all 0/1 over at least
  :data:`BINARY_MIN_VALUES` sampled non-zero values, is a detected/not-detected
  matrix, not counts (every real UMI matrix has genes counted more than once in
  that many entries); normalising it would give every detected gene the same value;
* ``float32_overflow``: values beyond float32's range (about 3.4e38) cannot be
  normalised (the float32 expression matrix would hold infinity, then NaN).

A log of anything with ``max > 50`` would mean ``exp(50)`` reads per gene, so
non-integer values above 50 are linear (not logged) normalised values or
estimated counts; which of the two cannot be told from the numbers, hence the
refusal.
"""

from __future__ import annotations

import logging

import numpy as np
import scipy.sparse as sp

from .._errors import DataError
from ._canonical import canonical

__all__ = ["BINARY_MIN_VALUES", "LOGNORM_MAX", "VALUE_TYPES", "detect_value_type", "value_type_details"]

logger = logging.getLogger(__name__)

#: values :func:`detect_value_type` returns
VALUE_TYPES = ("counts", "lognorm", "scaled", "unknown")
#: largest value still taken for log-scale data
LOGNORM_MAX = 50.0
_INT_TOL = 1e-3
#: non-zero 0/1 integers needed before a matrix is called binary (fewer: counts by chance)
BINARY_MIN_VALUES = 100
#: largest value a float32 expression matrix holds
FLOAT32_MAX = float(np.finfo(np.float32).max)
_DEFAULT_ROWS = 2000


def _sample_rows(X, n_rows: int, random_state: int) -> np.ndarray:
    n = X.shape[0]
    if n <= n_rows:
        return np.arange(n)
    rng = np.random.default_rng(random_state)
    return np.sort(rng.choice(n, size=n_rows, replace=False))


def _values(X, rows: np.ndarray) -> tuple[np.ndarray, int]:
    """Return the stored values of the sampled rows and the number of entries they cover."""
    block = X[rows]  # also works on anndata backed datasets (returns an in-memory block)
    if sp.issparse(block):
        block = canonical(block.tocsr())  # a value split into duplicates is one value
        return np.asarray(block.data), block.shape[0] * block.shape[1]
    block = np.asarray(block)
    return block.ravel(), block.size


def value_type_details(X, *, n_rows: int = _DEFAULT_ROWS, random_state: int = 0) -> dict:
    """Return the value type of ``X`` with the evidence behind it.

    Parameters
    ----------
    X
        Cells x genes matrix: ndarray, scipy sparse, or an anndata backed dataset.
    n_rows
        Number of rows (cells) sampled; all rows if the matrix has fewer.
    random_state
        Seed of the row sample.

    Returns
    -------
    dict with ``value_type`` (one of :data:`VALUE_TYPES`), ``reason`` (plain words),
    ``n_rows_sampled``, ``min``, ``max``, ``frac_integer`` (of nonzero sampled
    values), ``frac_nonzero`` and, for log-scale data, ``log_base_guess``
    (``"e"``/``"2"``/``"unknown"``, from which inverse gives near-constant cell totals).
    ``binary`` is true for a boolean matrix or 0/1 integers (see the module docstring),
    ``float32_overflow`` for sampled values beyond float32's range.

    Raises
    ------
    DataError
        If the sample contains NaN or infinite values, or the matrix has no cells.
    """
    if X is None:
        raise DataError("the expression matrix is missing (X is None).", fix="provide a matrix in X.")
    if X.shape[0] == 0 or X.shape[1] == 0:
        raise DataError(
            f"the expression matrix is empty ({X.shape[0]} cells x {X.shape[1]} genes).",
            fix="check that the input holds cells and genes.",
        )
    rows = _sample_rows(X, n_rows, random_state)
    vals, n_entries = _values(X, rows)
    vals = vals.astype(np.float64, copy=False)
    out: dict = {"n_rows_sampled": int(len(rows))}
    finite = np.isfinite(vals)
    if not finite.all():
        n_bad = int((~finite).sum())
        kinds = []
        if np.isnan(vals).any():
            kinds.append("NaN")
        if np.isinf(vals).any():
            kinds.append("infinite")
        raise DataError(
            f"the expression matrix contains {' and '.join(kinds)} values ({n_bad} in "
            f"{len(rows)} sampled cells).",
            fix="replace missing values by 0 if they mean 'not detected', or remove the affected "
            "cells/genes, before reading.",
        )
    out["binary"] = bool(getattr(X, "dtype", None) == np.bool_)
    nz = vals[vals != 0]
    out["frac_nonzero"] = float(len(nz) / n_entries) if n_entries else 0.0
    if len(nz) == 0:
        out.update(min=0.0, max=0.0, frac_integer=1.0, value_type="unknown",
                   reason="all sampled values are zero")
        return out
    vmin, vmax = float(min(nz.min(), 0.0) if len(nz) < n_entries else nz.min()), float(nz.max())
    out["min"], out["max"] = vmin, vmax
    out["float32_overflow"] = bool(vmax > FLOAT32_MAX)
    frac_int = float(np.mean(np.abs(nz - np.round(nz)) <= _INT_TOL))
    out["frac_integer"] = frac_int
    if vmin < 0:
        out["value_type"] = "scaled"
        if frac_int == 1.0:  # z-scored data are never all integers: these are broken counts
            out["invalid_counts"] = True
            out["n_negative"] = int((nz < 0).sum())
            out["reason"] = (f"integer values, {out['n_negative']} of them negative (min {vmin:.6g}) "
                             "in the sampled cells: counts cannot be negative")
        else:
            out["reason"] = f"negative values (min {vmin:.3g}): z-scored or regressed data"
        return out
    if frac_int == 1.0:
        out["value_type"] = "counts"
        out["reason"] = f"all sampled values are non-negative integers (max {vmax:.6g})"
        if vmax == 1.0 and len(nz) >= BINARY_MIN_VALUES:
            out["binary"] = True
        if out["binary"]:
            out["reason"] = f"all {len(nz)} sampled non-zero values are 1: detected / not detected"
        return out
    if vmax <= LOGNORM_MAX:
        out["value_type"] = "lognorm"
        out["reason"] = f"non-negative, non-integer values with max {vmax:.3g} <= {LOGNORM_MAX:g}"
        out["log_base_guess"] = _log_base_guess(X, rows)
        return out
    out["value_type"] = "unknown"
    out["reason"] = (
        f"non-negative, non-integer values with max {vmax:.6g} > {LOGNORM_MAX:g}: linear "
        "normalised values (TPM/CPM) or estimated counts"
    )
    return out


def _log_base_guess(X, rows: np.ndarray) -> str:
    """Which inverse (expm1 or 2**x - 1) gives the most constant per-cell totals."""
    block = X[rows[:500]]
    cvs = {}
    for base, inv in (("e", np.expm1), ("2", lambda v: np.exp2(v) - 1.0)):
        if sp.issparse(block):
            b = canonical(block.tocsr()).astype(np.float64)
            b.data = inv(b.data)
            tot = np.asarray(b.sum(axis=1)).ravel()
        else:
            tot = inv(np.asarray(block, dtype=np.float64)).sum(axis=1)
        tot = tot[tot > 0]
        cvs[base] = float(np.std(tot) / np.mean(tot)) if len(tot) > 1 else np.inf
    best = min(cvs, key=cvs.get)
    return best if cvs[best] < 0.01 else "unknown"


def detect_value_type(X, *, n_rows: int = _DEFAULT_ROWS, random_state: int = 0) -> str:
    """Guess whether ``X`` holds raw counts, log-normalised, scaled or other values.

    Looks at a deterministic sample of ``n_rows`` cells (sparse matrices are
    never densified). See the module docstring for the rules.

    Parameters
    ----------
    X
        Cells x genes matrix (ndarray, scipy sparse, or anndata backed dataset).
    n_rows
        Number of cells sampled.
    random_state
        Seed of the cell sample.

    Returns
    -------
    ``"counts"`` (non-negative integers), ``"lognorm"`` (non-negative, non-integer,
    max <= 50), ``"scaled"`` (negative values present) or ``"unknown"``
    (non-integer values above 50, e.g. TPM/CPM not logged, or all zeros).

    Raises
    ------
    DataError
        If the sampled values contain NaN or infinity.

    Examples
    --------
    >>> import numpy as np
    >>> detect_value_type(np.array([[0, 3], [1, 0]]))
    'counts'
    >>> detect_value_type(np.log1p(np.array([[0, 3.5], [1.2, 0]])))
    'lognorm'
    """
    return value_type_details(X, n_rows=n_rows, random_state=random_state)["value_type"]
