"""Subtype calls against author labels on real tumours, next to marker baselines.

Usage::

    python benchmarks/bench_real.py [--data ../shared/data] [--out benchmarks/out/real.md]
    python benchmarks/bench_real.py --seeds 0 1 2   # also: mean and range over random_state

Differences of a few hundredths of ARI between methods are within the spread over
``random_state``. A seed is given to every step of the chain, as the workflow's one
``seed`` is (``config/config.yaml``): the gate's clustering and refinement, the seed
rule's random gene sets, the model's folds and the baselines' control genes. So the
spread includes how far the calls move when the gate puts a few cells in another
compartment (until 2026-12-07 only ``classify`` was reseeded and the gate always ran
at seed 0). ``--seeds`` adds a table of the mean, minimum and maximum ARI and the mean
macro-F1 of every method over the seeds given (the first table stays the first seed's).

For every labelled dataset it runs the package chain (read -> qc --filter -> gate ->
score -> classify, defaults, except that ``score`` keeps sets below their coverage,
``on_low_coverage="keep"``, so that the baselines score every set; on the panel rows,
where the default would keep one subtype set, the classifier reads the same sets either
way: ``docs/classifier.md``) and prints one markdown table of

* **cafclassify (default)**: the current classifier (evidence seeds with the gene
  audit, :mod:`cafclassify.tl._evidence`; signature genes as features);
* **cafclassify (uniform prior)**: the same with ``prior="uniform"`` (calls under the
  training prior of balanced class weights, as before the prior estimate);
* **cafclassify (before)**: the first classifier, computed in the same run
  (``seed_rule="zscore"``, ``n_hvg=2000``: z-scores across fibroblasts, 2,000 HVGs plus
  the signature genes as features);
* **argmax score_genes**: ``scanpy.tl.score_genes`` of every subtype set of the same
  library on the gated fibroblasts, argmax per cell;
* **argmax UCell**: argmax of the UCell scores the workflow computes (``obsm["caf_scores"]``);
* **argmax score_genes / UCell (labelled classes)**: the same scores, argmax over only the
  subtypes the labels contain (told which subtypes exist);
* **argmax short panels (author classes)**: ``score_genes`` of the canonical short marker
  panels (Elyada et al. 2019 Fig. 2 style, as hard-coded in many public analyses; see
  ``shared/reference/signatures_research.md`` 2.1) of *only the author's populations*,
  argmax per gated fibroblast. It is told which subtypes exist, which no other method
  is; computed where every author population has a canonical panel (the breast file).

Metrics are computed over the cells the authors labelled with a subtype (cells the gate
did not pass count as ``not_fibroblast``): ARI between calls and labels; AUROC of the
matching probability (score for the baselines) per author population against the other
labelled cells; macro-F1 over the author populations after the label mapping below;
the fraction ``unassigned``; the fraction called a subtype the labels do not have.

The datasets, and how each is made from the breast sample or the simulator, are described in
``real_designs.py`` (each breast row is skipped with a message when its file is absent).
"""

from __future__ import annotations

import argparse
import functools
import logging
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import scanpy as sc
from sklearn.metrics import adjusted_rand_score, f1_score, roc_auc_score

import cafclassify as caf
from cafclassify import _keys as K
from cafclassify.genes import detect_species, recorded_species, to_species

from real_designs import (
    MAJORITY_DESIGNS,
    SORTED_STROMA_CAFS,
    as_full_length,
    as_mouse,
    author_cafs_subsampled,
    library_without,
    marker_panel,
    small_panel,
    synthetic_datasets,
    thinned_tumour,
)

HERE = Path(__file__).resolve().parent
DATA = HERE.parents[1] / "shared" / "data"
WU_FILE = "wu2021_brca_CID4465_1564cells_counts.h5ad"  # the labelled breast sample in --data
SUBTYPES = ["myCAF", "iCAF", "apCAF", "meCAF", "vCAF", "dCAF"]
#: the first classifier's settings (z-score seeds, 2,000 HVGs + signature genes, per cell, 15 seeds)
BEFORE = {"seed_rule": "zscore", "feature_smoothing": False, "n_hvg": 2000, "min_seeds": 15, "min_per_fold": 3,
          "prior": "uniform"}
