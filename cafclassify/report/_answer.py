"""The first screen of a report: the answer, whether to trust it, and agreement with labels.

The page opens with what the user asked: how many cells and fibroblasts, the subtype
composition per sample, and the checks that say how far to trust it (fibroblast
numbers, gene coverage of the subtype sets, unassigned fraction, the classifier's
cross-validation and, where the data carry labels, agreement with them). When
subtyping was refused, one card says why and how to change that, in CLI and config
terms. Agreement with labels is worded as agreement, never accuracy: an atlas's
labels are themselves calls.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd

from .. import _keys as K
from ..get._samples import recorded_sample_key
from . import _figures as F
from ._common import (
    LOW_COVERAGE,
    LOW_MACRO_F1,
    MANY_UNASSIGNED,
    MIN_FIBROBLASTS,
    SUBTYPE_ORDER,
    _coverage_frames,
    _root,
    _section,
    cell,
    classification_skipped,
    frame_table,
    refusal_kind,
)
from ._context import _Ctx
from ._uns import as_mapping, find, to_py

logger = logging.getLogger(__name__)

SIMULATED_TRUTH = "true_subtype"  # obs column of cafclassify.simulate()


def label_key_of(adata, label_key: str | None) -> str | None:
    """The label column to compare with: the one given, else the one the read step
    recorded (``label_column``), else a simulation's ``true_subtype``."""
    if label_key:
        return label_key if label_key in adata.obs.columns else None
    prov = as_mapping(_root(adata).get(K.UNS_PROVENANCE))
    records = [prov, *as_mapping(prov.get("history")).values()] if prov else []
    for rec in records:
        lc = as_mapping(as_mapping(rec).get("parameters")).get("label_column")
        if isinstance(lc, str) and lc not in ("", "None") and lc in adata.obs.columns:
            return lc
    return SIMULATED_TRUTH if SIMULATED_TRUTH in adata.obs.columns else None


#: the fix when this dataset alone cannot train a classifier: a model pooled over datasets
_POOLED_MODEL = {
    "cli_note": "Train one model on several datasets and classify this one with it:",
    "cli": "cafclassify train a.h5ad b.h5ad -o pooled.cafmodel && "
           "cafclassify classify scored.h5ad --model pooled.cafmodel -o classified.h5ad",
    "config": "train:\n  pool: [this_dataset, other_dataset]",
}


def _fix_for(reason: str, adata, n_fib: int | None) -> dict[str, str]:
    """Why subtyping was refused, in plain words, and how to change that (CLI and config);
    ``n_fib``: the page's fibroblast count (None when the data have no gate)."""
    kind = refusal_kind(reason)
    if kind == "no_subtype":
        small = f" (fewer than {MIN_FIBROBLASTS} here)" if n_fib is not None and n_fib < MIN_FIBROBLASTS else ""
        return {
            "plain": "No subtype has enough fibroblasts that clearly carry it to be learnt: every subtype "
                     "is absent from these fibroblasts or too few to learn (their reasons are in the "
                     f"classifier message below). A small sample{small}, or shallow cells, can look like "
                     "this.",
            **_POOLED_MODEL,
        }
    if kind == "one_subtype":  # the existence tests' reasons follow
        return {
            "plain": "At most one subtype has enough fibroblasts that clearly carry it to be learnt, and a "
                     "classifier needs two: the other subtypes are absent from these fibroblasts or too few "
                     "to learn (their reasons are in the classifier message below). A sample whose "
                     "fibroblasts are nearly all one subtype, or a small sample, can look like this.",
            **_POOLED_MODEL,
        }
    if kind == "coverage":
        cov, tot, low = _subtype_coverage(adata)
        plain = (f"Only {cov} of {tot} subtype gene sets could be measured in these data" if tot else
                 "Too few subtype gene sets could be measured in these data")
        return {
            "plain": plain + ": most subtype marker genes are not in the matrix (a gene panel, or a "
                     "matrix filtered to a subset of genes). No subtype labels are invented from a "
                     "handful of genes.",
            "cli_note": "Use the full-transcriptome matrix of these cells if you have one. To score "
                        "sets that have fewer of their genes anyway (calls then rest on few genes):",
            "cli": "cafclassify score gate.h5ad -o scored.h5ad --min-coverage 0.2 && "
                   "cafclassify classify scored.h5ad -o classified.h5ad",
            "config": "score:\n  min_coverage: 0.2",
        }
    if kind == "fibroblasts":
        return {
            "plain": "Too few fibroblasts, or too few seed fibroblasts (cells that clearly carry one "
                     "subtype), to train a subtype classifier on this dataset alone.",
            **_POOLED_MODEL,
        }
    return {"plain": "The classifier could not be trained on these data.",
            "cli_note": "See the full message with:",
            "cli": "cafclassify classify scored.h5ad -o classified.h5ad --on-insufficient error",
            "config": "classify:\n  on_insufficient: error"}


