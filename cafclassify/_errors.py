"""Error types that carry a user-facing explanation.

Every error raised for bad *user input* (a file, a config, a signature set, a
model) is a :class:`CafClassifyError`. It names the offending file or object,
says what is wrong and what to do, so the CLI can print one paragraph and exit
non-zero without a traceback.
"""

from __future__ import annotations

from os import PathLike

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
