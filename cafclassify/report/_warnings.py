"""Plain-words warnings about one dataset, grouped by what they concern."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from .. import _keys as K
from ..io._valuetype import reads_note
from ._common import (
    LOW_COVERAGE,
    LOW_MACRO_F1,
    MANY_UNASSIGNED,
    MIN_FIBROBLASTS,
    MIN_LTBP2_CELLS,
    QC_REMOVED,
    TAIL,
    _coverage_frames,
    _fibro_mask,
    _ltbp2_caveat,
    _n_or0,
    _qc_removed,
    _root,
    _section,
    _subtype_order,
    classification_skipped,
    key_numbers,
    learnt_from_cells_alone,
    subtype_definitions,
)
from ._uns import as_list, as_mapping, find, to_py

logger = logging.getLogger(__name__)

#: warning key -> the group it is shown under (groups in this order)
GROUPS = ("Fibroblasts and subtypes", "Agreement with labels", "Classifier", "Gene coverage", "Lineage gate",
          "QC", "Other")
GROUP_OF = {
    "few_fibroblasts": GROUPS[0], "subtype_absent": GROUPS[0], "subtype_unlearnt": GROUPS[0],
    "subtype_few_seeds": GROUPS[0],
    "subtype_cells_alone": GROUPS[0], "subtype_partial_sets": GROUPS[0],
    "many_unassigned": GROUPS[0],
    "ltbp2_thin": GROUPS[0], "thin_definition": GROUPS[0],
    "low_agreement": GROUPS[1], "low_f1": GROUPS[2], "classify": GROUPS[2],
    "low_coverage": GROUPS[3], "gate": GROUPS[4], "qc_removed": GROUPS[5], "not_run": GROUPS[6],
    "species": GROUPS[6], "counts_layer": GROUPS[6], "reads": GROUPS[6],
}


def group_warnings(warns: list[dict]) -> list[dict]:
    """``[{"name": group, "warnings": [warning, ...]}, ...]`` in the fixed group order."""
    out = []
    for g in GROUPS:
        items = [w for w in warns if w.get("group", "Other") == g]
        if items:
            out.append({"name": g, "warnings": items})
    return out


LOW_CALL_AGREEMENT = 0.5  # a subtype call whose cells carry the label naming it less often than this
MIN_CALL_CELLS = 10  # ... among at least this many cells with such a label


def _agreement_warnings(adata, label_key: str | None) -> list[tuple[str, str]]:
    """(text, key) for subtype calls that the labels contradict more often than not."""
    if not label_key or label_key not in adata.obs.columns or K.OBS_SUBTYPE not in adata.obs.columns:
        return []
    from ..tl._agreement import agreement

    res = agreement(adata, label_key, subset="fibroblasts")
    named = dict(zip(res.per_label["label"], res.per_label["named_call"], strict=False))
    out = []
    for _, r in res.per_call.iterrows():
        call = str(r["call"])
        if call in TAIL or not any(v == call for v in named.values()):
            continue  # no label names this call: nothing to compare with
        with_name = sum(int(res.crosstab.loc[lab, call]) for lab, nc in named.items() if nc is not None)
        if with_name >= MIN_CALL_CELLS and r["agreement"] < LOW_CALL_AGREEMENT:
            out.append((f"Of the {with_name:,} labelled fibroblasts called {call}, only {int(r['n_named']):,} "
                        f"({r['agreement']:.0%}) carry a label naming {call} in obs['{label_key}']: read the "
                        f"{call} calls with care (see the agreement heatmap).", "low_agreement"))
    return out


def _fibroblast_depth(adata, *, fib) -> float | None:
    """Median counts per gated fibroblast (QC's ``total_counts``), ``None`` when unknown or
    when the data were not read as counts (a sum of normalised values is not a depth)."""
    if str(_section(adata, K.UNS_READ).get("value_type", "")) != "counts":
        return None
    if fib is None or not fib.any() or K.OBS_TOTAL_COUNTS not in adata.obs.columns:
        return None
    v = pd.to_numeric(adata.obs[K.OBS_TOTAL_COUNTS], errors="coerce").to_numpy()[fib]
    v = v[np.isfinite(v)]
    return float(np.median(v)) if v.size else None


def collect_warnings(adata, label_key: str | None = None) -> list[dict]:
    """Plain-words warnings about this dataset (needs obs and uns only).

    With ``label_key`` (an obs column of labels), subtype calls the labels contradict
    more often than not are warned about too.
    """
    warns: list[dict] = []

    def add(text: str, level: str = "warn", key: str = "") -> None:
        warns.append({"text": text, "level": level, "key": key, "group": GROUP_OF.get(key, "Other")})

    root = _root(adata)
    fib = _fibro_mask(adata)
    nums = key_numbers(adata)
    n_fib = nums["n_fibroblasts"]
    if n_fib is not None:
        if n_fib == 0:
            add("No fibroblasts were found: there is nothing to classify into CAF subtypes. "
                "Check the lineage gate section below and whether this tissue should contain stroma.",
                "error", "few_fibroblasts")
        elif n_fib < MIN_FIBROBLASTS:
            add(f"Only {n_fib:,} fibroblasts were found (of {nums['n_cells']:,} cells). Subtype "
                "proportions from so few cells are uncertain.", key="few_fibroblasts")
    removed, total = _qc_removed(adata)
    if removed is not None and total:
        frac = removed / total
        if frac > QC_REMOVED:
            add(f"QC removed {removed:,} of {total:,} cells ({frac:.0%}). Check the QC thresholds "
                "and the reasons per sample below.", key="qc_removed")
    low_sets: list[str] = []
    seen: set[str] = set()
    for _key, df in _coverage_frames(adata).items():
        low = df[(df["coverage"] < LOW_COVERAGE) | (~df["status"].astype(str).str.lower().isin(["ok", "used", "pass"]))]
        for _, r in low.iterrows():
            if str(r["set"]) in seen:
                continue
            seen.add(str(r["set"]))
            low_sets.append(f"{r['set']} ({_n_or0(r['n_found'])} of {_n_or0(r['n_genes'])} genes)")
    if low_sets:
        add(f"{len(low_sets)} gene set{'s' if len(low_sets) > 1 else ''} could not be measured well in "
            "these data (less than half of their genes present, or skipped): " + ", ".join(low_sets)
            + ". Calls that rest on them are missing or weaker; the coverage table lists the missing genes.",
            key="low_coverage")
    counts = nums["subtype_counts"]
    classify = as_mapping(root.get(K.UNS_CLASSIFY))
    skipped = classification_skipped(adata)
    absent = set(as_list(find(classify, "absent_classes", "absent")))
    if counts is not None and n_fib:
        # 'mural' is not a subtype (the label of mural cells under the 'separate' reading)
        zero = [c for c, v in counts.items() if v == 0 and c not in TAIL and c != "mural"]
        absent |= set(zero)
        # a class the model lacks can still hold cells: mural cells called vCAF
        absent = {c for c in absent if not counts.get(c, 0)}
    unlearnt = set(as_list(find(classify, "too_few_to_learn")))
    if unlearnt:
        one = len(unlearnt) == 1
        add("More cells carry " + ", ".join(_subtype_order(unlearnt)) + " than carry random gene sets, "
            f"but too few carry {'it' if one else 'them'} clearly for the classifier to learn "
            f"{'it, so it is' if one else 'them, so they are'} never called: "
            f"{'its' if one else 'their'} cells are called as other subtypes. Thin data (shallow cells, "
            "small gene panels) do this; the reasons are under 'Why subtypes are absent', and the "
            "per-cell scores still rank these cells.", key="subtype_unlearnt")
    alone = learnt_from_cells_alone(classify)
    if alone:
        one = len(alone) == 1
        counts = (f"{_n_or0(next(iter(alone.values())).get('n_seeds'))} seed cells" if one else
                  "seed cells (" + ", ".join(f"{k}: {_n_or0(v.get('n_seeds'))}" for k, v in alone.items()) + ")")
        add(", ".join(_subtype_order(set(alone))) + f" {'was' if one else 'were'} learnt from {counts} "
            f"that carry the programme on their own: the fibroblast graph does not single {'it' if one else 'them'} "
            "out, so the "
            "neighbourhood rule gave too few seeds. More cells pass than pass for random gene sets, but "
            f"{'this class rests' if one else 'these classes rest'} on fewer, noisier seeds than the "
            "others: read their calls with that in mind.", key="subtype_cells_alone")
    few = as_mapping(find(classify, "few_seed_fallback"))
    if few:
        names = _subtype_order({str(c) for c in as_list(few.get("classes"))})
        one = len(names) == 1
        listed = names[0] if one else ", ".join(names[:-1]) + " and " + names[-1]
        add(f"Only one subtype had the {_n_or0(few.get('default_min_required'))} seed cells a class needs, so "
            + listed + f", which pass{'es' if one else ''} the existence test but had fewer, "
            f"{'was' if one else 'were'} learnt from at least {_n_or0(few.get('min_required'))} (one per "
            "cross-validation fold) rather than calling no fibroblast subtype. "
            f"{'Its' if one else 'Their'} calls rest on a handful of seeds: read them with the per-cell "
            "scores at hand.", key="subtype_few_seeds")
    partial = as_mapping(find(classify, "partial_sets"))
    if partial:
        add("Fewer than two subtype gene sets have their library share of genes in these data (a "
            "targeted panel?), so the classifier read every subtype set with two or more genes: "
            + ", ".join(f"{k} {_n_or0(as_mapping(partial[k]).get('n_found'))} of "
                        f"{_n_or0(as_mapping(partial[k]).get('n_genes'))}" for k in _subtype_order(set(partial)))
            + ". A set cut to a few genes is weaker evidence than its whole list, and on real cells it "
            "can mark a related state (hypoxia for meCAF, basement membrane for vCAF): treat these calls "
            "as provisional, above all those of the sets with the fewest genes.", key="subtype_partial_sets")
    absent -= unlearnt
    if absent:
        depth = _fibroblast_depth(adata, fib=fib)
        one = len(absent) == 1
        add("No cells were assigned to: " + ", ".join(_subtype_order(absent)) + ". Either "
            + ("this subtype is" if one else "these subtypes are") + " absent from this sample, or "
            + ("its" if one else "their") + " markers were not measured (see coverage), or "
            + ("its" if one else "their") + " cells are too few or too shallow"
            + (f" (median {depth:,.0f} counts per fibroblast here)" if depth is not None else "")
            + " to be told apart from random gene sets. The classifier's 'absent' means no evidence "
            "of the population, not evidence that it is missing; small or shallow samples give less "
            "evidence.",
            "info", "subtype_absent")
    frac_un = nums.get("unassigned_fraction")
    if frac_un is not None and frac_un > MANY_UNASSIGNED and not skipped:
        add(f"{frac_un:.0%} of fibroblasts are 'unassigned' (no subtype reached the confidence "
            "threshold).", key="many_unassigned")
    ltbp2_thin = []
    if K.OBS_LTBP2 in adata.obs.columns and fib is not None and n_fib:
        n_pos = int(adata.obs[K.OBS_LTBP2].astype(bool).to_numpy()[fib].sum())
        if n_pos < MIN_LTBP2_CELLS:
            ltbp2_thin.append(f"only {n_pos} LTBP2+ fibroblasts" if n_pos else "no LTBP2+ fibroblasts")
    for df in _coverage_frames(adata).values():
        row = df[df["set"].astype(str).str.upper().str.startswith("LTBP2")]
        if len(row) and float(row["coverage"].iloc[0]) < LOW_COVERAGE:
            ltbp2_thin.append(f"LTBP2 gene set coverage {float(row['coverage'].iloc[0]):.0%}")
    unmeasured = as_mapping(classify.get("ltbp2")).get("status") == "LTBP2 not measured"
    if unmeasured and counts is not None:
        add("LTBP2 is not measured in these data: no fibroblast can be called LTBP2+ (the LTBP2+ CAF "
            "axis rests on that one gene).", "info", key="ltbp2_thin")
    elif ltbp2_thin and counts is not None:  # moot when no subtypes were called
        caveat = _ltbp2_caveat(classify)
        add("LTBP2+ CAF evidence is thin (" + "; ".join(ltbp2_thin) + ")."
            + (f" {caveat}" if isinstance(caveat, str) and caveat else ""), key="ltbp2_thin")
    called = nums["subtype_counts"] or {}
    thin = [(c, int(called[c]), d["rating"]) for c, d in subtype_definitions(classify).items()
            if d["thin"] and called.get(c, 0) and not c.upper().startswith("LTBP2")]
    if thin:  # the LTBP2+ axis has its own caveat (above)
        one = len(thin) == 1
        add("Cells were called into " + ("a subtype whose definition" if one else "subtypes whose definitions")
            + " the signature library rates as thin: "
            + "; ".join(f"{c} ({n:,} cell{'s' if n != 1 else ''}, rated '{r}')" for c, n, r in thin)
            + ". A call says that the cells carry the subtype's gene set more clearly than the other sets, "
            "not that the subtype is established; what each definition rests on is listed under 'CAF "
            "subtypes'.", "info", key="thin_definition")
    f1 = find(classify, "cv_macro_f1", "macro_f1")
    try:
        f1 = float(to_py(f1)) if f1 is not None else None
    except (TypeError, ValueError):
        f1 = None
    if f1 is not None and np.isfinite(f1) and f1 < LOW_MACRO_F1:
        add(f"The classifier reproduces its own seed labels poorly in cross-validation "
            f"(macro-F1 {f1:.2f}): subtype calls, especially of small classes, are uncertain. "
            "See the confusion matrix below.", key="low_f1")
    read = as_mapping(root.get(K.UNS_READ))
    for rec in (read.get("species_warning"), find(classify, "species_warning")):
        rec = as_mapping(rec)
        if rec.get("message"):
            add(f"Species: {rec['message']}", key="species")
    note = reads_note(as_mapping(read.get("value_type_evidence"))) if read.get("value_type") == "counts" else None
    if note:
        add(f"Input: {note}.", key="reads")
    layer = as_mapping(as_mapping(read.get("details")).get("counts_layer") or read.get("counts_layer"))
    if layer.get("reason"):
        add(f"layers['counts'] of the input does not hold counts ({layer['reason']}); it was not used "
            "as counts.", key="counts_layer")
    for w in as_list(find(as_mapping(root.get(K.UNS_GATE)), "warnings")):
        add(f"Gate: {w}", key="gate")
    for w in as_list(find(classify, "warnings")):
        if skipped and "skipped" in str(w):
            continue  # stated once, in the "subtyping was not run" card at the top
        add(f"Classifier: {w}", key="classify")
    try:
        for text, key in _agreement_warnings(adata, label_key):
            add(text, key=key)
    except Exception as exc:  # a warning box never fails the report
        logger.warning("agreement warnings failed: %s", exc)
    missing_steps = [s for s in (K.UNS_READ, K.UNS_QC, K.UNS_GATE, K.UNS_SCORE, K.UNS_CLASSIFY)
                     if s not in root]
    if missing_steps:
        add("These pipeline steps left no record in this file: " + ", ".join(missing_steps)
            + ". Their sections are marked 'not run'.", "info", "not_run")
    return warns
