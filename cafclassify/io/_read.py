"""Read public single-cell data as it comes: one entry point, :func:`read`.

Formats are detected from the file content (:mod:`cafclassify.io._formats`),
the value type from the numbers (:mod:`cafclassify.io._valuetype`), species and
gene-ID type from the gene names (:mod:`cafclassify.genes`). Everything found
and everything done is recorded in ``adata.uns["cafclassify"]["read"]`` and
summarised in one INFO log line. Input files are opened read-only and never
modified. Every problem with the input is an
:class:`~cafclassify._errors.InputFileError` naming the file, what is wrong and
what to do.
"""

from __future__ import annotations

import csv
import hashlib
import logging
import os
import re
import warnings
from collections.abc import Sequence
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from .. import _keys as K
from .._errors import CafClassifyError, DataError, InputFileError
from ._formats import (
    FORMATS,
    compression_error,
    compression_problem,
    find_mtx_files,
    open_binary,
    open_text,
    sniff_format,
)
from ._rdata import R_FORMATS
from ._valuetype import value_type_details

__all__ = ["ORIENTATIONS", "VALUE_TYPE_OVERRIDES", "file_sha256", "read", "read_backed"]

logger = logging.getLogger(__name__)

#: accepted values of ``read(value_type=...)``
VALUE_TYPE_OVERRIDES = ("counts", "lognorm", "linear")
#: accepted values of ``read(orientation=...)`` (text tables only)
ORIENTATIONS = ("genes_x_cells", "cells_x_genes")
TARGET_SUM = 1e4
_CHUNK_BYTES = 1 << 20
_TABLE_CHUNK_ROWS = 2000
_TABLE_CHUNK_VALUES = 20_000_000  # at most ~160 MB of parsed values per chunk
_MAX_LISTED = 50  # names listed in uns (duplicates, ...)
_ENSEMBL_RE = re.compile(r"^ENS[A-Z]*G\d{6,}(\.\d+)?$")
_BARCODE_RE = re.compile(r"(^|[_:.-])[ACGTN]{8,}(-\d+)?($|[_:.-])")


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
def _short(exc: BaseException, limit: int = 300) -> str:
    msg = " ".join(str(exc).split())
    if not msg:
        msg = type(exc).__name__
    return msg if len(msg) <= limit else msg[: limit - 3] + "..."


def _corrupt(path: Path, what: str, exc: BaseException) -> InputFileError:
    damaged = compression_problem(path) if path.is_file() else None
    if damaged is not None:  # a damaged gzip stream, not the content, is the cause
        return compression_error(path, damaged)
    return InputFileError(
        f"cannot read the {what} ({_short(exc)}).",
        path=path,
        fix="the file is probably truncated, corrupted or not what its name says: download or "
        "export it again and compare its checksum; or pass format= if detection picked the wrong "
        "format.",
    )


def _as_str_index(values) -> pd.Index:
    return pd.Index([str(v) for v in values], dtype=object)


def _dup_report(index: pd.Index) -> tuple[int, list[str]]:
    dup = index.duplicated(keep="first")
    n = int(dup.sum())
    names = list(pd.unique(index[dup]))[:_MAX_LISTED]
    return n, [str(x) for x in names]


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
# format readers: each returns (AnnData cells x genes, info dict)
# ---------------------------------------------------------------------------
def _read_h5ad(path: Path, layer: str | None) -> tuple[ad.AnnData, dict]:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            adata = ad.read_h5ad(path)
    except MemoryError:
        raise
    except Exception as exc:  # h5py / anndata errors on broken files
        raise _corrupt(path, "h5ad (AnnData) file", exc) from None
    info: dict = {
        "source_matrix": "X",
        "layers_present": sorted(adata.layers.keys()),
        "has_raw": adata.raw is not None,
    }
    if layer is not None:
        _check_h5ad_layer(path, layer, info)
        if layer == "raw":
            raw = adata.raw.to_adata()
            raw.obs = adata.obs.copy()
            adata = raw
            info["source_matrix"] = "raw.X"
        else:
            adata = ad.AnnData(
                X=adata.layers[layer], obs=adata.obs, var=adata.var, uns=adata.uns,
                obsm=adata.obsm, layers={k: v for k, v in adata.layers.items() if k != layer},
            )
            info["source_matrix"] = f"layers[{layer!r}]"
    if adata.X is None:
        raise _no_main_matrix(path, info)
    return adata, info


