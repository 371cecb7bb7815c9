"""The helper subcommands: ``methods``, ``signatures``, ``simulate``, ``shard``, ``merge``."""

from __future__ import annotations

import argparse
import logging
import sys

from .._provenance import _stamp
from ._files import _call, _compression, _provenance, _require_input, _write_h5ad, _write_table
from ._steps import _records

logger = logging.getLogger(__name__)


def _cmd_methods(args: argparse.Namespace) -> int:
    from ..scoring import list_methods

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

    from ..genesets import list_signatures, load_signatures

    if args.export:
        lib = load_signatures(args.library or "caf_v1")
        _export_library(lib, args.export, fmt=args.export_format)
        logger.info("exported %s (%d sets) to %s", lib.name, len(lib.sets), args.export)
        return 0
    if args.show:
        lib = load_signatures(args.library or "caf_v1")
        if args.show not in lib.sets:
            from .._errors import SignatureError

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
    from ..genesets import export_signatures

    export_signatures(lib, path, format=fmt)


def _cmd_simulate(args: argparse.Namespace) -> int:
    from ..datasets import simulate

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
    from ..io._shard import shard_h5ad, write_shard

    src = _require_input(args.input, "input .h5ad file")
    record = _provenance(args, [src])

    def stamp(adata) -> None:
        _stamp(adata, record)

    compression = _compression(args)
    if args.index is not None:
        if args.n_shards is None:
            from .._errors import ConfigError

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
    from ..io._shard import merge_h5ad

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

        from .._keys import UNS, UNS_SCORE

        with h5py.File(args.output, "r") as f:
            key = f"uns/{UNS}/{UNS_SCORE}/{args.key_added}/coverage"
            cov = read_elem(f[key]) if key in f else None
        _write_table(_records(cov), args.coverage_csv)
    return 0
