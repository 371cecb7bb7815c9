"""Read public single-cell data as it comes: one entry point, :func:`read`.

Formats are detected from the file content (:mod:`cafclassify.io._formats`) and
read by one reader each (:mod:`cafclassify.io._readers`),
the value type from the numbers (:mod:`cafclassify.io._valuetype`) and what is done
with the values (checks, normalisation: :mod:`cafclassify.io._values`), species and
gene-ID type from the gene names (:mod:`cafclassify.genes`). Everything found
and everything done is recorded in ``adata.uns["cafclassify"]["read"]`` and
summarised in one INFO log line. Input files are opened read-only and never
modified. Every problem with the input is an
:class:`~cafclassify._errors.InputFileError` naming the file, what is wrong and
what to do.
"""

from __future__ import annotations

import hashlib
import logging
import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import anndata as ad
import pandas as pd

from .. import _keys as K
from .._errors import CafClassifyError, InputFileError
from ._formats import (
    FORMATS,
    sniff_format,
)
from ._rdata import R_FORMATS
from ._readers import (
    ORIENTATIONS,
    _as_str_index,
    _corrupt,
    _orient_table,
    _read_10x_h5,
    _read_10x_mtx,
    _read_h5ad,
    _read_loom,
    _read_table,
)
from ._values import (
    _check_counts_layer,
    _check_finite,
    _check_float32_range,
    _decide_value_type,
    _normalise,
    counts_layer_verdict,
    log_rewrite,
)
from ._valuetype import log_label

__all__ = ["ORIENTATIONS", "file_sha256", "read", "read_backed"]

logger = logging.getLogger(__name__)

_CHUNK_BYTES = 1 << 20
_MAX_LISTED = 50  # names listed in uns (duplicates, ...)


