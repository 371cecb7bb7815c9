"""Reading a step's inputs and writing its outputs: checked paths, out-of-core opening,
atomic writes, provenance records, and the one place where options become API arguments
(:func:`_call`)."""

from __future__ import annotations

import argparse
import datetime as _dt
import hashlib
import inspect
import logging
import os
import shlex
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .._errors import InputFileError
from .._provenance import _h5ad_safe, _signature_info, _versions

logger = logging.getLogger(__name__)


def _sha256_path(path: Path) -> str:
    """SHA-256 of a file, or of a folder's files (sorted relative names + contents)."""
    from ..io._fetch import file_sha256

    if path.is_dir():
        digest = hashlib.sha256()
        for f in sorted(p for p in path.rglob("*") if p.is_file()):
            digest.update(str(f.relative_to(path)).encode())
            digest.update(file_sha256(f).encode())
        return digest.hexdigest()
    return file_sha256(path)


def _require_input(path: str | os.PathLike, what: str = "input file") -> Path:
    p = Path(path).expanduser()
    if not p.exists():
        raise InputFileError(
            f"the {what} does not exist.",
            path=p,
            fix="check the path (relative paths are resolved from the current working directory).",
        )
    return p


def _read_h5ad(path: str | os.PathLike):
    import anndata as ad

    p = _require_input(path, "input .h5ad file")
    try:
        adata = ad.read_h5ad(p)
    except Exception as exc:  # h5py/anndata raise many different types for bad files
        raise InputFileError(
            f"cannot be read as an .h5ad file ({type(exc).__name__}: {exc}).",
            path=p,
            fix="pass an .h5ad file written by anndata (use `cafclassify read` to convert other formats).",
        ) from None
    from ..io._canonical import canonicalise_adata

    canonicalise_adata(adata)  # duplicate/unsorted sparse entries summed before any arithmetic
    return adata


#: default of --backed-min-cells: from this many cells on, --backed auto keeps matrices on disk
BACKED_MIN_CELLS = 200_000


def _use_backed(args: argparse.Namespace, path: Path) -> bool:
    """Decide whether a step works on the file out of core (``--backed``)."""
    mode = getattr(args, "backed", "auto") or "auto"
    if mode in ("yes", "no"):
        return mode == "yes"
    from ..io._shard import count_cells

    n = count_cells(path)
    limit = getattr(args, "backed_min_cells", None)
    limit = BACKED_MIN_CELLS if limit is None else int(limit)
    return n is not None and n >= limit


def _open_h5ad(args: argparse.Namespace, path: str | os.PathLike):
    """The step's input: in memory, or backed with every matrix on disk (``--backed``).

    A backed object is written back with :func:`cafclassify.io._lazy.write_annotated`
    (matrices copied as stored, new annotations written), so its steps never hold the
    expression matrix in memory.
    """
    p = _require_input(path, "input .h5ad file")
    if not _use_backed(args, p):
        return _read_h5ad(p)
    from ..io._lazy import open_lazy

    adata = open_lazy(p)
    logger.info("%s: %d cells x %d genes, matrices kept on disk (backed)", p, adata.n_obs, adata.n_vars)
    return adata


def _parameters(args: argparse.Namespace) -> dict[str, Any]:
    skip = {"func", "debug", "log_file", "verbose", "_step", "_argv", "step"}
    return {k: v for k, v in sorted(vars(args).items()) if k not in skip}


def _provenance(
    args: argparse.Namespace,
    inputs: Sequence[str | os.PathLike],
    *,
    signatures: str | None = None,
) -> dict[str, Any]:
    paths = [Path(p) for p in inputs]
    sig = _signature_info(signatures)
    return {
        "step": args._step,
        "package_version": _versions()["cafclassify"],
        "command": shlex.join(["cafclassify", *getattr(args, "_argv", [])]),
        "parameters": _h5ad_safe(_parameters(args)),
        "inputs": [str(p) for p in paths],
        "input_sha256": [_sha256_path(p) for p in paths],
        "signature_set": sig["name"],
        "signature_version": sig["version"],
        "signature_sha256": sig["sha256"],
        "seed": int(getattr(args, "seed", 0) or 0),
        "run_date_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "versions": _versions(),
    }


def _compression(args: argparse.Namespace) -> str | None:
    value = getattr(args, "compression", "gzip") or "gzip"
    return None if value == "none" else value


def _write_h5ad(adata, path: str | os.PathLike, *, compression: str | None = "gzip") -> None:
    """Write atomically; a backed object keeps its file's matrices as stored (copied)."""
    from .._atomic import write_h5ad_atomic
    from ..io._lazy import is_lazy, write_annotated

    if is_lazy(adata):
        write_annotated(adata, path)
    else:
        write_h5ad_atomic(adata, path, compression=compression)
    logger.info("wrote %s (%d cells x %d genes)", path, adata.n_obs, adata.n_vars)


def _write_table(df, path: str | os.PathLike) -> None:
    from .._atomic import atomic_path

    sep = "\t" if str(path).endswith((".tsv", ".tsv.gz", ".txt")) else ","
    with atomic_path(path) as tmp:
        df.to_csv(tmp, sep=sep, index=False)
    logger.info("wrote %s (%d rows)", path, len(df))


_EXPLICIT_NONE = object()  # pass None on purpose (e.g. "use the library's per-set value")


def _call(func: Callable, *args: Any, **kwargs: Any) -> Any:
    """Call ``func`` with the keyword options the user set and the function accepts.

    Options left at ``None`` (not given on the command line) are not passed, so the
    library's own defaults apply; there is one place where defaults live.
    """
    kwargs = {k: (None if v is _EXPLICIT_NONE else v) for k, v in kwargs.items() if v is not None}
    try:
        params = inspect.signature(func).parameters
    except (TypeError, ValueError):  # pragma: no cover - builtins
        return func(*args, **kwargs)
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return func(*args, **kwargs)
    dropped = [k for k in kwargs if k not in params]
    for k in dropped:
        if kwargs[k] is not None:
            logger.debug("%s does not accept %s=; ignored", getattr(func, "__name__", func), k)
    return func(*args, **{k: v for k, v in kwargs.items() if k in params})


def _library(args: argparse.Namespace, default: str | None = "caf_v1"):
    """``--signatures``, with the ``--subtype-sets`` moved to the subtype group (issue #18)."""
    subtypes = _csv_list(getattr(args, "subtype_sets", None))
    spec = getattr(args, "signatures", None)
    if not subtypes:
        return spec
    from ..genesets import load_signatures

    return load_signatures(spec or default).with_groups({"subtype": subtypes})


def _csv_list(value: str | None) -> list[str] | None:
    if value is None:
        return None
    items = [v.strip() for v in value.split(",") if v.strip()]
    return items or None


def _write_message_png(path: str | os.PathLike, message: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .._atomic import atomic_path

    fig, ax = plt.subplots(figsize=(6, 1.6))
    ax.axis("off")
    ax.text(0.5, 0.5, message, ha="center", va="center", wrap=True, fontsize=10)
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    logger.warning("%s: %s", path, message.replace("\n", " "))
