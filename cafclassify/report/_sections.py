"""Report sections about the data: input, QC, lineage gate, signature coverage, scores."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .. import _keys as K
from ..get._samples import recorded_sample_key
from . import _figures as F
from ._colors import color_for
from ._common import (
    GATE_BLOCK,
    LINEAGE_SETS,
    LOW_COVERAGE,
    STATE_SETS,
    SUBTYPE_ORDER,
    SUBTYPE_SET_ALIASES,
    _cat,
    _coverage_frames,
    _fibro_mask,
    _lineage_order,
    _lineage_series,
    _n_or0,
    _qc_removed,
    _root,
    _section,
    _subtype_order,
    _subtype_series,
    _var_lookup,
    cell,
    frame_table,
    kv_table,
)
from ._context import _Ctx, _not_run
from ._uns import as_frame, as_list, as_mapping, find, fmt, get, to_py

logger = logging.getLogger(__name__)


def _input_section(ctx: _Ctx, source: Path | None) -> dict:
    adata = ctx.adata
    root = _root(adata)
    read = as_mapping(root.get(K.UNS_READ))
    prov = as_mapping(root.get(K.UNS_PROVENANCE))
    facts = []
    path = get(read, "path", "file", "input")
    facts.append(("input file", fmt(path) if path else (str(source) if source else "in-memory AnnData")))
    if source is not None:
        facts.append(("annotated file", str(source)))
    sha = get(read, "sha256", "checksum") or find(prov, "input_sha256", "sha256")
    facts.append(("input sha256", fmt(sha) if sha else "—"))
    facts.append(("cells x genes (this file)", f"{adata.n_obs:,} x {adata.n_vars:,}"))
    if get(read, "n_cells") is not None:
        facts.append(("cells x genes (as read)", f"{fmt(get(read, 'n_cells'))} x {fmt(get(read, 'n_genes'))}"))
    for label, names in (("format", ("format",)), ("species", ("species",)),
                         ("gene ID type", ("id_type",)), ("value type detected", ("value_type",)),
                         ("normalisation", ("normalization",))):
        facts.append((label, fmt(get(read, *names))))
    details = as_mapping(get(read, "details"))
    if details.get("source_matrix_reason"):
        facts.append(("matrix read", f"{fmt(details.get('source_matrix'))}: {fmt(details['source_matrix_reason'])}"))
    n_rep = find(read, "n_symbols_repaired", "n_repaired")
    repaired = as_mapping(find(read, "symbols_repaired", "repaired", "repaired_symbols"))
    if set(repaired) >= {"old", "new"}:
        repaired = dict(zip(as_list(repaired["old"]), as_list(repaired["new"]), strict=False))
    rep_text = fmt(n_rep) if n_rep is not None else "—"
    if repaired:
        items = list(repaired.items())
        rep_text += " (" + ", ".join(f"{k}→{v}" for k, v in items[:15]) + (", …" if len(items) > 15 else "") + ")"
    facts.append(("outdated gene symbols repaired", rep_text))
    facts.append(("genes without a current symbol", fmt(find(read, "n_unmapped"))))
    rows = [[cell(k, cls="key"), cell(v)] for k, v in facts]
    extra = {k: v for k, v in read.items() if k not in {
        "path", "file", "input", "sha256", "checksum", "n_cells", "n_genes", "format", "species",
        "id_type", "value_type", "n_repaired", "repaired", "repaired_symbols", "n_unmapped",
        "n_symbols_repaired", "symbols_repaired", "normalization"}}
    history = as_mapping(prov.get("history")) if prov else {}
    prov_rows = kv_table({k: v for k, v in prov.items() if k != "history"}) if prov else None
    return {
        "ran": bool(read) or bool(prov),
        "facts": {"columns": ["", ""], "rows": rows, "note": ""},
        "read_extra": kv_table(extra) if extra else None,
        "provenance": prov_rows,
        "history": kv_table(history) if history else None,
        "note": "" if read else "No record of the read step (uns['cafclassify']['read']).",
        "prov_note": "" if prov else "No provenance record (uns['cafclassify']['provenance']).",
    }


def _thresholds(qc: Mapping) -> dict[str, dict[str, float]]:
    raw = find(qc, "thresholds")
    out: dict[str, dict[str, float]] = {}
    df = as_frame(raw, index_name="sample")
    if df is not None and not df.empty:
        scol = next((c for c in ("sample", "batch", "index") if c in df.columns), None)
        for i, r in df.iterrows():
            sample = str(r[scol]) if scol else str(i)
            vals = {}
            for c, v in r.items():
                if c == scol:
                    continue
                try:
                    fv = float(v)
                except (TypeError, ValueError):
                    continue
                if np.isfinite(fv):
                    vals[str(c)] = fv
            out[sample] = vals
        return out
    m = as_mapping(raw)
    if m and all(not isinstance(v, Mapping) for v in m.values()):
        m = {"all": m}
    for s, vals in m.items():
        vals = as_mapping(vals)
        clean = {}
        for k, v in vals.items():
            try:
                fv = float(to_py(v))
            except (TypeError, ValueError):
                continue
            if np.isfinite(fv):
                clean[str(k)] = fv
        out[str(s)] = clean
    return out


def _qc_panel_words(qc) -> tuple[dict, list, dict]:
    """Axis names, panels to leave out and per-panel notes from the QC record."""
    labels, drop, notes = {}, [], {}
    value_type = str(find(qc, "value_type") or "")
    matrix = str(find(qc, "matrix") or "")
    if value_type and value_type != "counts" and "counts" not in matrix:
        labels[K.OBS_TOTAL_COUNTS] = "sum of log-normalised values per cell (not counts)"
        notes[K.OBS_TOTAL_COUNTS] = "no count threshold on log-normalised data"
    n_mt = find(qc, "n_mt_genes")
    try:
        if n_mt is not None and int(to_py(n_mt)) == 0:
            drop.append(K.OBS_PCT_MT)
    except (TypeError, ValueError):
        pass
    skipped = as_mapping(find(qc, "skipped"))
    if K.OBS_PCT_MT not in drop and skipped.get("mt"):
        notes[K.OBS_PCT_MT] = "no mitochondrial threshold (see QC parameters)"
    return labels, drop, notes


def _qc_section(ctx: _Ctx) -> dict:
    adata = ctx.adata
    qc = _section(adata, K.UNS_QC)
    has_cols = any(c in adata.obs.columns for c in ("n_genes_by_counts", "total_counts", "pct_counts_mt"))
    if not qc and not has_cols and K.OBS_QC_PASS not in adata.obs.columns:
        return _not_run("QC", "QC was not run (no uns['cafclassify']['qc'] and no QC columns in obs).")
    thr = _thresholds(qc)
    obs = adata.obs.iloc[ctx.idx]
    labels, drop, notes = _qc_panel_words(qc)
    fig = ctx.figure("qc distributions", lambda: F.fig_qc_distributions(
        obs, thresholds=thr, pass_key=K.OBS_QC_PASS if K.OBS_QC_PASS in obs.columns else None,
        labels=labels, drop=drop, notes=notes))
    table = as_frame(find(qc, "table", "per_sample", "summary"), index_name="sample")
    source = "uns['cafclassify']['qc']"
    if (table is None or table.empty) and K.OBS_QC_PASS in adata.obs.columns:
        skey = recorded_sample_key(adata, conventional=True)
        reason = (_cat(adata.obs[K.OBS_QC_REASON]) if K.OBS_QC_REASON in adata.obs.columns
                  else adata.obs[K.OBS_QC_PASS].map({True: "pass", False: "fail"}).astype(str))
        df = pd.DataFrame({"sample": _cat(adata.obs[skey]) if skey else "all", "reason": reason,
                           "kept": adata.obs[K.OBS_QC_PASS].astype(bool)})
        table = (df.groupby(["sample", "reason"], observed=True).size().rename("n_cells").reset_index())
        source = "obs['qc_pass'] / obs['qc_reason'] of this file"
    thr_table = None
    if thr:
        tdf = pd.DataFrame.from_dict(thr, orient="index")
        tdf.index.name = "sample"
        thr_table = frame_table(tdf.reset_index())
    removed, total = _qc_removed(adata)
    params = as_mapping(find(qc, "params"))
    return {
        "ran": True,
        "figure": fig,
        "table": frame_table(table) if table is not None and not table.empty else None,
        "table_source": source,
        "thresholds": thr_table,
        "params": kv_table(params) if params else None,
        "removed": removed, "total": total,
        "failed_in_file": bool(K.OBS_QC_PASS in adata.obs.columns
                               and not adata.obs[K.OBS_QC_PASS].astype(bool).all()),
        "note": "" if qc else "No QC record in uns; distributions from obs only.",
        "n_plot": len(obs),
        "panel_note": " ".join(
            ["These data have no mitochondrial genes: no mitochondrial panel."] * (K.OBS_PCT_MT in drop)
            + ["X holds log-normalised values, not counts: the middle panel sums them and has no "
               "threshold."] * (K.OBS_TOTAL_COUNTS in labels)),
    }


def _marker_genes(ctx: _Ctx, set_names: Mapping[str, Sequence[str]], *, groupby: pd.Series,
                  n_top: int, mask: np.ndarray | None = None) -> dict[str, list[str]]:
    """Top found genes per set, ranked by specificity for their own label.

    ``set_names`` maps a label (lineage/subtype) to candidate gene-set names. Genes
    come from the coverage record (genes found in the data), else from the
    built-in signature library.
    """
    cov = _coverage_frames(ctx.adata)
    found: dict[str, list[str]] = {}
    for frame in cov.values():
        byset = {str(s): f for s, f in zip(frame["set"], frame["found"], strict=False)}
        for label, names in set_names.items():
            if label in found:
                continue
            for nm in names:
                if nm in byset and byset[nm]:
                    found[label] = list(byset[nm])
                    break
    if len(found) < len(set_names):
        try:  # fall back to the built-in library when it exists
            from ..genesets import load_signatures

            lib = load_signatures("caf_v1")
            for label, names in set_names.items():
                if label not in found:
                    for nm in names:
                        if nm in lib.sets:
                            found[label] = list(lib.sets[nm].genes)
                            break
        except Exception as exc:  # library not available: dot plot shows what we have
            logger.debug("built-in signatures not available for the report: %s", exc)
    lookup = _var_lookup(ctx.adata)
    sub = ctx.sub
    labels = groupby.to_numpy()
    sel = np.ones(len(labels), bool) if mask is None else mask
    out: dict[str, list[str]] = {}
    used: set[str] = set()
    for label, genes in found.items():
        names = [lookup[g] for g in genes if g in lookup]
        names = [n for n in dict.fromkeys(names) if n not in used]
        if not names:
            continue
        cols = sub[:, names].X
        cols = cols.toarray() if hasattr(cols, "toarray") else np.asarray(cols)
        inside = sel & (labels == label)
        outside = sel & (labels != label)
        if inside.any() and outside.any():
            spec = cols[inside].mean(axis=0) - cols[outside].mean(axis=0)
        elif inside.any():
            spec = cols[inside].mean(axis=0)
        else:
            spec = cols[sel].mean(axis=0) if sel.any() else np.zeros(len(names))
        order = np.argsort(-np.asarray(spec).ravel(), kind="stable")[:n_top]
        out[label] = [names[i] for i in order]
        used.update(out[label])
    return out


def not_measured_lineages(adata) -> list[str]:
    """Lineages the gate could not call because their gene set was not in the data."""
    gate = as_mapping(_root(adata).get(K.UNS_GATE))
    used = gate.get("sets_used")
    if used is None:
        return []
    used = {str(x) for x in as_list(used)}
    return [lab for lab in K.LINEAGES if lab != "other" and lab not in used]


def _cluster_margin(adata, gate) -> np.ndarray | None:
    """Per cell: the margin of its gate cluster's lineage call (0 for 'other' and contested clusters).

    Drawn instead of ``obs["caf_lineage_confidence"]``, which scores a cell without
    any lineage evidence ('other') as certain and a cell of a clearly called cluster
    whose own markers miss the per-cell cut-off as uncertain (see the gate module).
    """
    table = as_frame(find(gate, "clusters", "per_cluster", "cluster_table"), index_name="cluster")
    if table is None or "margin" not in table.columns or "cluster" not in table.columns:
        return None
    if K.OBS_LINEAGE_CLUSTER not in adata.obs.columns:
        return None
    margin = pd.to_numeric(table["margin"], errors="coerce")
    if "contested" in table.columns:  # the call is a minority among the cells with evidence
        contested = table["contested"].astype(str).str.lower().isin(("true", "1"))
        margin = margin.where(~contested.to_numpy(), 0.0)
    m = dict(zip(table["cluster"].astype(str), margin, strict=False))
    return adata.obs[K.OBS_LINEAGE_CLUSTER].astype(str).map(m).astype(float).to_numpy()


def _numeric_sort(df: pd.DataFrame, col: str) -> pd.DataFrame:
    """Rows sorted by ``col`` as numbers when they are numbers (0, 1, 2, 10, not 0, 1, 10, 2)."""
    num = pd.to_numeric(df[col], errors="coerce")
    if num.notna().all():
        return df.assign(_k=num).sort_values("_k").drop(columns="_k").reset_index(drop=True)
    return df


def _clustering_note(emb: Mapping) -> str:
    """How the gate's clusters were made, in words (``uns[...]["gate"]["embedding"]``)."""
    source = str(get(emb, "source", default="") or "")
    if not source:
        return ""
    if source != "leiden":
        return source
    n = get(emb, "n_cells_graph")
    on = f" on {int(n):,} cells" if n is not None else ""
    runs = get(emb, "leiden_runs")
    if runs is None:  # files written before the gate kept the best of several starts
        return f"Leiden{on}, one random start"
    q, span = get(emb, "modularity"), np.ravel(get(emb, "modularity_range", default=[])).astype(float)
    parts = [f"kept {float(q):.4f}"] if q is not None else []
    if span.size == 2:
        parts.append(f"the {int(runs)} starts ranged {span[0]:.4f}-{span[1]:.4f}")
    detail = f" ({'; '.join(parts)})" if parts else ""
    return f"Leiden{on}: the best of {int(runs)} random starts by modularity{detail}"


