"""Build the per-dataset report (the cross-dataset summary page is :mod:`._summary`).

Both pages are single self-contained HTML files: figures are embedded as base64
PNG, CSS is inline, there is no JavaScript and nothing is fetched from a network.
Every section reads the AnnData defensively: a step that did not run, or wrote a
shape this code does not know, renders as "not run" (or "could not be drawn")
with a note instead of failing the report.
"""

from __future__ import annotations

import datetime as _dt
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from .. import _keys as K
from .._atomic import write_text_atomic
from .._errors import ConfigError
from ._answer import agreement_section, answer_section, label_key_of, trust_rows
from ._colors import color_for
from ._common import (
    SUBTYPE_ORDER,
    TAIL,
    _env,
    _load,
    _section,
    _version,
    key_numbers,
)
from ._context import _Ctx
from ._sections import (
    _coverage_section,
    _gate_section,
    _input_section,
    _qc_section,
    _scores_section,
)
from ._subtypes import _classifier_section, _subtypes_section
from ._uns import get
from ._warnings import collect_warnings, group_warnings

logger = logging.getLogger(__name__)

__all__ = ["write_report"]


# ======================================================================= render
def _check_int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ConfigError(f"{name} must be an integer >= {minimum}, got {value!r}.",
                          fix=f"pass {name}= as a whole number of at least {minimum}.")
    return int(value)


def write_report(
    adata,
    out_html: str | os.PathLike,
    *,
    title: str | None = None,
    max_cells_plot: int = 20000,
    random_state: int = 0,
    label_key: str | None = None,
) -> Path:
    """Write a self-contained HTML QC report for one annotated dataset.

    The page answers first: cells and fibroblasts, the subtype composition per
    sample, a "can I trust it?" table (fibroblast numbers, gene coverage of the
    subtype sets, unassigned fraction, cross-validation, agreement with labels) and,
    when subtyping was refused, the reason and the fix. Then grouped warnings,
    agreement with labels (cross-tabulation heatmaps, ARI, per-label agreement), the
    subtype calls, the classifier, the lineage gate, QC, gene coverage, scores and,
    folded at the end, the input and provenance record. Sections for steps that did
    not run are marked "not run". Figures are embedded PNGs; there is no JavaScript and
    nothing is loaded from the network.

    Parameters
    ----------
    adata
        Annotated :class:`~anndata.AnnData`, or the path of the annotated ``.h5ad``
        (opened backed: the expression matrix stays on disk). Not modified.
    out_html
        Where to write the report (atomically: a complete file or none).
    title
        Page title; defaults to the input file name.
    max_cells_plot
        At most this many cells (a seeded random subsample) are drawn in
        embeddings, dot plots and distributions. All counts and tables always use
        every cell.
    random_state
        Seed for the plotting subsample and for a UMAP computed when none is stored.
    label_key
        ``obs`` column with labels to compare the calls with (an atlas's author
        annotation). Default: the ``label_column`` recorded by ``cafclassify read``,
        else a simulation's ``true_subtype``, else none.

    Returns
    -------
    Path of the written report.
    """
    max_cells_plot = _check_int("max_cells_plot", max_cells_plot, 1)
    random_state = _check_int("random_state", random_state, 0)
    adata, source = _load(adata)
    read = _section(adata, K.UNS_READ)
    if title is None:
        src = source or get(read, "path")
        title = f"cafclassify report: {Path(str(src)).name}" if src else "cafclassify report"
    ctx = _Ctx(adata, max_cells_plot=max_cells_plot, random_state=random_state)
    nums = key_numbers(adata)
    sections: dict[str, Any] = {}
    label_key = label_key_of(adata, label_key)
    builders: list[tuple[str, Callable[[], dict]]] = [
        ("agreement", lambda: agreement_section(ctx, label_key)),
        ("answer", lambda: answer_section(ctx, nums, sections.get("agreement") or {})),
        ("input", lambda: _input_section(ctx, source)),
        ("qc", lambda: _qc_section(ctx)),
        ("gate", lambda: _gate_section(ctx, nums)),
        ("coverage", lambda: _coverage_section(ctx)),
        ("scores", lambda: _scores_section(ctx)),
        ("subtypes", lambda: _subtypes_section(ctx, nums)),
        ("classifier", lambda: _classifier_section(ctx, nums)),
    ]
    for name, build in builders:
        try:
            sections[name] = build()
        except Exception as exc:
            logger.warning("report section %r failed: %s", name, exc, exc_info=True)
            ctx.errors.append(f"{name}: {type(exc).__name__}: {exc}")
            sections[name] = {"ran": False, "error": True,
                              "note": f"This section could not be built ({type(exc).__name__}: {exc})."}
    try:
        warnings = collect_warnings(adata, label_key)
    except Exception as exc:
        logger.warning("report warnings failed: %s", exc, exc_info=True)
        ctx.errors.append(f"warnings: {type(exc).__name__}: {exc}")
        warnings = []
    html = _env().get_template("report.html.j2").render(
        title=title, nums=nums, warnings=warnings, groups=group_warnings(warnings), s=sections,
        errors=ctx.errors, ag=sections.get("agreement") or {"ran": False, "levels": {}},
        trust=trust_rows((sections.get("answer") or {}).get("checks") or []),
        n_plot=ctx.n_plot, embedding_note=ctx.embedding_note,
        version=_version(), generated=_dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        lineage_colors=[(lab, color_for(lab)) for lab in K.LINEAGES],
        subtype_colors=[(lab, color_for(lab)) for lab in (*SUBTYPE_ORDER[:6], "LTBP2_CAF", *TAIL)],
    )
    out = write_text_atomic(html, out_html)
    logger.info("wrote report %s (%.1f kB)", out, len(html) / 1024)
    return Path(out)
