"""Error types that carry a user-facing explanation.

Every error raised for bad *user input* (a file, a config, a signature set, a
model) is a :class:`CafClassifyError`. It names the offending file or object,
says what is wrong and what to do, so the CLI can print one paragraph and exit
non-zero without a traceback.

Messages are written once, in terms of the Python API (``species='human'``,
``layer='raw'``). The command line prints :meth:`CafClassifyError.cli_message`,
which rewrites every ``name=value`` whose ``name`` is an option of the running
subcommand into that option (``--species human``, ``--layer raw``): the wording
depends on the caller in this one place, and a new message needs no CLI copy.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping
from os import PathLike
from typing import Any

__all__ = [
    "CafClassifyError",
    "ConfigError",
    "DataError",
    "DownloadError",
    "InputFileError",
    "ModelError",
    "SignatureError",
]


class CafClassifyError(ValueError):
    """Base class for errors caused by user input.

    Parameters
    ----------
    problem
        What is wrong, in plain words.
    path
        The file, folder or object the problem is about (if any).
    fix
        What the user can do about it.
    """

    exit_code = 2

    def __init__(
        self, problem: str, *, path: str | PathLike | None = None, fix: str | None = None
    ) -> None:
        self.problem = problem
        self.path = None if path is None else str(path)
        self.fix = fix
        super().__init__(self.message)

    @property
    def message(self) -> str:
        parts = []
        if self.path is not None:
            parts.append(f"{self.path}: {self.problem}")
        else:
            parts.append(self.problem)
        if self.fix:
            parts.append(f"What to do: {self.fix}")
        return " ".join(p.rstrip() for p in parts)

    def cli_message(self, options: Mapping[str, Any]) -> str:
        """:attr:`message` with API arguments written as command-line options.

        Parameters
        ----------
        options
            ``dest -> argparse action`` of the subcommand's options (an action needs
            ``option_strings`` and, for flags, ``const``).
        """
        problem = api_to_cli(self.problem, options, quoted_only=True)  # "min_genes=10" reports a value
        fix = api_to_cli(self.fix, options) if self.fix else None
        parts = [f"{self.path}: {problem}" if self.path is not None else problem]
        if fix:
            parts.append(f"What to do: {fix}")
        return " ".join(p.rstrip() for p in parts)


_ARG = re.compile(r"(?<![\w.\[\-'\"])([a-z][a-z0-9_]*)=(?:'([^']*)'|\"([^\"]*)\"|([^\s,;/)]*[^\s,;/).]))?")


def _long(action: Any) -> str:
    names = [o for o in action.option_strings if o.startswith("--")] or list(action.option_strings)
    return names[0]


def api_to_cli(text: str, options: Mapping[str, Any], *, quoted_only: bool = False) -> str:
    """Rewrite ``name=value`` API arguments in ``text`` as options of a subcommand.

    ``species='human'`` -> ``--species human``; ``format=None`` -> ``--format unset``;
    ``normalize=False`` -> ``--no-normalize``; ``species=`` -> ``--species``. Names that
    are not options of the subcommand are left as they are; with ``quoted_only``, so are
    unquoted values (a problem that reports ``min_genes=10`` as a threshold used).
    """

    def sub(m: re.Match) -> str:
        name = m.group(1)
        value = next((g for g in m.groups()[1:] if g is not None), None)
        action = options.get(name)
        if action is None and value == "False" and f"no_{name}" in options:
            return _long(options[f"no_{name}"])
        if action is None or (quoted_only and m.group(2) is None and m.group(3) is None):
            return m.group(0)
        opt = _long(action)
        if value in (None, ""):
            return opt
        if value == "None":
            return f"{opt} unset"
        if getattr(action, "nargs", None) == 0:  # a flag: store_true / store_false
            return opt if str(getattr(action, "const", True)) == value else m.group(0)
        return f"{opt} {shlex.quote(value)}"

    return _ARG.sub(sub, text)


class InputFileError(CafClassifyError):
    """An input data file is missing, unreadable, malformed or of the wrong kind."""


class DataError(CafClassifyError):
    """The data can be read but cannot be processed as asked (e.g. no fibroblasts)."""


class SignatureError(CafClassifyError):
    """A signature set or gene-set file is malformed or does not match the data."""


class ModelError(CafClassifyError):
    """A saved model cannot be loaded or applied to these data."""


class ConfigError(CafClassifyError):
    """A workflow configuration or dataset sheet is invalid."""


class DownloadError(CafClassifyError):
    """A remote input could not be fetched or failed verification."""
