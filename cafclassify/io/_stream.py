"""Read a large input straight into an ``.h5ad`` file, block by block: :func:`read_to_h5ad`.

:func:`cafclassify.read` holds the whole matrix in memory (twice for counts: ``X`` and
``layers["counts"]``), about 5.5 GB at 100,000 cells. :func:`read_to_h5ad` writes the
*same* file that ``read(path, ...)`` followed by ``write_h5ad`` writes, without ever
holding more than one block of ``chunk_size`` cells of the matrix:

* the format, the ``layer=`` checks, duplicate gene/barcode handling, the sample
  column, gene identity (species, ID type, Ensembl-to-symbol mapping) and the
  provenance record are the very functions :func:`~cafclassify.read` uses, applied to
  ``obs``/``var`` (which are small);
* the value type is decided by the same function on the same deterministic sample of
  cells (:func:`~cafclassify.io.value_type_details` indexes the on-disk matrix), so
  the decision and its evidence are identical;
* each block of cells is checked for NaN/infinity and normalised by the same
  function as in :func:`~cafclassify.read` (:mod:`cafclassify.io._values`;
  ``normalize_total`` to 10,000 and ``log1p`` are per cell, so a block gives the rows
  of the whole), then appended to the output's ``X`` (and ``layers["counts"]``).
  Duplicate genes are *renamed* (``X-1``, ...), never merged, so no column operation
  is needed;
* the other matrices ``read()`` keeps (other layers, ``obsp``, ``varp``, ``raw``) are
  copied as stored HDF5 objects (nothing decompressed, nothing in memory).

Only inputs whose cells can be read in row blocks can be streamed: ``.h5ad`` files
whose source matrix (``X``, a layer, or ``raw/X``) is CSR or dense, and 10x Cell
Ranger ``.h5`` files (v2 and v3; their cells are contiguous:
:mod:`cafclassify.io._stream_10x`). Everything else (CSV/TSV, Matrix Market, loom,
CSC-stored h5ad matrices) raises :class:`NotStreamableError` *before anything is
written*; callers fall back to :func:`~cafclassify.read`. :func:`streamable` answers
the question without raising.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anndata as ad
import numpy as np
import scipy.sparse as sp

from .. import _keys as K
from .._errors import InputFileError
from . import _read as R
from . import _readers as F
from . import _values as V
from ._canonical import canonical
from ._h5matrix import _DEFAULT_CHUNK
from ._stream_10x import _tenx_annotations, _TenxMatrix

__all__ = ["STREAMABLE_FORMATS", "NotStreamableError", "read_to_h5ad", "streamable"]

logger = logging.getLogger(__name__)

#: formats :func:`read_to_h5ad` reads block by block
STREAMABLE_FORMATS = ("h5ad", "10x_h5")
_INT32_MAX = np.iinfo(np.int32).max


class NotStreamableError(InputFileError):
    """The input cannot be read block by block; read it with :func:`cafclassify.read`."""


# ---------------------------------------------------------------------------
# on-disk sources: cells x genes, read in row blocks (10x .h5: _stream_10x)
# ---------------------------------------------------------------------------
def _read_block(source, start: int, stop: int):
    """Rows ``start:stop`` of a source (one call per block: counted by the tests)."""
    return source.block(start, stop)


class _H5adMatrix:
    """Row blocks of an h5ad matrix (CSR sparse or dense) in an open h5py file."""

    def __init__(self, node, path: Path, name: str):
        import h5py
        from anndata.io import sparse_dataset

        self.path = path
        if isinstance(node, h5py.Dataset):
            if node.ndim != 2:
                raise NotStreamableError(
                    f"the matrix {name} is a {node.ndim}-dimensional array.",
                    path=path, fix="read the file with cafclassify.read() (in memory).",
                )
            self.sparse, self.ds = False, node
            self.nnz = int(node.shape[0]) * int(node.shape[1])
            self.dtype = node.dtype
        else:
            enc = node.attrs.get("encoding-type", "")
            if enc != "csr_matrix":
                raise NotStreamableError(
                    f"the matrix {name} is stored as {enc or 'an unknown encoding'!s}, which cannot "
                    "be read in blocks of cells (only CSR sparse and dense matrices can).",
                    path=path,
                    fix="read the file with cafclassify.read() (in memory), or rewrite it with "
                    "the matrix in CSR format (adata.X = adata.X.tocsr()).",
                )
            self.sparse, self.ds = True, sparse_dataset(node)
            self.nnz = int(node["indices"].shape[0])
            self.dtype = node["data"].dtype
        self.shape = tuple(int(x) for x in self.ds.shape)

    def __getitem__(self, rows):  # the value-type sample
        b = self.ds[rows]
        return canonical(sp.csr_matrix(b), copy=False) if self.sparse else b

    def block(self, start: int, stop: int):
        b = self.ds[start:stop]  # whole rows: a row's duplicates are all in its block
        return canonical(sp.csr_matrix(b), copy=False) if self.sparse else np.asarray(b)


# ---------------------------------------------------------------------------
# what can be streamed
# ---------------------------------------------------------------------------
def _h5ad_source_node(f, layer: str | None) -> tuple[str, str]:
    """HDF5 path of the source matrix and its name in the record."""
    if layer is None:
        return "X", "X"
    if layer == "raw":
        return "raw/X", "raw.X"
    return f"layers/{layer}", f"layers[{layer!r}]"


def streamable(path: str | os.PathLike, *, format: str | None = None, layer: str | None = None) -> tuple[bool, str]:
    """Whether :func:`read_to_h5ad` can read ``path`` block by block, and why (not).

    Cheap: reads the file header only. Problems with the file itself (missing,
    unreadable) are reported as not streamable with the reason; :func:`read_to_h5ad` or
    :func:`cafclassify.read` then raise the proper error.

    Returns
    -------
    ``(True, "")`` or ``(False, reason)``.
    """
    try:
        fmt = R._resolve_format(Path(path).expanduser(), format, layer=layer)
        if fmt not in STREAMABLE_FORMATS:
            return False, f"{fmt} files are read in memory (only {', '.join(STREAMABLE_FORMATS)} stream)"
        if fmt == "h5ad":
            import h5py

            with h5py.File(Path(path).expanduser(), "r") as f:
                _refuse_legacy(f, Path(path))
                key, name = _h5ad_source_node(f, layer)
                if key not in f:
                    return False, f"the file has no {name}"
                _H5adMatrix(f[key], Path(path), name)
    except InputFileError as exc:
        return False, exc.problem
    except Exception as exc:  # a verdict, not an error
        return False, F._short(exc)
    return True, ""


# ---------------------------------------------------------------------------
# the reader
# ---------------------------------------------------------------------------
def _check_chunk(chunk_size) -> int:
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int | np.integer) or chunk_size < 1:
        raise InputFileError(
            f"chunk_size must be a positive integer, got {chunk_size!r}.",
            fix="pass the number of cells read and written per block (e.g. 50000).",
        )
    return int(chunk_size)


def _open_h5(p: Path, what: str):
    import h5py

    try:
        return h5py.File(p, "r")
    except OSError as exc:
        raise F._corrupt(p, what, exc) from None


def _read_elem(f, key: str, default=None):
    from anndata.io import read_elem

    return read_elem(f[key]) if key in f else default


def _refuse_legacy(f, p: Path) -> None:
    import h5py

    if "raw.X" in f or "raw.var" in f or isinstance(f.get("obs"), h5py.Dataset):
        raise NotStreamableError(
            "the file uses the pre-0.7 anndata layout (obs as a record array or raw.X).",
            path=p,
            fix="read it with cafclassify.read() (in memory), or rewrite it once with a recent "
            "anndata (anndata.read_h5ad(path).write_h5ad(new_path)).",
        )


def _h5ad_plan(f, p: Path, layer: str | None) -> tuple[ad.AnnData, _H5adMatrix, dict, list[tuple[str, str]]]:
    """What ``read(p, layer=...)`` keeps of an h5ad file, without its matrices.

    Returns the annotations as an AnnData without X (obs, var, uns, obsm, varm as
    ``read()`` keeps them), the source matrix, the ``details`` record and the HDF5
    objects to copy as they are: ``(source key, output key)``.
    """
    _refuse_legacy(f, p)
    try:
        layers_present = sorted(f["layers"].keys()) if "layers" in f else []
        has_raw = "raw" in f
        info: dict = {"source_matrix": "X", "layers_present": layers_present, "has_raw": has_raw}
        if layer is None and has_raw:  # read(): adata.raw when X holds a subset of its genes
            layer = F._raw_if_x_is_a_subset(p, _read_elem(f, "var").index,
                                            _read_elem(f, "raw/var").index, info)
        if layer == "X":
            layer = None
        if layer is not None:
            F._check_h5ad_layer(p, layer, info)
        key, name = _h5ad_source_node(f, layer)
        if key not in f:
            raise F._no_main_matrix(p, info)
        source = _H5adMatrix(f[key], p, name)
        info["source_matrix"] = name
        obs = _read_elem(f, "obs")
        uns = _read_elem(f, "uns", {})
        obsm = _read_elem(f, "obsm", {})
        copies: list[tuple[str, str]] = []
        if layer == "raw":  # Raw.to_adata(): raw var/varm, obs, obsm, obsp, uns
            var = _read_elem(f, "raw/var")
            varm = _read_elem(f, "raw/varm", {})
            copies += [(f"obsp/{k}", f"obsp/{k}") for k in (f["obsp"].keys() if "obsp" in f else [])]
        elif layer is not None:  # AnnData(X=layer, obs, var, uns, obsm, other layers)
            var = _read_elem(f, "var")
            varm = {}
            copies += [(f"layers/{k}", f"layers/{k}") for k in layers_present if k != layer]
        else:  # everything
            var = _read_elem(f, "var")
            varm = _read_elem(f, "varm", {})
            copies += [(f"layers/{k}", f"layers/{k}") for k in layers_present]
            for grp in ("obsp", "varp"):
                copies += [(f"{grp}/{k}", f"{grp}/{k}") for k in (f[grp].keys() if grp in f else [])]
            if "raw" in f:
                copies.append(("raw", "raw"))
    except InputFileError:
        raise
    except MemoryError:
        raise
    except Exception as exc:
        raise F._corrupt(p, "h5ad (AnnData) file", exc) from None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        skel = ad.AnnData(obs=obs, var=var, uns=dict(uns), obsm=dict(obsm), varm=dict(varm))
    if skel.n_obs != source.shape[0] or skel.n_vars != source.shape[1]:
        raise F._corrupt(p, "h5ad (AnnData) file", ValueError(
            f"{name} is {source.shape[0]} x {source.shape[1]} but obs/var hold "
            f"{skel.n_obs} cells x {skel.n_vars} genes"))
    return skel, source, info, copies


def _decide_value_type(source, p: Path, value_type: str | None, info: dict, chunk_size: int):
    """``read()``'s decision on the same sample; NaN/inf reported as ``read()`` does (whole count)."""
    try:
        return V._decide_value_type(source, p, value_type, info)
    except InputFileError as exc:
        if "NaN" not in exc.problem and "infinite" not in exc.problem:
            raise
        n_bad = 0  # read() checks the whole matrix first and reports the total
        for a in range(0, source.shape[0], chunk_size):
            n_bad += V._count_nonfinite(_read_block(source, a, min(a + chunk_size, source.shape[0])))
        if n_bad:
            raise V._nonfinite_error(n_bad, p) from None
        raise