def _gate_section(ctx: _Ctx, nums: dict) -> dict:
    adata = ctx.adata
    gate = _section(adata, K.UNS_GATE)
    lin = _lineage_series(adata)
    if lin is None:
        return _not_run("gate", "The lineage gate was not run (no obs['caf_lineage']).")
    counts = lin.value_counts()
    order = _lineage_order(counts.index)
    n = adata.n_obs
    rows = [[cell(lab, swatch=color_for(lab)),
             cell(f"{int(counts[lab]):,}", cls="num", data={"lineage-count": lab, "value": int(counts[lab])}),
             cell(f"{counts[lab] / n:.1%}", cls="num")] for lab in order]
    unmeasured = not_measured_lineages(adata)
    for lab in unmeasured:
        if lab not in order:
            rows.append([cell(lab, swatch=color_for(lab)), cell("not measurable", cls="num"), cell("—", cls="num")])
    count_table = {"columns": ["lineage", "cells", "fraction"], "rows": rows,
                   "note": ("Not measurable: too few of the lineage's marker genes are in the data, so the "
                            "gate cannot call it (such cells count as 'other'), not zero cells."
                            if unmeasured else "")}
    coords = ctx.coords()
    sub_lin = lin.iloc[ctx.idx].reset_index(drop=True)
    emb = None
    if coords is not None:
        emb = ctx.figure("lineage embedding", lambda: F.fig_embedding_categorical(
            coords, sub_lin, title="lineage (gate)", order=order, basis=ctx.basis))
    conf = None
    margin = _cluster_margin(adata, gate)
    if coords is not None and margin is not None:
        vals = margin[ctx.idx]
        conf = ctx.figure("lineage call margin", lambda: F.fig_embedding_continuous(
            coords, vals, title="how clearly the cell's cluster was called", basis=ctx.basis))

    def dot():
        genes = _marker_genes(ctx, {lab: LINEAGE_SETS.get(lab, (lab,)) for lab in order},
                              groupby=sub_lin, n_top=4)
        genes = {lab: genes[lab] for lab in order if lab in genes}
        if not genes:
            return None
        s = ctx.sub
        s.obs["_lineage"] = pd.Categorical(sub_lin.to_numpy(), categories=order)
        return F.fig_dotplot(s, genes, groupby="_lineage", title="lineage markers",
                             categories_order=order)

    dotplot = ctx.figure("lineage dot plot", dot)
    clusters = as_frame(find(gate, "clusters", "per_cluster", "cluster_table"), index_name="cluster")
    if clusters is not None and "cluster" in clusters.columns:
        clusters = _numeric_sort(clusters, "cluster")
    missing = as_mapping(find(gate, "missing_markers", "missing"))
    missing_rows = [[cell(k, cls="key"), cell(", ".join(as_list(v)), cls="missing")]
                    for k, v in missing.items() if as_list(v)]
    stored_counts = as_mapping(find(gate, "counts"))
    params = as_mapping(find(gate, "params"))
    clustering = _clustering_note(as_mapping(get(gate, "embedding")))
    if clustering:
        params = {"clustering": clustering, **params}
    return {
        "ran": True,
        "counts": count_table,
        "embedding": emb, "confidence": conf, "dotplot": dotplot,
        "clusters": frame_table(clusters, swatch_cols=("lineage", "caf_lineage", "label")) if clusters is not None and not clusters.empty else None,
        "missing": {"columns": ["lineage set", "markers not in the data"], "rows": missing_rows, "note": ""} if missing_rows else None,
        "stored_counts": kv_table(stored_counts) if stored_counts else None,
        "params": kv_table(params) if params else None,
        "warnings": as_list(find(gate, "warnings")),
        "note": "" if gate else "No gate record in uns; counts from obs only.",
    }


