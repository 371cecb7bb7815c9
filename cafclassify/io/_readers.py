"""The per-format readers behind :func:`cafclassify.io.read`.

Each reader takes a path and returns ``(AnnData cells x genes, info)``, where ``info``
records what was found in the file (layers, genomes, feature columns, table layout,
loom attributes). Readers open files read-only and turn every failure into an
:class:`~cafclassify._errors.InputFileError` naming the file (:func:`_corrupt`).
Value types, gene names and the ``uns`` record are the caller's job
(:mod:`cafclassify.io._read`, :mod:`cafclassify.io._values`).

Formats: ``.h5ad`` (a named layer or ``adata.raw`` on request), 10x HDF5 (Cell Ranger 2
and >= 3), 10x Matrix Market folders (``genes.tsv`` or ``features.tsv``, gzipped or
not), delimited text tables in either orientation (decided from which axis looks like
genes, :func:`_gene_axis_score`; parsed in chunks so a large table never sits in memory
twice), and loom.
"""

from __future__ import annotations

import csv
import logging
import re
import warnings
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from .._errors import CafClassifyError, InputFileError
from ._fetch import file_sha256
from ._formats import (
    compression_error,
    compression_problem,
    find_mtx_files,
    open_binary,
    open_text,
)

logger = logging.getLogger(__name__)

#: accepted values of ``read(orientation=...)`` (text tables only)
ORIENTATIONS = ("genes_x_cells", "cells_x_genes")
_TABLE_CHUNK_ROWS = 2000
_TABLE_CHUNK_VALUES = 20_000_000  # at most ~160 MB of parsed values per chunk
_ENSEMBL_RE = re.compile(r"^ENS[A-Z]*G\d{6,}(\.\d+)?$")
_BARCODE_RE = re.compile(r"(^|[_:.-])[ACGTN]{8,}(-\d+)?($|[_:.-])")


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
    if layer is None and adata.raw is not None:
        layer = _raw_if_x_is_a_subset(path, adata.var_names, adata.raw.var_names, info)
    if layer == "X":
        layer = None
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


def _raw_if_x_is_a_subset(path: Path, x_genes, raw_genes, info: dict) -> str | None:
    """``"raw"`` when X holds a subset of ``adata.raw``'s genes (and says why in ``info``).

    scanpy's workflow keeps the whole log-normalised matrix in ``adata.raw`` and cuts X
    to the highly variable genes; ``scanpy.tl.score_genes`` then scores on ``raw`` by
    default. Signature scores need the whole transcriptome too (a 2,000-gene X keeps a
    fraction of each set), so ``raw`` is read unless ``layer="X"`` asks for X.
    """
    x_genes, raw_genes = pd.Index(x_genes), pd.Index(raw_genes)
    if len(raw_genes) <= len(x_genes) or not x_genes.isin(raw_genes).all():
        return None
    info["source_matrix_reason"] = (
        f"X holds {len(x_genes)} of the {len(raw_genes)} genes of adata.raw (e.g. highly "
        "variable genes); signatures need every gene, so adata.raw was read (layer='X' reads X)"
    )
    logger.warning("%s: %s.", path, info["source_matrix_reason"])
    return "raw"


def _check_h5ad_layer(path: Path, layer: str, info: dict) -> None:
    """Refuse ``layer=`` naming a matrix the file does not have (``info``: layers_present, has_raw)."""
    if layer == "X":
        return
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
            + " or leave layer=None (or 'X') to use X.",
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