def _check_counts_copy(f, p: Path, copies: list[tuple[str, str]], info: dict) -> list[tuple[str, str]]:
    """``read()``'s check of a ``layers['counts']`` kept from the file (copied as stored)."""
    key = f"layers/{K.LAYER_COUNTS}"
    if key not in [c[1] for c in copies]:
        return copies
    from ._h5matrix import _reader

    verdict = V.counts_layer_verdict(_reader(f[key]))
    if verdict is None:
        return copies
    new = f"layers/{V.LAYER_NOT_COUNTS}"
    info["counts_layer"] = {"renamed_to": V.LAYER_NOT_COUNTS, "value_type": verdict["value_type"],
                            "reason": verdict["reason"]}
    logger.warning("%s: layers['counts'] does not hold counts (%s); kept as layers[%r] and not used "
                   "as counts.", p, verdict["reason"], V.LAYER_NOT_COUNTS)
    return [(s, new if d == key else d) for s, d in copies]


def _normalise_block(block, vtype: str, normalize: bool, details: dict | None = None
                     ) -> tuple[Any, Any, str, dict]:
    """``read()``'s normalisation of a block of cells: (X, counts or None, description, uns).

    ``details`` is the value-type record of the whole matrix (its sampled cells): a log
    base and scale are identified once, not per block."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        b = ad.AnnData(X=block)
    how = V._normalise(b, vtype, normalize, details)
    return b.X, b.layers.get(K.LAYER_COUNTS), how, dict(b.uns)


def _wide_index(block, nnz_total: int):
    """First block of an output whose nnz may overflow int32: store 64-bit indptr/indices."""
    if sp.issparse(block) and nnz_total >= _INT32_MAX:
        block = sp.csr_matrix(block)
        block.indptr = block.indptr.astype(np.int64)
        block.indices = block.indices.astype(np.int64)
    return block


def _source_of(f, p: Path, fmt: str, layer: str | None):
    """The source matrix of an open h5ad / 10x file, as :func:`read_to_h5ad` reads it."""
    if fmt == "h5ad":
        return _h5ad_plan(f, p, layer)[1]
    _, group, keep = _tenx_annotations(f, p)
    return _TenxMatrix(group, p, keep)


def _counts_part(path: str, fmt: str, layer: str | None, vtype: str, normalize: bool, chunk_size: int,
                 compression: str | None, part: str) -> None:
    """Worker process of :func:`read_to_h5ad`: ``layers["counts"]`` into the file ``part``.

    Reads the input again, block by block, and writes the counts that the parent's
    blocks hold (the parent checks the values and writes ``X``). Only counts input is
    kept as a counts layer, and ``read()`` keeps it as read.
    """
    if vtype != "counts" or not normalize:  # the parent starts no worker then
        raise ValueError(f"no counts layer is written for {vtype} input (normalize={normalize}).")
    import h5py

    from ._h5matrix import _MatrixWriter
    from ._part_writer import PART_KEY

    p = Path(path)
    with _open_h5(p, "input file") as f:
        source = _source_of(f, p, fmt, layer)
        n = source.shape[0]
        with h5py.File(part, "w") as g:
            w = _MatrixWriter(g, PART_KEY, n, source.shape[1], compression)
            for a in range(0, n, chunk_size):
                counts = _read_block(source, a, min(a + chunk_size, n))
                w.append(_wide_index(counts, source.nnz) if a == 0 else counts)
                del counts
            w.finish()


def read_to_h5ad(
    path: str | os.PathLike,
    out: str | os.PathLike,
    *,
    format: str | None = None,
    species: str | None = None,
    symbol_column: str | None = None,
    sample_column: str | None = None,
    value_type: str | None = None,
    normalize: bool = True,
    layer: str | None = None,
    chunk_size: int = _DEFAULT_CHUNK,
    compression: str | None = "gzip",
    stamp: Callable[[ad.AnnData], None] | None = None,
    n_jobs: int = 1,
) -> dict:
    """Read an ``.h5ad`` or 10x ``.h5`` file into an ``.h5ad`` file, ``chunk_size`` cells at a time.

    The output equals ``cafclassify.read(path, ...)`` followed by ``write_h5ad(out)``
    (``X`` and ``layers["counts"]`` within float32 rounding, identical ``obs``,
    ``var``, ``obsm``, ``uns``, other layers/``obsp``/``raw``, and the same
    ``uns["cafclassify"]["read"]`` record plus ``streamed``/``chunk_size``/``n_blocks``),
    while the matrix is never held as a whole: peak memory is about one block of
    cells (several hundred MB at 50,000 cells x 20,000 genes) plus ``obs``/``var``/
    ``obsm``. The output is written atomically.

    Parameters
    ----------
    path
        An ``.h5ad`` file (source matrix CSR or dense) or a 10x Cell Ranger ``.h5``.
    out
        Output ``.h5ad`` path (written atomically; never the input).
    format, species, symbol_column, sample_column, value_type, normalize, layer
        As for :func:`cafclassify.read`.
    chunk_size
        Cells read, normalised and written per block.
    compression
        h5py compression of the written elements (``"gzip"`` like the CLI, or ``None``).
        Matrices copied unchanged (other layers, ``obsp``, ``raw``) keep the input's.
    stamp
        Called with the output AnnData *without* its matrices (``obs``, ``var``, ``uns``
        incl. the read record, ``obsm``, ``varm``) just before it is written, e.g. to
        add provenance to ``uns``.
    n_jobs
        With 2 or more and counts as input, a second process reads the input too and
        writes ``layers["counts"]`` while this one writes ``X``
        (:class:`~cafclassify.io._part_writer.PartWriter`; not for inputs of fewer than
        ``PARALLEL_MIN_VALUES`` values); same output, less time.

    Returns
    -------
    The ``uns["cafclassify"]["read"]`` record written (a dict), with ``streamed=True``,
    ``chunk_size`` and ``n_blocks`` added to what :func:`cafclassify.read` records.

    Raises
    ------
    NotStreamableError
        Before anything is read or written, if the input cannot be read in blocks of
        cells: formats other than h5ad/10x_h5 (CSV/TSV, Matrix Market, loom), or an
        h5ad source matrix stored CSC (or in another encoding). Read those with
        :func:`cafclassify.read`. A subclass of :class:`~cafclassify._errors.InputFileError`.
    InputFileError
        Every problem :func:`cafclassify.read` reports, with the same message; nothing is
        written under ``out``.
    """
    import h5py

    from .._atomic import atomic_path

    p = Path(path).expanduser()
    chunk_size = _check_chunk(chunk_size)
    if value_type is not None and value_type not in V.VALUE_TYPE_OVERRIDES:
        raise InputFileError(
            f"value_type={value_type!r} is not understood.",
            path=p,
            fix=f"use one of {V.VALUE_TYPE_OVERRIDES} or leave it None to detect.",
        )
    fmt = R._resolve_format(p, format, layer=layer)
    if fmt not in STREAMABLE_FORMATS:
        raise NotStreamableError(
            f"{fmt} files cannot be read block by block (only {', '.join(STREAMABLE_FORMATS)} can).",
            path=p,
            fix="read it with cafclassify.read() (in memory), or convert it to .h5ad first.",
        )
    if Path(out).expanduser().resolve() == p.resolve():
        raise InputFileError(
            "the output path is the input file.",
            path=p,
            fix="write to another file; inputs are never modified.",
        )

    with _open_h5(p, "h5ad (AnnData) file" if fmt == "h5ad" else "10x HDF5 file") as f:
        if fmt == "h5ad":
            skel, source, info, copies = _h5ad_plan(f, p, layer)
        else:
            info = F._10x_h5_info(p)
            skel, group, keep = _tenx_annotations(f, p)
            source = _TenxMatrix(group, p, keep)
            copies = []
            if info.get("n_features_not_gene_expression"):
                logger.info("%s: kept Gene Expression features only (%d other features dropped).",
                            p, info["n_features_not_gene_expression"])
        if skel.n_obs != source.shape[0] or skel.n_vars != source.shape[1]:
            raise F._corrupt(p, f"{fmt} file", ValueError(
                f"the matrix is {source.shape[0]} x {source.shape[1]} but there are "
                f"{skel.n_obs} cell names and {skel.n_vars} gene names"))

        # everything read() decides, on obs/var and on the same sample of cells
        dups = R._tidy_names(skel, p)
        R._check_sample_column(skel, p, sample_column)
        vtype, vdetails = _decide_value_type(source, p, value_type, info, chunk_size)
        identity = R._gene_identity(skel, p, species, symbol_column)
        R._symbols_of_duplicates(skel, dups)

        n = source.shape[0]
        starts = list(range(0, n, chunk_size))

        def blocks():
            for a in starts:
                b = _read_block(source, a, min(a + chunk_size, n))
                n_bad = V._count_nonfinite(b)
                if n_bad:  # read() reports the total over the whole matrix
                    for a2 in range(a + chunk_size, n, chunk_size):
                        n_bad += V._count_nonfinite(_read_block(source, a2, min(a2 + chunk_size, n)))
                    raise V._nonfinite_error(n_bad, p)
                if normalize and vtype != "lognorm":
                    V._check_float32_range(b, p)  # cells are rows: a block holds whole totals
                res = _normalise_block(b, vtype, normalize, vdetails)
                del b  # hold one block at a time: release it before reading the next
                yield res
                del res

        it = blocks()
        first = next(it)
        normalisation, block_uns = first[2], first[3]
        keeps_counts = first[1] is not None
        if keeps_counts and f"layers/{K.LAYER_COUNTS}" in [c[1] for c in copies]:
            logger.info("replacing the existing layers['counts'] by the counts read from X")
            copies = [c for c in copies if c[1] != f"layers/{K.LAYER_COUNTS}"]
        copies = _check_counts_copy(f, p, copies, info)
        if vtype != "lognorm" and normalize:  # read(): uns.pop("log1p"), then log1p sets it
            skel.uns.pop("log1p", None)
            skel.uns.update(block_uns)

        record = R._read_record(
            p, fmt, skel, hashed=[p], identity=identity, vtype=vtype, vdetails=vdetails,
            value_type=value_type, normalisation=normalisation, dups=dups,
            sample_column=sample_column, info=info,
        )
        record.update(streamed=True, chunk_size=chunk_size, n_blocks=len(starts))
        R._store_record(skel, record)
        if stamp is not None:
            stamp(skel)

        from . import _part_writer
        from ._h5matrix import _MatrixWriter
        from ._part_writer import PartWriter

        counts_key = f"layers/{K.LAYER_COUNTS}"
        with atomic_path(out, suffix=".h5ad") as tmp:
            skel.write_h5ad(tmp, compression=compression)
            part = None
            try:
                if keeps_counts and int(n_jobs) > 1 and source.nnz >= _part_writer.PARALLEL_MIN_VALUES:
                    part = PartWriter(_counts_part, (str(p), fmt, layer, vtype, normalize, chunk_size, compression),
                                      tmp.with_name(f"{tmp.name}.counts"))
                with h5py.File(tmp, "a") as g:
                    if "X" in g:
                        del g["X"]
                    wx = _MatrixWriter(g, "X", n, skel.n_vars, compression)
                    wc = (_MatrixWriter(g, counts_key, n, skel.n_vars, compression)
                          if keeps_counts and part is None else None)
                    nxt = (_wide_index(first[0], source.nnz), _wide_index(first[1], source.nnz))
                    del first
                    while nxt is not None:
                        wx.append(nxt[0])
                        if wc is not None:
                            wc.append(nxt[1])
                        nxt = None  # release the written block before the next one is read
                        nxt = next(it, None)
                    wx.finish()
                    if wc is not None:
                        wc.finish()
                    if part is not None:
                        part.collect(g, counts_key)
                    for src_key, dst_key in copies:
                        if dst_key in g:
                            del g[dst_key]
                        parent, _, name = dst_key.rpartition("/")
                        f.copy(f[src_key], g[parent] if parent else g, name=name)
            finally:
                if part is not None:
                    part.close()
    R._log_read(p, fmt, skel, record, identity, vtype, normalisation, dups, how="read (streamed)")
    logger.info("%s: %d cells written in %d block(s) of <= %d cells to %s",
                p, n, len(starts), chunk_size, out)
    return record