# ---------------------------------------------------------------------------
# hashing
# ---------------------------------------------------------------------------
def file_sha256(paths: Path | Sequence[Path]) -> str:
    """SHA-256 of a file, or of several files' contents concatenated in the given order.

    Read in 1 MiB blocks, so large files never sit in memory.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [Path(paths)]
    digest = hashlib.sha256()
    for p in paths:
        with open(p, "rb") as fh:
            for block in iter(lambda fh=fh: fh.read(_CHUNK_BYTES), b""):
                digest.update(block)
    return digest.hexdigest()


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------

def _dup_report(index: pd.Index) -> tuple[int, list[str]]:
    dup = index.duplicated(keep="first")
    n = int(dup.sum())
    names = list(pd.unique(index[dup]))[:_MAX_LISTED]
    return n, [str(x) for x in names]


# ---------------------------------------------------------------------------
# gene identity
# ---------------------------------------------------------------------------
def _gene_identity(adata: ad.AnnData, path: Path, species, symbol_column) -> dict:
    from ..genes import resolve_gene_identity, species_evidence, species_warning

    try:
        ident = resolve_gene_identity(adata, species=species, symbol_column=symbol_column)
    except CafClassifyError as exc:
        raise InputFileError(exc.problem, path=path, fix=exc.fix) from None
    symbols = pd.Index([str(s) for s in ident.symbols], dtype=object)
    adata.var[K.VAR_SYMBOL] = symbols.to_numpy()
    names = adata.var[ident.source_column] if ident.source_column else adata.var_names
    evidence = species_evidence(list(names)) if ident.id_type == "symbol" else {"verdict": ident.species}
    warning = species_warning(evidence, declared=species, where=str(path))
    return {
        "species_evidence": evidence,
        "species_warning": warning,
        "species": ident.species,
        "id_type": ident.id_type,
        "symbol_source_column": ident.source_column,
        "n_symbols_repaired": int(ident.n_repaired),
        "symbols_repaired": {
            "old": [str(k) for k in ident.repaired],
            "new": [str(v) for v in ident.repaired.values()],
        },
        "n_unmapped": int(ident.n_unmapped),
    }


# ---------------------------------------------------------------------------
# the steps of read(), shared with the streaming reader (cafclassify.io._stream)
# ---------------------------------------------------------------------------
def _resolve_format(
    p: Path, format: str | None, *, layer: str | None = None, orientation: str | None = None
) -> str:
    """The format of ``p``: detected from the content, checked against ``format=``."""
    sniffed_error = None
    try:
        sniffed = sniff_format(p)
    except InputFileError as exc:
        if format is None or not p.exists():
            raise
        sniffed, sniffed_error = None, exc
    if format is not None:
        if format not in FORMATS:
            raise InputFileError(
                f"format={format!r} is not understood.",
                path=p,
                fix=f"use one of {FORMATS}, or leave format=None to detect it from the content.",
            )
        if sniffed is not None and sniffed != format and {sniffed, format} != {"csv", "tsv"}:
            raise InputFileError(
                f"format={format!r} was given but the content is {sniffed}.",
                path=p,
                fix="leave format=None to read the file as what it is, or check that this is "
                "the file you meant.",
            )
        if sniffed_error is not None:
            logger.warning("%s: format detection failed (%s); trying %s as asked.", p,
                           sniffed_error.problem, format)
        fmt = format
    else:
        fmt = sniffed
    if layer is not None and fmt not in ("h5ad", *R_FORMATS):
        raise InputFileError(
            f"layer={layer!r} only applies to .h5ad files and R objects, and this is {fmt}.",
            path=p,
            fix="leave layer=None.",
        )
    if orientation is not None and fmt not in ("csv", "tsv", *R_FORMATS):
        raise InputFileError(
            f"orientation= only applies to CSV/TSV tables, and this is {fmt}.",
            path=p,
            fix="leave orientation=None.",
        )
    return fmt


def _tidy_names(adata: ad.AnnData, p: Path) -> dict:
    """Refuse empty data; make gene and cell names unique strings (logged, reported).

    Works on an AnnData without ``X`` (only ``obs``/``var`` are used). Returns the
    duplicate report: ``orig_var`` (names before renaming), ``n_dup_genes``,
    ``dup_genes``, ``n_dup_bc``, ``dup_bc``.
    """
    if adata.n_obs == 0 or adata.n_vars == 0:
        raise InputFileError(
            f"the data hold {adata.n_obs} cells x {adata.n_vars} genes.",
            path=p,
            fix="the file has no cells or no genes: check that it is the complete export.",
        )
    adata.obs_names = _as_str_index(adata.obs_names)
    adata.var_names = _as_str_index(adata.var_names)

    # duplicates: explicit, logged, recorded
    orig_var = adata.var_names.copy()
    n_dup_genes, dup_genes = _dup_report(orig_var)
    n_dup_bc, dup_bc = _dup_report(adata.obs_names)
    if n_dup_genes:
        adata.var_names_make_unique()
        logger.warning(
            "%s: %d duplicate gene names made unique with suffixes -1, -2, ... (e.g. %s).",
            p, n_dup_genes, ", ".join(dup_genes[:5]),
        )
    if n_dup_bc:
        if n_dup_bc == adata.n_obs - 1 and adata.n_obs > 1:
            raise InputFileError(
                "all cells have the same barcode/name.",
                path=p,
                fix="the cell names are not cell barcodes: check the orientation "
                "(orientation= for tables) and the barcode file.",
            )
        adata.obs_names_make_unique()
        logger.warning(
            "%s: %d duplicate cell barcodes made unique with suffixes -1, -2, ... (e.g. %s).",
            p, n_dup_bc, ", ".join(dup_bc[:5]),
        )
    return {"orig_var": orig_var, "n_dup_genes": n_dup_genes, "dup_genes": dup_genes,
            "n_dup_bc": n_dup_bc, "dup_bc": dup_bc}


def _check_sample_column(adata: ad.AnnData, p: Path, sample_column: str | None) -> None:
    if sample_column is None:
        return
    if sample_column not in adata.obs.columns:
        raise InputFileError(
            f"sample_column={sample_column!r} is not a cell annotation in the file "
            f"(obs columns: {list(adata.obs.columns)[:20] or 'none'}).",
            path=p,
            fix="pass the name of the obs column that holds the sample of each cell, or "
            "leave sample_column=None to treat all cells as one sample.",
        )
    if adata.obs[sample_column].isna().any():
        raise InputFileError(
            f"sample_column={sample_column!r} has {int(adata.obs[sample_column].isna().sum())} "
            "missing values.",
            path=p,
            fix="give every cell a sample name.",
        )


def _symbols_of_duplicates(adata: ad.AnnData, dups: dict) -> None:
    """Duplicates renamed X-1 etc. take the symbol of the original name."""
    if not dups["n_dup_genes"]:
        return
    sym = adata.var[K.VAR_SYMBOL].to_numpy(dtype=object).copy()
    first_pos = {}
    for i, name in enumerate(dups["orig_var"]):
        if name in first_pos:
            sym[i] = sym[first_pos[name]]
        else:
            first_pos[name] = i
    adata.var[K.VAR_SYMBOL] = sym


def _read_record(
    p: Path, fmt: str, adata: ad.AnnData, *, hashed: list[Path], identity: dict, vtype: str,
    vdetails: dict, value_type: str | None, normalisation: str, dups: dict,
    sample_column: str | None, info: dict,
) -> dict:
    """``uns["cafclassify"]["read"]`` (``adata`` needs ``obs``/``var`` only)."""
    record = {
        "path": str(p.resolve()),
        "sha256": file_sha256(sorted(hashed, key=lambda q: q.name)),
        "format": fmt,
        "n_cells": int(adata.n_obs),
        "n_genes": int(adata.n_vars),
        **identity,
        "value_type": vtype,
        "value_type_detected": vdetails["value_type"],
        "value_type_evidence": {k: v for k, v in vdetails.items() if k != "value_type"},
        "value_type_given": value_type,
        "normalization": normalisation,
        "orientation": info.pop("orientation", None),
        "n_duplicate_genes": dups["n_dup_genes"],
        "duplicate_genes": dups["dup_genes"],
        "n_duplicate_barcodes": dups["n_dup_bc"],
        "duplicate_barcodes": dups["dup_bc"],
        "sample_column": sample_column,
        "n_samples": None if sample_column is None else int(adata.obs[sample_column].nunique()),
        "details": info,
    }
    if fmt == "10x_mtx":
        record["hashed_files"] = [q.name for q in sorted(hashed, key=lambda q: q.name)]
    return record


def _store_record(adata: ad.AnnData, record: dict) -> None:
    root = adata.uns.get(K.UNS)
    if not isinstance(root, dict):
        adata.uns[K.UNS] = {}
    adata.uns[K.UNS][K.UNS_READ] = record


def _log_read(p: Path, fmt: str, adata: ad.AnnData, record: dict, identity: dict, vtype: str,
              normalisation: str, dups: dict, *, how: str = "read") -> None:
    n_dup_genes, n_dup_bc = dups["n_dup_genes"], dups["n_dup_bc"]
    logger.info(
        "%s %s: %s, %d cells x %d genes, %s %s, %s -> %s%s%s",
        how, p, fmt, adata.n_obs, adata.n_vars, identity["species"], identity["id_type"], vtype,
        normalisation,
        f", {record['orientation']}" if record["orientation"] else "",
        f", {n_dup_genes} duplicate genes / {n_dup_bc} duplicate barcodes made unique"
        if (n_dup_genes or n_dup_bc) else "",
    )


# ---------------------------------------------------------------------------
# public API
# ---------------------------------------------------------------------------
def read(
    path: str | os.PathLike,
    *,
    format: str | None = None,
    species: str | None = None,
    symbol_column: str | None = None,
    sample_column: str | None = None,
    value_type: str | None = None,
    normalize: bool = True,
    orientation: str | None = None,
    layer: str | None = None,
    r_object: str | None = None,
    metadata: str | os.PathLike | None = None,
) -> ad.AnnData:
    """Read a single-cell expression file, detect what it holds and normalise it if needed.

    Parameters
    ----------
    path
        An ``.h5ad`` file, a 10x Cell Ranger ``.h5`` (v2 or v3), a 10x Matrix
        Market folder (``matrix.mtx[.gz]``, ``features.tsv[.gz]`` or the older
        ``genes.tsv``, ``barcodes.tsv[.gz]``; GEO-style file-name prefixes work)
        or the ``.mtx`` file inside it, a CSV/TSV table (optionally gzipped;
        genes x cells or cells x genes), a ``.loom`` file, or an R object file:
        ``.rds`` (``"rds"``) or ``.rda``/``.RData`` (``"rdata"``) holding a Seurat
        object (v3/v4 or v5 assays), a SingleCellExperiment/SummarizedExperiment,
        or a ``dgCMatrix``/dense matrix (read without R, see
        :mod:`cafclassify.io._rdata`).
    format
        One of ``"h5ad"``, ``"10x_h5"``, ``"10x_mtx"``, ``"csv"``, ``"tsv"``,
        ``"loom"``, ``"rds"``, ``"rdata"``. By default detected from the file content (magic bytes,
        HDF5 layout, first line), not the extension.
    species
        ``"human"`` or ``"mouse"``; detected from the gene names by default.
    symbol_column
        A ``var`` column holding gene symbols (when ``var_names`` are IDs).
    sample_column
        An ``obs`` column naming the sample of each cell (checked and recorded;
        :func:`cafclassify.qc` uses it as its default ``sample_key``).
    value_type
        Override the detected value type: ``"counts"`` (raw or estimated counts:
        normalised), ``"lognorm"`` (log-normalised) or ``"linear"`` (TPM/CPM-like:
        rescaled to 10,000 per cell and log1p-transformed). Scaled (negative)
        values are always refused. Detected: linear values when every cell has the
        same total; log-normalised values of another identified base or scale
        (``log2(1 + TPM)`` ...) are rewritten as ``ln(1 + CP10k)``
        (:func:`~cafclassify.io.log_scale_details`), others used as they are.
    normalize
        If False, X is left as read (counts stay counts); the value type is still
        detected and recorded.
    orientation
        Text tables only: ``"genes_x_cells"`` or ``"cells_x_genes"``. Detected
        from which axis looks like gene names by default; ambiguous tables are
        refused with a message asking for this option.
    layer
        h5ad: read this layer instead of X (``"raw"`` reads ``adata.raw``, ``"X"`` reads
        X). Default: X, or ``adata.raw`` when X holds a subset of its genes (scanpy's
        highly-variable-gene X; the choice is logged and recorded). R objects:
        the matrix to read instead of the raw counts: a Seurat layer/slot of the
        default assay (``"data"``) or ``"ASSAY:LAYER"``, or a SingleCellExperiment
        assay (``"logcounts"``).
    r_object
        ``.RData``/``.rda`` files holding several single-cell objects: the name of
        the one to read.
    metadata
        R objects: a CSV/TSV table of cell metadata (first column: the cell names)
        added to ``obs``, e.g. the annotation published next to a bare count matrix.

    Returns
    -------
    AnnData (cells x genes) with

    - ``X``: log1p(CP10k) values if the input held counts (or linear values) or
      log values of an identified base and scale; otherwise the log-normalised input
      as is;
    - ``layers["counts"]``: the raw counts, if the input held counts;
    - ``var["cafclassify_symbol"]``: the resolved current gene symbol ("" if unmapped);
    - ``uns["cafclassify"]["read"]``: path, sha256, format, n_cells, n_genes,
      species, id_type, value_type (and the evidence), normalisation done,
      orientation (tables), duplicate genes/barcodes made unique, sample column.

    Raises
    ------
    InputFileError
        For a missing, empty, truncated or malformed file, mismatched 10x files,
        ragged or non-numeric tables, NaN/infinite values, negative (scaled)
        values, or values whose type cannot be told (the message says what to pass).
    """
    p = Path(path).expanduser()
    fmt = _resolve_format(p, format, layer=layer, orientation=orientation)
    if fmt not in R_FORMATS and (r_object is not None or metadata is not None):
        raise InputFileError(
            f"r_object/metadata only apply to R object files (.rds, .rda, .RData), and this is {fmt}.",
            path=p,
            fix="leave r_object (--r-object) and metadata (--metadata) unset.",
        )

    info: dict = {}
    hashed: list[Path] = [p]
    if fmt in R_FORMATS:
        from ._rdata import read_r_file

        adata, info = read_r_file(p, fmt, r_object=r_object, layer=layer,
                                  metadata=metadata, orientation=orientation)
        if metadata is not None:
            info["metadata_file_sha256"] = file_sha256(Path(metadata).expanduser())
    elif fmt == "h5ad":
        adata, info = _read_h5ad(p, layer)
    elif fmt == "10x_h5":
        adata, info = _read_10x_h5(p)
    elif fmt == "10x_mtx":
        adata, info, hashed = _read_10x_mtx(p)
    elif fmt == "loom":
        adata, info = _read_loom(p)
    else:
        X, rows, cols = _read_table(p, "\t" if fmt == "tsv" else ",")
        X, obs_names, var_names, orient, evidence = _orient_table(p, X, rows, cols, orientation)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            adata = ad.AnnData(X=X, obs=pd.DataFrame(index=obs_names),
                               var=pd.DataFrame(index=var_names))
        info = {"orientation": orient, "orientation_evidence": evidence}
        logger.info("%s: table read as %s (%s).", p, orient.replace("_x_", " x "), evidence)

    dups = _tidy_names(adata, p)
    _check_sample_column(adata, p, sample_column)

    from ._canonical import canonicalise_adata

    fixed = canonicalise_adata(adata)  # before any arithmetic: duplicates summed, indices sorted
    if fixed:
        info["canonicalised"] = fixed
    _check_finite(adata.X, p)
    vtype, vdetails = _decide_value_type(adata.X, p, value_type, info)
    if normalize and vtype != "lognorm":
        _check_float32_range(adata.X, p)
    _check_counts_layer(adata, p, vtype, normalize, info)
    normalisation = _normalise(adata, vtype, normalize, vdetails)

    identity = _gene_identity(adata, p, species, symbol_column)
    _symbols_of_duplicates(adata, dups)

    record = _read_record(
        p, fmt, adata, hashed=hashed, identity=identity, vtype=vtype, vdetails=vdetails,
        value_type=value_type, normalisation=normalisation, dups=dups,
        sample_column=sample_column, info=info,
    )
    _store_record(adata, record)
    _log_read(p, fmt, adata, record, identity, vtype, normalisation, dups)
    return adata


def read_backed(
    path: str | os.PathLike, *, species: str | None = None, symbol_column: str | None = None
) -> ad.AnnData:
    """Open a large ``.h5ad`` file backed (read-only, X stays on disk).

    The value type is detected on a sample of cells and recorded; nothing is
    normalised (a backed matrix cannot be changed). The file is opened read-only with
    :func:`cafclassify.io.open_lazy` (X *and* the layers stay on disk) and never
    modified.

    Parameters
    ----------
    path
        An ``.h5ad`` file.
    species, symbol_column
        As for :func:`read`.

    Returns
    -------
    Backed AnnData with ``var["cafclassify_symbol"]`` and
    ``uns["cafclassify"]["read"]`` (in memory only).

    Raises
    ------
    InputFileError
        If the file is not an h5ad, is truncated, or holds scaled / NaN values.
    """
    p = Path(path).expanduser()
    fmt = sniff_format(p)
    if fmt != "h5ad":
        raise InputFileError(
            f"backed reading needs an .h5ad file, and this is {fmt}.",
            path=p,
            fix="use cafclassify.read() for this file, or convert it to .h5ad first.",
        )
    from ._lazy import lazy_layer_names, open_lazy

    try:
        # layers (e.g. counts) stay on disk too, unlike read_h5ad(backed="r")
        adata = open_lazy(p)
    except MemoryError:
        raise
    except InputFileError:
        raise
    except Exception as exc:
        raise _corrupt(p, "h5ad (AnnData) file", exc) from None
    if adata.X is None or adata.n_obs == 0 or adata.n_vars == 0:
        raise InputFileError(
            f"the file holds no usable matrix ({adata.n_obs} cells x {adata.n_vars} genes).",
            path=p,
            fix="check that the file is the complete export.",
        )
    info = {"has_raw": adata.raw is not None, "layers_present": lazy_layer_names(adata),
            "source_matrix": "X"}
    vtype, vdetails = _decide_value_type(adata.X, p, None, info)
    if vtype == "linear":  # the steps normalise counts on the fly, not linear values
        raise InputFileError(
            f"X holds linear normalised values ({vdetails['reason']}), which a backed (read-only) "
            "file cannot be normalised in.",
            path=p,
            fix="read it with cafclassify read (--backed no), which rescales them to 10,000 per "
            "cell and log1p-transforms them, and use its output.",
        )
    rewrite = log_rewrite(vdetails)
    if rewrite is not None:
        logger.warning(
            "%s: X holds %s(1 + x) values of %s per cell, not ln(1 + CP10k); a backed file is "
            "used as it is. `cafclassify read` rewrites them as ln(1 + CP10k).",
            p, log_label(rewrite[0]), f"{rewrite[1]:,.0f}",
        )
    counts_layer = None
    if K.LAYER_COUNTS in info["layers_present"]:  # on disk: cannot be renamed, so said and recorded
        from ._lazy import lazy_layer

        verdict = counts_layer_verdict(lazy_layer(adata, K.LAYER_COUNTS))
        if verdict is not None:
            counts_layer = {"not_counts": True, "value_type": verdict["value_type"],
                            "reason": verdict["reason"]}
            logger.warning("%s: layers['counts'] does not hold counts (%s); it is not used as counts.",
                           p, verdict["reason"])
    identity = _gene_identity(adata, p, species, symbol_column)
    record = {
        "path": str(p.resolve()),
        "sha256": file_sha256(p),
        "format": "h5ad",
        "backed": True,
        "n_cells": int(adata.n_obs),
        "n_genes": int(adata.n_vars),
        **identity,
        "value_type": vtype,
        "value_type_detected": vdetails["value_type"],
        "value_type_evidence": {k: v for k, v in vdetails.items() if k != "value_type"},
        "normalization": "none (backed, read-only)",
    }
    if counts_layer is not None:
        record["counts_layer"] = counts_layer
    if not isinstance(adata.uns.get(K.UNS), dict):
        adata.uns[K.UNS] = {}
    adata.uns[K.UNS][K.UNS_READ] = record
    logger.info(
        "opened %s backed: %d cells x %d genes, %s %s, %s (not normalised)",
        p, adata.n_obs, adata.n_vars, identity["species"], identity["id_type"], vtype,
    )
    return adata