#: canonical short marker panels (human), Elyada et al. 2019 Fig. 2 style
PANELS = {
    "iCAF": ["IL6", "PDGFRA", "CXCL12", "CFD", "DPT", "LMNA", "AGTR1", "HAS1", "CXCL1", "CXCL2", "CCL2",
             "CXCL8"],
    "myCAF": ["ACTA2", "TAGLN", "MMP11", "MYL9", "HOPX", "POSTN", "TPM1", "TPM2"],
    "apCAF": ["HLA-DRA", "HLA-DPA1", "HLA-DQA1", "CD74", "SLPI"],
}
#: the vCAF markers of the study that named vCAFs (Bartoschek et al. 2018: pericyte genes), for
#: the sorted-stroma table's short-panel baseline beside PANELS' iCAF and myCAF
VCAF_PERICYTE_PANEL = ["RGS5", "HIGD1B", "NOTCH3", "DES", "NID1"]


def in_species(genes, species: str) -> list[str]:
    """Human symbols as data of ``species`` name them: their mouse orthologues for ``"mouse"``
    (genes without one dropped), unchanged otherwise. The baselines' sets, mapped as
    cafclassify maps its own."""
    if species == "mouse":
        return list(to_species(list(genes), source="human", target="mouse").values())
    return list(genes)


def run_chain(a, signatures, random_state: int = 0):
    """qc -> filter -> gate -> score on ``a`` (modified), every step at ``random_state``."""
    caf.qc(a, random_state=random_state)
    a = a[a.obs["qc_pass"].to_numpy()].copy()
    caf.gate(a, signatures=signatures, random_state=random_state)
    caf.score(a, signatures, on_low_coverage="keep", random_state=random_state)
    return a


def chained(a, signatures, seeds: list[int]):
    """``(seed, chain)`` for every seed: the chain re-run on a copy of ``a`` at that seed."""
    for seed in seeds:
        yield seed, run_chain(a.copy(), signatures, random_state=seed)


def metrics(calls: np.ndarray, truth: np.ndarray, ranking: pd.DataFrame | None, mapping: dict) -> dict:
    """ARI, per-population AUROC, macro-F1 after mapping, unassigned and foreign fractions."""
    mapped = np.array([mapping.get(t, t) for t in truth], dtype=object)
    pops = sorted(set(mapped))
    out = {"n": int(truth.size), "ARI": adjusted_rand_score(truth, calls)}
    out["macro_F1"] = f1_score(mapped, calls, labels=pops, average="macro", zero_division=0)
    for p in pops:
        if ranking is not None and p in ranking and len(pops) > 1:
            r = np.nan_to_num(ranking[p].to_numpy(dtype=float), nan=-np.inf)
            r = np.where(np.isfinite(r), r, np.nanmin(r[np.isfinite(r)]) - 1 if np.isfinite(r).any() else 0)
            out[f"AUROC {p}"] = roc_auc_score(mapped == p, r)
        else:
            out[f"AUROC {p}"] = np.nan
    out["unassigned"] = float(np.mean(calls == K.UNASSIGNED))
    foreign = ~np.isin(calls, pops + [K.UNASSIGNED, K.NOT_FIBROBLAST])
    out["foreign"] = float(np.mean(foreign))
    return out


def by_author_subset(calls: np.ndarray, truth: np.ndarray, groups: np.ndarray, mapping: dict) -> dict:
    """Per author subset (``groups``), the fraction of its cells called its population;
    and the ARI over the cells the authors did not label *transitioning*.

    The authors' populations are unions of subsets they clustered (the breast sample:
    iCAF-like s1 and s2, myCAF-like s3 "Transitioning", s4 and s5), so one ARI hides
    where calls and labels part. Read per subset, it shows whether the disagreement sits
    in the populations' cores or in the subsets the authors themselves describe as in
    between."""
    mapped = np.array([mapping.get(t, t) for t in truth], dtype=object)
    out = {f"agree {g}": float(np.mean(calls[groups == g] == mapped[groups == g]))
           for g in sorted(set(groups))}
    clear = ~pd.Series(groups).str.contains("transitioning", case=False).to_numpy()
    out["ARI, transitioning left out"] = adjusted_rand_score(truth[clear], calls[clear])
    return out


