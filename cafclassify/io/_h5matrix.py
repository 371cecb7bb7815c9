"""An ``.h5ad`` file read and written piece by piece, without loading its matrices.

The steps that must never hold a whole expression matrix in memory share these
helpers: the shard split and merge (:mod:`cafclassify.io._shard`), the on-disk cell
filter (:mod:`cafclassify.io._filter_h5ad`), the streamed read
(:mod:`cafclassify.io._stream`) and the simulator. They work chunk by chunk: the
expression matrix ``X`` and every layer (:func:`_matrix_keys`) are read from the file
in blocks of ``chunk_size`` cells (:func:`_reader`, :func:`_block`) and appended to the
output (:class:`_MatrixWriter`), so only ``obs``, ``obsm`` and ``uns``, which are
small, are read whole (:func:`_read_frame`, :func:`_read_mapping`).

anndata cannot append to an on-disk CSR matrix once its non-zeros outgrow a 32-bit
``indptr``, so the first block written decides its width (:func:`wide_indptr`).
"""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import scipy.sparse as sp

from .._errors import DataError, InputFileError

__all__ = ["wide_indptr"]

_DEFAULT_CHUNK = 50_000


def _check_chunk(chunk_size) -> int:
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int | np.integer) or chunk_size < 1:
        raise DataError(f"chunk_size must be a positive integer, got {chunk_size!r}.",
                        fix="pass a positive number of cells per block.")
    return int(chunk_size)


def _open(path: str | os.PathLike):
    from ._lazy import open_h5ad_file

    return open_h5ad_file(path)


def _matrix_keys(f) -> list[str]:
    """HDF5 paths of the cells x genes matrices: X and every layer."""
    keys = ["X"] if "X" in f else []
    if "layers" in f:
        keys += [f"layers/{k}" for k in f["layers"].keys()]
    return keys


def _reader(node):
    """Row-sliceable view of an on-disk matrix (sparse dataset or dense HDF5 dataset)."""
    import h5py
    from anndata.io import sparse_dataset

    if isinstance(node, h5py.Dataset):
        return node
    enc = node.attrs.get("encoding-type", "")
    if enc not in ("csr_matrix", "csc_matrix"):
        raise InputFileError(f"matrix {node.name!r} has an unsupported encoding {enc!r}.",
                             path=node.file.filename,
                             fix="store X and layers as CSR/CSC sparse or dense arrays.")
    return sparse_dataset(node)


def _block(reader, start: int, stop: int):
    block = reader[start:stop]
    if sp.issparse(block):
        from ._canonical import canonical

        return canonical(sp.csr_matrix(block), copy=False)  # duplicates summed, indices sorted
    return np.asarray(block)


def wide_indptr(block: sp.csr_matrix, max_nnz: int) -> sp.csr_matrix:
    """``block`` with a 64-bit ``indptr`` when the matrix it starts may exceed 2**31 - 1 values.

    anndata cannot append to an on-disk CSR matrix once its non-zeros outgrow a 32-bit
    ``indptr`` (e.g. 1M cells x ~2,000 detected genes), so the first block written
    decides. ``max_nnz`` is an upper bound on the final non-zeros (e.g. rows x columns).
    """
    if max_nnz < np.iinfo(np.int32).max or block.indptr.dtype == np.int64:
        return block
    block = block.copy()
    block.indptr = block.indptr.astype(np.int64)  # indices (column numbers) stay 32-bit
    return block


class _MatrixWriter:
    """Append row blocks to an on-disk matrix (CSR or dense) in an open h5py file."""

    def __init__(self, f, key: str, n_rows: int, n_cols: int, compression: str | None):
        self.f, self.key, self.n_rows, self.n_cols = f, key, n_rows, n_cols
        # the shuffle filter (standard HDF5, readable everywhere) regroups the bytes of the
        # integer indices and values: smaller files and faster gzip/lzf writes
        self.kw = {"compression": compression, "shuffle": True} if compression else {}
        self.row = 0
        self.sparse: bool | None = None

    def append(self, block) -> None:
        from anndata.io import sparse_dataset, write_elem

        if self.sparse is None:
            self.sparse = sp.issparse(block)
            if self.sparse:
                first = wide_indptr(sp.csr_matrix(block), self.n_rows * self.n_cols)
                write_elem(self.f, self.key, first, dataset_kwargs=self.kw)
            else:
                ds = self.f.create_dataset(self.key, shape=(self.n_rows, self.n_cols),
                                           dtype=block.dtype, **self.kw)
                ds.attrs["encoding-type"] = "array"
                ds.attrs["encoding-version"] = "0.2.0"
                ds[: block.shape[0]] = block
        elif self.sparse:
            sparse_dataset(self.f[self.key]).append(sp.csr_matrix(block))
        else:
            self.f[self.key][self.row: self.row + block.shape[0]] = np.asarray(block)
        self.row += block.shape[0]

    def finish(self, dtype=np.float32) -> None:
        from anndata.io import write_elem

        if self.sparse is None:  # no rows at all
            write_elem(self.f, self.key, sp.csr_matrix((0, self.n_cols), dtype=dtype), dataset_kwargs=self.kw)


def _read_frame(f, key: str) -> pd.DataFrame:
    from anndata.io import read_elem

    return read_elem(f[key])


def _read_mapping(f, key: str) -> dict:
    from anndata.io import read_elem

    return dict(read_elem(f[key])) if key in f else {}
