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
"""

from __future__ import annotations

import argparse
import datetime as _dt
import hashlib
import inspect
import logging
import os
import shlex
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ._errors import CafClassifyError, InputFileError

__all__ = ["build_parser", "main"]

logger = logging.getLogger("cafclassify.cli")

_HANDLER_TAG = "_cafclassify_cli_handler"
_THREAD_ENV = (
    "NUMBA_NUM_THREADS",
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "NUMEXPR_NUM_THREADS",
)


# --------------------------------------------------------------------------- helpers
# provenance records are shared with the Python API (cafclassify._provenance)
from ._provenance import _h5ad_safe, _signature_info, _stamp, _versions  # noqa: E402
from .tl._insufficient import mark_classification_skipped as _mark_classification_skipped  # noqa: E402


def _sha256_path(path: Path) -> str:
    """SHA-256 of a file, or of a folder's files (sorted relative names + contents)."""
    from .io._fetch import file_sha256

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
    from .io._canonical import canonicalise_adata

    canonicalise_adata(adata)  # duplicate/unsorted sparse entries summed before any arithmetic
    return adata


#: default of --backed-min-cells: from this many cells on, --backed auto keeps matrices on disk
BACKED_MIN_CELLS = 200_000


def _use_backed(args: argparse.Namespace, path: Path) -> bool:
    """Decide whether a step works on the file out of core (``--backed``)."""
    mode = getattr(args, "backed", "auto") or "auto"
    if mode in ("yes", "no"):
        return mode == "yes"
    from .io._shard import count_cells

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
    from .io._lazy import open_lazy

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
    from ._atomic import write_h5ad_atomic
    from .io._lazy import is_lazy, write_annotated

    if is_lazy(adata):
        write_annotated(adata, path)
    else:
        write_h5ad_atomic(adata, path, compression=compression)
    logger.info("wrote %s (%d cells x %d genes)", path, adata.n_obs, adata.n_vars)


def _write_table(df, path: str | os.PathLike) -> None:
    from ._atomic import atomic_path

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
    from .genesets import load_signatures

    return load_signatures(spec or default).with_groups({"subtype": subtypes})


def _csv_list(value: str | None) -> list[str] | None:
    if value is None:
        return None
    items = [v.strip() for v in value.split(",") if v.strip()]
    return items or None


# --------------------------------------------------------------------------- commands


def _cmd_fetch(args: argparse.Namespace) -> int:
    from .io._fetch import fetch, file_sha256

    out = fetch(
        args.source,
        args.dest,
        sha256=args.sha256,
        allow_http=args.allow_http,
        retries=args.retries,
        timeout=args.timeout,
    )
    print(f"{file_sha256(out)}  {out}")
    return 0


def _cmd_read(args: argparse.Namespace) -> int:
    from .io import read

    src = _require_input(args.input)
    if args.sha256:
        _verify_input(src, args.sha256)
    # --r-object/--metadata belong to R objects, which are read in memory (read() checks them)
    if _use_backed(args, src) and not (args.r_object or args.metadata):
        from .io._stream import streamable

        ok, why = streamable(src, format=args.format, layer=args.layer)
        if ok:
            return _read_streamed(args, src)
        logger.info("%s is read into memory: %s", src, why)
    adata = _call(read, src, orientation=args.orientation, **_read_options(args))
    _check_label_column(args, adata.obs, src)
    _stamp(adata, _provenance(args, [src]))
    _write_h5ad(adata, args.output, compression=_compression(args))
    return 0


def _read_options(args: argparse.Namespace) -> dict[str, Any]:
    """Options shared by read() and its block-by-block twin read_to_h5ad()."""
    return dict(format=args.format, species=args.species, symbol_column=args.symbol_column,
                sample_column=args.sample_column, value_type=args.value_type,
                normalize=not args.no_normalize, layer=args.layer,
                **({"r_object": args.r_object} if args.r_object else {}),
                **({"metadata": args.metadata} if args.metadata else {}))


def _record_species(args: argparse.Namespace, adata) -> None:
    """``--species`` given to a step: recorded in ``uns`` for this and every later step."""
    if getattr(args, "species", None):
        from .genes import record_species

        record_species(adata, args.species, source=f"--species given to `cafclassify {args._step}`")


def _species(args: argparse.Namespace, adata) -> str | None:
    """The step's species: ``--species``, else the one recorded by ``read`` (else detected)."""
    from .genes import recorded_species

    return getattr(args, "species", None) or recorded_species(adata)


def _check_label_column(args: argparse.Namespace, obs, src: Path) -> None:
    if args.label_column and args.label_column not in obs.columns:
        from ._errors import DataError

        raise DataError(
            f"the label column {args.label_column!r} is not in the cell metadata.",
            path=src,
            fix="set --label-column to one of the obs columns, or leave it out.",
        )