def evaluate(a, signatures, labelled: np.ndarray, truth: np.ndarray, mapping: dict, name: str,
             seeds: list[int], *, groups: np.ndarray | None = None) -> list[dict]:
    """Rows of every method at every ``random_state`` in ``seeds`` on one chained dataset
    (``groups``: the labelled cells' author subsets, :func:`by_author_subset`)."""
    return [dict(r, random_state=seed) for seed in seeds
            for r in _evaluate_at(a, signatures, labelled, truth, mapping, name, seed, groups=groups)]


def _evaluate_at(a, signatures, labelled: np.ndarray, truth: np.ndarray, mapping: dict, name: str,
                 seed: int, *, groups: np.ndarray | None = None) -> list[dict]:
    rows = []
    fib = (a.obs[K.OBS_LINEAGE] == "fibroblast").to_numpy()
    classes = [c for c in SUBTYPES if c in a.obsm[K.OBSM_SCORES].columns]

    def add(method, calls, ranking, seconds):
        r = metrics(calls[labelled], truth, None if ranking is None else ranking[labelled], mapping)
        if groups is not None:
            r.update(by_author_subset(calls[labelled], truth, groups, mapping))
        rows.append({"dataset": name, "method": method, **r, "seconds": seconds})

    for method, kw in (("cafclassify (default)", {}),
                       ("cafclassify (uniform prior)", {"prior": "uniform"}),
                       ("cafclassify (before)", BEFORE)):
        t = time.perf_counter()
        b = caf.classify(a, signatures=signatures, random_state=seed, copy=True, **kw)
        if K.OBS_SUBTYPE in b.obs:
            calls, ranking = b.obs[K.OBS_SUBTYPE].astype(str).to_numpy(), b.obsm[K.OBSM_SUBTYPE_PROBA]
        else:  # classification skipped (on_insufficient="skip"): no cell is called
            calls, ranking = np.full(a.n_obs, K.UNASSIGNED, dtype=object), None
        add(method, calls, ranking, time.perf_counter() - t)
        if method == "cafclassify (default)":
            cl = b.uns["cafclassify"]["classify"]
            if cl.get("status") == "skipped":
                rows[-1]["absent"] = "classification skipped"
            else:
                wl = cl["training_summary"]["weak_labels"]
                rows[-1]["absent"] = ",".join(map(str, wl.get("absent_classes", []))) or "-"
    # baselines on the gated fibroblasts, same sets (human symbols mapped to the data's species)
    t = time.perf_counter()
    sub = a[fib].copy()
    lib = caf.load_signatures(signatures)
    species = recorded_species(a) or detect_species(list(a.var_names))
    ortho = functools.partial(in_species, species=species)
    sg = pd.DataFrame(index=a.obs_names, columns=classes, dtype=float)
    for c in classes:
        genes = [g for g in ortho([g for g, w in zip(lib.sets[c].genes, lib.sets[c].weights, strict=True)
                                   if w > 0]) if g in sub.var_names]
        if genes:
            sc.tl.score_genes(sub, genes, score_name="_s", random_state=seed)
            sg.loc[sub.obs_names, c] = sub.obs["_s"].to_numpy()
    baselines = [("argmax score_genes", sg, time.perf_counter() - t),
                 ("argmax UCell", a.obsm[K.OBSM_SCORES][classes].where(
                     pd.Series(fib, index=a.obs_names), np.nan), 0.0)]
    author_classes = sorted({mapping.get(x, x) for x in truth})
    known = [c for c in classes if c in author_classes]
    if 1 < len(known) < len(classes):  # the same sets, told which subtypes exist
        baselines.append(("argmax score_genes (labelled classes)", sg[known], 0.0))
        baselines.append(("argmax UCell (labelled classes)", baselines[1][1][known], 0.0))
    if all(c in PANELS for c in author_classes):  # told which subtypes exist
        t = time.perf_counter()
        panel = pd.DataFrame(index=a.obs_names, columns=author_classes, dtype=float)
        for c in author_classes:
            genes = [g for g in ortho(PANELS[c]) if g in sub.var_names]
            sc.tl.score_genes(sub, genes, score_name="_s", random_state=seed)
            panel.loc[sub.obs_names, c] = sub.obs["_s"].to_numpy()
        baselines.append(("argmax short panels (author classes)", panel, time.perf_counter() - t))
    for method, S, secs in baselines:
        classes = list(S.columns)
        calls = np.full(a.n_obs, K.NOT_FIBROBLAST, dtype=object)
        M = S.to_numpy(dtype=float)
        calls[fib] = np.array(classes, dtype=object)[np.nan_to_num(M[fib], nan=-np.inf).argmax(1)]
        add(method, calls, S, secs)
    return rows


