"""Report sections about the subtype calls and the classifier that made them."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from .. import _keys as K
from ..get._samples import recorded_sample_key
from ..get._tables import fraction_interval
from ..tl._compartment import MURAL_LABEL, caf_mask
from . import _figures as F
from ._colors import color_for
from ._common import (
    SUBTYPE_SET_ALIASES,
    TAIL,
    _cat,
    _fibro_mask,
    _ltbp2_caveat,
    _n_or0,
    _section,
    _subtype_categories,
    _subtype_order,
    _subtype_series,
    cell,
    classification_skipped,
    frame_table,
    kv_table,
    learnt_from_cells_alone,
    subtype_definitions,
)
from ._context import _Ctx, _not_run
from ._sections import _marker_genes
from ._uns import as_frame, as_list, as_mapping, find, find_parent, find_table, fmt, get, to_py

logger = logging.getLogger(__name__)


def _per_sample_table(adata, mask: np.ndarray, sample_key: str | None,
                      categories: Sequence[str]) -> pd.DataFrame:
    sub = _subtype_series(adata)[mask]
    samples = _cat(adata.obs[sample_key])[mask] if sample_key else pd.Series("all", index=sub.index)
    df = pd.DataFrame({"sample": samples.to_numpy(), "subtype": sub.to_numpy()})
    counts = df.groupby(["sample", "subtype"]).size()
    rows = []
    for s in sorted(df["sample"].unique()):
        total = int((df["sample"] == s).sum())
        for c in categories:
            n = int(counts.get((s, c), 0))
            rows.append({"sample": s, "subtype": c, "n_cells": n, "fraction": n / total if total else np.nan})
    return pd.DataFrame(rows, columns=["sample", "subtype", "n_cells", "fraction"])


def _subtypes_section(ctx: _Ctx, nums: dict) -> dict:
    adata = ctx.adata
    sub = _subtype_series(adata)
    fib = _fibro_mask(adata)
    if sub is None:
        return {**_not_run("classify", "Subtypes were not assigned (no obs['caf_subtype'])."),
                **_flags(adata, fib, None, [])}
    n_fib = int(fib.sum())
    # fractions are of the CAFs: the fibroblasts and the mural cells called vCAF (pl.composition)
    caf = caf_mask(adata.obs[K.OBS_SUBTYPE])
    n_caf = int(caf.sum())
    cats = _subtype_categories(adata)
    counts = nums["subtype_counts"] or {}
    rows = []
    for c in cats:
        n = counts.get(c, 0)
        if c == MURAL_LABEL and not n:  # a category of the reading, with no cell: not a result
            continue
        is_caf = bool(n_caf) and c not in (K.NOT_FIBROBLAST, MURAL_LABEL)
        frac = f"{n / n_caf:.1%}" if is_caf else ""
        lo, hi = fraction_interval(n, n_caf) if is_caf else (None, None)
        rows.append([cell(c, swatch=color_for(c)),
                     cell(f"{n:,}", cls="num", data={"subtype-count": c, "value": n}),
                     cell(frac, cls="num"),
                     cell(f"{lo:.1%} – {hi:.1%}" if is_caf else "", cls="num interval")])
    table = {"columns": ["subtype", "cells", "fraction of CAFs", "95 % interval"], "rows": rows, "note": ""}
    out: dict[str, Any] = {"ran": True, "counts": table, "n_fibroblasts": n_fib, "n_cafs": n_caf,
                           "n_mural_cafs": int((caf & ~fib).sum())}
    if classification_skipped(adata):
        # the classifier was skipped and only the compartment's vCAF calls were kept
        # (tl._insufficient): the counts, and no figure of fibroblast subtypes that were not called
        out["fibroblasts_not_called"] = True
        out.update(_flags(adata, fib, None, []))
        return out
    sub_plot = sub.iloc[ctx.idx].reset_index(drop=True)
    order = _subtype_order(cats)
    fib_plot = fib[ctx.idx]
    coords, note = ctx.fibro_coords(fib_plot) if fib_plot.any() else (None, "")
    out["embedding_note"] = note
    if coords is not None:
        labels_f = sub_plot[fib_plot].reset_index(drop=True)
        out["embedding"] = ctx.figure("subtype embedding", lambda: F.fig_embedding_categorical(
            coords, labels_f, title="CAF subtype (fibroblasts)", order=order,
            background=(K.NOT_FIBROBLAST, "NA"), basis="UMAP"))
        if K.OBS_SUBTYPE_CONF in adata.obs.columns:
            vals = pd.to_numeric(adata.obs[K.OBS_SUBTYPE_CONF], errors="coerce").to_numpy()[ctx.idx][fib_plot]
            out["confidence"] = ctx.figure("subtype confidence", lambda: F.fig_embedding_continuous(
                coords, vals, title="subtype confidence (max calibrated probability)", basis="UMAP"))
    # proportions per sample (on all cells)
    skey = recorded_sample_key(adata, conventional=True)
    prop_cats = [c for c in cats if c not in (K.NOT_FIBROBLAST, MURAL_LABEL)]
    if n_caf:
        tidy = _per_sample_table(adata, caf, skey, prop_cats)
        out["sample_key"] = skey
        if skey and tidy["sample"].nunique() > 1:
            wide = tidy.pivot(index="sample", columns="subtype", values="n_cells")[prop_cats]
            wide.insert(0, "CAFs", wide.sum(axis=1))
            out["per_sample"] = frame_table(wide.reset_index())
            out["proportions"] = ctx.figure("subtype proportions", lambda: F.fig_proportions(
                tidy, group_col="sample", order=order, title=f"subtype proportions per {skey}"))
    # dot plot of subtype markers among fibroblasts
    if fib_plot.sum() >= 2:
        def dot():
            labels = [c for c in order if c not in TAIL]
            genes = _marker_genes(ctx, {c: SUBTYPE_SET_ALIASES.get(c, (c,)) for c in labels},
                                  groupby=sub_plot, n_top=3, mask=fib_plot)
            genes = {c: genes[c] for c in labels if c in genes}
            if not genes:
                return None
            s = ctx.sub[fib_plot].copy()
            present = [c for c in order if c in set(sub_plot[fib_plot])]
            s.obs["_subtype"] = pd.Categorical(sub_plot[fib_plot].to_numpy(), categories=present)
            return F.fig_dotplot(s, genes, groupby="_subtype", title="subtype markers (fibroblasts)",
                                 categories_order=present)

        out["dotplot"] = ctx.figure("subtype dot plot", dot)
    out.update(_flags(adata, fib, sub, cats))
    out["definitions"] = _definitions_table(adata, fib, counts, out["n_mural_cafs"])
    return out


def _flags(adata, fib: np.ndarray | None, sub: pd.Series | None, cats: list) -> dict:
    """The LTBP2+ and state flags among fibroblasts, per subtype (``sub`` None: all
    fibroblasts only) and the LTBP2 caveat; empty where no flag was written. The flags
    do not read the model, so a skipped classification has them too (tl._axes)."""
    flags = [(K.OBS_LTBP2, "LTBP2+"), (K.OBS_SENESCENT, "senescent"), (K.OBS_CYCLING, "cycling")]
    flags = [(k, lab) for k, lab in flags if k in adata.obs.columns]
    n_fib = 0 if fib is None else int(fib.sum())
    if not flags or not n_fib:
        return {}
    frows = []
    groups = [x for x in cats if x != K.NOT_FIBROBLAST] if sub is not None else []
    fsub = sub[fib] if sub is not None else None
    for c in [*groups, "all fibroblasts"]:
        m = (fsub == c).to_numpy() if c != "all fibroblasts" else np.ones(n_fib, bool)
        if not m.any():
            continue
        row = [cell(c, swatch=color_for(c) if c != "all fibroblasts" else None),
               cell(f"{int(m.sum()):,}", cls="num")]
        for k, lab in flags:
            v = adata.obs[k].astype(bool).to_numpy()[fib][m]
            data = {"flag-count": lab, "value": int(v.sum())} if c == "all fibroblasts" else None
            row.append(cell(f"{int(v.sum()):,} ({v.mean():.1%})", cls="num", data=data))
        frows.append(row)
    return {"flags": {"columns": ["subtype", "cells"] + [lab for _, lab in flags], "rows": frows, "note": ""},
            "ltbp2_caveat": _ltbp2_caveat(_section(adata, K.UNS_CLASSIFY))}


def _definitions_table(adata, fib: np.ndarray | None, counts: dict, n_mural_vcaf: int) -> dict | None:
    """What each subtype's definition rests on: the signature library's rating and statement
    (:mod:`cafclassify.tl._definitions`), beside the number of cells called (the LTBP2+ axis
    last; the ``n_mural_vcaf`` mural cells called vCAF counted apart: the gate's markers, not
    the set, placed them)."""
    defs = subtype_definitions(_section(adata, K.UNS_CLASSIFY))
    if not defs:
        return None
    axes = [c for c in defs if c.upper().startswith("LTBP2")]
    rows = []
    for c in [*_subtype_order([c for c in defs if c not in axes]), *axes]:
        d = defs[c]
        if c in axes:  # an axis, not a class: its positive fibroblasts
            measured = K.OBS_LTBP2 in adata.obs.columns and fib is not None
            n = f"{int(adata.obs[K.OBS_LTBP2].astype(bool).to_numpy()[fib].sum()):,} LTBP2+" if measured else "—"
        elif c == "vCAF" and n_mural_vcaf:
            n = f"{int(counts.get(c, 0)) - n_mural_vcaf:,} + {n_mural_vcaf:,} mural"
        else:
            n = f"{int(counts.get(c, 0)):,}"
        rows.append([cell(c, swatch=color_for(c)), cell(n, cls="num"),
                     cell(d["rating"], cls="thin" if d["thin"] else "", data={"definition": c, "thin": int(d["thin"])}),
                     cell(d["evidence"] or "—")])
    note = ("Mural cells called vCAF (the perivascular reading 'vcaf') were placed by the gate's pericyte "
            "and smooth-muscle markers, not by the vCAF gene set." if n_mural_vcaf else "")
    return {"columns": ["subtype", "cells called", "library's rating", "what the definition rests on"],
            "rows": rows, "note": note}


def _classifier_section(ctx: _Ctx, nums: dict) -> dict:
    cl = _section(ctx.adata, K.UNS_CLASSIFY)
    if not cl:
        return _not_run("classify", "No classifier record (uns['cafclassify']['classify']).")
    out: dict[str, Any] = {"ran": True}
    seeds = find_table(cl, "seed_counts", "seeds_per_class", "seeds", "n_seeds_per_class")
    seeds_m = as_mapping(seeds)
    if not seeds_m:
        df = as_frame(seeds)
        if df is not None and df.shape[1] >= 2:
            seeds_m = dict(zip(df.iloc[:, 0].astype(str), df.iloc[:, 1], strict=False))
    pseudo = as_mapping(find(cl, "pseudo_label_counts"))
    if seeds_m:
        order = _subtype_order(list(seeds_m) + list(pseudo))
        wl = as_mapping(find(cl, "weak_labels"))
        by_evidence = str(wl.get("seed_rule", "")) == "evidence" if wl else False
        cols = ["class", "seed cells (evidence)" if by_evidence else "seed cells (markers)"]
        rows = []
        for k in order:
            row = [cell(k, swatch=color_for(k)),
                   cell(fmt(seeds_m.get(k, 0)), cls="num",
                        data={"seed-count": k, "value": fmt(seeds_m.get(k, 0))})]
            if pseudo:
                n_p = _n_or0(pseudo.get(k, 0))
                row += [cell(f"{n_p:,}", cls="num"), cell(f"{_n_or0(seeds_m.get(k, 0)) + n_p:,}", cls="num")]
            rows.append(row)
        if pseudo:
            cols += ["pseudo-labels (self-training)", "training cells"]
        what = ("Seed cells are fibroblasts whose programme evidence against random gene sets, over "
                "their neighbourhood and in the cell itself, clearly favours one subtype (the seed rule "
                "above). " if by_evidence else
                "Seed cells are fibroblasts whose marker scores clearly favour one subtype. ")
        out["seeds"] = {"columns": cols, "rows": rows, "note": (
            what + "Self-training then added confidently predicted cells as pseudo-labels; the classifier "
            "is trained and cross-validated on seeds + pseudo-labels, so the confusion matrix rows "
            "add up to the training cells, not to the seeds.") if pseudo else ""}
    f1 = find(cl, "cv_macro_f1", "macro_f1", "cv_f1")
    out["macro_f1"] = _f3(f1)
    ece_b = find(cl, "ece_before", "ece_uncalibrated", "ece_raw")
    ece_a = find(cl, "ece_after", "ece_calibrated", "ece")
    out["ece_before"] = _f3(ece_b)
    out["ece_after"] = _f3(ece_a)
    per_class = as_frame(find_table(cl, "per_class", "per_class_metrics"), index_name="class")
    if per_class is not None and not per_class.empty:
        if "class" in per_class.columns:
            rank = {c: i for i, c in enumerate(_subtype_order(per_class["class"].astype(str)))}
            per_class = per_class.sort_values("class", key=lambda c: c.astype(str).map(rank))
        out["per_class"] = frame_table(per_class, swatch_cols=("class", "label"))
    cm, holder = find_parent(cl, "confusion_matrix", "confusion")
    labels = as_list(get(holder, "confusion_labels", "labels", "classes")) if holder else []
    if isinstance(cm, Mapping):
        labels = as_list(get(cm, "labels", "classes")) or labels
        cm = get(cm, "matrix", "values", "counts")
    if isinstance(cm, pd.DataFrame):
        labels = [str(c) for c in cm.columns]
        cm = cm.to_numpy()
    if cm is not None:
        m = np.asarray(to_py(cm), dtype=float)
        out["confusion"] = ctx.figure("confusion matrix", lambda: F.fig_confusion(
            m, labels, title="cross-validated confusion matrix (training cells)"))
    curves = _reliability_curves(cl)
    if curves:
        out["reliability"] = ctx.figure("reliability diagram", lambda: F.fig_reliability(
            curves, title="reliability diagram (seed cells, out-of-fold)"))
    absent = as_list(find(cl, "absent_classes", "absent"))
    unlearnt = set(as_list(find(cl, "too_few_to_learn")))
    unsupported = [c for c in absent if c not in unlearnt]
    out["absent"] = ", ".join(_subtype_order(unsupported)) if unsupported else ""
    out["unlearnt"] = ", ".join(_subtype_order(unlearnt & set(absent))) if unlearnt & set(absent) else ""
    uf = find(cl, "unassigned_fraction")
    out["unassigned_stored"] = fmt(uf) if uf is not None else None
    out["unassigned"] = (f"{nums['unassigned_fraction']:.1%}" if nums.get("unassigned_fraction") is not None
                         else "—")
    out.update(_seed_rule_and_audit(cl))
    params = as_mapping(get(cl, "params"))
    out["params"] = kv_table(params) if params else None
    skip = {"params", "absent_classes", "absent", "unassigned_fraction", "ltbp2_caveat", "warnings",
            "gene_audit", "unassigned", "perivascular", "prior"}
    rest = {k: v for k, v in cl.items() if k not in skip}
    out["other"] = kv_table(rest) if rest else None
    return out


def _veto_sentence(wl: Mapping) -> str:
    """How many neighbourhood seeds the cells' own evidence vetoed, and any top-up."""
    hood, cand = as_mapping(wl.get("neighbourhood_counts")), as_mapping(wl.get("candidate_counts"))
    if not hood or not cand:
        return ""
    n_hood = sum(_n_or0(v) for v in hood.values())
    n_veto = n_hood - sum(_n_or0(cand.get(k, 0)) for k in hood)
    text = (f"{n_hood:,} fibroblasts passed the neighbourhood part of the rule; in {n_veto:,} of them "
            "the cell's own evidence did not agree (e_k < 0, or below the runner-up), so they are not seeds")
    topped = {k: _n_or0(v) for k, v in as_mapping(wl.get("topped_up")).items() if _n_or0(v)}
    if topped:
        text += ("; a present class with fewer than the minimum agreeing seeds was topped up from them ("
                 + ", ".join(f"{k}: {v}" for k, v in topped.items()) + ")")
    learnt = learnt_from_cells_alone(wl)
    if learnt:
        text += ("; too few neighbourhood seeds, so learnt from cells that pass the rule on their own ("
                 + ", ".join(f"{k}: {_n_or0(v.get('n_cells_alone'))} cells, random gene sets "
                             f"{float(to_py(v.get('null_q95', 0))):.0f}" for k, v in learnt.items()) + ")")
    return text


