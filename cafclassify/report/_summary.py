"""The cross-dataset summary page, its table and figure."""

from __future__ import annotations

import datetime as _dt
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .. import _keys as K
from .._atomic import atomic_path, write_text_atomic
from .._errors import InputFileError
from ..get._samples import recorded_sample_key
from ..get._tables import _definition_ratings, fraction_interval
from ..tl._compartment import MURAL_LABEL, caf_mask
from ..tl._definitions import is_thin
from . import _figures as F
from ._colors import color_for
from ._common import (
    FIBRO,
    _env,
    _load,
    _section,
    _subtype_categories,
    _subtype_order,
    _subtype_series,
    _version,
    classification_skipped,
    key_numbers,
    refusal_kind,
)
from ._subtypes import _per_sample_table
from ._uns import as_mapping
from ._warnings import collect_warnings

__all__ = ["proportions_table", "write_summary"]

logger = logging.getLogger(__name__)


# ====================================================================== summary
def _summary_inputs(inputs) -> list[tuple[str, Any]]:
    import anndata as ad

    if isinstance(inputs, str | os.PathLike | ad.AnnData):
        inputs = [inputs]
    if isinstance(inputs, Mapping):
        inputs = list(inputs.items())
    out = []
    for item in inputs:
        if isinstance(item, tuple) and len(item) == 2:
            name, obj = item
            out.append((str(name), obj))
        elif isinstance(item, str | os.PathLike):
            stem = Path(item).name
            for suf in (".h5ad", ".annotated", "_annotated"):
                stem = stem[: -len(suf)] if stem.endswith(suf) else stem
            out.append((stem, item))
        elif isinstance(item, ad.AnnData):
            raise InputFileError(
                "an AnnData passed to write_summary needs a dataset name.",
                fix="pass (name, adata) tuples or a {name: adata} dict.",
            )
        else:
            raise InputFileError(f"cannot use {type(item).__name__} as a summary input.",
                                 fix="pass annotated .h5ad paths, (name, adata) tuples or a {name: adata} dict.")
    names = [n for n, _ in out]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise InputFileError(f"dataset names are not unique: {', '.join(dup)}.",
                             fix="give each input a distinct name ((name, path) tuples).")
    if not out:
        raise InputFileError("no inputs given to write_summary.", fix="pass at least one annotated .h5ad.")
    return out


def _why_not(adata) -> str:
    """Plain reason a dataset has no subtype calls."""
    cl = as_mapping(_section(adata, K.UNS_CLASSIFY))
    reason = str(cl.get("reason") or "")
    if not reason:
        return "the classify step left no subtype calls"
    one = "fewer than two subtypes with enough clear fibroblasts to learn (see its report)"
    return {"no_subtype": one, "one_subtype": one,
            "coverage": "too few subtype gene sets measurable in its genes (see its report)",
            "fibroblasts": "too few fibroblasts or seed cells to train a classifier (see its report)",
            }.get(refusal_kind(reason), reason)


def _agreement_cell(adata) -> str:
    """'subtype 41% (ARI 0.19); lineage 98% (ARI 0.95)' or '—' without labels."""
    from ..tl._agreement import agreement_levels
    from ._answer import label_key_of

    key = label_key_of(adata, None)
    if not key:
        return "—"
    try:
        levels = agreement_levels(adata, key)
    except Exception as exc:  # a summary never fails on one dataset's labels
        logger.warning("agreement with %r failed: %s", key, exc)
        return "—"
    parts = [f"{lv} {r.overall:.0%} (ARI {r.ari:.2f})" for lv, r in sorted(levels.items(), reverse=True)
             if np.isfinite(r.overall)]
    return f"{key}: " + "; ".join(parts) if parts else "—"