def wu(data: Path, signatures, name: str, seeds: list[int], *, genes=None, path: Path | None = None) -> list[dict]:
    """Rows for the breast sample (or its version at ``path``); ``genes`` (a function of the
    read AnnData) restricts its genes first, and ``{n_genes}`` in ``name`` is replaced by
    the number kept."""
    a = caf.read(path or data / WU_FILE)
    if genes is not None:
        a = genes(a)
    name = name.format(n_genes=a.n_vars)
    rows = []
    for seed, c in chained(a, signatures, seeds):
        lab = c.obs["author_caf_subtype"].astype(str).to_numpy()
        labelled = np.isin(lab, ["iCAF", "myCAF"])
        groups = c.obs["celltype_subset"].astype(str).to_numpy()[labelled]
        rows += evaluate(c, signatures, labelled, lab[labelled], {}, name, [seed], groups=groups)
    return rows


def author_subset_table(every: pd.DataFrame) -> str:
    """Mean over seeds of :func:`by_author_subset` for every row that has it, as markdown."""
    cols = [c for c in every.columns if c.startswith("agree ")] + ["ARI, transitioning left out"]
    if cols[0] not in every:
        return ""
    sub = every.dropna(subset=[cols[0]])
    tab = sub.groupby(["dataset", "method"], sort=False)[["ARI", *cols]].mean().reset_index()
    tab.columns = [c.replace("agree CAFs ", "") for c in tab.columns]
    seeds = ", ".join(map(str, sorted(sub["random_state"].unique())))
    n = sub.groupby("dataset", sort=False).first()
    head = ("### wu2021: where calls and author labels part. Per author subset, the fraction of its "
            "cells called the authors' population (iCAF-like: s1, s2; myCAF-like: s3 'Transitioning', "
            f"s4, s5), and the ARI without the transitioning cells; mean over random_state {seeds} "
            f"({int(n['n'].iloc[0])} author CAFs)\n\n")
    return head + tab.to_markdown(index=False, floatfmt=".2f")


def majority_table(data: Path, seed: int, subsets: tuple[int, ...] = (0, 1, 2)) -> str:
    """ARI of every method on the breast sample subsampled to a majority subtype
    (:data:`MAJORITY_DESIGNS`), mean over random subsets, as markdown."""
    full = caf.read(data / WU_FILE)
    rows = []
    for n_i, n_m in MAJORITY_DESIGNS:
        share = max(n_i, n_m) / (n_i + n_m)
        name = f"{n_i} iCAF-like / {n_m} myCAF-like ({share:.0%} {'iCAF' if n_i > n_m else 'myCAF'})"
        for subset in subsets:
            a = run_chain(author_cafs_subsampled(full, n_i, n_m, subset), "caf_v1", random_state=seed)
            lab = a.obs["author_caf_subtype"].astype(str).to_numpy()
            labelled = np.isin(lab, ["iCAF", "myCAF"])
            rows += _evaluate_at(a, "caf_v1", labelled, lab[labelled], {}, name, seed)
    df = pd.DataFrame(rows)
    tab = df.pivot_table(index="dataset", columns="method", values="ARI", aggfunc="mean", sort=False)
    order = [m for m in ("cafclassify (default)", "cafclassify (uniform prior)", "argmax score_genes",
                         "argmax UCell", "argmax score_genes (labelled classes)",
                         "argmax UCell (labelled classes)") if m in tab.columns]
    head = (f"### wu2021 author CAFs subsampled to a majority: ARI, mean over {len(subsets)} random "
            f"subsets (random_state {seed})\n\n")
    return head + tab[order].reset_index().to_markdown(index=False, floatfmt=".3f")


