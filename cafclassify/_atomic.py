"""Atomic output: write to a temporary file in the same folder, then rename.

A run killed at any moment leaves either the complete previous file, the
complete new file, or nothing: never a half-written file under the final name.

A write that fails (disk full, quota, I/O error) becomes one
:class:`~cafclassify._errors.InputFileError` naming the output, and the temporary
file is removed. HDF5 needs care there: when a file cannot be flushed, closing it
fails half-way, and the dataset handles still referenced by the failed call's frames
crash the process (segmentation fault in ``H5D_close``) when Python frees them
later; HDF5's own exit handler may crash on them too. :func:`release_hdf5_handles`
marks those handles as not to be closed (h5py's ``locked``; they are freed with the
process), silences h5py's error printing and sets :data:`HDF5_WRITE_FAILED`, on which
the command line ends the process without running HDF5's exit handler, so the
failure ends as one paragraph and exit status 2.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from ._errors import InputFileError

if TYPE_CHECKING:
    import anndata as ad

__all__ = ["atomic_path", "ensure_writable_dir", "release_hdf5_handles", "write_h5ad_atomic",
           "write_text_atomic"]

#: set once an HDF5 write failed in this process: HDF5 then cannot shut down cleanly (its
#: exit handler closes the broken file again and may crash), so the CLI ends the process
#: with os._exit after reporting the error (cafclassify.cli.main)
HDF5_WRITE_FAILED = False

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


def _lock_hdf5(value, seen: set[int], locked: list, depth: int = 0) -> None:
    """Mark the h5py handles in ``value`` (and a few levels of its containers) as locked."""
    if id(value) in seen or depth > 3:
        return
    seen.add(id(value))
    import h5py
    from h5py._objects import ObjectID

    if isinstance(value, ObjectID):
        value.locked = True
        locked.append(value)
    elif isinstance(value, h5py.HLObject):
        value.id.locked = True
        locked.append(value.id)
    elif isinstance(value, (list, tuple, set, frozenset)):
        for v in value:
            _lock_hdf5(v, seen, locked, depth + 1)
    elif isinstance(value, dict):
        for v in value.values():
            _lock_hdf5(v, seen, locked, depth + 1)
    elif type(value).__module__.startswith(("anndata", "h5py")) and hasattr(value, "__dict__"):
        for v in vars(value).values():
            _lock_hdf5(v, seen, locked, depth + 1)


def release_hdf5_handles(exc: BaseException) -> None:
    """Make the HDF5 handles left by a failed write safe to free (see the module docstring).

    Walks the frames of ``exc`` and of the exceptions it chains, and locks every h5py
    object found in their local variables: h5py then never closes them (closing them
    after a failed file close crashes HDF5). No-op when h5py was never imported.
    """
    if "h5py" not in sys.modules:
        return
    import h5py

    with contextlib.suppress(Exception):
        h5py._errors.silence_errors()  # no HDF5-DIAG error stacks on stderr
    seen: set[int] = set()
    locked: list = []
    chain: set[int] = set()
    while exc is not None and id(exc) not in chain:
        chain.add(id(exc))
        tb = exc.__traceback__
        while tb is not None:
            for v in tb.tb_frame.f_locals.values():
                _lock_hdf5(v, seen, locked)
            tb = tb.tb_next
        exc = exc.__cause__ or exc.__context__
    global HDF5_WRITE_FAILED
    HDF5_WRITE_FAILED = HDF5_WRITE_FAILED or bool(locked)


def _quiet_hdf5_dealloc(unraisable_hook, except_hook):
    """Hooks that drop h5py's errors from freeing the handles of a failed write.

    When a write fails, h5py frees the file's handles as the failed call unwinds and
    each one reports the same I/O error (Cython prints the traceback with
    ``sys.excepthook``, then "Exception ignored in ... __dealloc__" with
    ``sys.unraisablehook``). The failure itself is raised and reported once.
    """
    def from_h5py_dealloc(exc, tb) -> bool:
        if not isinstance(exc, (OSError, RuntimeError)):  # I/O error, "can't decrement id ref count"
            return False
        while tb is not None:
            code = tb.tb_frame.f_code
            if "h5py" in code.co_filename and "dealloc" in code.co_name:
                return True
            tb = tb.tb_next
        return False

    def unraisable(u):
        if isinstance(u.exc_value, (OSError, RuntimeError)) and "h5py" in repr(u.object):
            return
        unraisable_hook(u)

    def excepthook(kind, value, tb):
        if from_h5py_dealloc(value, tb):
            return
        except_hook(kind, value, tb)

    return unraisable, excepthook


def _errno(exc: BaseException) -> int | None:
    """The errno of an OSError, or the one HDF5 names in its message ("errno = 28")."""
    if isinstance(exc, OSError) and exc.errno:
        return exc.errno
    m = re.search(r"errno = (\d+)", str(exc))
    return int(m.group(1)) if m else None


def _write_error(exc: BaseException, tmp: Path) -> bool:
    """Whether an error raised while writing ``tmp`` is about the output (not a bug, not the input).

    OSErrors of the output kinds (disk full, quota, ...), and any OSError or h5py
    RuntimeError that names the temporary file (HDF5 names the file it failed to write).
    """
    if not isinstance(exc, (OSError, RuntimeError)):
        return False
    if isinstance(exc, OSError):
        if exc.errno in _OUTPUT_ERRNOS:
            return True
        if exc.filename is not None and Path(str(exc.filename)).name == tmp.name:
            return True
    return tmp.name in str(exc)


def _output_error(exc: BaseException, final: Path) -> InputFileError:
    # h5py's message is the whole HDF5 record (time, buffer, offsets): say the cause only
    code = _errno(exc)
    reason = os.strerror(code) if code else (getattr(exc, "strerror", None) or type(exc).__name__)
    return InputFileError(
        f"cannot write the output file ({reason}); nothing was written under this name.",
        path=final,
        fix="free some disk space, or choose an output path (not an existing folder) in "
        "a folder you can write to, and rerun.",
    )


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` on success.

    On any exception the temporary file is removed and ``path`` is untouched.
    """
    final = Path(path).expanduser()
    parent = ensure_writable_dir(final)
    sfx = suffix if suffix is not None else "".join(final.suffixes[-2:]) or ".tmp"
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=f".part{sfx}", dir=parent)
        os.close(fd)
    except OSError as exc:  # no space / inodes left, quota, ...
        raise _output_error(exc, final) from None
    tmp_path = Path(tmp)
    previous_hooks = sys.unraisablehook, sys.excepthook
    sys.unraisablehook, sys.excepthook = _quiet_hdf5_dealloc(*previous_hooks)
    try:
        yield tmp_path
        with contextlib.suppress(OSError):
            # make the file readable like a normally created one (mkstemp uses 0600)
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp_path, 0o666 & ~umask)
        os.replace(tmp_path, final)
    except (OSError, RuntimeError) as exc:
        if _write_error(exc, tmp_path):
            release_hdf5_handles(exc)
            with contextlib.suppress(OSError):
                tmp_path.unlink()
            raise _output_error(exc, final) from None
        with contextlib.suppress(OSError):
            tmp_path.unlink()
        raise
    except BaseException:
        with contextlib.suppress(OSError):
            tmp_path.unlink()
        raise
    finally:
        sys.unraisablehook, sys.excepthook = previous_hooks


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