def _read_streamed(args: argparse.Namespace, src: Path) -> int:
    """``read`` block by block (h5ad / 10x h5): the matrix is never held as a whole."""
    from .io._stream import read_to_h5ad

    prov = _provenance(args, [src])

    def stamp(skeleton) -> None:
        _check_label_column(args, skeleton.obs, src)
        _stamp(skeleton, prov)

    record = _call(read_to_h5ad, src, args.output, compression=_compression(args), stamp=stamp,
                   n_jobs=args.threads or 1, **_read_options(args))
    logger.info("wrote %s (%d cells x %d genes, read in %d blocks)", args.output,
                record.get("n_cells", -1), record.get("n_genes", -1), record.get("n_blocks", -1))
    return 0


def _verify_input(path: Path, expected: str) -> None:
    from .io._fetch import _normalise_sha256

    want = _normalise_sha256(expected, str(path))
    got = _sha256_path(path)
    if want is not None and got != want:
        raise InputFileError(
            f"checksum mismatch: expected sha256 {want}, observed {got}.",
            path=path,
            fix="the file is not the one the dataset sheet describes (changed or corrupted): "
            "restore the original file or update the sha256 column.",
        )
    logger.info("%s: sha256 verified", path)


def _cmd_qc(args: argparse.Namespace) -> int:
    from .io._lazy import is_lazy
    from .pp import filter_cells, filter_cells_to_h5ad, qc

    adata = _open_h5ad(args, args.input)
    _record_species(args, adata)
    _call(
        qc,
        adata,
        sample_key=args.sample_key,
        nmads=args.nmads,
        max_pct_mt=args.max_pct_mt,
        min_genes=args.min_genes,
        doublets=args.doublets,
        copy=False,
    )
    if is_lazy(adata) and args.filter:
        # the passing cells are copied block by block into the output
        prov = _provenance(args, [args.input])
        _call(filter_cells_to_h5ad, adata, args.output, compression=_compression(args),
              stamp=lambda a: _stamp(a, prov), n_jobs=args.threads or 1)
        logger.info("qc: kept %d of %d cells; wrote %s", int(adata.obs["qc_pass"].sum()), adata.n_obs,
                    args.output)
        return 0
    if args.filter:
        n = adata.n_obs
        filtered = filter_cells(adata, copy=True)
        adata = filtered if filtered is not None else adata
        logger.info("qc: kept %d of %d cells", adata.n_obs, n)
    _stamp(adata, _provenance(args, [args.input]))
    _write_h5ad(adata, args.output, compression=_compression(args))
    return 0


def _cmd_gate(args: argparse.Namespace) -> int:
    from .tl import gate

    adata = _open_h5ad(args, args.input)
    _record_species(args, adata)
    _call(
        gate,
        adata,
        args.signatures,
        species=_species(args, adata),
        layer=args.layer,
        pregated={"auto": None, "yes": True, "no": False}[args.pregated],
        resolution=args.resolution,
        cluster_key=args.cluster_key,
        random_state=args.seed,
        copy=False,
    )
    _stamp(adata, _provenance(args, [args.input], signatures=args.signatures))
    _write_h5ad(adata, args.output, compression=_compression(args))
    return 0


def _cmd_score(args: argparse.Namespace) -> int:
    from .scoring import score

    adata = _open_h5ad(args, args.input)
    _record_species(args, adata)
    _call(
        score,
        adata,
        _library(args),
        method=args.method,
        layer=args.layer,
        key_added=args.key_added,
        sets=_csv_list(args.sets),
        groups=_csv_list(args.groups),
        species=args.species,
        max_rank=args.max_rank,
        min_coverage=_EXPLICIT_NONE if args.min_coverage == "library" else args.min_coverage,
        on_low_coverage=args.on_low_coverage,
        chunk_size=args.chunk_size,
        random_state=args.seed,
        copy=False,
    )
    if args.coverage_csv:
        from ._keys import UNS, UNS_SCORE

        cov = adata.uns.get(UNS, {}).get(UNS_SCORE, {}).get(args.key_added, {}).get("coverage")
        _write_table(_records(cov), args.coverage_csv)
    _stamp(adata, _provenance(args, [args.input], signatures=args.signatures))
    _write_h5ad(adata, args.output, compression=_compression(args))
    return 0


def _records(obj: Any):
    """Coverage table from ``uns``: ``{set: {field: value}}`` (or a DataFrame) -> DataFrame."""
    import pandas as pd

    if obj is None:
        return pd.DataFrame()
    if isinstance(obj, pd.DataFrame):
        return obj.reset_index()
    if isinstance(obj, dict) and all(isinstance(v, dict) for v in obj.values()):
        table = pd.DataFrame.from_dict(obj, orient="index")
        table.index.name = "set"
        return table.reset_index()
    return pd.DataFrame(obj)


def _cmd_train(args: argparse.Namespace) -> int:
    from .tl import train

    inputs = [_require_input(p, "input .h5ad file") for p in args.inputs]
    from .genesets import check_subtype_sets

    check_subtype_sets(_library(args) or "caf_v1", _csv_list(args.subtype_sets))  # before any work
    batch_key = args.batch_key
    if len(inputs) == 1:
        adata = _open_h5ad(args, inputs[0])
    else:
        names = [p.parent.name if p.stem in {"score", "scored"} else p.stem for p in inputs]
        if len(set(names)) < len(names):
            names = [f"{i}_{n}" for i, n in enumerate(names)]
        batch_key = batch_key or "dataset"
        from .pp import pool

        adata = pool([_read_h5ad(p) for p in inputs], names, batch_key=batch_key)
    _record_species(args, adata)
    model = _call(
        train,
        adata,
        signatures=_library(args),
        classes=_csv_list(args.subtype_sets),
        score_key=args.score_key,
        lineage_key=args.lineage_key,
        estimator=args.estimator,
        batch_key=batch_key,
        random_state=args.seed,
    )
    summary = getattr(model, "summary", None)
    if isinstance(summary, dict):
        summary["provenance"] = _provenance(args, inputs, signatures=args.signatures)
    model.save(args.output)  # CafModel.save writes atomically
    return 0