def _seed_rule_and_audit(cl: Mapping) -> dict[str, Any]:
    """The seed rule, why classes are absent, the per-gene audit, what unassigned cells
    lie between, the perivascular reading and the class prior of the calls (entries of
    ``uns[...]["classify"]``)."""
    out: dict[str, Any] = {}
    wl = as_mapping(find(cl, "weak_labels"))
    out["seed_rule"] = str(wl.get("rule", "")) if wl else ""
    out["seed_veto"] = _veto_sentence(wl) if wl else ""
    reasons = as_mapping(wl.get("absent_reasons")) if wl else {}
    if reasons:
        out["absent_reasons"] = {"columns": ["subtype", "why it is not a class here"], "note": "",
                                 "rows": [[cell(k, swatch=color_for(k)), cell(str(v))]
                                          for k, v in sorted(reasons.items())]}
    audit = as_frame(get(cl, "gene_audit"))
    if audit is not None and not audit.empty and {"set", "gene", "status"} <= set(audit.columns):
        left = audit[~audit["status"].astype(str).str.startswith("kept")]
        per_set = audit.groupby("set", sort=False)["status"].apply(
            lambda s: f"{int(s.astype(str).str.startswith('kept').sum())} of {len(s)}")
        out["audit_summary"] = {"columns": ["set", "genes kept in these data"], "note": "",
                                "rows": [[cell(k, swatch=color_for(k)), cell(v, cls="num")]
                                         for k, v in per_set.items()]}
        cols = [c for c in ("set", "gene", "direction", "detected_fraction", "r_with_set", "status")
                if c in audit.columns]
        out["audit_left_out"] = frame_table(left[cols].round(3)) if not left.empty else None
        out["n_left_out"] = int(len(left))
    un = as_mapping(get(cl, "unassigned"))
    if un:
        n_un = _n_or0(un.get("n"))
        between = as_mapping(un.get("between"))
        out["unassigned_why"] = (
            f"{n_un:,} fibroblasts are unassigned: no subtype reaches the probability threshold "
            "(ambiguous, not 'no programme')"
            + (": most often between " + "; ".join(f"{k} ({v})" for k, v in list(between.items())[:5])
               if between else "") + "." if n_un else
            "No fibroblast is unassigned: every one has a subtype above the probability threshold.")
    peri = as_mapping(get(cl, "perivascular"))
    if peri:
        out["perivascular"] = (
            f"Perivascular reading: {peri.get('reading', '')} "
            f"({peri.get('rule', '')}). Mural cells: {_n_or0(peri.get('n_mural')):,}; called vCAF: "
            f"{_n_or0(peri.get('n_vcaf')):,}; in normal tissue (kept mural): "
            f"{_n_or0(peri.get('n_mural_normal_tissue')):,}. {peri.get('confidence', '')}.")
    prior = as_mapping(get(cl, "prior"))
    if prior:
        est = as_mapping(prior.get("prior"))
        comp = ", ".join(f"{k} {float(to_py(v)):.1%}" for k, v in
                         sorted(est.items(), key=lambda kv: -float(to_py(kv[1])))) if est else ""
        out["prior"] = (f"Subtype composition the calls assume: {prior.get('method', '')}"
                        + (f": {comp}" if comp else "")
                        + (". The model is trained as if every subtype were equally common; its "
                           "probabilities are re-weighted to this composition."
                           if str(prior.get("method", "")).startswith("estimated") else "."))
    return out


