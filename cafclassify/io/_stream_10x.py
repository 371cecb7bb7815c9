"""A 10x Cell Ranger ``.h5`` file read in blocks of cells, as :func:`cafclassify.read` reads it.

The streamed read (:func:`cafclassify.io._stream.read_to_h5ad`) reads 10x Cell Ranger
``.h5`` files (v2 and v3) without holding their matrix: the matrix is stored CSC, genes
x cells, so the values of a cell are contiguous on disk and a block of cells is one
slice of ``data``/``indices`` (:class:`_TenxMatrix`). The annotations are built
exactly as :func:`scanpy.read_10x_h5` builds them (:func:`_tenx_annotations`), the
values are those it gives (``int32`` counts become ``float32``, Gene Expression
features only), every sparse block is canonical (:mod:`cafclassify.io._canonical`), and
a damaged file is reported in :func:`~cafclassify.read`'s words
(:func:`~cafclassify.io._readers._corrupt`, :func:`_missing`), so the output equals
``read()`` followed by ``write_h5ad``.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import anndata as ad
import numpy as np
import scipy.sparse as sp

from .._errors import InputFileError
from . import _readers as F
from ._canonical import canonical


class _TenxMatrix:
    """Row (cell) blocks of a 10x Cell Ranger .h5 matrix (CSC genes x cells on disk).

    Values as :func:`scanpy.read_10x_h5` gives them (int32 counts become float32),
    restricted to the kept features (Gene Expression only).
    """

    def __init__(self, group, path: Path, keep: np.ndarray | None):
        self.path = path
        try:
            n_features, n_cells = (int(x) for x in group["shape"][()])
            self.data, self.indices = group["data"], group["indices"]
            self.indptr = np.asarray(group["indptr"][()], dtype=np.int64)
        except (KeyError, ValueError, TypeError) as exc:
            raise F._corrupt(path, "10x HDF5 file", _missing(exc)) from None
        if (
            len(self.indptr) != n_cells + 1 or self.indptr[0] != 0
            or self.indptr[-1] != self.data.shape[0] or self.indices.shape != self.data.shape
            or np.any(np.diff(self.indptr) < 0)
        ):
            raise F._corrupt(path, "10x HDF5 file", ValueError(
                f"matrix/indptr, data and indices do not describe a {n_features} x {n_cells} matrix"))
        self.n_features = n_features
        self.keep = None if keep is None or keep.all() else np.flatnonzero(keep)
        self.shape = (n_cells, n_features if self.keep is None else len(self.keep))
        self.nnz = int(self.data.shape[0])
        self.dtype = np.dtype(np.float32) if self.data.dtype == np.int32 else self.data.dtype

    def _csr(self, data, indices, indptr) -> sp.csr_matrix:
        if data.dtype == np.int32:  # as scanpy.read_10x_h5
            data = data.astype(np.float32)
        try:
            m = sp.csr_matrix((data, indices, indptr), shape=(len(indptr) - 1, self.n_features))
        except ValueError as exc:
            raise F._corrupt(self.path, "10x HDF5 file", exc) from None
        m = canonical(m, copy=False)  # as read() does after scanpy.read_10x_h5
        return m if self.keep is None else m[:, self.keep]

    def block(self, start: int, stop: int) -> sp.csr_matrix:
        lo, hi = int(self.indptr[start]), int(self.indptr[stop])
        return self._csr(self.data[lo:hi], self.indices[lo:hi], self.indptr[start: stop + 1] - lo)

    def __getitem__(self, rows) -> sp.csr_matrix:  # the value-type sample (sorted row indices)
        rows = np.asarray(rows)
        datas, idxs, ptr = [], [], [0]
        for r in rows:
            lo, hi = int(self.indptr[r]), int(self.indptr[r + 1])
            datas.append(self.data[lo:hi])
            idxs.append(self.indices[lo:hi])
            ptr.append(ptr[-1] + hi - lo)
        data = np.concatenate(datas) if datas else np.zeros(0, self.data.dtype)
        idx = np.concatenate(idxs) if idxs else np.zeros(0, self.indices.dtype)
        return self._csr(data, idx, np.asarray(ptr, dtype=np.int64))


def _missing(exc: BaseException) -> BaseException:
    """scanpy's wording for a 10x file without a required dataset (read() reports it so)."""
    if isinstance(exc, KeyError):
        return Exception("File is missing one or more required datasets.")
    return exc


def _str(a) -> np.ndarray:
    return np.asarray(a).astype(str)


def _tenx_annotations(f, path: Path) -> tuple[ad.AnnData, Any, np.ndarray | None]:
    """obs/var of a 10x .h5 exactly as :func:`scanpy.read_10x_h5` builds them.

    Returns an AnnData without X, the HDF5 group holding the matrix and the mask of
    kept features (None: all).
    """
    import h5py

    try:
        if "matrix" in f:  # Cell Ranger >= 3 (scanpy's _read_v3_10x_h5)
            g = f["matrix"]
            if "features" not in g:
                raise ValueError("10x h5 has no features group")
            feats = g["features"]
            n_features, n_cells = (int(x) for x in g["shape"][()])
            obs = {"obs_names": _str(g["barcodes"][()])}
            var = {"var_names": _str(feats["name"][()])}
            if "gene_id" not in feats:
                var["gene_ids"] = _str(feats["id"][()])
            else:
                var["gene_ids"] = _str(feats["gene_id"][()])
                var["probe_ids"] = _str(feats["id"][()])
            var["feature_types"] = _str(feats["feature_type"][()])
            if "filtered_barcodes" in g:
                obs["filtered_barcodes"] = np.asarray(g["filtered_barcodes"][()]).astype(bool)
            for name, item in feats.items():
                if isinstance(item, h5py.Dataset) and name not in (
                    "name", "feature_type", "id", "gene_id", "_all_tag_keys"
                ):
                    var[name] = np.asarray(item[()]).astype(bool if item.dtype.kind == "b" else str)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                skel = ad.AnnData(sp.csr_matrix((n_cells, n_features), dtype=np.float32),
                                  obs=obs, var=var)
                keep = (skel.var["feature_types"] == "Gene Expression").to_numpy()
                skel = skel[:, keep].copy()
            skel.X = None
            return skel, g, keep
        genomes = list(f.keys())  # Cell Ranger 2 (scanpy's _read_legacy_10x_h5)
        if len(genomes) > 1:
            raise F._several_genomes(path, sorted(genomes))
        g = f[genomes[0]]
        n_features, n_cells = (int(x) for x in g["shape"][()])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            skel = ad.AnnData(
                sp.csr_matrix((n_cells, n_features), dtype=np.float32),
                obs={"obs_names": _str(g["barcodes"][()])},
                var={"var_names": _str(g["gene_names"][()]), "gene_ids": _str(g["genes"][()])},
            )
        skel.X = None
        return skel, g, None
    except InputFileError:
        raise
    except MemoryError:
        raise
    except Exception as exc:
        raise F._corrupt(path, "10x HDF5 file", _missing(exc)) from None