def _cmd_classify(args: argparse.Namespace) -> int:
    from .tl import classify

    adata = _open_h5ad(args, args.input)
    _record_species(args, adata)
    model = None
    inputs = [args.input]
    if args.model:
        from .model import CafModel

        model = CafModel.load(_require_input(args.model, "model file"))
        inputs.append(args.model)
    from ._errors import DataError

    if model is None:
        from .genesets import check_subtype_sets

        check_subtype_sets(_library(args) or "caf_v1", _csv_list(args.subtype_sets))
    try:
        result = _call(
            classify,
            adata,
            model,
            threshold=args.threshold,
            smooth=args.smooth,
            perivascular=args.perivascular,
            tissue_key=args.tissue_key,
            prior=args.prior,
            signatures=_library(args),
            classes=None if model is not None else _csv_list(args.subtype_sets),
            estimator=None if model is not None else args.estimator,
            random_state=args.seed,
            copy=False,
        )
    except DataError as exc:
        if args.on_insufficient != "skip":
            raise
        _mark_classification_skipped(adata, exc)
    else:
        if result is not None and result is not adata and hasattr(result, "obs"):
            adata = result
    # the library actually used: the model's when one is given, else the training library
    used = args.signatures or (model.signature_name if model is not None else "caf_v1")
    _stamp(adata, _provenance(args, inputs, signatures=used))
    _write_h5ad(adata, args.output, compression=_compression(args))
    from .get import cell_table, proportion_table, recorded_sample_key

    sample_key = args.sample_key or recorded_sample_key(adata)
    if args.cells_csv:
        _write_table(cell_table(adata, sample_key=sample_key), args.cells_csv)
    if args.proportions_csv:
        _write_table(proportion_table(adata, sample_key=sample_key), args.proportions_csv)
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from .report import write_report

    src = _require_input(args.input, "input .h5ad file")
    # write_report writes atomically and opens the .h5ad backed (X stays on disk)
    _call(
        write_report,
        str(src),
        args.output,
        title=args.title or (f"{src.parent.name}/{src.name}" if src.parent.name else src.name),
        max_cells_plot=args.max_cells_plot,
        random_state=args.seed,
        label_key=args.label_column,
    )
    if args.agreement_csv:
        from .report._answer import label_key_of
        from .report._common import _load
        from .tl._agreement import agreement_table

        adata, _ = _load(str(src))
        _write_table(agreement_table(adata, label_key_of(adata, args.label_column)), args.agreement_csv)
    return 0


def _dataset_names(inputs: list[Path], names: list[str] | None) -> list[str]:
    from ._errors import ConfigError

    if names is not None:
        if len(names) != len(inputs):
            raise ConfigError(
                f"--names lists {len(names)} names for {len(inputs)} input files.",
                path=", ".join(map(str, inputs)),
                fix="give one name per input file, in the same order.",
            )
    else:
        # results/<dataset>/classified.h5ad -> <dataset>; other files -> file stem
        stems = [p.stem for p in inputs]
        names = [p.parent.name if stems.count(p.stem) > 1 else p.stem for p in inputs]
    if len(set(names)) < len(names):
        raise ConfigError(
            f"the dataset names are not unique ({', '.join(names)}).",
            path=", ".join(map(str, inputs)),
            fix="pass --names with one unique name per input.",
        )
    return names


def _cmd_summary(args: argparse.Namespace) -> int:
    from .report import write_summary

    inputs = [_require_input(p, "input .h5ad file") for p in args.inputs]
    names = _dataset_names(inputs, _csv_list(args.names))
    links = None
    if args.report:
        if len(args.report) != len(inputs):
            from ._errors import ConfigError

            raise ConfigError(
                f"{len(args.report)} --report paths for {len(inputs)} inputs.",
                path=", ".join(map(str, args.report)),
                fix="give one --report per input, in the same order, or none.",
            )
        links = dict(zip(names, args.report, strict=True))
    # write_summary writes the page, the table and the figure atomically
    _call(
        write_summary,
        {n: str(p) for n, p in zip(names, inputs, strict=True)},
        args.output,
        table_out=args.table,
        figure_out=args.figure,
        report_links=links,
    )
    if args.figure and not Path(args.figure).exists():
        # the summary writer draws nothing when no dataset has subtype calls; an output the
        # user (or the workflow) asked for must still exist, so say so in the figure itself
        _write_message_png(
            args.figure,
            "No subtype calls in any dataset: nothing to plot.\n"
            "See each dataset's report for the reason (uns['cafclassify']['classify']).",
        )
    return 0