def _f3(x: Any) -> str | None:
    try:
        v = float(to_py(x))
    except (TypeError, ValueError):
        return None if x is None else fmt(x)
    return f"{v:.3f}" if np.isfinite(v) else "—"


def _one_curve(m: Mapping) -> dict | None:
    conf = get(m, "confidence", "mean_confidence", "mean_predicted")
    acc = get(m, "accuracy", "fraction_correct", "observed")
    if conf is None or acc is None:
        return None
    conf = np.asarray(to_py(conf), float).ravel()
    acc = np.asarray(to_py(acc), float).ravel()
    if conf.size != acc.size or conf.size == 0:
        return None
    d = {"confidence": conf, "accuracy": acc}
    cnt = get(m, "count", "counts", "n")
    cen = get(m, "bin_centre", "bin_centres", "bin_center", "bin_centers", "centres", "centers")
    if cnt is not None:
        d["counts"] = np.asarray(to_py(cnt), float).ravel()
    if cen is not None:
        d["centres"] = np.asarray(to_py(cen), float).ravel()
    return d


def _reliability_curves(cl: Mapping) -> dict[str, dict[str, np.ndarray]]:
    """Reliability curves found in the classify record, "before" first."""
    curves: dict[str, dict] = {}
    for name, label in (("reliability_before", "before calibration"),
                        ("reliability_after", "after calibration")):
        c = find(cl, name)
        c = _one_curve(as_mapping(c) or _frame_as_mapping(c))
        if c is not None:
            curves[label] = c
    if curves:
        return curves
    rel = find(cl, "reliability", "reliability_curve", "calibration_curve")
    rel_m = as_mapping(rel) or _frame_as_mapping(rel)
    direct = _one_curve(rel_m)
    if direct is not None:
        return {"calibrated": direct}
    named = {str(k): _one_curve(as_mapping(v)) for k, v in rel_m.items() if isinstance(v, Mapping)}
    named = {k: v for k, v in named.items() if v is not None}
    first = [k for k in named if "before" in k.lower() or "uncal" in k.lower() or "raw" in k.lower()]
    return {(f"{k} calibration" if k in ("before", "after") else k): named[k]
            for k in first + [k for k in named if k not in first]}


def _frame_as_mapping(x: Any) -> dict:
    df = as_frame(x)
    return {} if df is None else {c: df[c].to_numpy() for c in df.columns}
