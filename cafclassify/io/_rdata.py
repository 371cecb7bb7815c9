"""Read the R objects single-cell studies publish (``.rds``, ``.rda``, ``.RData``) without R.

Method
------
The file is parsed by the pure-Python `rdata <https://pypi.org/project/rdata/>`_
package (R's serialisation format: XDR/ASCII/native, gzip/bzip2/xz compressed;
no R at run time). Before anything is converted, the parsed tree is *peeked*:
the class attribute (and its ``package``) of each top-level object tells what the
file holds, so a file without a single-cell object is refused with a message that
says what it does hold, and an ``.RData`` file with several objects reads the one
single-cell object in it, or the one named with ``r_object=`` (``--r-object``).
Only the chosen object is converted. S4 objects become namespaces of their slots;
sparse matrices are built as SciPy matrices straight from R's arrays:

- a ``dgCMatrix`` (genes x cells, compressed sparse columns) *is* a cells x genes
  CSR matrix with the same ``x``/``i``/``p`` arrays, so nothing is densified or
  copied (counts that are whole numbers below 2**24 are stored as float32, exact);
  ``dgTMatrix``/``dgRMatrix`` are converted sparse to sparse;
- dense R matrices are column-major, so their transpose is a C-ordered view.

What is read from each kind of object:

- **Seurat** (SeuratObject v3/v4 ``Assay``; v5 ``Assay5`` with layers, split layers
  such as ``counts.1``, ``counts.2`` joined back in the object's cell order): the
  default assay (``active.assay``); its ``counts`` when present and non-empty,
  otherwise its normalised ``data`` (raw counts are preferred because
  :func:`cafclassify.read` normalises them the same way for every input);
  ``meta.data`` (author labels included) as ``obs``, the active identities as
  ``obs["seurat_ident"]``, feature metadata as ``var``, reductions as
  ``obsm["X_<name>"]``.
- **SingleCellExperiment / SummarizedExperiment** (``RangedSummarizedExperiment``
  too): the ``counts`` assay when present, otherwise ``logcounts``, otherwise the
  first assay; ``colData`` as ``obs``; ``rowData`` as ``var`` (a symbol column is
  found by :func:`cafclassify.genes.resolve_gene_identity` when the row names are
  Ensembl IDs); ``reducedDims`` as ``obsm["X_<name>"]``.
- a plain ``dgCMatrix`` or dense numeric matrix (genes x cells, R's convention,
  unless the names say otherwise), with an optional cell-metadata table
  (``metadata=``: CSV/TSV, first column the cell names).

``layer=`` picks another matrix: a layer/slot (``"data"``), a Seurat
``"ASSAY:LAYER"`` (``"SCT:counts"``), or an SCE assay name (``"logcounts"``).
The object's class, its package and version (the Seurat ``version`` slot, the SCE
``int_metadata$version``), the R version that wrote the file, the assay and layer
used and the metadata columns kept are returned for the ``read`` provenance record.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from .._errors import CafClassifyError, InputFileError
from ._rdata_tree import (
    _SAVE_FIX,
    _choose,
    _convert,
    _f32_if_exact,
    _kind,
    _klass,
    _parse,
    _RMatrix,
    _scalar_str,
    _slots,
    _strings,
    _version,
)

__all__ = ["R_FORMATS", "read_r_file"]

logger = logging.getLogger(__name__)

#: formats of :data:`cafclassify.io.FORMATS` read by this module
R_FORMATS = ("rds", "rdata")


def _as_matrix(v: Any, what: str, path: Path) -> _RMatrix:
    """A converted R matrix (sparse or dense numeric) as :class:`_RMatrix`."""
    if isinstance(v, _RMatrix):
        return v
    if isinstance(v, SimpleNamespace):
        raise InputFileError(
            f"{what} is an R object of class {_klass(v)!r}, not an in-memory matrix "
            "(dgCMatrix or dense numeric matrix).",
            path=path,
            fix="in R, turn it into an in-memory sparse matrix first (for example "
            "as(x, 'dgCMatrix')) and save the object again.",
        )
    rows = cols = None
    if hasattr(v, "coords") and hasattr(v, "dims"):  # xarray.DataArray (dimnames)
        names = [
            _strings(v.coords[d].values) if d in v.coords else None for d in v.dims
        ]
        names += [None] * (2 - len(names))
        rows, cols = names[0], names[1]
        v = v.values
    arr = np.asarray(v)
    if arr.ndim != 2 or arr.dtype.kind not in "biuf":
        raise InputFileError(
            f"{what} is not a numeric matrix ({arr.dtype} array of shape {arr.shape}).",
            path=path,
            fix=_SAVE_FIX + ".",
        )
    arr = arr.astype(np.float32) if arr.dtype.kind == "b" else _f32_if_exact(arr)
    return _RMatrix(arr.T, rows, cols, "matrix")


def _frame(v: Any, n: int, what: str, skipped: list[str]) -> pd.DataFrame:
    """A converted data.frame or S4 DFrame as a DataFrame of 1-D columns (others skipped)."""
    if isinstance(v, pd.DataFrame):
        cols = {c: v[c] for c in v.columns}
        index = v.index
    elif isinstance(v, SimpleNamespace) and "listData" in _slots(v):
        cols = dict(v.listData or {}) if isinstance(v.listData, dict) else {}
        index = _strings(_slots(v).get("rownames"))
    else:
        return pd.DataFrame(index=pd.RangeIndex(n))
    out: dict[str, Any] = {}
    for name, col in cols.items():
        if isinstance(col, pd.Series):  # keep Categorical / nullable Int32 / string arrays
            col = col.to_numpy() if isinstance(col.dtype, np.dtype) else col.array
        if hasattr(col, "coords") and hasattr(col, "dims"):
            col = col.values
        if isinstance(col, (pd.api.extensions.ExtensionArray, np.ndarray)) and col.ndim == 1 \
                and len(col) == n:
            out[str(name)] = col
        else:  # nested tables, matrices, S4 columns (Rle, ...)
            skipped.append(f"{what}:{name}")
    df = pd.DataFrame(out)
    df.index = pd.Index(index, dtype=object) if index is not None and len(index) == n else (
        pd.RangeIndex(n)
    )
    return df


# ---------------------------------------------------------------------------
# object readers: each returns (matrix cells x genes, genes, cells, obs, var, obsm, info)
# ---------------------------------------------------------------------------
def _names_or(names: list[str] | None, n: int, prefix: str) -> list[str]:
    return names if names is not None and len(names) == n else [f"{prefix}{i + 1}" for i in range(n)]


def _embedding(v: Any, cells: list[str], path: Path, what: str) -> np.ndarray | None:
    try:
        m = _as_matrix(v, what, path)
    except CafClassifyError:
        return None
    emb = np.asarray(m.T.toarray() if sp.issparse(m.T) else m.T).T  # back to cells x dims
    if emb.shape[0] != len(cells) or emb.shape[1] == 0:
        return None
    if m.rownames is not None and m.rownames != cells:
        pos = pd.Index(m.rownames).get_indexer(cells)
        if (pos < 0).any():
            return None
        emb = emb[pos]
    return np.ascontiguousarray(emb, dtype=np.float64)


def _seurat_layers(assay: Any) -> dict[str, Any]:
    s = _slots(assay)
    if "layers" in s:  # v5 Assay5
        return dict(s["layers"]) if isinstance(s["layers"], dict) else {}
    out = {}
    for slot in ("counts", "data"):
        v = s.get(slot)
        if v is None:
            continue
        shape = v.T.shape if isinstance(v, _RMatrix) else np.shape(getattr(v, "values", v))
        if 0 not in shape:
            out[slot] = v
    return out


def _logmap(v: Any) -> tuple[list[str], list[str], np.ndarray] | None:
    """A SeuratObject v5 LogMap (logical matrix names x layers)."""
    if hasattr(v, "coords") and hasattr(v, "dims"):
        names = [_strings(v.coords[d].values) if d in v.coords else None for d in v.dims]
        return names[0] or [], names[1] or [], np.asarray(v.values, dtype=bool)
    return None


def _v5_layer(assay: Any, base: str, path: Path, what: str) -> tuple[Any, list, list, list]:
    """Join a v5 layer (and its splits ``base.*``) into cells x features, object cell order."""
    s = _slots(assay)
    layers = s["layers"]
    parts = [k for k in layers if k == base] or [k for k in layers if k.startswith(base + ".")]
    cmap, fmap = _logmap(s.get("cells")), _logmap(s.get("features"))
    if cmap is None or fmap is None:
        raise InputFileError(
            f"{what}: the Assay5 has no readable cells/features maps.",
            path=path,
            fix="save the object again with SeuratObject >= 5.0.",
        )
    all_cells, cl_layers, cmat = cmap
    all_feats, fl_layers, fmat = fmap
    blocks, cell_idx, feat_sets = [], [], []
    for k in parts:
        m = _as_matrix(layers[k], f"{what} layer {k!r}", path)
        ci = np.flatnonzero(cmat[:, cl_layers.index(k)]) if k in cl_layers else np.arange(len(all_cells))
        fi = np.flatnonzero(fmat[:, fl_layers.index(k)]) if k in fl_layers else np.arange(len(all_feats))
        if m.colnames is not None:
            ci = pd.Index(all_cells).get_indexer(m.colnames)
        if m.rownames is not None:
            fi = pd.Index(all_feats).get_indexer(m.rownames)
        if m.T.shape != (len(ci), len(fi)) or (ci < 0).any() or (fi < 0).any():
            raise InputFileError(
                f"{what} layer {k!r} is {m.T.shape[1]} x {m.T.shape[0]} but its cell/feature "
                f"maps list {len(fi)} features x {len(ci)} cells.",
                path=path,
                fix="the object is inconsistent: in R, check it with validObject() and save it again.",
            )
        blocks.append((m, fi))
        cell_idx.append(ci)
        feat_sets.append(fi)
    feats = np.unique(np.concatenate(feat_sets)) if len(parts) > 1 else feat_sets[0]
    mats = []
    for m, fi in blocks:
        T = m.T
        if len(parts) > 1 and not np.array_equal(fi, feats):  # put columns on the union
            cols = np.searchsorted(feats, fi)
            T = sp.csr_matrix(T) if not sp.issparse(T) else T
            coo = T.tocoo()
            T = sp.csr_matrix((coo.data, (coo.row, cols[coo.col])), shape=(T.shape[0], len(feats)))
        mats.append(T)
    rows = np.concatenate(cell_idx)
    if len(mats) == 1:
        X = mats[0]
    elif all(sp.issparse(t) for t in mats):
        X = sp.vstack(mats, format="csr")
    else:
        X = np.vstack([t.toarray() if sp.issparse(t) else t for t in mats])
    order = np.argsort(rows, kind="stable")
    if not np.array_equal(order, np.arange(len(order))):
        X = X[order]
    cells = [all_cells[i] for i in rows[order]]
    return X, [all_feats[i] for i in feats], cells, parts


def _pick_layer(path: Path, layer: str | None, default: list[str], present: list[str]) -> str:
    if layer is None:
        for cand in default:
            if cand in present:
                return cand
        raise InputFileError(
            f"no expression matrix found (available: {present or 'none'}).",
            path=path,
            fix="the object holds no counts or normalised data; save one with them.",
        )
    if layer not in present:
        raise InputFileError(
            f"layer {layer!r} is not in the object.",
            path=path,
            fix=f"choose one of: {', '.join(present) or 'none'} (--layer NAME), or leave it unset.",
        )
    return layer


def _read_seurat(obj: Any, path: Path, layer: str | None) -> tuple:
    s = _slots(obj)
    assays = s.get("assays") if isinstance(s.get("assays"), dict) else {}
    assays = {str(k): v for k, v in assays.items()}
    default_assay = _scalar_str(s.get("active.assay")) or (next(iter(assays), None))
    present = []
    for an, a in assays.items():
        names = _seurat_layers(a)
        if "layers" in _slots(a):  # v5: list the joined layer names
            names = dict.fromkeys(k.split(".")[0] if k.split(".")[0] in ("counts", "data")
                                  else k for k in names)
        present += [f"{an}:{k}" for k in names]
    if layer is not None and ":" not in layer:
        layer = f"{default_assay}:{layer}"
    choice = _pick_layer(path, layer, [f"{default_assay}:counts", f"{default_assay}:data"], present)
    assay_name, lname = choice.split(":", 1)
    assay = assays[assay_name]
    what = f"assay {assay_name!r}"
    version = "v5 (Assay5)" if "layers" in _slots(assay) else "v3/v4 (Assay)"
    if "layers" in _slots(assay):
        X, genes, cells, parts = _v5_layer(assay, lname, path, what)
        var_df = _slots(assay).get("meta.data")
        feats_all = (_logmap(_slots(assay).get("features")) or ([],))[0]
    else:
        m = _as_matrix(_seurat_layers(assay)[lname], f"{what} slot {lname!r}", path)
        X, parts = m.T, [lname]
        genes = _names_or(m.rownames, X.shape[1], "gene")
        cells = _names_or(m.colnames, X.shape[0], "cell")
        var_df = _slots(assay).get("meta.features")
        feats_all = genes
    skipped: list[str] = []
    meta = s.get("meta.data")
    obs = _frame(meta, len(meta) if isinstance(meta, pd.DataFrame) else 0, "meta.data", skipped)
    if isinstance(meta, pd.DataFrame) and len(obs):
        obs = obs.reindex(pd.Index(cells, dtype=object)) if set(cells) <= set(map(str, obs.index)) \
            else pd.DataFrame(index=pd.Index(cells, dtype=object))
    else:
        obs = pd.DataFrame(index=pd.Index(cells, dtype=object))
    ident = s.get("active.ident")
    if isinstance(ident, pd.Categorical) and len(ident) == len(cells) and "seurat_ident" not in obs:
        obs["seurat_ident"] = ident
    var = pd.DataFrame(index=pd.Index(genes, dtype=object))
    if isinstance(var_df, pd.DataFrame) and len(var_df.columns):
        vf = _frame(var_df, len(var_df), "meta.features", skipped)
        if len(vf) == len(feats_all):
            vf.index = pd.Index(feats_all, dtype=object)
            var = vf.reindex(var.index)
    obsm = {}
    reds = s.get("reductions") if isinstance(s.get("reductions"), dict) else {}
    for rn, red in reds.items():
        emb = _embedding(_slots(red).get("cell.embeddings"), cells, path, f"reduction {rn!r}")
        if emb is not None:
            obsm[f"X_{rn}"] = emb
        else:
            skipped.append(f"reductions:{rn}")
    info = {
        "r_object_class": _klass(obj) or "Seurat",
        "r_object_version": _version(s.get("version")),
        "seurat_assay_version": version,
        "assay": assay_name,
        "default_assay": default_assay,
        "layer": lname,
        "layer_parts": parts,
        "layers_present": present,
        "reductions": sorted(obsm),
    }
    return X, genes, cells, obs, var, obsm, info, skipped


def _assay_matrices(assays: Any) -> dict[str, Any]:
    data = _slots(assays).get("data")  # SimpleAssays -> SimpleList
    if isinstance(data, SimpleNamespace):
        ld = _slots(data).get("listData")
        return dict(ld) if isinstance(ld, dict) else {}
    if isinstance(assays, SimpleNamespace) and isinstance(_slots(assays).get("listData"), dict):
        return dict(assays.listData)
    if isinstance(data, dict):  # ShallowSimpleListAssays (reference class environment)
        inner = data.get("data")
        if isinstance(inner, SimpleNamespace) and isinstance(_slots(inner).get("listData"), dict):
            return dict(inner.listData)
    return {}


def _se_row_names_and_data(s: dict) -> tuple[list[str] | None, Any]:
    rr = s.get("rowRanges")
    if isinstance(rr, SimpleNamespace):
        rs = _slots(rr)
        names = None
        if isinstance(rs.get("partitioning"), SimpleNamespace):  # GRangesList
            names = _strings(_slots(rs["partitioning"]).get("NAMES"))
        elif isinstance(rs.get("ranges"), SimpleNamespace):  # GRanges
            names = _strings(_slots(rs["ranges"]).get("NAMES"))
        return names, rs.get("elementMetadata")
    return _strings(s.get("NAMES")), s.get("elementMetadata")


def _read_se(obj: Any, path: Path, layer: str | None) -> tuple:
    s = _slots(obj)
    mats = {str(k): v for k, v in _assay_matrices(s.get("assays")).items()}
    present = list(mats)
    first = present[:1]
    choice = _pick_layer(path, layer, ["counts", "logcounts", *first], present)
    m = _as_matrix(mats[choice], f"assay {choice!r}", path)
    X = m.T
    row_names, row_data = _se_row_names_and_data(s)
    skipped: list[str] = []
    coldata = s.get("colData")
    cells = _strings(_slots(coldata).get("rownames")) if isinstance(coldata, SimpleNamespace) else None
    cells = _names_or(cells if cells is not None else m.colnames, X.shape[0], "cell")
    genes = _names_or(row_names if row_names is not None else m.rownames, X.shape[1], "gene")
    obs = _frame(coldata, X.shape[0], "colData", skipped)
    obs.index = pd.Index(cells, dtype=object)
    var = _frame(row_data, X.shape[1], "rowData", skipped)
    var.index = pd.Index(genes, dtype=object)
    obsm = {}
    icd = s.get("int_colData")
    reds = _slots(icd).get("listData", {}) if isinstance(icd, SimpleNamespace) else {}
    reds = reds.get("reducedDims") if isinstance(reds, dict) else None
    rd = _slots(reds).get("listData", {}) if isinstance(reds, SimpleNamespace) else {}
    for rn, v in (rd or {}).items():
        emb = _embedding(v, cells, path, f"reducedDim {rn!r}")
        if emb is not None:
            obsm[f"X_{rn}"] = emb
        else:
            skipped.append(f"reducedDims:{rn}")
    meta = s.get("int_metadata")
    info = {
        "r_object_class": _klass(obj),
        "r_object_version": _version(meta.get("version")) if isinstance(meta, dict) else None,
        "assay": choice,
        "layer": choice,
        "layers_present": present,
        "reductions": sorted(obsm),
    }
    return X, genes, cells, obs, var, obsm, info, skipped


def _read_matrix(obj: Any, path: Path, layer: str | None, orientation: str | None) -> tuple:
    if layer is not None:
        raise InputFileError(
            f"layer={layer!r} was given but the file holds a single matrix.",
            path=path,
            fix="leave --layer unset.",
        )
    m = _as_matrix(obj, "the object", path)
    X, genes, cells = m.T, m.rownames, m.colnames
    if orientation is None and genes is not None and cells is not None:
        from ._readers import _gene_axis_score

        r_score, _ = _gene_axis_score(pd.Index(genes))
        c_score, _ = _gene_axis_score(pd.Index(cells))
        orientation = "cells_x_genes" if c_score > r_score else "genes_x_cells"
    if orientation == "cells_x_genes":
        X = X.T.tocsr() if sp.issparse(X) else np.ascontiguousarray(X.T)
        genes, cells = cells, genes
    genes = _names_or(genes, X.shape[1], "gene")
    cells = _names_or(cells, X.shape[0], "cell")
    obs = pd.DataFrame(index=pd.Index(cells, dtype=object))
    var = pd.DataFrame(index=pd.Index(genes, dtype=object))
    info = {"r_object_class": m.r_class, "r_object_version": None, "layer": None,
            "matrix_orientation": orientation or "genes_x_cells"}
    return X, genes, cells, obs, var, {}, info, []


def _add_metadata(obs: pd.DataFrame, metadata: Path, path: Path) -> list[str]:
    from ._formats import open_text

    mp = Path(metadata).expanduser()
    try:
        with open_text(mp) as fh:
            head = fh.readline()
        sep = "\t" if head.count("\t") >= head.count(",") else ","
        with open_text(mp) as fh:
            meta = pd.read_csv(fh, sep=sep, index_col=0)
    except CafClassifyError:
        raise
    except Exception as exc:
        raise InputFileError(
            f"cannot read the cell metadata table ({type(exc).__name__}: {exc}).",
            path=mp,
            fix="give a CSV or TSV table with a header line and the cell names in the first column.",
        ) from None
    meta.index = meta.index.astype(str)
    missing = obs.index.difference(meta.index)
    if len(missing):
        raise InputFileError(
            f"{len(missing)} of the {len(obs)} cells of {path.name} are not in the metadata "
            f"table (e.g. {', '.join(map(str, missing[:3]))}).",
            path=mp,
            fix="the first column of the metadata table must hold the cell names of the matrix.",
        )
    meta = meta.loc[obs.index]
    for c in meta.columns:
        obs[str(c)] = meta[c].to_numpy()
    return [str(c) for c in meta.columns]


def _clean_obs(df: pd.DataFrame) -> pd.DataFrame:
    """Strings and logicals as h5ad-writable columns: strings categorical, NA kept."""
    for c in df.columns:
        col = df[c]
        if not isinstance(col.dtype, pd.CategoricalDtype) and col.dtype.kind in "OU":
            df[c] = pd.Categorical(col.astype(object).where(col.notna(), None))
    return df


# ---------------------------------------------------------------------------
# entry point
# ---------------------------------------------------------------------------
def read_r_file(
    path: Path, fmt: str, *, r_object: str | None = None, layer: str | None = None,
    metadata: Path | None = None, orientation: str | None = None,
) -> tuple[ad.AnnData, dict]:
    """Read the single-cell object of an ``.rds`` / ``.rda`` / ``.RData`` file.

    Parameters
    ----------
    path
        The file.
    fmt
        ``"rds"`` (one object, ``saveRDS``) or ``"rdata"`` (named objects, ``save``).
    r_object
        ``.RData``/``.rda`` only: the name of the object to read.
    layer
        The matrix to read (see the module docstring); default: raw counts.
    metadata
        A CSV/TSV table of cell metadata (first column: cell names) added to ``obs``.
    orientation
        Plain matrices only: ``"genes_x_cells"`` (R's convention) or ``"cells_x_genes"``.

    Returns
    -------
    ``(adata, info)``: cells x genes AnnData (X as stored) and what was read, for
    ``uns["cafclassify"]["read"]["details"]``.
    """
    parsed = _parse(path)
    name, robj, peek = _choose(path, fmt, parsed, r_object)
    kind = _kind(peek)
    obj = _convert(robj)
    if kind == "seurat":
        X, genes, cells, obs, var, obsm, info, skipped = _read_seurat(obj, path, layer)
    elif kind == "se":
        X, genes, cells, obs, var, obsm, info, skipped = _read_se(obj, path, layer)
    else:
        X, genes, cells, obs, var, obsm, info, skipped = _read_matrix(obj, path, layer, orientation)
    if metadata is not None:
        _add_metadata(obs, metadata, path)
    obs, var = _clean_obs(obs), _clean_obs(var)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        adata = ad.AnnData(X=X, obs=obs, var=var, obsm=obsm or None)
    ser = parsed.versions.serialized
    info.update({
        "r_object_name": name,
        "r_class_package": peek["package"],
        "r_written_by": f"R {ser >> 16}.{(ser >> 8) & 0xFF}.{ser & 0xFF}",
        "r_serialization_format": int(parsed.versions.format),
        "source_matrix": (f"{info['assay']}:{info['layer']}" if kind == "seurat"
                          else info.get("layer") or "matrix"),
        "metadata_columns": [str(c) for c in obs.columns],
        "feature_columns": [str(c) for c in var.columns],
        "metadata_file": None if metadata is None else str(Path(metadata).resolve()),
        "skipped": skipped,
        "dtype": str(X.dtype),
        "sparse": bool(sp.issparse(X)),
    })
    logger.info(
        "%s: R %s%s%s read (written by %s): using %s, %d metadata column(s)%s%s",
        path, info["r_object_class"],
        f" {info['r_object_version']}" if info.get("r_object_version") else "",
        f" {name!r}" if name else "", info["r_written_by"], info["source_matrix"],
        len(obs.columns),
        f" ({', '.join(map(str, obs.columns[:10]))}{', ...' if len(obs.columns) > 10 else ''})"
        if len(obs.columns) else "",
        f", reductions {', '.join(obsm)}" if obsm else "",
    )
    if skipped:
        logger.info("%s: not read (not per-cell/per-gene vectors): %s", path, ", ".join(skipped[:20]))
    return adata, info
