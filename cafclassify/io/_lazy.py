"""Out-of-core access to large ``.h5ad`` files.

``anndata.read_h5ad(path, backed="r")`` keeps ``X`` on disk but reads every layer
(e.g. ``layers["counts"]``, as large as ``X``) and every pairwise matrix into memory.
:func:`open_lazy` opens the file the same way except that layers and ``obsp`` stay on
disk too; :func:`lazy_layer` hands out a layer as a row-sliceable on-disk dataset.

:func:`write_annotated` writes the result of a step that only *added annotations*
(``obs``, ``var``, ``obsm``, ``varm``, ``uns``) to a lazily opened AnnData: the
matrices (``X``, layers, ``raw``) are copied from the source file block by block in
their stored, compressed form (HDF5 object copy: nothing is decompressed, nothing is
held in memory), and the new annotations are written next to them. The output is
written atomically (temporary file, then rename).
"""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path

import anndata as ad

from .._errors import DataError, InputFileError

__all__ = ["is_lazy", "lazy_layer", "lazy_layer_names", "lazy_source", "open_h5ad_file", "open_lazy",
           "write_annotated"]

logger = logging.getLogger(__name__)

#: elements read into memory by :func:`open_lazy` (everything but X, layers, obsp, varp, raw/X)
_IN_MEMORY = ("obs", "var", "obsm", "varm", "uns")
#: elements copied verbatim (compressed HDF5 objects) by :func:`write_annotated`
_MATRICES = ("X", "layers", "raw", "obsp", "varp")


def open_h5ad_file(path: str | os.PathLike):
    """Open an ``.h5ad`` file read-only with h5py, with clear errors for wrong files."""
    import h5py

    p = Path(path).expanduser()
    if not p.is_file():
        raise InputFileError("the input .h5ad file does not exist.", path=p,
                             fix="check the path (relative paths are resolved from the working directory).")
    try:
        f = h5py.File(p, "r")
    except OSError as exc:
        raise InputFileError(f"cannot be opened as an .h5ad (HDF5) file ({exc}).", path=p,
                             fix="pass an .h5ad file written by anndata (`cafclassify read`).") from None
    if "obs" not in f or "var" not in f:
        f.close()
        raise InputFileError("is an HDF5 file but not an .h5ad (no obs/var).", path=p,
                             fix="pass an .h5ad file written by anndata (`cafclassify read`).")
    return f


def open_lazy(path: str | os.PathLike) -> ad.AnnData:
    """Open an ``.h5ad`` file read-only with every matrix left on disk.

    Like ``anndata.read_h5ad(path, backed="r")`` (``X`` is a backed dataset read in
    row blocks), except that ``layers``, ``obsp`` and ``varp`` are *not* loaded either;
    use :func:`lazy_layer` to read a layer in blocks. ``obs``, ``var``, ``obsm``,
    ``varm`` and ``uns`` are in memory and may be changed (the file is never written).

    Parameters
    ----------
    path
        An ``.h5ad`` file.

    Returns
    -------
    Backed AnnData (``adata.isbacked`` is true; ``adata.filename`` is ``path``).

    Raises
    ------
    InputFileError
        If the file cannot be opened as an ``.h5ad`` file.
    """
    from anndata.io import read_elem

    p = Path(path).expanduser()
    f = open_h5ad_file(p)
    try:
        if "X" not in f:
            raise InputFileError("is an .h5ad file without an expression matrix (no X).", path=p,
                                 fix="pass an .h5ad file written by anndata (`cafclassify read`).")
        d = {k: read_elem(f[k]) for k in _IN_MEMORY if k in f}
        if "raw" in f:  # raw/X stays on disk; anndata needs raw's var (and varm)
            d["raw"] = {k: read_elem(f[f"raw/{k}"]) for k in ("var", "varm") if f"raw/{k}" in f}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            adata = ad.AnnData(filename=f, **d)
    except InputFileError:
        f.close()
        raise
    except Exception as exc:
        f.close()
        raise InputFileError(f"cannot be read as an .h5ad file ({type(exc).__name__}: {exc}).", path=p,
                             fix="check that the file is complete (not truncated) and was written by anndata.") from None
    return adata


