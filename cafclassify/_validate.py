"""Small validation helpers shared by the command line and the workflow.

* :func:`validate_dataset_id` - the one rule for dataset ids (they become folder
  names and appear in shell commands), identical to the ``id`` pattern of
  ``workflow/schemas/datasets.schema.yaml``.
* :func:`name_input_file` - make an error raised by an in-memory API function
  (which can only name ``adata`` or ``obs[...]``) name the file the command
  line was processing, so every CLI error paragraph names a file.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

from ._errors import CafClassifyError, ConfigError

__all__ = ["DATASET_ID_PATTERN", "name_input_file", "validate_dataset_id"]

#: Letters, digits, ``_ . -``; starts with a letter or digit; at most 64 characters.
#: Must stay equal to ``properties.id.pattern`` in workflow/schemas/datasets.schema.yaml.
DATASET_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
_DATASET_ID_RE = re.compile(DATASET_ID_PATTERN)
_DATASET_ID_MAX = 64


def validate_dataset_id(value: object, *, source: str | os.PathLike | None = None) -> str:
    """Return ``value`` if it is a safe dataset id, else raise :class:`ConfigError`.

    A safe id contains only letters, digits, ``_``, ``.`` and ``-``, starts with a
    letter or digit and has at most 64 characters, so it can be used as a folder
    name and inside a shell command without quoting (no spaces, ``;``, ``$``,
    quotes, back-ticks, slashes or newlines).

    Parameters
    ----------
    value
        The id to check.
    source
        The file the id came from (named in the error).

    Raises
    ------
    ConfigError
        If the id is not a string or does not match :data:`DATASET_ID_PATTERN`.
    """
    if not isinstance(value, str) or not value:
        raise ConfigError(
            f"the dataset id {value!r} is not a non-empty string.",
            path=source,
            fix="give every dataset a short name made of letters, digits, '_', '.' or '-'.",
        )
    # fullmatch, not match: '$' in a Python regex also matches before a trailing newline
    if len(value) > _DATASET_ID_MAX or _DATASET_ID_RE.fullmatch(value) is None:
        raise ConfigError(
            f"the dataset id {value!r} is not allowed: ids become folder names and appear in "
            "shell commands, so they may contain only letters, digits, '_', '.' and '-', must "
            f"start with a letter or digit and have at most {_DATASET_ID_MAX} characters.",
            path=source,
            fix="rename the dataset, e.g. " + repr(_suggest_id(value)) + ".",
        )
    return value


def _suggest_id(value: str) -> str:
    cleaned = re.sub(r"[^A-Za-z0-9_.-]+", "_", value).strip("_.-")
    return (cleaned or "dataset")[:_DATASET_ID_MAX]


_IN_MEMORY = re.compile(r"^(adata\b|(obs|var|obsm|varm|obsp|varp|uns|layers)\[|obsm |signature library |<)")
_FILE_SUFFIXES = frozenset(
    ".h5ad .h5 .hdf5 .loom .csv .tsv .txt .gz .bz2 .zip .mtx .gmt .grp .cafmodel .json .yaml "
    ".yml .html .png .pdf .svg .npz".split()
)


def _is_file_reference(path: str | None) -> bool:
    """True if ``path`` names a file, folder or URL, not an in-memory object like ``adata``."""
    if not path:
        return False
    if "://" in path:
        return True
    if _IN_MEMORY.match(path):
        return False
    try:
        p = Path(path).expanduser()
        if p.exists():
            return True
    except (OSError, ValueError):
        return False
    return os.sep in path or p.suffix.lower() in _FILE_SUFFIXES


def name_input_file(
    exc: CafClassifyError, inputs: str | os.PathLike | Sequence[str | os.PathLike] | None
) -> CafClassifyError:
    """Return ``exc`` naming the input file(s) when it only names an in-memory object.

    API functions work on AnnData objects, so their errors name ``adata``,
    ``obs['caf_lineage']`` and the like. On the command line the user needs the
    file: this returns an error of the same class whose ``path`` is the input
    file(s) and whose problem starts with the object it was about. Errors that
    already name an existing file, folder or URL are returned unchanged.

    Parameters
    ----------
    exc
        The error raised while processing ``inputs``.
    inputs
        The input file, or the list of input files, of the command.

    Returns
    -------
    The original error, or a new error of the same class (same ``fix`` and exit code).
    """
    if inputs is None:
        return exc
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    names = [str(p) for p in inputs if p is not None and str(p)]
    if not names or _is_file_reference(exc.path):
        return exc
    problem = exc.problem if exc.path is None else f"{exc.path}: {exc.problem}"
    try:
        new = type(exc)(problem, path=", ".join(names), fix=exc.fix)
    except TypeError:  # a subclass with another constructor: keep the original
        return exc
    new.__cause__ = exc.__cause__
    new.__traceback__ = exc.__traceback__
    return new
