"""The argument parser: one subparser per workflow step (the tools' are in
:mod:`._parser_tools`, shared options and value types in :mod:`._options`)."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from ._options import (
    fraction,
    fraction_or_library,
    global_options,
    out_opt,
    positive_int,
    seed_opt,
    signatures_opt,
    species_opt,
    subtype_sets_opt,
)
from ._parser_tools import add_tool_parsers
from ._steps import (
    _cmd_classify,
    _cmd_fetch,
    _cmd_gate,
    _cmd_qc,
    _cmd_read,
    _cmd_report,
    _cmd_score,
    _cmd_summary,
    _cmd_train,
)


def build_parser() -> argparse.ArgumentParser:
    """Build the ``cafclassify`` argument parser (one subparser per step)."""
    from .. import __version__

    parser = argparse.ArgumentParser(
        prog="cafclassify",
        description=(
            "Find cancer-associated fibroblasts (CAFs) in single-cell RNA-seq data and classify "
            "them into literature subtypes. Each step reads and writes files; run "
            "`cafclassify <step> --help` for its options."
        ),
    )
    parser.add_argument("--version", action="version", version=f"cafclassify {__version__}")
    global_options(parser, suppress=False)
    sub = parser.add_subparsers(dest="step", metavar="<step>", required=True)

    def add(name: str, func: Callable, help: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help)
        global_options(p, suppress=True)
        p.set_defaults(func=func)
        return p

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
        help="what X holds: counts, lognorm or linear (TPM/CPM-like) (default: detected; "
        "log values of another base or scale, e.g. log2(1 + TPM), are rewritten as ln(1 + CP10k))",
    )
    p.add_argument(
        "--orientation",
        default=None,
        choices=["genes_x_cells", "cells_x_genes"],
        help="text tables only: which way round the table is (default: detected)",
    )
    p.add_argument(
        "--layer", default=None, help="h5ad: read this layer instead of X ('raw' = adata.raw, "
        "'X' = X; default X, or adata.raw when X holds a subset of its genes); "
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
        type=fraction_or_library,
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
        help="obs column with sample ids for the CSVs (default: the one recorded by earlier steps, "
        "else a column named sample, sample_id, batch or orig.ident, as the report does)",
    )
    p.add_argument(
        "--threshold",
        type=fraction,
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
        type=positive_int,
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

    add_tool_parsers(add)
    return parser