def proportions_table(adata, dataset: str) -> pd.DataFrame:
    """Tidy subtype proportions among CAFs: dataset, sample, subtype, n_cells, fraction,
    ci95_low, ci95_high (Wilson, :func:`cafclassify.get._tables.fraction_interval`),
    definition_rating.

    CAFs are the fibroblasts and, under the perivascular reading ``"vcaf"``, the mural
    cells called ``vCAF`` (:func:`cafclassify.tl._compartment.caf_mask`), as on each
    dataset's report. ``definition_rating`` is the signature library's rating of the
    subtype's definition (:mod:`cafclassify.tl._definitions`), empty for ``unassigned``
    and where none was recorded.
    """
    cols = ["dataset", "sample", "subtype", "n_cells", "fraction", "ci95_low", "ci95_high", "definition_rating"]
    if _subtype_series(adata) is None:
        return pd.DataFrame(columns=cols)
    cats = [c for c in _subtype_categories(adata) if c not in (K.NOT_FIBROBLAST, MURAL_LABEL)]
    skey = recorded_sample_key(adata, conventional=True)
    tidy = _per_sample_table(adata, caf_mask(adata.obs[K.OBS_SUBTYPE]), skey, cats)
    tidy.insert(0, "dataset", dataset)
    totals = tidy.groupby("sample")["n_cells"].transform("sum")
    tidy["ci95_low"], tidy["ci95_high"] = fraction_interval(tidy["n_cells"].to_numpy(), totals.to_numpy())
    tidy["definition_rating"] = tidy["subtype"].map(_definition_ratings(adata))
    return tidy[cols]


def _ratings_by_subtype(table: pd.DataFrame) -> dict[str, dict]:
    """Subtype -> ``{"rating", "thin"}``: the library's rating of its definition, as the
    datasets recorded it ("varies" when their libraries disagree); subtypes without one
    are left out."""
    out = {}
    rated = table.dropna(subset=["definition_rating"])
    for c, g in rated.groupby("subtype", sort=False):
        values = sorted(set(g["definition_rating"].astype(str)))
        rating = values[0] if len(values) == 1 else "varies"
        out[str(c)] = {"rating": rating, "thin": len(values) == 1 and is_thin(rating)}
    return out


def _href(link: Any, base: Path) -> str:
    """A link usable from a page in folder ``base``: URLs as given, paths made relative."""
    s = str(link)
    if "://" in s or s.startswith(("#", "data:", "mailto:")):
        return s
    p = Path(s).expanduser().resolve()  # a relative path is relative to the working directory
    return Path(os.path.relpath(p, base)).as_posix()


