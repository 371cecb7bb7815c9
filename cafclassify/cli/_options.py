"""Options shared by the subcommands: the global options, value types and option helpers."""

from __future__ import annotations

import argparse

from ._files import BACKED_MIN_CELLS


def global_options(parser: argparse.ArgumentParser, *, suppress: bool) -> None:
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
        type=positive_int,
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
        type=positive_int,
        metavar="N",
        default=d(None),
        help="threads for numba/BLAS/OpenMP (default: library defaults); with --backed, also the "
        "processes that write X and the layers of an .h5ad at the same time (default 1)",
    )


def positive_int(value: str) -> int:
    """argparse type: a whole number >= 1."""
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {value!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected a number >= 1, got {n}")
    return n


def fraction_or_library(value: str) -> float | str:
    """argparse type: a fraction in [0, 1], or 'library' (each set's own value)."""
    if value.strip().lower() in ("library", "per-set", "none", "null"):
        return "library"
    return fraction(value)


def fraction(value: str) -> float:
    """argparse type: a number in [0, 1]."""
    try:
        x = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {value!r}") from None
    if not 0.0 <= x <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number between 0 and 1, got {x}")
    return x


def signatures_opt(p):
    """``--signatures``: a built-in library or a gene-set file."""
    p.add_argument(
        "--signatures",
        default="caf_v1",
        metavar="SPEC",
        help="built-in library name or a .gmt/.txt/.tsv gene-set file (default: caf_v1)",
    )


def subtype_sets_opt(p):
    """``--subtype-sets``: which sets of the signature file are the classes."""
    p.add_argument(
        "--subtype-sets",
        default=None,
        metavar="A,B,...",
        help="comma-separated sets of the signature file that are CAF subtypes (the "
        "classifier's classes); default: the sets of group 'subtype' (GMT description "
        "'group=subtype', a 'group' column in tables)",
    )


def seed_opt(p):
    """``--seed``."""
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")


def out_opt(p, what="output .h5ad file"):
    """``-o/--output`` (required)."""
    p.add_argument("-o", "--output", required=True, metavar="PATH", help=what)


def species_opt(p):
    """``--species`` (default: recorded by ``read``, else detected)."""
    p.add_argument(
        "--species", default=None, choices=["human", "mouse"],
        help="species of the gene names (default: the one recorded by `read`, else detected); "
        "recorded in the output for the later steps",
    )
