"""cafclassify: find cancer-associated fibroblasts in scRNA-seq data and classify their subtypes.

The analysis functions (read, qc, filter_cells, gate, score, classify) are those of
the subpackages plus a provenance stamp per call (see ``cafclassify._api``);
``cafclassify.classify`` also takes ``on_insufficient=`` like the CLI. Plots for
notebooks are in ``cafclassify.pl``. The public API is imported lazily so that ``import cafclassify`` stays fast and the
command line starts quickly; every name in ``__all__`` is available as an attribute.
"""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("cafclassify")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
    __version__ = "0.0.0+unknown"

_API = {
    # reading and QC
    "read": "cafclassify._api",
    "fetch": "cafclassify.io",
    "detect_value_type": "cafclassify.io",
    "qc": "cafclassify._api",
    "filter_cells": "cafclassify._api",
    # signatures and genes
    "load_signatures": "cafclassify.genesets",
    "list_signatures": "cafclassify.genesets",
    "match_signatures": "cafclassify.genesets",
    "coverage_table": "cafclassify.genesets",
    "SignatureLibrary": "cafclassify.genesets",
    "GeneSet": "cafclassify.genesets",
    "resolve_gene_identity": "cafclassify.genes",
    "detect_species": "cafclassify.genes",
    # scoring
    "score": "cafclassify._api",
    "list_methods": "cafclassify.scoring",
    # gate and classifier
    "gate": "cafclassify._api",
    "train": "cafclassify.tl",
    "classify": "cafclassify._api",
    "CafModel": "cafclassify.model",
    # synthetic data and reports
    "simulate": "cafclassify.datasets",
    "write_report": "cafclassify.report",
    "write_summary": "cafclassify.report",
    # agreement with labels given by others (authors, a simulation)
    "agreement": "cafclassify.tl",
}

__all__ = ["__version__", *sorted(_API)]


_SUBPACKAGES = ("pl", "tl", "pp", "io", "get", "datasets")


def __getattr__(name: str):
    if name in _SUBPACKAGES:
        value = importlib.import_module(f"cafclassify.{name}")
        globals()[name] = value
        return value
    module = _API.get(name)
    if module is None:
        raise AttributeError(f"module 'cafclassify' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