def _subtype_coverage(adata) -> tuple[int, int, list[str]]:
    """(covered, total, names of uncovered) subtype gene sets among the scored sets."""
    covered, total, low = 0, 0, []
    for key, df in _coverage_frames(adata).items():
        if key == "lineage gate":
            continue
        is_sub = (df["group"].astype(str) == "subtype") if "group" in df.columns else df["set"].isin(SUBTYPE_ORDER)
        for _, r in df[is_sub].iterrows():
            total += 1
            ok = float(r["coverage"]) >= LOW_COVERAGE and str(r["status"]).lower() in ("ok", "used", "pass")
            covered += ok
            if not ok:
                low.append(str(r["set"]))
        break  # the first (main) score block
    return covered, total, low


def _check(name: str, value: str, ok: bool | None, note: str) -> dict:
    return {"name": name, "value": value, "verdict": "na" if ok is None else ("ok" if ok else "warn"),
            "note": note}


def answer_section(ctx: _Ctx, nums: dict, agreement: dict) -> dict:
    adata = ctx.adata
    cl = _section(adata, K.UNS_CLASSIFY)
    n_cells, n_fib = nums["n_cells"], nums["n_fibroblasts"]
    skipped = classification_skipped(adata)
    # skipped with calls: only the perivascular compartment's vCAF calls were kept (tl._insufficient)
    partial = nums["subtype_counts"] is not None and skipped
    subtyped = nums["subtype_counts"] is not None and not skipped
    refused = not subtyped and (skipped or n_fib is not None)
    out: dict[str, Any] = {"subtyped": subtyped, "refused": refused, "partial": partial}
    # the headline sentence
    parts = [f"{n_cells:,} cells"]
    if n_fib is not None:
        parts.append(f"{n_fib:,} fibroblasts ({n_fib / n_cells:.0%}) by the lineage gate" if n_cells
                     else f"{n_fib:,} fibroblasts")
    if subtyped:
        n_un = nums["n_unassigned"] or 0
        parts.append(f"{(n_fib or 0) - n_un:,} of them given a CAF subtype, {n_un:,} unassigned")
        peri = cl.get("perivascular") if hasattr(cl, "get") else None
        if hasattr(peri, "get") and int(peri.get("n_mural", 0) or 0):
            n_v = int(peri.get("n_vcaf", 0) or 0)
            parts.append(f"{int(peri['n_mural']):,} perivascular (mural) cells, {n_v:,} of them called "
                         f"vCAF (perivascular reading '{peri.get('reading', '')}')")
    elif partial:
        peri = as_mapping(cl.get("perivascular"))
        parts.append("no fibroblast subtypes called (see below)")
        parts.append(f"{int(peri.get('n_mural', 0) or 0):,} perivascular (mural) cells, "
                     f"{int(peri.get('n_vcaf', 0) or 0):,} of them called vCAF by the gate's compartment "
                     f"(perivascular reading '{peri.get('reading', '')}')")
    elif refused:
        parts.append("no CAF subtypes called (see below)")
    out["headline"] = "; ".join(parts) + "."
    if refused:
        reason = str(cl.get("reason") or "the classify step left no subtype calls in this file.")
        out["refusal"] = {"reason": reason, "partial": partial, **_fix_for(reason, adata, n_fib)}
    # composition per sample
    if (subtyped or partial) and n_fib:
        def comp():
            from ..pl import composition

            skey = recorded_sample_key(adata, conventional=True)
            ax = composition(adata, sample_key=skey)
            ax.set_title("CAF subtype composition"
                         + (f", per {skey}" if skey else ""), fontsize=10)
            return F.to_data_uri(ax.figure)

        out["composition"] = ctx.figure("subtype composition", comp)
    # can I trust it?
    checks = []
    if n_fib is not None:
        checks.append(_check("fibroblasts", f"{n_fib:,}", n_fib >= MIN_FIBROBLASTS,
                             f"{MIN_FIBROBLASTS}+ for stable proportions"))
    cov, tot, low = _subtype_coverage(adata)
    if tot:
        checks.append(_check("subtype gene sets measurable", f"{cov} of {tot}", cov == tot,
                             ("not measurable: " + ", ".join(low)) if low else
                             f"each has {LOW_COVERAGE:.0%}+ of its genes in the data"))
    if subtyped and nums.get("unassigned_fraction") is not None:
        uf = nums["unassigned_fraction"]
        checks.append(_check("fibroblasts unassigned", f"{uf:.0%}", uf <= MANY_UNASSIGNED,
                             f"no subtype confident enough; keep below {MANY_UNASSIGNED:.0%}"))
    f1 = find(cl, "macro_f1", "cv_macro_f1")
    try:
        f1 = float(to_py(f1)) if f1 is not None else None
    except (TypeError, ValueError):
        f1 = None
    if subtyped and f1 is not None and np.isfinite(f1):
        checks.append(_check("classifier cross-validation", f"macro-F1 {f1:.2f}", f1 >= LOW_MACRO_F1,
                             "reproduces its own training labels (not truth)"))
    for level, a in agreement.get("levels", {}).items():
        if not np.isfinite(a["overall"]):
            continue
        checks.append(_check(f"agreement with {agreement['who']} ({level})",
                             f"{a['overall']:.0%} · ARI {a['ari']:.2f}", None,
                             a["sentence"]))
    out["checks"] = checks
    return out