def _coverage_section(ctx: _Ctx) -> dict:
    frames = _coverage_frames(ctx.adata)
    if not frames:
        return _not_run("scoring", "No signature coverage record (uns['cafclassify']['score'][...]['coverage']).")
    blocks = []
    score = _section(ctx.adata, K.UNS_SCORE)
    for key, df in frames.items():
        rows = []
        for _, r in df.iterrows():
            cov = float(r["coverage"]) if pd.notna(r["coverage"]) else float("nan")
            status = str(r["status"])
            low = not (cov >= LOW_COVERAGE) or status.lower() not in ("ok", "used", "pass")
            missing = list(r["missing"])
            rows.append({
                "set": str(r["set"]), "group": str(r.get("group", "")) if "group" in df.columns else "",
                "n_genes": _n_or0(r["n_genes"]), "n_found": _n_or0(r["n_found"]),
                "coverage": "—" if np.isnan(cov) else f"{cov:.0%}", "status": status, "low": low,
                "found": list(r["found"]), "missing": missing, "swatch": color_for(r["set"]),
            })
        block = (as_mapping(score.get(key)) if key in score else
                 {} if key == GATE_BLOCK else score)
        params = as_mapping(get(block, "params"))
        blocks.append({"key": key, "rows": rows, "has_group": "group" in df.columns,
                       "params": kv_table(params) if params else None})
    return {"ran": True, "blocks": blocks}