def _write_message_png(path: str | os.PathLike, message: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ._atomic import atomic_path

    fig, ax = plt.subplots(figsize=(6, 1.6))
    ax.axis("off")
    ax.text(0.5, 0.5, message, ha="center", va="center", wrap=True, fontsize=10)
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    logger.warning("%s: %s", path, message.replace("\n", " "))


def _cmd_methods(args: argparse.Namespace) -> int:
    from .scoring import list_methods

    table = list_methods()
    _print_table(table, args.format)
    return 0


def _print_table(table, fmt: str) -> None:
    if fmt == "tsv":
        sys.stdout.write(table.to_csv(sep="\t", index=False))
    else:
        with _pandas_wide():
            sys.stdout.write(table.to_string(index=False) + "\n")


class _pandas_wide:
    def __enter__(self):
        import pandas as pd

        self._ctx = pd.option_context("display.max_colwidth", 80, "display.width", 200)
        self._ctx.__enter__()

    def __exit__(self, *exc):
        return self._ctx.__exit__(*exc)


def _cmd_signatures(args: argparse.Namespace) -> int:
    import pandas as pd

    from .genesets import list_signatures, load_signatures

    if args.export:
        lib = load_signatures(args.library or "caf_v1")
        _export_library(lib, args.export, fmt=args.export_format)
        logger.info("exported %s (%d sets) to %s", lib.name, len(lib.sets), args.export)
        return 0
    if args.show:
        lib = load_signatures(args.library or "caf_v1")
        if args.show not in lib.sets:
            from ._errors import SignatureError

            raise SignatureError(
                f"no set named {args.show!r} in {lib.name} (sets: {', '.join(lib.sets)}).",
                path=args.library,
                fix="pick one of the listed set names.",
            )
        gs = lib.sets[args.show]
        print(f"{gs.name} ({gs.group}) - {gs.description}\nevidence: {gs.evidence}")
        rows = pd.DataFrame(
            {
                "gene": gs.genes,
                "mouse": [m or "" for m in gs.mouse],
                "weight": gs.weights,
                "tier": gs.tiers,
                "sources": gs.sources,
            }
        )
        _print_table(rows, args.format)
        return 0
    if args.library:
        libs = [args.library]
    else:
        libs = list_signatures()
        print("built-in libraries: " + ", ".join(libs))
    rows = []
    for name in libs:
        lib = load_signatures(name)
        for gs in lib.sets.values():
            rows.append(
                {
                    "library": f"{lib.name} {lib.version}",
                    "set": gs.name,
                    "group": gs.group,
                    "n_genes": len(gs.genes),
                    "evidence": gs.evidence,
                }
            )
    table = pd.DataFrame(rows)
    if args.format != "tsv" and not table.empty:  # a terminal: lines under ~130 characters
        import textwrap

        table["evidence"] = [textwrap.shorten(str(e), width=64, placeholder=" …") for e in table["evidence"]]
        sys.stdout.write(table.to_string(index=False, justify="left",
                                         formatters={"evidence": lambda x: f"{x:<64}"}) + "\n")
        print("(evidence shortened; full text: cafclassify signatures --format tsv, or --show SET)")
        return 0
    _print_table(table, args.format)
    return 0


def _export_library(lib, path: str, *, fmt: str | None) -> None:
    from .genesets import export_signatures

    export_signatures(lib, path, format=fmt)


def _cmd_simulate(args: argparse.Namespace) -> int:
    from .datasets import simulate

    adata = _call(
        simulate,
        n_cells=args.n_cells,
        n_genes=args.n_genes,
        n_batches=args.n_batches,
        species=args.species,
        random_state=args.seed,
    )
    _stamp(adata, _provenance(args, []))
    _write_h5ad(adata, args.output, compression=_compression(args))
    return 0


def _cmd_shard(args: argparse.Namespace) -> int:
    from .io._shard import shard_h5ad, write_shard

    src = _require_input(args.input, "input .h5ad file")
    record = _provenance(args, [src])

    def stamp(adata) -> None:
        _stamp(adata, record)

    compression = _compression(args)
    if args.index is not None:
        if args.n_shards is None:
            from ._errors import ConfigError

            raise ConfigError("--index needs --n-shards.", path=src,
                              fix="pass --n-shards N together with --index I.")
        write_shard(src, args.output, n_shards=args.n_shards, index=args.index,
                    chunk_size=args.chunk_size, compression=compression, stamp=stamp)
    else:
        out = shard_h5ad(src, args.output, n_shards=args.n_shards, max_cells=args.max_cells,
                         chunk_size=args.chunk_size, compression=compression, stamp=stamp)
        for o in out:
            print(o)
    return 0


def _cmd_merge(args: argparse.Namespace) -> int:
    from .io._shard import merge_h5ad

    inputs = [_require_input(p, "shard .h5ad file") for p in args.inputs]
    record = _provenance(args, inputs)

    def stamp(adata) -> None:
        _stamp(adata, record)

    merge_h5ad(inputs, args.output, requalify=False if args.keep_qc else None, filter=args.filter,
               chunk_size=args.chunk_size,
               compression=_compression(args), stamp=stamp)
    logger.info("wrote %s", args.output)
    if args.coverage_csv:
        import h5py
        from anndata.io import read_elem

        from ._keys import UNS, UNS_SCORE

        with h5py.File(args.output, "r") as f:
            key = f"uns/{UNS}/{UNS_SCORE}/{args.key_added}/coverage"
            cov = read_elem(f[key]) if key in f else None
        _write_table(_records(cov), args.coverage_csv)
    return 0


# --------------------------------------------------------------------------- parser


def _global_options(parser: argparse.ArgumentParser, *, suppress: bool) -> None:
    """Options accepted both before and after the subcommand name."""
    d = (lambda v: argparse.SUPPRESS) if suppress else (lambda v: v)
    g = parser.add_argument_group("global options")
    g.add_argument(
        "--debug", action="store_true", default=d(False), help="show full tracebacks on errors"
    )
    g.add_argument(
        "--log-file", metavar="PATH", default=d(None), help="also write the log to this file"
    )
    g.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=d(0),
        help="more log output (-v: debug for cafclassify, -vv: everything)",
    )
    g.add_argument(
        "--backed",
        choices=("auto", "yes", "no"),
        default=d("auto"),
        help="keep the expression matrices on disk and work in blocks of cells (gate, score, "
        "classify); 'auto': from --backed-min-cells cells on (default: auto)",
    )
    g.add_argument(
        "--backed-min-cells",
        type=_positive_int,
        metavar="N",
        default=d(BACKED_MIN_CELLS),
        help=f"cell count from which --backed auto works out of core (default: {BACKED_MIN_CELLS})",
    )
    g.add_argument(
        "--compression",
        choices=("gzip", "lzf", "none"),
        default=d("gzip"),
        help="compression of the matrices in .h5ad outputs: gzip (portable, default), lzf "
        "(several times faster to write, larger, readable with h5py only) or none; a backed "
        "step copies its input's matrices as stored",
    )
    g.add_argument(
        "--threads",
        type=_positive_int,
        metavar="N",
        default=d(None),
        help="threads for numba/BLAS/OpenMP (default: library defaults); with --backed, also the "
        "processes that write X and the layers of an .h5ad at the same time (default 1)",
    )


