"""Writes that fail (disk full, quota, I/O error): one paragraph, no crash, nothing left.

:func:`~cafclassify._atomic.atomic_path` turns an error raised while writing its
temporary file into one :class:`~cafclassify._errors.InputFileError` naming the output
and the cause (:func:`is_write_error`, :func:`output_error`: ``No space left on
device``, not HDF5's record of buffers and offsets).

HDF5 needs care. When a file cannot be flushed, closing it fails half-way; the
dataset handles still referenced by the failed call's frames then crash the process
(segmentation fault in ``H5D_close``) when Python frees them, and HDF5's own exit
handler may crash on them too; meanwhile every handle freed while the failed call
unwinds prints the same I/O error as "Exception ignored in ... __dealloc__" (about
260 tracebacks for one file). Hence:

* :func:`quiet_hdf5_dealloc` (around the write) drops those dealloc reports;
* :func:`release_hdf5_handles` (on the failure) marks the handles found in the
  failed call's frames as not to be closed (h5py's ``locked``: they are freed with
  the process), silences h5py's error printing and sets :data:`HDF5_WRITE_FAILED`;
* the command line (:func:`exit_after_failure`) then ends the process at exit, once
  the error is printed, with :func:`os._exit` (an :mod:`atexit` handler that runs
  before the interpreter frees anything), without running HDF5's exit handler.

Measured on a 2 MB tmpfs (``tests/test_disk_full.py``): exit 139 and up to ~260
tracebacks before, exit 2 and the one paragraph after, in-memory and streamed writes,
gzip and uncompressed.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
from pathlib import Path

from ._errors import InputFileError

__all__ = ["HDF5_WRITE_FAILED", "exit_after_failure", "is_write_error", "output_error",
           "quiet_hdf5_dealloc", "release_hdf5_handles"]

#: set once an HDF5 write failed in this process (reset by the command line per run)
HDF5_WRITE_FAILED = False
#: exit status the command line ends with after a failed HDF5 write (None: API use, no exit)
EXIT_AFTER_FAILURE: int | None = None

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
    if locked and not HDF5_WRITE_FAILED and EXIT_AFTER_FAILURE is not None:
        import atexit

        atexit.register(_exit_now)  # runs before the interpreter frees anything
    HDF5_WRITE_FAILED = HDF5_WRITE_FAILED or bool(locked)


def _quiet_hooks(unraisable_hook, except_hook):
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


def is_write_error(exc: BaseException, tmp: Path) -> bool:
    """Whether an error raised while writing ``tmp`` is about the output (not a bug, not the input).

    OSErrors of the output kinds (disk full, quota, ...), and any OSError or h5py
    RuntimeError that names the temporary file (HDF5 names the file it failed to write).
    """
    if not isinstance(exc, (OSError, RuntimeError)):
        return False
    from ._atomic import _OUTPUT_ERRNOS  # disk full, quota, read-only, permissions, ...

    if isinstance(exc, OSError):
        if exc.errno in _OUTPUT_ERRNOS:
            return True
        if exc.filename is not None and Path(str(exc.filename)).name == tmp.name:
            return True
    return tmp.name in str(exc)


def output_error(exc: BaseException, final: Path) -> InputFileError:
    # h5py's message is the whole HDF5 record (time, buffer, offsets): say the cause only
    code = _errno(exc)
    reason = os.strerror(code) if code else (getattr(exc, "strerror", None) or type(exc).__name__)
    return InputFileError(
        f"cannot write the output file ({reason}); nothing was written under this name.",
        path=final,
        fix="free some disk space, or choose an output path (not an existing folder) in "
        "a folder you can write to, and rerun.",
    )


def quiet_hdf5_dealloc():
    """Drop h5py's reports of handles freed after a failed write until the returned call.

    Returns a function that puts the previous hooks back (call it when the write ends).
    """
    previous = sys.unraisablehook, sys.excepthook
    sys.unraisablehook, sys.excepthook = _quiet_hooks(*previous)

    def restore() -> None:
        sys.unraisablehook, sys.excepthook = previous

    return restore


def exit_after_failure(code: int | None) -> None:
    """Command line: after a failed HDF5 write, end the process with ``code`` at exit.

    The error has been reported (one paragraph) by then; ending with :func:`os._exit`
    skips the interpreter's and HDF5's clean-up of the broken file, which would crash.
    ``None`` turns this off (the Python API: a session goes on after the error).
    """
    global EXIT_AFTER_FAILURE, HDF5_WRITE_FAILED
    EXIT_AFTER_FAILURE = code
    HDF5_WRITE_FAILED = False


def _exit_now() -> None:
    if HDF5_WRITE_FAILED and EXIT_AFTER_FAILURE is not None:
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(EXIT_AFTER_FAILURE)