def write_summary(
    inputs,
    out_html: str | os.PathLike,
    *,
    table_out: str | os.PathLike | None = None,
    figure_out: str | os.PathLike | None = None,
    report_links: Mapping[str, str | os.PathLike] | None = None,
) -> Path:
    """Write the cross-dataset summary: proportions table, figure and an HTML page.

    Parameters
    ----------
    inputs
        Annotated ``.h5ad`` paths (the dataset name is the file stem), ``(name,
        AnnData-or-path)`` tuples, or a ``{name: AnnData-or-path}`` dict.
    out_html
        Where to write the summary page (atomically).
    table_out
        CSV of the tidy proportions table (columns ``dataset, sample, subtype,
        n_cells, fraction, status``; fraction of the CAFs of that dataset and sample:
        the fibroblasts and, under the perivascular reading ``"vcaf"``, the mural cells
        called vCAF). A dataset without subtype calls has one row with ``status`` "not
        subtyped: <reason>" and empty counts: it is listed, never dropped. A dataset whose
        classifier was skipped but whose mural cells keep their vCAF call has its rows
        (vCAF, unassigned) with ``status`` "vCAF only, fibroblasts not subtyped: <reason>". Default: ``<out_html stem>_proportions.csv`` beside the page.
    figure_out
        PNG of stacked subtype bars per dataset and sample. Default:
        ``<out_html stem>_proportions.png`` beside the page.
    report_links
        ``{dataset name: report path or URL}``. Paths (absolute, or relative to
        the working directory) are written relative to the summary page, so the
        output folder can be moved as a whole.

    Returns
    -------
    Path of the written summary page.
    """
    items = _summary_inputs(inputs)
    out_html = Path(out_html).expanduser()
    base = out_html.resolve().parent
    table_out = Path(table_out) if table_out is not None else out_html.with_name(f"{out_html.stem}_proportions.csv")
    figure_out = Path(figure_out) if figure_out is not None else out_html.with_name(f"{out_html.stem}_proportions.png")
    links = {str(k): _href(v, base) for k, v in (report_links or {}).items()}
    frames, datasets = [], []
    all_cats: list[str] = []
    for name, obj in items:
        adata, _ = _load(obj, what=f"dataset {name!r}")
        tidy = proportions_table(adata, name)
        nums = key_numbers(adata)
        from ._answer import label_key_of

        warns = collect_warnings(adata, label_key_of(adata, None))
        skipped = classification_skipped(adata)
        subtyped = nums["subtype_counts"] is not None and not skipped
        # skipped with calls kept: the perivascular compartment's vCAF calls (tl._insufficient)
        partial = nums["subtype_counts"] is not None and skipped
        status = ("subtyped" if subtyped else "vCAF only, fibroblasts not subtyped: " + _why_not(adata)
                  if partial else "not subtyped: " + _why_not(adata))
        if subtyped or partial:
            frames.append(tidy.assign(status=status))
        else:  # listed, never silently dropped
            frames.append(pd.DataFrame([{"dataset": name, "sample": "all", "subtype": "",
                                         "n_cells": np.nan, "fraction": np.nan, "ci95_low": np.nan,
                                         "ci95_high": np.nan, "status": status,
                                         "definition_rating": None}]))
        all_cats.extend(c for c in tidy["subtype"].unique() if c not in all_cats)
        n_fib = nums["n_fibroblasts"]
        datasets.append({
            "name": name, "n_cells": nums["n_cells"], "n_fibroblasts": n_fib,
            "unassigned": (f"{nums['unassigned_fraction']:.1%}" if nums.get("unassigned_fraction") is not None else "—"),
            "classified": subtyped, "status": status,
            "agreement": _agreement_cell(adata),
            "warnings": [w["text"] for w in warns if w["level"] in ("warn", "error")],
            "link": links.get(name), "color": color_for(FIBRO),
        })
        if getattr(adata, "isbacked", False):
            adata.file.close()
    frames = [f for f in frames if not f.empty]
    cols = ["dataset", "sample", "subtype", "n_cells", "fraction", "status", "ci95_low", "ci95_high",
            "definition_rating"]
    table = (pd.concat([f.astype({"n_cells": float, "fraction": float}) for f in frames], ignore_index=True)[cols]
             if frames else pd.DataFrame(columns=cols))
    table["n_cells"] = table["n_cells"].round().astype("Int64")  # empty when not subtyped
    subtyped_rows = table[table["status"] == "subtyped"].astype({"n_cells": int})
    order = _subtype_order(all_cats)
    ratings = _ratings_by_subtype(table)
    with atomic_path(table_out, suffix=".csv") as tmp:
        table.to_csv(tmp, index=False)
    fig_uri = None
    if not subtyped_rows.empty:
        t = subtyped_rows.assign(group=subtyped_rows["dataset"] + " / " + subtyped_rows["sample"].astype(str))
        fig_uri = F.fig_proportions(t, group_col="group", order=order,
                                    title="CAF subtype proportions per dataset / sample")
    fig_size = F.png_display_size(fig_uri) if fig_uri else None
    if fig_uri is not None:
        import base64

        with atomic_path(figure_out, suffix=".png") as tmp:
            tmp.write_bytes(base64.b64decode(fig_uri.split(",", 1)[1]))
    wide_rows = []
    if not subtyped_rows.empty:
        for (ds, smp), g in subtyped_rows.groupby(["dataset", "sample"], sort=False):
            total = int(g["n_cells"].sum())
            by = dict(zip(g["subtype"], g["n_cells"], strict=False))
            wide_rows.append({"dataset": ds, "sample": smp, "total": total,
                              "cells": [{"subtype": c, "n": int(by.get(c, 0)),
                                         "pct": (f"{by.get(c, 0) / total:.1%}" if total else "—")}
                                        for c in order]})
    html = _env().get_template("summary.html.j2").render(
        title="cafclassify summary", datasets=datasets, order=order, wide_rows=wide_rows,
        figure=fig_uri, figure_size=fig_size, table_href=_href(table_out.resolve(), base),
        figure_href=_href(figure_out.resolve(), base) if fig_uri else None,
        colors={c: color_for(c) for c in order}, ratings=ratings, version=_version(),
        generated=_dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    )
    out = write_text_atomic(html, out_html)
    logger.info("wrote summary %s", out)
    return Path(out)
