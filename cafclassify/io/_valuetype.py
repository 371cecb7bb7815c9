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
non-integer, >= 0, max <= 50, not linear           ``lognorm``  use as is (``ln(1 + CP10k)``), or,
                                                                when another log base or scale is
                                                                identified (``log2(1 + TPM)`` ...),
                                                                rewrite as ``ln(1 + CP10k)``
non-integer, >= 0, the same total in every cell    ``linear``   rescale to 1e4 per cell, log1p
(TPM/CPM; at max <= 50 only if no log base gives
totals as equal: fractions of each cell's counts)
non-integer, >= 0, max > 50, totals that vary      ``unknown``  refuse unless told: ``value_type=``
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

Counts of UMIs and counts of reads are both integers, and are read alike. They differ in
one number the detection records: the **median non-zero count**. A UMI counts a molecule
once, so most genes detected in a cell are counted once or twice (1 in the breast atlas
sample at ~600 UMI per cell, 2 in a 10x breast tumour at ~18,000). A full-length protocol
(Smart-seq2 and other plate methods) sequences fragments along the whole transcript and
amplifies them, so one captured molecule gives tens of reads (the median is 43 for the
breast sample turned into reads by the benchmark, ``benchmarks/real_designs.py``). At
:data:`READS_MIN_MEDIAN_NONZERO` (10) or more, ``reads_like`` is set and
:func:`reads_note` says what it means: read counts grow with gene length, which every
step that compares genes within a cell sees (``docs/classifier.md``, "Another protocol,
on real cells"), so length-normalised values (TPM) of the same cells are the better input.
The values are still read as counts: the note is a warning, not a decision.

Which log base and scale log-normalised values carry is told from the numbers when
they cover the transcriptome (:func:`log_scale_details`: the right base's inverse gives
the same total in every cell).

A log of anything with ``max > 50`` would mean ``exp(50)`` reads per gene, so
non-integer values above 50 are linear (not logged) normalised values or
estimated counts. Normalised values have the same total in every cell (1e6 for TPM and
CPM; "the same": a relative spread of at most :data:`LOG_SCALE_MAX_SPREAD` over at least
:data:`LINEAR_MIN_CELLS` cells), estimated counts vary with sequencing depth; a matrix
cut to a gene subset after normalising cannot be told from estimated counts, hence the
refusal.
"""

from __future__ import annotations

import logging

import numpy as np
import scipy.sparse as sp

from .._errors import DataError
from ._canonical import canonical

__all__ = ["BINARY_MIN_VALUES", "LOGNORM_MAX", "READS_MIN_MEDIAN_NONZERO", "VALUE_TYPES", "detect_value_type",
           "log_scale_details", "reads_note", "value_type_details"]

logger = logging.getLogger(__name__)

#: values :func:`detect_value_type` returns
VALUE_TYPES = ("counts", "lognorm", "linear", "scaled", "unknown")
#: largest value still taken for log-scale data
LOGNORM_MAX = 50.0
_INT_TOL = 1e-3
#: non-zero 0/1 integers needed before a matrix is called binary (fewer: counts by chance)
BINARY_MIN_VALUES = 100
#: largest value a float32 expression matrix holds
FLOAT32_MAX = float(np.finfo(np.float32).max)
_DEFAULT_ROWS = 2000
#: log bases :func:`log_scale_details` tries (name -> base); ``log_b(1 + x)`` is inverted
#: as ``expm1(v * ln b)``
LOG_BASES = {"e": np.e, "2": 2.0, "10": 10.0}
#: largest relative spread (MAD / median) of cell totals that are "the same in every cell"
#: (the inverted totals that identify a log base; the totals of linear normalised values)
LOG_SCALE_MAX_SPREAD = 0.05
#: sampled cells with a positive total needed before equal totals mean normalised values
LINEAR_MIN_CELLS = 10
#: the identified base's spread must be this many times smaller than the next base's
LOG_SCALE_MIN_CONTRAST = 3.0
_LOG_SCALE_ROWS = 500
#: median non-zero count from which integer counts look like reads of a full-length
#: protocol, not UMIs (module docstring): UMI data sit at 1-2, reads at tens
READS_MIN_MEDIAN_NONZERO = 10.0


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
    values), ``frac_nonzero``; for counts ``median_nonzero`` and ``reads_like`` (counts of
    reads, not UMIs: module docstring); for log-scale data ``log_scale`` (the base and
    scale :func:`log_scale_details` identifies) and ``log_base_guess`` (its base:
    ``"e"``/``"2"``/``"10"``/``"unknown"``).
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
        out["median_nonzero"] = float(np.median(nz))
        out["reads_like"] = bool(out["median_nonzero"] >= READS_MIN_MEDIAN_NONZERO)
        if vmax == 1.0 and len(nz) >= BINARY_MIN_VALUES:
            out["binary"] = True
        if out["binary"]:
            out["reason"] = f"all {len(nz)} sampled non-zero values are 1: detected / not detected"
        return out
    block = _block(X, rows)
    total, spread, n = _totals_spread(block, None)
    if vmax <= LOGNORM_MAX:
        scale = _log_scale(block)
        logs = list(scale["spread_by_base"].values())
        if (n >= LINEAR_MIN_CELLS and spread <= LOG_SCALE_MAX_SPREAD
                and spread * LOG_SCALE_MIN_CONTRAST <= min(logs, default=np.inf)):
            out["value_type"] = "linear"
            out["linear_total"] = total
            out["reason"] = (
                f"non-negative, non-integer values with max {vmax:.3g} whose total is the same in "
                f"every sampled cell ({total:.4g}, relative spread {spread:.2g}; no log base "
                "gives totals as equal): linear values normalised to a small total (e.g. fractions "
                "of each cell's counts), not log values"
            )
            return out
        out["value_type"] = "lognorm"
        out["reason"] = f"non-negative, non-integer values with max {vmax:.3g} <= {LOGNORM_MAX:g}"
        out["log_scale"] = scale
        out["log_base_guess"] = scale["base"]
        return out
    if n >= LINEAR_MIN_CELLS and spread <= LOG_SCALE_MAX_SPREAD:
        out["value_type"] = "linear"
        out["linear_total"] = total
        out["reason"] = (
            f"non-negative, non-integer values with max {vmax:.6g} > {LOGNORM_MAX:g} and the "
            f"same total in every sampled cell ({total:.4g}, relative spread {spread:.2g}): "
            "linear normalised values (TPM/CPM)"
        )
        return out
    out["value_type"] = "unknown"
    out["reason"] = (
        f"non-negative, non-integer values with max {vmax:.6g} > {LOGNORM_MAX:g} and cell "
        f"totals that vary (relative spread {spread:.2g}): linear normalised values "
        "(TPM/CPM) of a gene subset, or estimated counts"
    )
    return out


def reads_note(details: dict | None) -> str | None:
    """Plain words for counts that look like reads of a full-length protocol, else ``None``.

    ``details`` is :func:`value_type_details`' record (``uns["cafclassify"]["read"]
    ["value_type_evidence"]`` holds it); see the module docstring for the rule.
    """
    if not details or not details.get("reads_like"):
        return None
    return (
        f"the counts look like reads of a full-length protocol (Smart-seq2 or another plate "
        f"method), not UMIs: the median non-zero count is {float(details['median_nonzero']):,.0f} "
        "(UMI counts sit at 1-3: most detected genes are counted once or twice). Read counts grow with gene "
        "length, which biases the lineage gate's within-cell rank scores and the classifier's "
        "reading of expression levels: on a tumour shared both ways, subtype calls from the read "
        "counts agreed less with the authors' labels than calls from TPM (the cafclassify docs, "
        "docs/classifier.md, 'Another protocol, on real cells'). If the study "
        "shares TPM, FPKM or other length-normalised values of these cells, read those instead; "
        "they are detected and rescaled"
    )


def _block(X, rows: np.ndarray):
    """The first :data:`_LOG_SCALE_ROWS` sampled cells as float64 (canonical CSR or dense)."""
    block = X[rows[:_LOG_SCALE_ROWS]]
    if sp.issparse(block):
        return canonical(block.tocsr()).astype(np.float64)
    return np.asarray(block, dtype=np.float64)


def log_label(base: str) -> str:
    """``"ln"``, ``"log2"`` or ``"log10"`` for a name of :data:`LOG_BASES`."""
    return "ln" if base == "e" else f"log{base}"


def _totals_spread(block, inv) -> tuple[float, float, int]:
    """Median cell total of ``inv(values)`` (``None``: the values), its relative spread
    (median absolute deviation / median) and the number of cells with a positive total."""
    if sp.issparse(block):
        b = block if inv is None else block.copy()
        if inv is not None:
            b.data = inv(b.data)
        tot = np.asarray(b.sum(axis=1)).ravel()
    else:
        tot = (block if inv is None else inv(block)).sum(axis=1)
    tot = tot[np.isfinite(tot) & (tot > 0)]
    if len(tot) < 2:
        return np.nan, np.inf, len(tot)
    med = float(np.median(tot))
    return med, float(np.median(np.abs(tot - med)) / med), len(tot)


def log_scale_details(X, rows: np.ndarray | None = None) -> dict:
    """Which ``log_b(1 + s x / total)`` produced log-normalised values, if it can be told.

    Log-normalised matrices are published as ``ln(1 + CP10k)`` (scanpy, Seurat),
    ``log2(1 + CPM)`` or ``log2(1 + TPM)`` (plate-based protocols), sometimes ``log10``.
    Inverting the right base gives back the per-cell normalised values, whose totals are
    the same in every cell (the scale ``s``: 1e4, 1e6 ...); a wrong base gives totals
    that vary with each cell's expression profile. So each base in :data:`LOG_BASES` is
    inverted on the sampled cells, and the base whose totals vary least is *identified*
    when their relative spread (median absolute deviation / median) is at most
    :data:`LOG_SCALE_MAX_SPREAD` and :data:`LOG_SCALE_MIN_CONTRAST` times smaller than
    the next base's. Measured on the Wu 2021 breast sample (whole transcriptome):
    exactly normalised values spread by ~1e-7 under the right base; with the
    mitochondrial genes removed after normalising, 0.012; keeping only the 3,000 most
    expressed genes, 0.023; the wrong bases 0.09-0.6. A matrix that was cut to a gene
    panel after normalising (the bundled colorectal and ovarian files: 0.12 and 0.36 at
    best) or divided by size factors other than the cells' totals (scran's) does not
    identify its base: it is then used as it is.

    Why it matters: QC inverts ``ln(1 + x)`` for its totals, and the gate's and the
    classifier's null gene sets and features read log-expression differences, so a base
    or pseudocount other than ``ln(1 + CP10k)`` changes the calls. The breast sample's
    counts written as other log values and used as they are gave subtype ARI 0.51
    (``log2(1 + CPM)``), 0.59 (``ln(1 + CPM)``), 0.58 (``log2(1 + CP10k)``) and 0.54
    (``log10(1 + CP10k)``) against 0.62 from its counts (``random_state`` 0); rewritten,
    each gives the counts' 0.62 (0.62 also with the mitochondrial genes removed).

    Parameters
    ----------
    X
        Cells x genes matrix of log-scale values (ndarray, scipy sparse, or backed).
    rows
        Cells to look at (the first :data:`_LOG_SCALE_ROWS` of them are used); default
        the first 500 cells.

    Returns
    -------
    dict with ``base`` (``"e"``, ``"2"``, ``"10"`` or ``"unknown"``), ``total`` (the
    median inverted cell total under the identified base, else under the best one),
    ``spread`` (its relative spread) and ``spread_by_base``.
    """
    return _log_scale(_block(X, np.arange(X.shape[0]) if rows is None else rows))


def _log_scale(block) -> dict:
    """:func:`log_scale_details` of a block of cells already read (:func:`_block`)."""
    spreads, totals = {}, {}
    for base, b in LOG_BASES.items():
        ln_b = float(np.log(b))
        total, spread, n = _totals_spread(block, lambda v, ln_b=ln_b: np.expm1(v * ln_b))
        if n >= 2:
            spreads[base], totals[base] = spread, total
    if not spreads:
        return {"base": "unknown", "spread_by_base": {}}
    ranked = sorted(spreads, key=spreads.get)
    best = ranked[0]
    second = spreads[ranked[1]] if len(ranked) > 1 else np.inf
    identified = (spreads[best] <= LOG_SCALE_MAX_SPREAD
                  and spreads[best] * LOG_SCALE_MIN_CONTRAST <= second)
    return {"base": best if identified else "unknown", "total": totals[best],
            "spread": spreads[best], "spread_by_base": spreads}


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
    max <= 50), ``"linear"`` (non-integer values with the same total in every cell:
    TPM/CPM, fractions), ``"scaled"`` (negative values present) or ``"unknown"``
    (non-integer values above 50 whose totals vary, or all zeros).

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
