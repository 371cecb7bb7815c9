"""One matrix written by a second process, into a part file, while this one writes others.

HDF5 compresses on one core, and compressing costs more than reading, so a step that
writes two matrices is faster when a spawned process writes one of them
(:class:`PartWriter`). Two steps use it: the streamed read
(:func:`cafclassify.io._stream.read_to_h5ad` writes ``layers["counts"]`` in a second
process) and the on-disk cell filter (:func:`cafclassify.io._filter_h5ad.filter_cells_h5ad`,
behind ``qc --filter``). The output is the same as when one process writes everything.

Both read :data:`PARALLEL_MIN_VALUES` from this module when they run
(``_part_writer.PARALLEL_MIN_VALUES``), so it is one setting for both: below it, a
second process would cost more to start than it saves.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

__all__ = ["PARALLEL_MIN_VALUES", "PART_KEY", "PartWriter", "stored_values"]

#: the matrix of a part file written by a :class:`PartWriter`
PART_KEY = "m"
#: matrices with fewer stored values are all written by the calling process, whatever
#: ``n_jobs``: starting a process (a few seconds of imports) costs more than it saves
PARALLEL_MIN_VALUES = 50_000_000


def stored_values(node) -> int:
    """Values stored by an on-disk matrix (sparse group or dense dataset)."""
    import h5py

    if isinstance(node, h5py.Dataset):
        return int(np.prod(node.shape))
    return int(node["data"].shape[0]) if "data" in node else 0


def _run_part(fn: Callable[..., None], args: tuple, errors) -> None:
    try:
        fn(*args)
    except BaseException as exc:  # report it to the parent, which raises it
        try:
            errors.put(exc)
        except Exception:  # not picklable
            errors.put(RuntimeError(f"{type(exc).__name__}: {exc}"))
        raise SystemExit(1) from None


class PartWriter:
    """Write one matrix in a separate process, into a part file, while this one writes others.

    HDF5 compresses on one core and compressing costs more than reading, so a step that
    writes two matrices (``X`` and ``layers["counts"]``) is faster when a second process
    writes one of them (measured: a quarter to a third off ``read`` and ``qc --filter``). ``fn(*args)`` runs in a *spawned* process (the
    parent has HDF5 files open, which a fork must not share) and writes the matrix to
    :data:`PART_KEY` of ``part``; :meth:`collect` waits for it, raises its error if it
    failed, and copies the matrix into the output as stored (no recompression).
    ``close`` (always call it, e.g. in ``finally``) stops an unfinished worker and
    removes the part file.
    """

    def __init__(self, fn: Callable[..., None], args: tuple, part: Path):
        import multiprocessing

        ctx = multiprocessing.get_context("spawn")
        self.part = Path(part)
        self.errors = ctx.Queue()
        self.proc = ctx.Process(target=_run_part, args=(fn, (*args, str(self.part)), self.errors), daemon=True)
        self.proc.start()

    def collect(self, g, key: str) -> None:
        """Wait for the worker, then copy its matrix to ``key`` of the open output file ``g``."""
        import queue

        self.proc.join()
        if self.proc.exitcode != 0:
            try:
                exc = self.errors.get(timeout=5)
            except queue.Empty:
                exc = RuntimeError(f"the process writing {key!r} stopped (exit code {self.proc.exitcode}).")
            raise exc
        import h5py

        with h5py.File(self.part, "r") as h:
            parent, _, name = key.rpartition("/")
            if key in g:
                del g[key]
            h.copy(h[PART_KEY], g.require_group(parent) if parent else g, name=name)

    def close(self) -> None:
        """Stop the worker if it still runs and remove the part file."""
        if self.proc.is_alive():
            self.proc.terminate()
            self.proc.join()
        self.errors.close()
        self.part.unlink(missing_ok=True)