def is_lazy(adata: ad.AnnData) -> bool:
    """True for a backed AnnData (from :func:`open_lazy` or ``read_h5ad(backed=...)``)."""
    return bool(getattr(adata, "isbacked", False))


def lazy_source(adata: ad.AnnData) -> Path:
    """Path of the file behind a backed AnnData."""
    if not is_lazy(adata):
        raise DataError("the AnnData object is not backed by a file.", path="adata",
                        fix="open the file with cafclassify.io.open_lazy(path).")
    return Path(adata.filename)


def lazy_layer(adata: ad.AnnData, layer: str):
    """Row-sliceable on-disk view of ``layers[layer]`` of a backed AnnData.

    Returns the in-memory layer if the object holds one (e.g. a normal AnnData).
    """
    if layer in adata.layers:
        return adata.layers[layer]
    if not is_lazy(adata):
        raise DataError(f"layer {layer!r} not found (available layers: {sorted(adata.layers) or 'none'}).",
                        path="adata.layers", fix="pass layer=None to use adata.X, or one of the available layers.")
    f = adata.file._file
    key = f"layers/{layer}"
    if key not in f:
        avail = sorted(f["layers"].keys()) if "layers" in f else []
        raise DataError(f"layer {layer!r} not found (available layers: {avail or 'none'}).",
                        path=f"{adata.filename}: layers",
                        fix="pass layer=None to use adata.X, or one of the available layers.")
    node = f[key]
    import h5py

    if isinstance(node, h5py.Dataset):
        return node
    from anndata.io import sparse_dataset

    return sparse_dataset(node)


def lazy_layer_names(adata: ad.AnnData) -> list[str]:
    """Layer names of a backed AnnData (on disk) or of an in-memory one."""
    names = set(adata.layers.keys())
    if is_lazy(adata):
        f = adata.file._file
        if "layers" in f:
            names.update(f["layers"].keys())
    return sorted(names)


def write_annotated(adata: ad.AnnData, path: str | os.PathLike, *, stamp=None) -> Path:
    """Write a backed AnnData's annotations with its source file's matrices, atomically.

    ``X``, ``layers``, ``raw``, ``obsp`` and ``varp`` are copied from the source file as
    stored (HDF5 object copy, compressed chunks copied without decoding); ``obs``,
    ``var``, ``obsm``, ``varm`` and ``uns`` come from ``adata`` (where a step wrote its
    results). The cells and genes must be those of the source file (no subsetting).

    Parameters
    ----------
    adata
        A backed AnnData from :func:`open_lazy`.
    path
        Output ``.h5ad``; must differ from the source file.
    stamp
        Optional callable applied to an in-memory skeleton (obs/var/uns...) before it is
        written (e.g. provenance).

    Returns
    -------
    The output path.
    """
    import h5py

    from .._atomic import atomic_path

    src = lazy_source(adata)
    out = Path(path).expanduser()
    if out.resolve() == src.resolve():
        raise InputFileError("the output file is the input file.", path=out,
                             fix="write the result to a new path (inputs are never modified).")
    f_src = adata.file._file
    node = f_src["X"]
    n_obs, n_vars = (node.attrs["shape"] if "shape" in node.attrs else node.shape)[:2]
    if (int(n_obs), int(n_vars)) != tuple(adata.shape):
        raise DataError(f"the AnnData ({adata.shape}) no longer matches its file ({n_obs} x {n_vars}).",
                        path=src, fix="write subsets with anndata, not with write_annotated().")
    skeleton = ad.AnnData(obs=adata.obs, var=adata.var, uns=dict(adata.uns),
                          obsm=dict(adata.obsm.items()), varm=dict(adata.varm.items()))
    if stamp is not None:
        stamp(skeleton)
    with atomic_path(out, suffix=".h5ad") as tmp:
        skeleton.write_h5ad(tmp)
        with h5py.File(tmp, "a") as f_out:
            for key in _MATRICES:
                if key in f_out:
                    del f_out[key]
                if key in f_src:
                    f_src.copy(f_src[key], f_out, name=key)
    logger.info("wrote %s (matrices copied from %s)", out, src)
    return out