def sorted_stroma_table(data: Path, seed: int, subsets: tuple[int, ...] = (0, 1, 2), *,
                        mouse: bool = False, reads: bool = False) -> str:
    """ARI of cafclassify and of marker argmax baselines on the breast sample's stroma only
    (a sorted-CAF design; PVL read as vCAF), mean over random subsets, as markdown.
    ``mouse``: the sample as mouse orthologues (:func:`as_mouse`), the baselines' genes
    mapped to them; ``reads``: as a full-length protocol's read counts
    (:func:`as_full_length`), as sorted cells are often sequenced."""
    src = data / WU_FILE
    with tempfile.TemporaryDirectory() as tmp:
        if mouse:
            src = as_mouse(src, Path(tmp) / "wu_mouse.h5ad")
        if reads:
            src = as_full_length(src, Path(tmp) / "wu_reads.h5ad")
        full = caf.read(src)
    lineage = full.obs["author_lineage"].astype(str).to_numpy()
    stroma = np.isin(lineage, ["fibroblast", "perivascular_mural"])
    lib = caf.load_signatures("caf_v1")
    ortho = functools.partial(in_species, species="mouse" if mouse else "human")
    rows = []
    for n_caf in (None, SORTED_STROMA_CAFS):
        for subset in (subsets[:1] if n_caf is None else subsets):  # all cells: one subset
            keep = stroma.copy()
            if n_caf is not None:
                cafs = np.flatnonzero(lineage == "fibroblast")
                keep[np.random.default_rng(subset).choice(cafs, size=cafs.size - n_caf, replace=False)] = False
            a = run_chain(full[keep].copy(), "caf_v1", random_state=seed)
            truth = a.obs["author_caf_subtype"].astype(str).where(
                a.obs["author_lineage"].astype(str) != "perivascular_mural", "vCAF").to_numpy()
            share = (truth == "vCAF").mean()
            name = (f"all author CAFs + PVL ({share:.0%} PVL)" if n_caf is None else
                    f"{n_caf} author CAFs + PVL ({share:.0%} PVL)")
            b = caf.classify(a, random_state=seed, copy=True)  # on_insufficient="skip", the default
            calls = {"cafclassify (default)": b.obs[K.OBS_SUBTYPE].astype(str).to_numpy()
                     if K.OBS_SUBTYPE in b.obs else np.full(a.n_obs, K.UNASSIGNED, dtype=object)}
            status = b.uns["cafclassify"]["classify"].get("status", "classified")
            sg = pd.DataFrame(index=a.obs_names, columns=SUBTYPES, dtype=float)
            sub = a.copy()
            for c in SUBTYPES:
                genes = [g for g in ortho([g for g, w in zip(lib.sets[c].genes, lib.sets[c].weights, strict=True)
                                           if w > 0]) if g in sub.var_names]
                sc.tl.score_genes(sub, genes, score_name="_s", random_state=seed)
                sg[c] = sub.obs["_s"].to_numpy()
            uc = a.obsm[K.OBSM_SCORES][SUBTYPES]
            labelled = ["myCAF", "iCAF", "vCAF"]
            panel = pd.DataFrame(index=a.obs_names, columns=labelled, dtype=float)
            for c, genes in (("myCAF", PANELS["myCAF"]), ("iCAF", PANELS["iCAF"]), ("vCAF", VCAF_PERICYTE_PANEL)):
                sc.tl.score_genes(sub, [g for g in ortho(genes) if g in sub.var_names], score_name="_s",
                                  random_state=seed)
                panel[c] = sub.obs["_s"].to_numpy()
            for method, S in (("argmax score_genes", sg), ("argmax UCell", uc),
                              ("argmax score_genes (labelled classes)", sg[labelled]),
                              ("argmax UCell (labelled classes)", uc[labelled]),
                              ("argmax short panels (vCAF: pericyte markers)", panel)):
                calls[method] = np.array(S.columns, dtype=object)[S.to_numpy(dtype=float).argmax(1)]
            for method, c in calls.items():
                rows.append({"dataset": name, "method": method, "ARI": adjusted_rand_score(truth, c),
                             "skipped": float(method == "cafclassify (default)" and status == "skipped")})
    df = pd.DataFrame(rows)
    tab = df.pivot_table(index="dataset", columns="method", values="ARI", aggfunc="mean", sort=False)
    tab.insert(1, "classifier skipped (subsets)", df[df["method"] == "cafclassify (default)"]
               .groupby("dataset", sort=False)["skipped"].sum().astype(int))
    shared = (", as mouse orthologues" if mouse else "") + (", as full-length read counts" if reads else "")
    head = (f"### wu2021 stroma only{shared} (a sorted-CAF design; PVL read "
            f"as vCAF): ARI over all these cells, mean over random subsets (random_state {seed})\n\n")
    return head + tab.reset_index().to_markdown(index=False, floatfmt=".3f")