def agreement_section(ctx: _Ctx, label_key: str | None) -> dict:
    """Cross-tabulation of calls against labels, at lineage and subtype level."""
    adata = ctx.adata
    if not label_key:
        return {"ran": False, "levels": {}, "note": "This dataset has no label column to compare with "
                "(label_column in config/datasets.tsv, or --label-column of cafclassify report)."}
    from ..tl._agreement import agreement_levels

    who = "the simulated truth" if label_key == SIMULATED_TRUTH else "the authors' labels"
    levels = {}
    for level, res in agreement_levels(adata, label_key).items():
        pl = res.per_label
        named = pl[pl["named_call"].notna()]
        if level == "subtype":
            named = named[~named["named_call"].isin([K.NOT_FIBROBLAST])]
            sentence = (f"of the {int(named['n_cells'].sum()):,} fibroblasts whose label names a subtype, "
                        f"{res.overall:.0%} were called that subtype" if np.isfinite(res.overall) else
                        "no label names a subtype")
        else:
            sentence = (f"{res.overall:.0%} of the {res.n_named:,} cells whose label names a lineage were "
                        "gated into it" if np.isfinite(res.overall) else "no label names a lineage")

        def fig(res=res, level=level):
            from ..pl import agreement as pl_agreement

            ax = pl_agreement(adata, res.label_key, key=res.key,
                              subset="fibroblasts" if level == "subtype" else None)
            return F.to_data_uri(ax.figure)

        table = pl.copy()
        if level == "subtype":
            table = table[table["n_cells"] > 0]
        table = table.assign(agreement=[f"{v:.0%}" if pd.notna(v) else "—" for v in table["agreement"]],
                             top_fraction=[f"{v:.0%}" if pd.notna(v) else "—" for v in table["top_fraction"]],
                             named_call=table["named_call"].fillna("—"))
        table = table.rename(columns={"named_call": "call the label names", "n_named": "given that call",
                                      "top_call": "most frequent call", "top_fraction": "its share"})
        levels[level] = {
            "ari": res.ari, "ari_raw": res.ari_raw, "overall": res.overall, "n_cells": res.n_cells,
            "subset": res.subset, "sentence": sentence,
            "figure": ctx.figure(f"agreement ({level})", fig),
            "table": frame_table(table, swatch_cols=("call the label names", "most frequent call")),
            "key": res.key,
        }
    return {"ran": bool(levels), "label_key": label_key, "who": who, "levels": levels,
            "note": "" if levels else "No calls to compare with the labels."}


def trust_rows(checks: list[dict]) -> dict:
    rows = [[cell(c["name"], cls="key"), cell(c["value"], cls=f"verdict-{c['verdict']}"), cell(c["note"])]
            for c in checks]
    return {"columns": ["check", "value", "what it means"], "rows": rows, "note": ""}