def _positive_int(value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {value!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected a number >= 1, got {n}")
    return n


def _fraction_or_library(value: str) -> float | str:
    if value.strip().lower() in ("library", "per-set", "none", "null"):
        return "library"
    return _fraction(value)


def _fraction(value: str) -> float:
    try:
        x = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {value!r}") from None
    if not 0.0 <= x <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number between 0 and 1, got {x}")
    return x


def build_parser() -> argparse.ArgumentParser:
    """Build the ``cafclassify`` argument parser (one subparser per step)."""
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="cafclassify",
        description=(
            "Find cancer-associated fibroblasts (CAFs) in single-cell RNA-seq data and classify "
            "them into literature subtypes. Each step reads and writes files; run "
            "`cafclassify <step> --help` for its options."
        ),
    )
    parser.add_argument("--version", action="version", version=f"cafclassify {__version__}")
    _global_options(parser, suppress=False)
    sub = parser.add_subparsers(dest="step", metavar="<step>", required=True)

    def add(name: str, func: Callable, help: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help)
        _global_options(p, suppress=True)
        p.set_defaults(func=func)
        return p

    def signatures_opt(p):
        p.add_argument(
            "--signatures",
            default="caf_v1",
            metavar="SPEC",
            help="built-in library name or a .gmt/.txt/.tsv gene-set file (default: caf_v1)",
        )

    def subtype_sets_opt(p):
        p.add_argument(
            "--subtype-sets",
            default=None,
            metavar="A,B,...",
            help="comma-separated sets of the signature file that are CAF subtypes (the "
            "classifier's classes); default: the sets of group 'subtype' (GMT description "
            "'group=subtype', a 'group' column in tables)",
        )

    def seed_opt(p):
        p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")

    def out_opt(p, what="output .h5ad file"):
        p.add_argument("-o", "--output", required=True, metavar="PATH", help=what)

    def species_opt(p):
        p.add_argument(
            "--species", default=None, choices=["human", "mouse"],
            help="species of the gene names (default: the one recorded by `read`, else detected); "
            "recorded in the output for the later steps",
        )

    # fetch
    p = add("fetch", _cmd_fetch, "download (or copy) an input file and verify its SHA-256")
    p.add_argument("source", help="https://, ftp:// or file:// URL, or a local path")
    p.add_argument("dest", help="destination file")
    p.add_argument(
        "--sha256",
        default=None,
        help="expected SHA-256 (hex); without it the observed hash is printed",
    )
    p.add_argument("--allow-http", action="store_true", help="allow unencrypted http:// URLs")
    p.add_argument(
        "--retries", type=int, default=3, help="retries after transient failures (default: 3)"
    )
    p.add_argument(
        "--timeout", type=float, default=60.0, help="network time-out in seconds (default: 60)"
    )

    # read
    p = add(
        "read",
        _cmd_read,
        "read any supported input (h5ad, 10x h5/mtx, csv/tsv, loom, R .rds/.RData) into an .h5ad",
    )
    p.add_argument("input", help="input file or 10x matrix folder")
    out_opt(p)
    p.add_argument(
        "--format",
        default=None,
        choices=["h5ad", "10x_h5", "10x_mtx", "csv", "tsv", "loom", "rds", "rdata"],
        help="input format; rds = saveRDS() file, rdata = .rda/.RData (default: detected "
        "from the content)",
    )
    p.add_argument(
        "--species",
        default=None,
        choices=["human", "mouse"],
        help="species (default: detected from gene names)",
    )
    p.add_argument(
        "--symbol-column",
        default=None,
        metavar="COL",
        help="var column holding gene symbols (if var_names are not symbols)",
    )
    p.add_argument(
        "--sample-column",
        default=None,
        metavar="COL",
        help="obs column identifying the sample of each cell",
    )
    p.add_argument(
        "--label-column",
        default=None,
        metavar="COL",
        help="obs column with author cell-type labels (kept for the report)",
    )
    p.add_argument(
        "--value-type",
        default=None,
        choices=["counts", "lognorm", "linear"],
        help="what X holds: counts, lognorm or linear (TPM/CPM-like) (default: detected)",
    )
    p.add_argument(
        "--orientation",
        default=None,
        choices=["genes_x_cells", "cells_x_genes"],
        help="text tables only: which way round the table is (default: detected)",
    )
    p.add_argument(
        "--layer", default=None, help="h5ad: read this layer instead of X ('raw' = adata.raw); "
        "R objects: the matrix instead of the raw counts (Seurat 'data' or 'ASSAY:LAYER', "
        "SingleCellExperiment assay name)"
    )
    p.add_argument(
        "--r-object", default=None, metavar="NAME",
        help=".rda/.RData: the object to read when the file holds several single-cell objects",
    )
    p.add_argument(
        "--metadata", default=None, metavar="FILE",
        help="R objects: CSV/TSV of cell metadata (first column: cell names) added to the cells",
    )
    p.add_argument(
        "--sha256", default=None, help="verify the input against this SHA-256 before reading"
    )
    p.add_argument(
        "--no-normalize", action="store_true", help="keep X as read (do not log-normalise counts)"
    )

    # qc
    p = add(
        "qc", _cmd_qc, "per-sample quality control: mark (and optionally remove) low-quality cells"
    )
    p.add_argument("input", help="input .h5ad (from `cafclassify read`)")
    out_opt(p)
    species_opt(p)
    p.add_argument(
        "--sample-key",
        default=None,
        metavar="COL",
        help="obs column with sample ids (thresholds are per sample)",
    )
    p.add_argument(
        "--nmads",
        type=float,
        default=5.0,
        help="outlier threshold in median absolute deviations (default: 5)",
    )
    p.add_argument(
        "--max-pct-mt",
        type=float,
        default=None,
        help="hard upper limit of mitochondrial %% (default: none)",
    )
    p.add_argument(
        "--min-genes",
        type=int,
        default=None,
        help="hard lower limit of detected genes (default: none)",
    )
    p.add_argument("--doublets", action="store_true", help="also score doublets (needs raw counts)")
    p.add_argument(
        "--filter", action=argparse.BooleanOptionalAction, default=True,
        help="remove failing cells (default, as the workflow's qc: filter: true); "
        "--no-filter only marks them in obs['qc_pass']",
    )

    # gate
    p = add(
        "gate",
        _cmd_gate,
        "assign each cell a lineage (fibroblast, mural, epithelial, immune, endothelial, other)",
    )
    p.add_argument("input", help="input .h5ad")
    out_opt(p)
    signatures_opt(p)
    species_opt(p)
    p.add_argument("--layer", default=None, help="expression layer to use (default: X)")
    p.add_argument(
        "--pregated",
        default="auto",
        choices=["auto", "yes", "no"],
        help="are the cells already fibroblasts only? auto = detect (default), yes, no",
    )
    p.add_argument(
        "--resolution",
        type=float,
        default=None,
        help="clustering resolution for the cluster-level decision",
    )
    p.add_argument(
        "--cluster-key",
        default=None,
        metavar="COL",
        help="use this existing obs clustering instead of clustering",
    )
    seed_opt(p)

    # score
    p = add("score", _cmd_score, "score CAF signatures per cell")
    p.add_argument("input", help="input .h5ad")
    out_opt(p)
    signatures_opt(p)
    subtype_sets_opt(p)
    p.add_argument(
        "--method",
        default="ucell",
        help="scoring method (see `cafclassify methods`; default: ucell)",
    )
    p.add_argument("--layer", default=None, help="expression layer to use (default: X)")
    p.add_argument(
        "--key-added", default="caf_scores", help="obsm key for the scores (default: caf_scores)"
    )
    p.add_argument("--sets", default=None, help="comma-separated set names to score (default: all)")
    p.add_argument(
        "--groups", default=None, help="comma-separated set groups to score (default: all)"
    )
    species_opt(p)
    p.add_argument("--max-rank", type=int, default=1500, help="UCell rank cut-off (default: 1500)")
    p.add_argument(
        "--min-coverage",
        type=_fraction_or_library,
        default="library",
        help="skip sets with a smaller fraction of their genes present: a number in [0, 1], "
        "or 'library' for each set's own min_coverage from the signature library "
        "(default: library, as the workflow's score: min_coverage: null)",
    )
    p.add_argument(
        "--on-low-coverage",
        default="warn",
        choices=["warn", "raise", "keep"],
        help="what to do with low-coverage sets (default: warn)",
    )
    p.add_argument("--chunk-size", type=int, default=20000, help="cells per chunk (default: 20000)")
    p.add_argument(
        "--coverage-csv",
        default=None,
        metavar="PATH",
        help="also write the per-set gene coverage table",
    )
    seed_opt(p)

    # train
    p = add(
        "train", _cmd_train, "train a CAF subtype classifier on one or several scored .h5ad files"
    )
    p.add_argument(
        "inputs", nargs="+", help="scored .h5ad file(s); several are pooled (inner join on genes)"
    )
    p.add_argument("-o", "--output", required=True, metavar="PATH", help="model file to write")
    subtype_sets_opt(p)
    signatures_opt(p)
    species_opt(p)
    p.add_argument(
        "--estimator",
        default="logreg",
        choices=["logreg", "hgb"],
        help="classifier (default: logreg)",
    )
    p.add_argument(
        "--score-key",
        default="caf_scores",
        help="obsm key of the signature scores (default: caf_scores)",
    )
    p.add_argument(
        "--lineage-key",
        default="caf_lineage",
        help="obs key of the lineage gate (default: caf_lineage)",
    )
    p.add_argument(
        "--batch-key",
        default=None,
        help="obs column with batches (default: 'dataset' when pooling)",
    )
    seed_opt(p)

    # classify
    p = add(
        "classify", _cmd_classify, "classify fibroblasts into CAF subtypes and write tidy tables"
    )
    p.add_argument("input", help="scored .h5ad")
    out_opt(p, "annotated output .h5ad")
    species_opt(p)
    p.add_argument(
        "--model",
        default=None,
        metavar="PATH",
        help="model from `cafclassify train` (default: train on this dataset)",
    )
    p.add_argument(
        "--cells-csv",
        default=None,
        metavar="PATH",
        help="per-cell table (barcode, sample, lineage, subtype, confidence, probabilities, flags)",
    )
    p.add_argument(
        "--proportions-csv",
        default=None,
        metavar="PATH",
        help="per-sample lineage and subtype proportions",
    )
    p.add_argument(
        "--sample-key",
        default=None,
        metavar="COL",
        help="obs column with sample ids (default: the one given to `read`)",
    )
    p.add_argument(
        "--threshold",
        type=_fraction,
        default=None,
        help="minimum calibrated probability to assign a subtype (default: the model's)",
    )
    p.add_argument(
        "--smooth", action="store_true", help="also write a cluster-majority-smoothed label"
    )
    p.add_argument(
        "--perivascular",
        default=None,
        choices=["vcaf", "separate"],
        help="subtype of mural (perivascular) cells: vCAF (default; the seed review's "
        "definition: vCAFs originate from perivascular cells) or 'mural', kept apart from "
        "CAFs (Wu 2021 / Cords 2023). obs caf_lineage keeps fibroblast and mural apart either way",
    )
    p.add_argument(
        "--prior",
        default=None,
        choices=["estimate", "uniform"],
        help="class prior of the calls: estimate (default; the subtype composition of these "
        "fibroblasts, by EM over the calibrated probabilities) or uniform (every subtype "
        "equally common, as in training)",
    )
    p.add_argument(
        "--tissue-key",
        default=None,
        metavar="COL",
        help="obs column with tumour/normal annotation: mural cells of normal tissue "
        "(values starting normal/adjacent/healthy/non-tumour) are 'mural', never vCAF",
    )
    p.add_argument(
        "--estimator",
        default=None,
        choices=["logreg", "hgb"],
        help="without --model: classifier trained on this dataset (default: logreg)",
    )
    p.add_argument(
        "--on-insufficient",
        default="skip",
        choices=["error", "skip"],
        help="when the data cannot support subtyping (too few fibroblasts, seed cells or "
        "covered gene sets): skip subtyping, keep the gate and scores and record the reason "
        "(default, as the workflow's classify: on_insufficient: skip), or stop with an error",
    )
    p.add_argument(
        "--signatures",
        default=None,
        metavar="SPEC",
        help="signature library for flags and for training when no --model is given "
        "(default: caf_v1)",
    )
    subtype_sets_opt(p)
    seed_opt(p)

    # report
    p = add("report", _cmd_report, "write a self-contained HTML report for one classified .h5ad")
    p.add_argument("input", help="classified .h5ad")
    p.add_argument("-o", "--output", required=True, metavar="PATH", help="HTML file to write")
    p.add_argument("--title", default=None, help="report title (default: the input file name)")
    p.add_argument(
        "--label-column", default=None, metavar="COL",
        help="obs column with labels to compare the calls with, e.g. an atlas's author cell "
        "types (default: the label column given to `read`, or a simulation's true_subtype)",
    )
    p.add_argument(
        "--agreement-csv", default=None, metavar="PATH",
        help="also write the calls-vs-labels table (level, label, call, n_cells, "
        "fraction_of_label, named_call; only the header when there are no labels)",
    )
    p.add_argument(
        "--max-cells-plot",
        type=_positive_int,
        default=None,
        help="at most this many cells are drawn in figures (tables always use all cells)",
    )
    seed_opt(p)

    # summary
    p = add(
        "summary",
        _cmd_summary,
        "summarise several classified datasets: proportions table, figure and an HTML page",
    )
    p.add_argument("inputs", nargs="+", help="classified .h5ad files")
    p.add_argument("-o", "--output", required=True, metavar="PATH", help="HTML page to write")
    p.add_argument("--table", default=None, metavar="PATH", help="proportions table (.csv)")
    p.add_argument("--figure", default=None, metavar="PATH", help="proportions figure (.png)")
    p.add_argument(
        "--names",
        default=None,
        help="comma-separated dataset names in input order (default: from the paths)",
    )
    p.add_argument(
        "--report",
        action="append",
        default=None,
        metavar="PATH",
        help="per-dataset report to link from the page (repeat once per input, in order)",
    )

    # shard
    p = add(
        "shard",
        _cmd_shard,
        "split an .h5ad by cells into shards (chunk by chunk; for cluster scatter-gather)",
    )
    p.add_argument("input", help="input .h5ad (e.g. from `cafclassify read`)")
    p.add_argument(
        "-o",
        "--output",
        required=True,
        metavar="PATH",
        help="with --index: the shard .h5ad to write; otherwise a folder for shard_000.h5ad ...",
    )
    p.add_argument("--n-shards", type=_positive_int, default=None, help="number of shards")
    p.add_argument(
        "--max-cells",
        type=_positive_int,
        default=None,
        help="instead of --n-shards: at most this many cells per shard",
    )
    p.add_argument(
        "--index",
        type=int,
        default=None,
        help="write only shard I (0-based) of --n-shards (one job per shard)",
    )
    p.add_argument(
        "--chunk-size", type=_positive_int, default=50000, help="cells per block (default: 50000)"
    )

    # merge
    p = add(
        "merge",
        _cmd_merge,
        "merge processed shards back into one .h5ad in the original cell order "
        "(QC thresholds recomputed over all cells)",
    )
    p.add_argument("inputs", nargs="+", help="shard .h5ad files (every shard of one split)")
    out_opt(p)
    p.add_argument(
        "--filter",
        action="store_true",
        help="remove cells failing QC (with thresholds over all cells), as `qc --filter`",
    )
    p.add_argument(
        "--keep-qc",
        action="store_true",
        help="keep the per-shard QC marks instead of recomputing thresholds over all cells",
    )
    p.add_argument(
        "--coverage-csv",
        default=None,
        metavar="PATH",
        help="also write the per-set gene coverage table of the shards' scores",
    )
    p.add_argument(
        "--key-added", default="caf_scores", help="obsm key of the scores (default: caf_scores)"
    )
    p.add_argument(
        "--chunk-size", type=_positive_int, default=50000, help="cells per block (default: 50000)"
    )

    # methods
    p = add("methods", _cmd_methods, "list the signature scoring methods")
    p.add_argument("--format", default="text", choices=["text", "tsv"], help="output format")

    # signatures
    p = add(
        "signatures",
        _cmd_signatures,
        "list built-in signature libraries and sets, show one set, or export a library",
    )
    p.add_argument(
        "library",
        nargs="?",
        default=None,
        help="library name or gene-set file (default: all built-in libraries; caf_v1 for --show/--export)",
    )
    p.add_argument("--show", default=None, metavar="SET", help="print the genes of one set")
    p.add_argument(
        "--export",
        default=None,
        metavar="PATH",
        help="write the library as GMT (.gmt) or long table (.tsv)",
    )
    p.add_argument(
        "--export-format",
        default=None,
        choices=["gmt", "tsv"],
        help="export format (default: from the extension)",
    )
    p.add_argument("--format", default="text", choices=["text", "tsv"], help="listing format")

    # simulate
    p = add(
        "simulate",
        _cmd_simulate,
        "write a synthetic tumour dataset with planted CAF subtype programmes",
    )
    out_opt(p)
    p.add_argument(
        "--n-cells", type=_positive_int, default=5000, help="number of cells (default: 5000)"
    )
    p.add_argument(
        "--n-genes", type=_positive_int, default=15000, help="number of genes (default: 15000)"
    )
    p.add_argument(
        "--n-batches", type=_positive_int, default=1, help="number of batches (default: 1)"
    )
    p.add_argument(
        "--species", default="human", choices=["human", "mouse"], help="gene names (default: human)"
    )
    seed_opt(p)
    return parser


# --------------------------------------------------------------------------- main


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
        from ._atomic import ensure_writable_dir

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
    from ._atomic import protect_inputs, refuse_output_onto_input

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


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (0 ok, 1 internal error, 2 user error,
    130 / 143 stopped by SIGINT / SIGTERM)."""
    from ._atomic import protect_inputs
    from ._signals import check_interrupted, interrupt_behind, signals_as_exceptions

    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    args._argv = argv
    args._step = args.step
    step = args.step
    from ._write_failure import exit_after_failure

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
        from ._validate import name_input_file

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


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