def _score_frame(adata, key: str) -> pd.DataFrame | None:
    if key not in adata.obsm:
        return None
    m = adata.obsm[key]
    if isinstance(m, pd.DataFrame):
        return m
    return None


def _scores_section(ctx: _Ctx) -> dict:
    adata = ctx.adata
    scores = _score_frame(adata, K.OBSM_SCORES)
    lin_scores = _score_frame(adata, K.OBSM_LINEAGE_SCORES)
    if scores is None and lin_scores is None:
        return _not_run("scoring", "No per-cell scores (obsm['caf_scores'] / obsm['caf_lineage_scores']).")
    out: dict[str, Any] = {"ran": True, "figures": []}
    lin = _lineage_series(adata)
    sub = _subtype_series(adata)
    fib = _fibro_mask(adata)
    idx = ctx.idx
    # gate check: lineage scores by assigned lineage, on all plotted cells
    gate_src = lin_scores if lin_scores is not None else scores
    if gate_src is not None and lin is not None:
        cols = [c for c in gate_src.columns if any(c in names for names in LINEAGE_SETS.values())
                or c in K.LINEAGES]
        order = _lineage_order(lin.unique())
        if cols:
            src = gate_src.iloc[idx]
            out["figures"].append(ctx.figure("lineage scores by lineage", lambda: F.fig_score_distributions(
                src, lin.iloc[idx], columns=cols, order=order,
                title="lineage scores per assigned lineage (the fibroblast score should be "
                      "highest in fibroblasts)")))
    if scores is not None and sub is not None and fib is not None and fib.any():
        sel = idx[fib[idx]]
        cols_sub = [c for c in scores.columns if c in SUBTYPE_ORDER or c.startswith("LTBP2")
                    or c in {a for v in SUBTYPE_SET_ALIASES.values() for a in v}]
        order = _subtype_order(sub.iloc[sel].unique())
        if cols_sub and len(sel):
            out["figures"].append(ctx.figure("subtype scores by subtype", lambda: F.fig_score_distributions(
                scores.iloc[sel], sub.iloc[sel], columns=cols_sub, order=order,
                title="subtype scores per assigned subtype (fibroblasts)")))
        cols_state = [c for c in scores.columns if c in STATE_SETS]
        if cols_state and len(sel):
            out["figures"].append(ctx.figure("state scores by subtype", lambda: F.fig_score_distributions(
                scores.iloc[sel], sub.iloc[sel], columns=cols_state, order=order,
                title="state scores per assigned subtype (fibroblasts)")))
    out["figures"] = [f for f in out["figures"] if f]
    out["note"] = (f"Distributions drawn from {ctx.n_plot:,} of {adata.n_obs:,} cells."
                   if ctx.n_plot < adata.n_obs else "")
    return out