def compartment_tables(data: Path, seed: int) -> str:
    """Gate and perivascular compartment against author lineages (issue 14), as markdown."""
    out = []
    a = run_chain(caf.read(data / WU_FILE), "caf_v1", random_state=seed)
    caf.classify(a, random_state=seed)
    author = a.obs["celltype_major"].astype(str)
    out.append("### wu2021 CID4465: author major type x caf_lineage (default chain)\n")
    out.append(pd.crosstab(author, a.obs[K.OBS_LINEAGE].astype(str)).to_markdown())
    stroma = a.obs["author_lineage"].isin(["fibroblast", "perivascular_mural"]).to_numpy()
    lab = a.obs["author_caf_subtype"].astype(str).where(
        a.obs["author_lineage"].astype(str) != "perivascular_mural", "PVL")
    for reading in ("vcaf", "separate"):
        b = a if reading == "vcaf" else caf.classify(a, copy=True, perivascular=reading, random_state=seed)
        sub = b.obs[K.OBS_SUBTYPE].astype(str)
        out.append(f"\n### wu2021 stroma (author CAFs + PVL) x caf_subtype, perivascular={reading}: "
                   f"ARI {adjusted_rand_score(lab[stroma], sub[stroma]):.3f}\n")
        out.append(pd.crosstab(lab[stroma], sub[stroma]).to_markdown())
    c = caf.read(data / "crc_tumour_normal_2850cells_lognorm.h5ad")
    caf.gate(c)
    out.append("\n### colorectal (4,210-gene panel): author cell type x caf_lineage\n")
    out.append(pd.crosstab(c.obs["cell_type"].astype(str), c.obs[K.OBS_LINEAGE].astype(str)).to_markdown())
    from cafclassify.tl._compartment import perivascular_labels

    mural, labels, _ = perivascular_labels(c, lineage_key=K.OBS_LINEAGE, perivascular="vcaf",
                                           tissue_key="tumor_normal")
    t = pd.Series(np.where(mural, labels, "not mural"), index=c.obs_names)
    out.append("\n### colorectal mural cells by tissue (perivascular=vcaf, tissue_key=tumor_normal)\n")
    out.append(pd.crosstab(c.obs["tumor_normal"].astype(str)[mural], t[mural]).to_markdown())
    return "\n".join(out)


def against_truth(a, name: str, seeds: list[int]) -> list[dict]:
    """Run the chain on simulated counts at every seed and evaluate against the planted
    subtypes."""
    rows = []
    for seed, c in chained(a, "caf_v1", seeds):
        truth = c.obs["true_subtype"].astype(str).to_numpy()
        labelled = np.isin(truth, SUBTYPES)
        rows += evaluate(c, "caf_v1", labelled, truth[labelled], {}, name, [seed])
    return rows


def synthetic_rows(seeds: list[int]) -> list[dict]:
    """Rows of every synthetic dataset (:func:`real_designs.synthetic_datasets`) against its
    planted truth."""
    rows = []
    for name, a in synthetic_datasets():
        rows += against_truth(a, name, seeds)
    return rows


def thin_gate_table(seed: int = 0) -> str:
    """The gate on the thinned tumour against the planted lineages, as markdown."""
    a = run_chain(thinned_tumour().copy(), "caf_v1", random_state=seed)
    truth = a.obs["true_lineage"].astype(str)
    lab = a.obs[K.OBS_LINEAGE].astype(str)
    fib = truth == "fibroblast"
    con = a.uns["cafclassify"]["gate"]["contested"]
    head = (f"### synthetic tumour, ~520 UMI per cell: planted lineage x caf_lineage (fibroblast recall "
            f"{(lab[fib] == 'fibroblast').mean():.3f}, precision {(truth[lab == 'fibroblast'] == 'fibroblast').mean():.3f}; "
            f"contested clusters {con['clusters']} called {con['calls']}, "
            f"{con['n_unplaced_cells']} cells without evidence left to stage 2)\n")
    return head + "\n" + pd.crosstab(truth, lab).to_markdown()


