"""The ``cafclassify`` command line: one subcommand per workflow step.

Each subcommand reads its input file(s), calls the in-memory API (no algorithm lives
here), and writes its outputs atomically (temporary file + rename, see
:mod:`cafclassify._atomic`). Every ``.h5ad`` written carries
``uns["cafclassify"]["provenance"]``: package version, the exact command, the
parameters, the SHA-256 of every input, the signature library name and hash, the seed,
the run date (UTC) and the Python/scanpy/anndata versions; the provenance of earlier
steps is kept under ``provenance["history"]``.

Errors caused by user input (:class:`cafclassify._errors.CafClassifyError`) are printed
as one paragraph ``cafclassify <step>: error: <message>`` with exit status 2 and no
traceback (unless ``--debug``); any other exception prints a short message with a hint
to rerun with ``--debug`` and exits with status 1.

Heavy modules (scanpy, anndata, numba) are imported inside the subcommands so that
``--threads`` takes effect before they load and ``cafclassify --help`` is instant.

Modules: :mod:`._parser` (the steps' options), :mod:`._parser_tools` (the tools'),
:mod:`._options` (shared options and value types), :mod:`._steps` (the workflow steps'
subcommands), :mod:`._tools` (helper subcommands), :mod:`._files` (inputs, atomic outputs, provenance,
options -> API arguments) and :mod:`._runtime` (threads, logging, protected inputs);
:func:`main` here runs one step and turns its errors into exit statuses.
"""

from __future__ import annotations

import logging
import shlex
import sys
import traceback
from collections.abc import Sequence

from .._errors import CafClassifyError
from .._provenance import _versions  # noqa: F401 (re-exported: tests read the records)
from ._files import _EXPLICIT_NONE, _call  # noqa: F401 (re-exported for tests)
from ._parser import build_parser
from ._runtime import (  # noqa: F401 (_THREAD_ENV re-exported for tests)
    _THREAD_ENV,
    _configure_logging,
    _configure_threads,
    _guard_outputs,
    _step_options,
    _stopped,
)
from ._steps import _dataset_names  # noqa: F401 (re-exported for tests)

__all__ = ["build_parser", "main"]

logger = logging.getLogger("cafclassify.cli")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (0 ok, 1 internal error, 2 user error,
    130 / 143 stopped by SIGINT / SIGTERM)."""
    from .._atomic import protect_inputs
    from .._signals import check_interrupted, interrupt_behind, signals_as_exceptions

    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    args._argv = argv
    args._step = args.step
    step = args.step
    from .._write_failure import exit_after_failure

    exit_after_failure(2)  # a failed HDF5 write (disk full) is reported, then ends the process
    try:
        with signals_as_exceptions():
            _guard_outputs(args)
            _configure_threads(args.threads)
            _configure_logging(args.verbose, args.log_file)
            logger.debug("cafclassify %s: %s", step, shlex.join(argv))
            status = int(args.func(args) or 0)
            check_interrupted()  # a signal swallowed inside a library still ends the run
            return status
    except CafClassifyError as exc:
        if args.debug:
            traceback.print_exc()
        logger.debug("user error", exc_info=True)
        from .._validate import name_input_file

        # API errors name `adata`/`obs[...]`; on the command line, name the input file too
        exc = name_input_file(exc, getattr(args, "input", None) or getattr(args, "inputs", None))
        message = exc.cli_message(_step_options(parser, step))  # options, not API arguments
        print(f"cafclassify {step}: error: {message}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt as exc:
        return _stopped(step, exc)
    except Exception as exc:
        stopped = interrupt_behind(exc)
        if stopped is not None:  # a signal surfaced as another error inside compiled code
            return _stopped(step, stopped)
        if args.debug:
            traceback.print_exc()
        print(
            f"cafclassify {step}: internal error: {type(exc).__name__}: {exc}\n"
            f"This is probably a bug in cafclassify. Rerun with --debug to see the traceback "
            f"and include it when you report the problem.",
            file=sys.stderr,
        )
        return 1
    finally:
        protect_inputs([])

