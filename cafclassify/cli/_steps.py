"""The workflow steps' subcommands (fetch, read, qc, gate, score, train, classify,
report, summary): each reads its inputs, calls the API once and writes its outputs."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from .._errors import InputFileError
from .._provenance import _stamp
from ..tl._insufficient import mark_classification_skipped as _mark_classification_skipped
from ._files import (
    _EXPLICIT_NONE,
    _call,
    _compression,
    _csv_list,
    _library,
    _open_h5ad,
    _provenance,
    _read_h5ad,
    _require_input,
    _sha256_path,
    _use_backed,
    _write_h5ad,
    _write_message_png,
    _write_table,
)

logger = logging.getLogger(__name__)


def _cmd_fetch(args: argparse.Namespace) -> int:
    from ..io._fetch import fetch, file_sha256

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
    from ..io import read

    src = _require_input(args.input)
    if args.sha256:
        _verify_input(src, args.sha256)
    # --r-object/--metadata belong to R objects, which are read in memory (read() checks them)
    if _use_backed(args, src) and not (args.r_object or args.metadata):
        from ..io._stream import streamable

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
        from ..genes import record_species

        record_species(adata, args.species, source=f"--species given to `cafclassify {args._step}`")


def _species(args: argparse.Namespace, adata) -> str | None:
    """The step's species: ``--species``, else the one recorded by ``read`` (else detected)."""
    from ..genes import recorded_species

    return getattr(args, "species", None) or recorded_species(adata)


def _check_label_column(args: argparse.Namespace, obs, src: Path) -> None:
    if args.label_column and args.label_column not in obs.columns:
        from .._errors import DataError

        raise DataError(
            f"the label column {args.label_column!r} is not in the cell metadata.",
            path=src,
            fix="set --label-column to one of the obs columns, or leave it out.",
        )


def _read_streamed(args: argparse.Namespace, src: Path) -> int:
    """``read`` block by block (h5ad / 10x h5): the matrix is never held as a whole."""
    from ..io._stream import read_to_h5ad

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
    from ..io._fetch import _normalise_sha256

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
    from ..io._lazy import is_lazy
    from ..pp import filter_cells, filter_cells_to_h5ad, qc

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
    from ..tl import gate

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
    from ..scoring import score

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
        from .._keys import UNS, UNS_SCORE

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
    from ..tl import train

    inputs = [_require_input(p, "input .h5ad file") for p in args.inputs]
    from ..genesets import check_subtype_sets

    check_subtype_sets(_library(args) or "caf_v1", _csv_list(args.subtype_sets))  # before any work
    batch_key = args.batch_key
    if len(inputs) == 1:
        adata = _open_h5ad(args, inputs[0])
    else:
        names = [p.parent.name if p.stem in {"score", "scored"} else p.stem for p in inputs]
        if len(set(names)) < len(names):
            names = [f"{i}_{n}" for i, n in enumerate(names)]
        batch_key = batch_key or "dataset"
        from ..pp import pool

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
    from ..tl import classify

    adata = _open_h5ad(args, args.input)
    _record_species(args, adata)
    model = None
    inputs = [args.input]
    if args.model:
        from ..model import CafModel

        model = CafModel.load(_require_input(args.model, "model file"))
        inputs.append(args.model)
    from .._errors import DataError

    if model is None:
        from ..genesets import check_subtype_sets

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
        # the compartment's vCAF calls and the separate axes survive a skipped classifier (tl._insufficient)
        given = {"perivascular": args.perivascular, "tissue_key": args.tissue_key, "signatures": _library(args),
                 "random_state": args.seed}
        _mark_classification_skipped(adata, exc, **{k: v for k, v in given.items() if v is not None})
    else:
        if result is not None and result is not adata and hasattr(result, "obs"):
            adata = result
    # the library actually used: the model's when one is given, else the training library
    used = args.signatures or (model.signature_name if model is not None else "caf_v1")
    _stamp(adata, _provenance(args, inputs, signatures=used))
    _write_h5ad(adata, args.output, compression=_compression(args))
    from ..get import cell_table, proportion_table, recorded_sample_key

    # the report's and the summary's rule (a recorded key, else a conventional column such
    # as 'sample' or 'orig.ident'), so the CSVs split samples as they do
    sample_key = args.sample_key or recorded_sample_key(adata, conventional=True)
    if args.cells_csv:
        _write_table(cell_table(adata, sample_key=sample_key), args.cells_csv)
    if args.proportions_csv:
        _write_table(proportion_table(adata, sample_key=sample_key), args.proportions_csv)
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from ..report import write_report

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
        from ..report._answer import label_key_of
        from ..report._common import _load
        from ..tl._agreement import agreement_table

        adata, _ = _load(str(src))
        _write_table(agreement_table(adata, label_key_of(adata, args.label_column)), args.agreement_csv)
    return 0


def _dataset_names(inputs: list[Path], names: list[str] | None) -> list[str]:
    from .._errors import ConfigError

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
    from ..report import write_summary

    inputs = [_require_input(p, "input .h5ad file") for p in args.inputs]
    names = _dataset_names(inputs, _csv_list(args.names))
    links = None
    if args.report:
        if len(args.report) != len(inputs):
            from .._errors import ConfigError

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