def _check_h5ad_layer(path: Path, layer: str, info: dict) -> None:
    """Refuse ``layer=`` naming a matrix the file does not have (``info``: layers_present, has_raw)."""
    if layer == "raw":
        if not info["has_raw"]:
            raise InputFileError(
                "layer='raw' was asked for but the file has no adata.raw.",
                path=path,
                fix=f"use X (layer=None) or one of the layers: {info['layers_present'] or 'none'}.",
            )
    elif layer not in info["layers_present"]:
        raise InputFileError(
            f"layer {layer!r} is not in the file.",
            path=path,
            fix=f"choose one of: {info['layers_present'] or 'no layers'}"
            + (", 'raw'" if info["has_raw"] else "")
            + " or leave layer=None to use X.",
        )


def _no_main_matrix(path: Path, info: dict) -> InputFileError:
    return InputFileError(
        "the file has no main matrix (X is empty).",
        path=path,
        fix=f"pass layer= one of {info['layers_present']}"
        + (" or 'raw'" if info["has_raw"] else "")
        + " to read another matrix.",
    )


def _10x_h5_info(path: Path) -> dict:
    """Layout (Cell Ranger v2/v3), genomes or non-gene-expression feature count of a 10x .h5."""
    import h5py

    info: dict = {}
    try:
        with h5py.File(path, "r") as f:
            if "matrix" in f:
                info["layout"] = "cellranger_v3"
                ft = f["matrix"].get("features/feature_type")
                if ft is not None:
                    types = pd.Series([x.decode() if isinstance(x, bytes) else str(x) for x in ft[:]])
                    info["n_features_not_gene_expression"] = int((types != "Gene Expression").sum())
            else:
                info["layout"] = "cellranger_v2"
                info["genomes"] = sorted(f.keys())
    except OSError as exc:
        raise _corrupt(path, "10x HDF5 file", exc) from None
    return info


