"""Atomic output: write to a temporary file in the same folder, then rename.

A run killed at any moment leaves either the complete previous file, the
complete new file, or nothing: never a half-written file under the final name.

Outputs never replace inputs: :func:`refuse_output_onto_input` compares every output
path of a command with every input (same path once links are resolved, or the same
file via :func:`os.path.samefile`, which also catches hard links) and refuses with
one message naming both; the command line calls it before any work and registers
the inputs (:func:`protect_inputs`), which :func:`atomic_path` checks again at write
time, so no writer of the package can replace an input whatever path reaches it.
A signal that arrived during the write (see :mod:`cafclassify._signals`) stops the
rename: an interrupted run publishes nothing.
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from ._errors import InputFileError
from ._write_failure import is_write_error, output_error, quiet_hdf5_dealloc, release_hdf5_handles

if TYPE_CHECKING:
    import anndata as ad

__all__ = [
    "atomic_path",
    "ensure_writable_dir",
    "protect_inputs",
    "refuse_output_onto_input",
    "same_file",
    "write_h5ad_atomic",
    "write_text_atomic",
]

#: inputs of the running command (registered by the CLI); atomic_path never writes onto them
_PROTECTED: dict[str, Path] = {}

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


def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """True if ``a`` and ``b`` are the same file: same resolved path (links followed) or inode."""
    pa, pb = Path(a).expanduser(), Path(b).expanduser()
    try:
        if pa.resolve() == pb.resolve():
            return True
    except (OSError, RuntimeError):  # symlink loop
        pass
    try:
        return os.path.samefile(pa, pb)
    except (OSError, ValueError):  # one of them does not exist (yet)
        return False


def _inside(path: Path, folder: Path) -> bool:
    with contextlib.suppress(OSError, RuntimeError):
        return folder.is_dir() and path.resolve().is_relative_to(folder.resolve())
    return False


def _overwrite_error(out_label: str, out: Path, in_label: str, src: Path) -> InputFileError:
    return InputFileError(
        f"the {out_label} {out} is the {in_label} {src} (the same file"
        + ("" if out.expanduser().absolute() == src.expanduser().absolute() else
           ", through a link or another path")
        + "); writing it would replace the input. Nothing was written.",
        path=out,
        fix="choose a different output path; inputs are never modified.",
    )


def refuse_output_onto_input(
    outputs: Mapping[str, str | os.PathLike | None],
    inputs: Mapping[str, str | os.PathLike | Iterable[str | os.PathLike] | None],
) -> None:
    """Raise :class:`InputFileError` if an output would replace (or land inside) an input.

    Parameters
    ----------
    outputs
        ``{label: path}`` of what a step writes (label as the user knows it, e.g. ``-o``).
    inputs
        ``{label: path or list of paths}`` of what it reads.
    """
    ins: list[tuple[str, Path]] = []
    for label, value in inputs.items():
        if value is None:
            continue
        values = [value] if isinstance(value, (str, os.PathLike)) else list(value)
        ins += [(label, Path(v)) for v in values if v is not None and str(v)]
    for out_label, out in outputs.items():
        if out is None or not str(out):
            continue
        o = Path(out)
        for in_label, src in ins:
            # an output inside an input folder (10x folder) is fine unless it is one of its files
            if same_file(o, src) or (_inside(o, src) and o.exists() and o.is_file()):
                raise _overwrite_error(out_label, o, in_label, src)


def protect_inputs(paths: Iterable[str | os.PathLike]) -> None:
    """Register the inputs of the running command: :func:`atomic_path` refuses to replace them."""
    _PROTECTED.clear()
    for p in paths:
        if p is not None and str(p) and "://" not in str(p):
            _PROTECTED[str(p)] = Path(p)


def _check_not_input(final: Path) -> None:
    for src in _PROTECTED.values():
        if same_file(final, src):
            raise _overwrite_error("output file", final, "input file", src)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` on success.

    On any exception the temporary file is removed and ``path`` is untouched.
    """
    from ._signals import check_interrupted

    final = Path(path).expanduser()
    _check_not_input(final)
    parent = ensure_writable_dir(final)
    sfx = suffix if suffix is not None else "".join(final.suffixes[-2:]) or ".tmp"
    fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=f".part{sfx}", dir=parent)
    os.close(fd)
    tmp_path = Path(tmp)
    restore_hooks = quiet_hdf5_dealloc()  # a failed HDF5 write: one error, not one per handle

    try:
        yield tmp_path
        check_interrupted()  # a signal swallowed during the write still stops the run here
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
