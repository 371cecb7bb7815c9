"""Atomic output: write to a temporary file in the same folder, then rename.

A run killed at any moment leaves either the complete previous file, the
complete new file, or nothing: never a half-written file under the final name.
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from ._errors import InputFileError
from ._write_failure import is_write_error, output_error, quiet_hdf5_dealloc, release_hdf5_handles

if TYPE_CHECKING:
    import anndata as ad

__all__ = ["atomic_path", "ensure_writable_dir", "write_h5ad_atomic", "write_text_atomic"]

# OSErrors while writing that are about the output location, not a bug: disk full, quota,
# read-only file system, permissions, file too large, output path is a folder.
_OUTPUT_ERRNOS = frozenset(
    getattr(errno, name)
    for name in ("ENOSPC", "EDQUOT", "EROFS", "EACCES", "EPERM", "EFBIG", "EISDIR")
    if hasattr(errno, name)
)


def ensure_writable_dir(path: str | os.PathLike) -> Path:
    """Create the parent folder of ``path`` if needed and check it is writable."""
    parent = Path(path).expanduser().resolve().parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputFileError(
            f"cannot create the output folder ({exc.strerror}).",
            path=parent,
            fix="choose an output path in a folder you can write to.",
        ) from None
    if not os.access(parent, os.W_OK | os.X_OK):
        raise InputFileError(
            "the output folder is not writable.",
            path=parent,
            fix="choose an output path in a folder you can write to, or fix its permissions.",
        )
    return parent


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` on success.

    On any exception the temporary file is removed and ``path`` is untouched.
    """
    final = Path(path).expanduser()
    parent = ensure_writable_dir(final)
    sfx = suffix if suffix is not None else "".join(final.suffixes[-2:]) or ".tmp"
    fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=f".part{sfx}", dir=parent)
    os.close(fd)
    tmp_path = Path(tmp)
    restore_hooks = quiet_hdf5_dealloc()  # a failed HDF5 write: one error, not one per handle

    try:
        yield tmp_path
        with contextlib.suppress(OSError):
            # make the file readable like a normally created one (mkstemp uses 0600)
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp_path, 0o666 & ~umask)
        os.replace(tmp_path, final)
    except (OSError, RuntimeError) as exc:  # h5py raises both for a failed write
        write_failed = is_write_error(exc, tmp_path)  # see cafclassify._write_failure
        if write_failed:
            release_hdf5_handles(exc)
        with contextlib.suppress(OSError):
            tmp_path.unlink()
        if write_failed:
            raise output_error(exc, final) from None
        raise
    except BaseException:
        with contextlib.suppress(OSError):
            tmp_path.unlink()
        raise
    finally:
        restore_hooks()


def write_h5ad_atomic(adata: ad.AnnData, path: str | os.PathLike, *, compression: str | None = "gzip") -> Path:
    """Write ``adata`` to ``path`` atomically (temporary file + rename)."""
    with atomic_path(path, suffix=".h5ad") as tmp:
        adata.write_h5ad(tmp, compression=compression)
    return Path(path)


def write_text_atomic(text: str, path: str | os.PathLike, *, encoding: str = "utf-8") -> Path:
    """Write a text file atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding=encoding)
    return Path(path)
