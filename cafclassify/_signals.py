"""Stop a run cleanly on SIGINT (Ctrl-C) and SIGTERM (a scheduler's time limit).

Python turns SIGINT into ``KeyboardInterrupt`` but leaves SIGTERM to the operating
system, which kills the process on the spot: no ``finally`` block runs, so temporary
output files (``*.part.h5ad``) and the part files of helper processes stay behind.
And an exception raised while the HDF5 library is inside a callback or a cleanup
(``__dealloc__``) is printed as "Exception ignored" and lost: a Ctrl-C during an
``.h5ad`` write could be swallowed and the run went on, exit 0.

:func:`signals_as_exceptions` (used by the command line's ``main``) therefore

* turns both signals into :class:`Interrupted` (a ``KeyboardInterrupt``, so it is not
  caught by ``except Exception`` and every ``finally``/cleanup runs), and
* remembers that a signal arrived: :func:`check_interrupted` raises it again. The
  atomic writer (:func:`cafclassify._atomic.atomic_path`) calls it before it renames
  a finished temporary file onto the output, so an interrupt that was swallowed
  during the write still stops the run and the output is not published.

The exit status is ``128 + signal number`` (130 for SIGINT, 143 for SIGTERM), the
shell convention that schedulers and Snakemake understand.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

__all__ = ["Interrupted", "check_interrupted", "signals_as_exceptions"]

_SIGNALS = tuple(s for s in (getattr(signal, "SIGINT", None), getattr(signal, "SIGTERM", None)) if s)
_pending: list[int] = []  # signal numbers received while the handlers are installed


class Interrupted(KeyboardInterrupt):
    """The run was stopped by a signal (SIGINT or SIGTERM)."""

    def __init__(self, signum: int) -> None:
        self.signum = int(signum)
        try:
            self.signame = signal.Signals(self.signum).name
        except ValueError:  # pragma: no cover - only SIGINT/SIGTERM are installed
            self.signame = f"signal {self.signum}"
        self.exit_code = 128 + self.signum
        super().__init__(self.signame)


def _handler(signum: int, frame) -> None:
    _pending.append(signum)
    raise Interrupted(signum)


def check_interrupted() -> None:
    """Raise :class:`Interrupted` if a signal arrived since the handlers were installed.

    Call it after work that may have swallowed the exception (e.g. an HDF5 write)
    and before publishing its result.
    """
    if _pending:
        raise Interrupted(_pending[0])


@contextlib.contextmanager
def signals_as_exceptions() -> Iterator[None]:
    """Within the block, SIGINT and SIGTERM raise :class:`Interrupted` (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.getsignal(s) for s in _SIGNALS}
    _pending.clear()
    for s in _SIGNALS:
        signal.signal(s, _handler)
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
        _pending.clear()