def run_all(data: Path, seeds: list[int]) -> list[dict]:
    """Every dataset's rows at every ``random_state`` in ``seeds`` (each chain is run once)."""
    rows: list[dict] = []
    if (data / WU_FILE).exists():
        rows += wu(data, "caf_v1", "wu2021 CID4465 (379 author CAFs)", seeds)
        with tempfile.TemporaryDirectory() as tmp:
            lib = library_without("WU", Path(tmp) / "caf_v1_noWU")
            rows += wu(data, str(lib), "wu2021 CID4465, WU genes removed", seeds)
        rows += wu(data, "caf_v1", "wu2021 CID4465, {n_genes}-gene marker panel", seeds, genes=marker_panel)
        rows += wu(data, "caf_v1", "wu2021 CID4465, {n_genes} common markers", seeds, genes=small_panel)
        with tempfile.TemporaryDirectory() as tmp:
            mouse = as_mouse(data / WU_FILE, Path(tmp) / "wu_mouse.h5ad")
            rows += wu(data, "caf_v1", "wu2021 CID4465 as mouse ({n_genes} orthologues)", seeds, path=mouse)
        with tempfile.TemporaryDirectory() as tmp:
            for tpm, what in ((False, "full-length reads"), (True, "reads as log2(1 + TPM)")):
                path = as_full_length(data / WU_FILE, Path(tmp) / f"wu_{'tpm' if tpm else 'reads'}.h5ad",
                                      tpm=tpm)
                rows += wu(data, "caf_v1", f"wu2021 CID4465 as {what}", seeds, path=path)
    else:
        print(f"skipped wu2021: not found under {data}")
    rows += synthetic_rows(seeds)
    return rows


def over_seeds(df: pd.DataFrame) -> pd.DataFrame:
    """Mean, minimum and maximum ARI and mean macro-F1 per dataset and method."""
    g = df.groupby(["dataset", "method"], sort=False)
    return pd.DataFrame({"ARI mean": g["ARI"].mean(), "ARI min": g["ARI"].min(), "ARI max": g["ARI"].max(),
                         "macro_F1 mean": g["macro_F1"].mean()}).reset_index()


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", type=Path, default=DATA)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--seeds", type=int, nargs="+", default=None,
                   help="several random_state values: adds mean / min / max over them (overrides --seed)")
    p.add_argument("--out", type=Path, default=None, help="also write the table here (markdown)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)
    seeds = args.seeds or [args.seed]
    every = pd.DataFrame(run_all(args.data, seeds))
    rows = every[every["random_state"] == seeds[0]].drop(columns="random_state").to_dict("records")
    df = pd.DataFrame(rows)
    cols = ["dataset", "method", "n", "ARI", "macro_F1"] + [c for c in df.columns if c.startswith("AUROC")] \
        + ["unassigned", "foreign", "absent", "seconds"]
    df = df[[c for c in cols if c in df.columns]]
    text = df.to_markdown(index=False, floatfmt=".3f")
    if len(seeds) > 1:
        text += (f"\n\n### Over random_state {', '.join(map(str, seeds))}\n\n"
                 + over_seeds(every).to_markdown(index=False, floatfmt=".3f"))
    if (args.data / WU_FILE).exists():
        text += "\n\n" + author_subset_table(every)
        text += "\n\n" + majority_table(args.data, seeds[0])
        text += "\n\n" + sorted_stroma_table(args.data, seeds[0])
        text += "\n\n" + sorted_stroma_table(args.data, seeds[0], mouse=True)
        text += "\n\n" + sorted_stroma_table(args.data, seeds[0], mouse=True, reads=True)
        text += "\n\n" + compartment_tables(args.data, seeds[0])
    text += "\n\n" + thin_gate_table(seeds[0])
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
