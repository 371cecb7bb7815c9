"""Process set-up around a step: threads, logging, inputs protected from being
overwritten, and the message of a run stopped by a signal."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

logger = logging.getLogger(__name__)


_HANDLER_TAG = "_cafclassify_cli_handler"


_THREAD_ENV = (
    "NUMBA_NUM_THREADS",
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "NUMEXPR_NUM_THREADS",
)


def _configure_threads(n: int | None) -> None:
    if n is None:
        return
    numba_started = "numba" in sys.modules  # e.g. main() called in-process
    for var in _THREAD_ENV:
        # numba refuses a changed NUMBA_NUM_THREADS once its thread pool exists (it
        # re-reads the environment later): then set its thread count directly instead
        if not (var == "NUMBA_NUM_THREADS" and numba_started):
            os.environ[var] = str(n)
    if numba_started:
        import numba

        numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(limits=n)
    except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-learn
        pass


def _configure_logging(verbose: int, log_file: str | None) -> None:
    pkg_logger = logging.getLogger("cafclassify")
    root = logging.getLogger()
    for lg in (pkg_logger, root):
        for h in list(lg.handlers):
            if getattr(h, _HANDLER_TAG, False):
                lg.removeHandler(h)
                h.close()
    pkg_level = logging.DEBUG if verbose >= 1 else logging.INFO
    pkg_logger.setLevel(pkg_level)
    pkg_logger.propagate = verbose >= 2
    handlers: list[logging.Handler] = []
    stream = logging.StreamHandler(sys.stderr)
    stream.setFormatter(logging.Formatter("[cafclassify %(levelname)s] %(message)s"))
    handlers.append(stream)
    if log_file:
        from .._atomic import ensure_writable_dir

        ensure_writable_dir(log_file)
        fh = logging.FileHandler(log_file, encoding="utf-8")
        fh.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        handlers.append(fh)
    for h in handlers:
        setattr(h, _HANDLER_TAG, True)
        if verbose >= 2:
            root.addHandler(h)
        else:
            pkg_logger.addHandler(h)
    if verbose >= 2:
        root.setLevel(logging.DEBUG)


#: arguments that name files a step writes / reads (any subcommand), with the user's name for them
_OUTPUT_ARGS = {"output": "output file (-o)", "dest": "destination", "cells_csv": "--cells-csv file",
                "proportions_csv": "--proportions-csv file", "coverage_csv": "--coverage-csv file",
                "table": "--table file", "figure": "--figure file", "export": "--export file",
                "log_file": "--log-file"}
_INPUT_ARGS = {"input": "input", "inputs": "input", "model": "--model file", "source": "source",
               "signatures": "--signatures file", "library": "library file"}


def _existing_inputs(args: argparse.Namespace) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for name, label in _INPUT_ARGS.items():
        value = getattr(args, name, None)
        values = value if isinstance(value, list) else [value]
        paths = [str(v) for v in values if v and "://" not in str(v) and Path(str(v)).expanduser().exists()]
        if paths:
            out.setdefault(label, []).extend(paths)
    return out


def _guard_outputs(args: argparse.Namespace) -> None:
    """Refuse (exit 2) before any work when an output of the step is one of its inputs."""
    from .._atomic import protect_inputs, refuse_output_onto_input

    inputs = _existing_inputs(args)
    outputs = {label: getattr(args, name, None) for name, label in _OUTPUT_ARGS.items()}
    refuse_output_onto_input(outputs, inputs)
    protect_inputs(p for paths in inputs.values() for p in paths)


def _step_options(parser: argparse.ArgumentParser, step: str) -> dict[str, argparse.Action]:
    """``dest -> action`` of the options of one subcommand (to word errors in CLI terms)."""
    for action in parser._subparsers._group_actions if parser._subparsers else []:
        sub = getattr(action, "choices", None) or {}
        if step in sub:
            return {a.dest: a for a in sub[step]._actions if a.option_strings}
    return {}


def _stopped(step: str, exc: BaseException) -> int:
    name = getattr(exc, "signame", "SIGINT")
    print(
        f"cafclassify {step}: stopped by {name}; temporary files removed, no partial "
        "outputs were left behind.",
        file=sys.stderr,
    )
    return int(getattr(exc, "exit_code", 130))