def _read_10x_h5(path: Path) -> tuple[ad.AnnData, dict]:
    import scanpy as sc

    info = _10x_h5_info(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            adata = sc.read_10x_h5(path)
    except MemoryError:
        raise
    except Exception as exc:
        msg = _short(exc)
        if "genome" in msg.lower():
            raise _several_genomes(path, info.get("genomes", [])) from None
        raise _corrupt(path, "10x HDF5 file", exc) from None
    if info.get("n_features_not_gene_expression"):
        logger.info(
            "%s: kept Gene Expression features only (%d other features dropped).",
            path,
            info["n_features_not_gene_expression"],
        )
    return adata, info


def _several_genomes(path: Path, genomes: list[str]) -> InputFileError:
    return InputFileError(
        f"the 10x HDF5 file holds several genomes ({', '.join(genomes)}).",
        path=path,
        fix="read one genome with scanpy.read_10x_h5(path, genome=...) and write it to .h5ad.",
    )


def _read_tsv_column(path: Path, what: str) -> pd.DataFrame:
    try:
        with open_text(path) as fh:
            df = pd.read_csv(
                fh, sep="\t", header=None, dtype=str, quoting=csv.QUOTE_NONE,
                keep_default_na=False, skip_blank_lines=True,
            )
    except pd.errors.EmptyDataError:
        raise InputFileError(
            f"the {what} file is empty.",
            path=path,
            fix="export the 10x folder again; each line must hold one " + what[:-1] + ".",
        ) from None
    except MemoryError:
        raise
    except Exception as exc:
        raise _corrupt(path, f"{what} file", exc) from None
    return df


def _read_10x_mtx(path: Path) -> tuple[ad.AnnData, dict, list[Path]]:
    import scipy.io

    files = find_mtx_files(path)
    try:
        with open_binary(files.matrix) as fh:
            mat = scipy.io.mmread(fh)
    except MemoryError:
        raise
    except Exception as exc:
        raise _corrupt(files.matrix, "Matrix Market file", exc) from None
    mat = sp.csr_matrix(mat) if sp.issparse(mat) else sp.csr_matrix(np.asarray(mat))
    feats = _read_tsv_column(files.features, "genes" if files.legacy else "features")
    bcs = _read_tsv_column(files.barcodes, "barcodes")
    n_rows, n_cols = mat.shape
    n_f, n_b = len(feats), len(bcs)
    info: dict = {
        "files": {p.name: file_sha256(p) for p in files.files},
        "legacy_genes_tsv": files.legacy,
        "feature_columns": int(feats.shape[1]),
    }
    # tolerate one header line in the features/barcodes files
    if n_f == n_rows + 1 and n_b in (n_cols, n_cols + 1):
        feats = feats.iloc[1:]
        n_f -= 1
        logger.warning("%s: first line taken as a header and skipped.", files.features)
    if n_b == n_cols + 1 and n_f == n_rows:
        bcs = bcs.iloc[1:]
        n_b -= 1
        logger.warning("%s: first line taken as a header and skipped.", files.barcodes)
    if (n_rows, n_cols) == (n_f, n_b):
        X = mat.T.tocsr()
        info["matrix_orientation"] = "genes_x_cells"
    elif (n_rows, n_cols) == (n_b, n_f):
        X = mat
        info["matrix_orientation"] = "cells_x_genes"
        logger.warning("%s: the matrix is stored cells x genes (transposed 10x layout).", files.matrix)
    else:
        raise InputFileError(
            f"the matrix is {n_rows} x {n_cols} but there are {n_f} lines in "
            f"{files.features.name} and {n_b} lines in {files.barcodes.name}; a 10x matrix is "
            "genes x cells, one line per gene and per barcode.",
            path=files.matrix.parent,
            fix="the three files do not belong together (or one is truncated): take matrix, "
            "features and barcodes from the same Cell Ranger output or GEO sample.",
        )
    ids = feats.iloc[:, 0].astype(str).to_numpy()
    names = feats.iloc[:, 1].astype(str).to_numpy() if feats.shape[1] >= 2 else ids
    var = pd.DataFrame({"gene_ids": ids}, index=_as_str_index(names))
    if feats.shape[1] >= 3:
        var["feature_types"] = feats.iloc[:, 2].astype(str).to_numpy()
    obs = pd.DataFrame(index=_as_str_index(bcs.iloc[:, 0].to_numpy()))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        adata = ad.AnnData(X=X, obs=obs, var=var)
    if "feature_types" in adata.var:
        gex = (adata.var["feature_types"] == "Gene Expression").to_numpy()
        if gex.any() and not gex.all():
            info["n_features_not_gene_expression"] = int((~gex).sum())
            logger.info(
                "%s: kept Gene Expression features only (%d other features dropped).",
                files.features, int((~gex).sum()),
            )
            adata = adata[:, gex].copy()
    return adata, info, files.files


def _table_layout(path: Path, sep: str) -> tuple[list[str], int]:
    """Return the header fields and the number of fields in the first data row."""
    with open_text(path) as fh:
        reader = csv.reader(fh, delimiter=sep)
        header = None
        first = None
        for row in reader:
            if not row or all(not c.strip() for c in row):
                continue
            if header is None:
                header = row
            else:
                first = row
                break
    if header is None:
        raise InputFileError("the file is empty.", path=path, fix="produce the table again.")
    if first is None:
        raise InputFileError(
            "the table has a header line but no data rows.",
            path=path,
            fix="the export probably failed: produce the table again.",
        )
    return header, len(first)


def _first_non_numeric(chunk: pd.DataFrame) -> tuple[str, str, str] | None:
    for col in chunk.columns:
        if chunk[col].dtype.kind in "biuf":
            continue
        conv = pd.to_numeric(chunk[col], errors="coerce")
        bad = conv.isna() & chunk[col].notna()
        if bad.any():
            row = bad.idxmax()
            return str(row), str(col), str(chunk.at[row, col])
    return None


def _read_table(path: Path, sep: str) -> tuple[sp.csr_matrix, pd.Index, pd.Index]:
    """Read a delimited table into CSR (rows x cols as in the file) with its labels.

    A damaged gzip stream decodes to garbage before its CRC is checked, so whatever
    the parser says first (a ragged row, a non-numeric value), a compressed table that
    fails is tested for damage and the damage is reported instead.
    """
    try:
        return _parse_table(path, sep)
    except CafClassifyError:
        damaged = compression_problem(path)
        if damaged is not None:
            raise compression_error(path, damaged) from None
        raise


def _parse_table(path: Path, sep: str) -> tuple[sp.csr_matrix, pd.Index, pd.Index]:
    header, n_first = _table_layout(path, sep)
    if n_first == len(header) + 1:  # R write.table style: no corner label
        names = ["__row__", *header]
    elif n_first == len(header):
        names = ["__row__", *header[1:]]
    else:
        raise InputFileError(
            f"the header line has {len(header)} fields but the first data row has {n_first}.",
            path=path,
            fix="every row must have the same number of fields (row name + one value per "
            "column); check the separator and quoting.",
        )
    if len(names) < 2:
        raise InputFileError(
            "the table has no value columns.",
            path=path,
            fix="the first column must hold row names and the others the values.",
        )
    blocks: list[sp.csr_matrix] = []
    labels: list[str] = []
    line = 1
    try:
        with open_text(path) as fh:
            reader = pd.read_csv(
                fh, sep=sep, header=None, skiprows=1, names=names, index_col=0,
                chunksize=max(1, min(_TABLE_CHUNK_ROWS, _TABLE_CHUNK_VALUES // len(names))),
                engine="c", skip_blank_lines=True,
            )
            for chunk in reader:
                bad = _first_non_numeric(chunk)
                if bad is not None:
                    row, col, val = bad
                    raise InputFileError(
                        f"non-numeric value {val!r} in row {row!r}, column {col!r}.",
                        path=path,
                        fix="the table must hold numbers only apart from the first row (column "
                        "names) and first column (row names); remove annotation rows/columns.",
                    )
                values = chunk.to_numpy(dtype=np.float32, na_value=np.nan)
                nan_rows = np.isnan(values).any(axis=1)
                if nan_rows.any():
                    i = int(np.flatnonzero(nan_rows)[0])
                    raise InputFileError(
                        f"row {str(chunk.index[i])!r} (data line {line + i}) has missing values: "
                        "a short (ragged) row, an empty field or NA.",
                        path=path,
                        fix="every row must have one value per column; write 0 for 'not detected'.",
                    )
                if np.isinf(values).any():
                    raise InputFileError(
                        "the table contains infinite values.",
                        path=path,
                        fix="remove or replace the infinite values before reading.",
                    )
                blocks.append(sp.csr_matrix(values))
                labels.extend(str(x) for x in chunk.index)
                line += len(chunk)
    except CafClassifyError:
        raise
    except MemoryError:
        raise
    except pd.errors.ParserError as exc:
        msg = _short(exc)
        m = re.search(r"Expected (\d+) fields in line (\d+), saw (\d+)", msg)
        problem = (
            f"line {m.group(2)} has {m.group(3)} fields but {m.group(1)} were expected (ragged row)."
            if m
            else f"the table cannot be parsed ({msg})."
        )
        raise InputFileError(
            problem,
            path=path,
            fix="every row must have the same number of fields; check the separator and quoting.",
        ) from None
    except Exception as exc:
        raise _corrupt(path, "table", exc) from None
    X = sp.vstack(blocks, format="csr") if blocks else sp.csr_matrix((0, len(names) - 1))
    return X, _as_str_index(labels), _as_str_index(names[1:])


def _gene_axis_score(labels: pd.Index) -> tuple[float, str]:
    """Whether a set of table labels looks like gene identifiers (1) or not (0), and why."""
    from ..genes import detect_id_type, detect_species

    sample = [str(x) for x in labels[:2000]]
    if not sample:
        return 0.0, "no labels"
    ens = float(np.mean([bool(_ENSEMBL_RE.match(x)) for x in sample]))
    if ens >= 0.5:
        return 1.0, f"{ens:.0%} Ensembl gene IDs"
    barcode = float(np.mean([bool(_BARCODE_RE.search(x)) for x in sample]))
    if barcode >= 0.5:
        return 0.0, f"{barcode:.0%} look like cell barcodes"
    if detect_id_type(sample) != "symbol":
        return 0.0, "a mix of gene IDs and other names"
    species = detect_species(sample)
    if species != "unknown":
        return 1.0, f"{species} gene symbols"
    return 0.0, "no known gene names"


def _orient_table(
    path: Path, X: sp.csr_matrix, rows: pd.Index, cols: pd.Index, orientation: str | None
) -> tuple[sp.csr_matrix, pd.Index, pd.Index, str, str]:
    if orientation is None:
        r_score, r_why = _gene_axis_score(rows)
        c_score, c_why = _gene_axis_score(cols)
        evidence = f"rows: {r_why}; columns: {c_why}"
        if r_score > c_score:
            orientation = "genes_x_cells"
        elif c_score > r_score:
            orientation = "cells_x_genes"
        else:
            raise InputFileError(
                f"cannot tell whether rows or columns are genes ({evidence}).",
                path=path,
                fix="pass orientation='genes_x_cells' (genes in rows, the usual layout of GEO "
                "tables) or orientation='cells_x_genes'.",
            )
    elif orientation not in ORIENTATIONS:
        raise InputFileError(
            f"orientation={orientation!r} is not understood.",
            path=path,
            fix=f"use one of {ORIENTATIONS}.",
        )
    else:
        evidence = "given by the caller"
    if orientation == "genes_x_cells":
        return X.T.tocsr(), cols, rows, orientation, evidence
    return X, rows, cols, orientation, evidence


def _read_loom(path: Path) -> tuple[ad.AnnData, dict]:
    import h5py

    try:
        with h5py.File(path, "r") as f:
            row_attrs = sorted(f["row_attrs"].keys()) if "row_attrs" in f else []
            col_attrs = sorted(f["col_attrs"].keys()) if "col_attrs" in f else []
    except Exception as exc:
        raise _corrupt(path, "loom file", exc) from None
    var_key = next(
        (k for k in ("Gene", "gene_names", "var_names", "Symbol", "gene", "Accession") if k in row_attrs),
        None,
    )
    obs_key = next(
        (k for k in ("CellID", "cell_names", "obs_names", "barcode", "CellId") if k in col_attrs),
        None,
    )
    if var_key is None:
        raise InputFileError(
            f"the loom file has no gene-name row attribute (row attributes: {row_attrs or 'none'}).",
            path=path,
            fix="store gene names in the row attribute 'Gene' (loompy convention).",
        )
    if not col_attrs:
        raise InputFileError(
            "the loom file has no column attributes (no cell names).",
            path=path,
            fix="store cell names in the column attribute 'CellID' (loompy convention).",
        )
    if obs_key is None:
        logger.warning("%s: no cell-name column attribute (CellID); cells are numbered.", path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            adata = ad.io.read_loom(
                path, sparse=True, var_names=var_key, obs_names=obs_key or "CellID"
            )
    except MemoryError:
        raise
    except Exception as exc:
        raise _corrupt(path, "loom file", exc) from None
    return adata, {"loom_var_attr": var_key, "loom_obs_attr": obs_key}


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
        "layers['counts'] of a processed object)" + hint + "."
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
    if value_type is None:
        if detected == "unknown":
            raise InputFileError(
                f"cannot tell what the values are ({details['reason']}).",
                path=path,
                fix="say what they are: value_type='linear' for TPM/CPM-like normalised values "
                "(they will be rescaled to 10,000 per cell and log1p-transformed), "
                "value_type='counts' for (estimated) counts, value_type='lognorm' to use them as "
                "they are.",
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


def _normalise(adata: ad.AnnData, value_type: str, normalize: bool) -> str:
    import scanpy as sc

    if value_type == "lognorm":
        return "none (already log-normalised)"
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
        normalised), ``"lognorm"`` (used as is) or ``"linear"`` (TPM/CPM-like:
        rescaled to 10,000 per cell and log1p-transformed). Scaled (negative)
        values are always refused.
    normalize
        If False, X is left as read (counts stay counts); the value type is still
        detected and recorded.
    orientation
        Text tables only: ``"genes_x_cells"`` or ``"cells_x_genes"``. Detected
        from which axis looks like gene names by default; ambiguous tables are
        refused with a message asking for this option.
    layer
        h5ad: read this layer instead of X (``"raw"`` reads ``adata.raw``). R objects:
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

    - ``X``: log1p(CP10k) values if the input held counts (or linear values),
      otherwise the log-normalised input as is;
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
    normalisation = _normalise(adata, vtype, normalize)

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
