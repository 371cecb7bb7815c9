"""Subparsers of the tools that are not workflow steps: shard, merge, methods, signatures, simulate."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from ._options import out_opt, positive_int, seed_opt
from ._tools import _cmd_merge, _cmd_methods, _cmd_shard, _cmd_signatures, _cmd_simulate


def add_tool_parsers(add: Callable[[str, Callable, str], argparse.ArgumentParser]) -> None:
    """Add the tools' subparsers with ``add(name, func, help)`` (:func:`._parser.build_parser`)."""
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
    p.add_argument("--n-shards", type=positive_int, default=None, help="number of shards")
    p.add_argument(
        "--max-cells",
        type=positive_int,
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
        "--chunk-size", type=positive_int, default=50000, help="cells per block (default: 50000)"
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
        "--chunk-size", type=positive_int, default=50000, help="cells per block (default: 50000)"
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
        "--n-cells", type=positive_int, default=5000, help="number of cells (default: 5000)"
    )
    p.add_argument(
        "--n-genes", type=positive_int, default=15000, help="number of genes (default: 15000)"
    )
    p.add_argument(
        "--n-batches", type=positive_int, default=1, help="number of batches (default: 1)"
    )
    p.add_argument(
        "--species", default="human", choices=["human", "mouse"], help="gene names (default: human)"
    )
    seed_opt(p)
