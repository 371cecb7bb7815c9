"""A realistic annotated AnnData for the report tests.

It imitates what the pipeline (read -> qc -> score -> gate -> classify) writes,
following the contracts in docs/architecture.md and cafclassify/_keys.py: counts
with planted lineage and subtype programmes, log-normalised X, QC columns, the
lineage gate, scores, subtype calls, flags and the ``uns["cafclassify"]`` records
in shapes that survive an ``.h5ad`` round trip (tables as DataFrames).
"""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from cafclassify import _keys as K

LINEAGE_GENES = {
    "fibroblast": ["COL1A1", "COL1A2", "COL3A1", "DCN", "LUM", "PDGFRA", "FAP", "PDPN"],
    "mural": ["RGS5", "KCNJ8", "ABCC9", "HIGD1B", "CSPG4", "MYH11"],
    "epithelial": ["EPCAM", "CDH1", "KRT8", "KRT18", "KRT19", "KRT7"],
    "immune": ["PTPRC", "CD3E", "CD3D", "MS4A1", "CD79A", "CD68"],
    "endothelial": ["PECAM1", "VWF", "CDH5", "CLDN5", "KDR", "EMCN"],
}
SUBTYPE_GENES = {
    "myCAF": ["ACTA2", "TAGLN", "MYL9", "TPM2", "POSTN", "MMP11"],
    "iCAF": ["IL6", "CXCL12", "CFD", "DPT", "C3", "HAS1"],
    "apCAF": ["HLA-DRA", "HLA-DRB1", "CD74", "HLA-DPA1", "SLPI"],
    "meCAF": ["SLC16A3", "LDHA", "PKM", "PGK1", "ENO1"],
    "vCAF": ["NOTCH3", "MCAM", "COL18A1", "ESAM", "NID2"],
    "LTBP2_CAF": ["LTBP2", "FBN1", "MFAP2", "MFAP5", "ELN"],
}
STATE_GENES = {
    "senescence": ["CDKN2A", "CDKN1A", "SERPINE1", "IGFBP3"],
    "cycling": ["MKI67", "TOP2A", "CENPF", "BIRC5"],
}
# signature genes the data does not contain (coverage must show them as missing)
MISSING = {
    "fibroblast": ["VIM"], "myCAF": ["LRRC15"], "iCAF": ["LIF"], "apCAF": ["CIITA"],
    "dCAF": ["SCRG1", "SOX9", "NGFR", "FABP7"], "other_lineage": ["SOX10", "S100B", "PLP1"],
    "LTBP2_CAF": ["LTBP1"],
}
SUBTYPES = ("myCAF", "iCAF", "apCAF", "meCAF", "vCAF", "dCAF", "LTBP2_CAF")
CLASSES = ("myCAF", "iCAF", "apCAF", "meCAF", "vCAF", "LTBP2_CAF")  # dCAF: no seeds here


def make_annotated(
    n_cells: int = 1200,
    *,
    n_samples: int = 2,
    random_state: int = 0,
    with_umap: bool = True,
    n_filler: int = 150,
) -> ad.AnnData:
    """Annotated AnnData with planted truth in ``obs['true_lineage'/'true_subtype']``."""
    rng = np.random.default_rng(random_state)
    mt = [f"MT-{g}" for g in ("CO1", "CO2", "ND1", "ND4", "ATP6")]
    sig = [g for d in (LINEAGE_GENES, SUBTYPE_GENES, STATE_GENES) for v in d.values() for g in v]
    genes = list(dict.fromkeys(sig)) + [f"GENE{i:04d}" for i in range(n_filler)] + mt
    gidx = {g: i for i, g in enumerate(genes)}
    n_genes = len(genes)

    lineages = np.array(["fibroblast", "epithelial", "immune", "endothelial", "mural"])
    lin = rng.choice(lineages, size=n_cells, p=[0.35, 0.25, 0.25, 0.1, 0.05])
    sub = np.full(n_cells, K.NOT_FIBROBLAST, dtype=object)
    fib = lin == "fibroblast"
    sub[fib] = rng.choice(["myCAF", "iCAF", "apCAF", "meCAF", "vCAF", "LTBP2_CAF"], size=fib.sum(),
                          p=[0.35, 0.3, 0.08, 0.1, 0.1, 0.07])
    base = rng.gamma(0.3, 0.6, size=n_genes)
    libsize = rng.lognormal(np.log(3000), 0.45, size=n_cells)
    rates = np.tile(base, (n_cells, 1))
    for lab, gs in LINEAGE_GENES.items():
        m = lin == lab
        rates[np.ix_(m, [gidx[g] for g in gs])] += rng.gamma(4.0, 1.5, size=(m.sum(), len(gs)))
    for lab, gs in SUBTYPE_GENES.items():
        m = sub == lab
        rates[np.ix_(m, [gidx[g] for g in gs])] += rng.gamma(3.0, 1.2, size=(m.sum(), len(gs)))
    senescent = fib & (rng.random(n_cells) < 0.08)
    cycling = rng.random(n_cells) < 0.05
    for m, gs in ((senescent, STATE_GENES["senescence"]), (cycling, STATE_GENES["cycling"])):
        rates[np.ix_(m, [gidx[g] for g in gs])] += rng.gamma(3.0, 1.0, size=(m.sum(), len(gs)))
    rates[:, [gidx[g] for g in mt]] *= rng.uniform(1.0, 6.0, size=(n_cells, 1))
    rates = rates / rates.sum(axis=1, keepdims=True) * libsize[:, None]
    counts = sp.csr_matrix(rng.poisson(rates).astype(np.float32))

    samples = np.array([f"S{i + 1}" for i in range(n_samples)])
    obs = pd.DataFrame(index=[f"cell{i:05d}" for i in range(n_cells)])
    obs["sample"] = pd.Categorical(rng.choice(samples, size=n_cells))
    obs["true_lineage"] = pd.Categorical(lin)
    obs["true_subtype"] = pd.Categorical(sub)
    adata = ad.AnnData(counts, obs=obs, var=pd.DataFrame(index=genes))
    adata.var[K.VAR_SYMBOL] = adata.var_names.to_numpy()
    adata.layers[K.LAYER_COUNTS] = counts.copy()
    # scanpy-style QC columns
    dense_total = np.asarray(counts.sum(axis=1)).ravel()
    adata.obs["n_genes_by_counts"] = np.asarray((counts > 0).sum(axis=1)).ravel()
    adata.obs["total_counts"] = dense_total
    mt_counts = np.asarray(counts[:, [gidx[g] for g in mt]].sum(axis=1)).ravel()
    adata.obs["pct_counts_mt"] = 100 * mt_counts / np.maximum(dense_total, 1)
    # log-normalise X (as read() does for counts)
    norm = sp.diags(1e4 / np.maximum(dense_total, 1)) @ counts
    norm.data = np.log1p(norm.data)
    adata.X = sp.csr_matrix(norm, dtype=np.float32)

    # QC: thresholds per sample; the failing cells are already filtered out
    thresholds = {}
    for s in samples:
        m = (adata.obs["sample"] == s).to_numpy()
        thresholds[s] = {
            "min_genes": float(np.quantile(adata.obs["n_genes_by_counts"][m], 0.02)),
            "max_counts": float(np.quantile(dense_total[m], 0.99)),
            "max_pct_mt": 20.0,
        }
    reason = np.full(n_cells, "pass", dtype=object)
    for s in samples:
        m = (adata.obs["sample"] == s).to_numpy()
        t = thresholds[s]
        reason[m & (adata.obs["pct_counts_mt"].to_numpy() > t["max_pct_mt"])] = "high_mt"
        reason[m & (dense_total > t["max_counts"])] = "high_counts"
        reason[m & (adata.obs["n_genes_by_counts"].to_numpy() < t["min_genes"])] = "low_genes"
    qc_rows = []
    for s in samples:
        m = (adata.obs["sample"] == s).to_numpy()
        r = reason[m]
        qc_rows.append({"sample": s, "n_cells": int(m.sum()), "n_kept": int((r == "pass").sum()),
                        "n_removed": int((r != "pass").sum()),
                        "low_genes": int((r == "low_genes").sum()),
                        "high_counts": int((r == "high_counts").sum()),
                        "high_mt": int((r == "high_mt").sum())})
    keep = reason == "pass"
    adata.obs[K.OBS_QC_PASS] = keep
    adata.obs[K.OBS_QC_REASON] = pd.Categorical(reason)
    adata = adata[keep].copy()
    lin, sub = lin[keep], sub[keep]
    senescent, cycling = senescent[keep], cycling[keep]
    n = adata.n_obs
    fib = lin == "fibroblast"

    # gate: mostly the truth, a few errors
    called = lin.copy()
    flip = rng.random(n) < 0.02
    called[flip] = rng.choice(lineages, size=flip.sum())
    adata.obs[K.OBS_LINEAGE] = pd.Categorical(called, categories=list(K.LINEAGES))
    adata.obs[K.OBS_LINEAGE_CONF] = np.clip(rng.beta(8, 2, size=n), 0, 1)
    adata.obs[K.OBS_LINEAGE_CLUSTER] = pd.Categorical((rng.integers(0, 8, size=n)).astype(str))

    def set_score(gs):
        cols = adata[:, gs].X
        return np.asarray(cols.mean(axis=1)).ravel()

    lin_scores = pd.DataFrame({lab: set_score(gs) for lab, gs in LINEAGE_GENES.items()},
                              index=adata.obs_names)
    lin_scores["other"] = rng.normal(0.05, 0.02, size=n)
    adata.obsm[K.OBSM_LINEAGE_SCORES] = lin_scores
    scores = pd.DataFrame(index=adata.obs_names)
    for lab, gs in LINEAGE_GENES.items():
        scores[lab] = set_score(gs)
    scores["other_lineage"] = rng.normal(0.05, 0.02, size=n)
    for lab, gs in SUBTYPE_GENES.items():
        scores[lab] = set_score(gs)
    for lab, gs in STATE_GENES.items():
        scores[lab] = set_score(gs)
    adata.obsm[K.OBSM_SCORES] = scores

    # subtypes: truth among called fibroblasts, ~12% unassigned
    fib_called = called == "fibroblast"
    final = np.where(fib_called, np.where(sub == K.NOT_FIBROBLAST, K.UNASSIGNED, sub), K.NOT_FIBROBLAST)
    una = fib_called & (rng.random(n) < 0.12)
    final[una] = K.UNASSIGNED
    adata.obs[K.OBS_SUBTYPE] = pd.Categorical(final, categories=[*SUBTYPES, K.UNASSIGNED, K.NOT_FIBROBLAST])
    proba = rng.dirichlet(np.ones(len(CLASSES)) * 0.5, size=n)
    for i, c in enumerate(final):
        if c in CLASSES:
            j = CLASSES.index(c)
            proba[i] = proba[i] * 0.3
            proba[i, j] += 0.7
    proba[~fib_called] = np.nan
    adata.obsm[K.OBSM_SUBTYPE_PROBA] = pd.DataFrame(proba, index=adata.obs_names, columns=list(CLASSES))
    conf = np.nanmax(np.where(np.isnan(proba), -1, proba), axis=1)
    conf[~fib_called] = np.nan
    adata.obs[K.OBS_SUBTYPE_CONF] = conf
    ltbp2 = scores["LTBP2_CAF"].to_numpy()
    adata.obs[K.OBS_LTBP2_SCORE] = ltbp2
    adata.obs[K.OBS_LTBP2] = fib_called & (ltbp2 > np.quantile(ltbp2[fib_called], 0.9))
    adata.obs[K.OBS_SENESCENT] = fib_called & senescent
    adata.obs[K.OBS_CYCLING] = cycling

    if with_umap:
        centers = {lab: rng.normal(0, 8, size=2) for lab in lineages}
        xy = np.stack([centers[lab] for lab in called]) + rng.normal(0, 1.2, size=(n, 2))
        sub_off = {s: rng.normal(0, 2.5, size=2) for s in SUBTYPES}
        for s, off in sub_off.items():
            xy[final == s] += off
        adata.obsm["X_umap"] = xy

    # ----------------------------------------------------------- uns records
    def cov_rows(name, group, found, missing):
        return {"set": name, "group": group, "n_genes": len(found) + len(missing), "n_found": len(found),
                "coverage": len(found) / (len(found) + len(missing)),
                "found": ";".join(found), "missing": ";".join(missing),
                "status": "ok" if len(found) / max(len(found) + len(missing), 1) >= 0.5 else "skipped_low_coverage"}

    cov = [cov_rows(k, "gate" if k == "fibroblast" else "negative", v, MISSING.get(k, []))
           for k, v in LINEAGE_GENES.items()]
    cov.append(cov_rows("other_lineage", "negative", [], MISSING["other_lineage"]))
    cov += [cov_rows(k, "subtype", v, MISSING.get(k, [])) for k, v in SUBTYPE_GENES.items()]
    cov.append(cov_rows("dCAF", "subtype", [], MISSING["dCAF"]))
    cov += [cov_rows(k, "state", v, []) for k, v in STATE_GENES.items()]
    n_in = n_cells
    root = {
        K.UNS_READ: {"path": "/data/example_counts.h5ad", "sha256": "ab" * 32, "format": "h5ad",
                     "n_cells": n_in, "n_genes": n_genes, "species": "human", "id_type": "symbol",
                     "value_type": "counts", "n_repaired": 1, "repaired": {"IL8": "CXCL8"},
                     "n_unmapped": 0, "n_duplicate_genes": 0, "n_duplicate_barcodes": 0},
        K.UNS_QC: {"params": {"nmads": 5, "sample_key": "sample", "max_pct_mt": 20.0, "doublets": False},
                   "thresholds": pd.DataFrame.from_dict(thresholds, orient="index"),
                   "table": pd.DataFrame(qc_rows)},
        K.UNS_GATE: {"params": {"resolution": 1.0, "random_state": 0, "pregated": "none"},
                     "counts": {lab: int((called == lab).sum()) for lab in K.LINEAGES},
                     "clusters": pd.DataFrame({"cluster": [str(i) for i in range(3)],
                                               "n_cells": [100, 80, 60],
                                               "lineage": ["fibroblast", "immune", "epithelial"],
                                               "fibroblast_score": [0.8, 0.1, 0.05]}),
                     "missing_markers": {"fibroblast": ["VIM"], "other_lineage": MISSING["other_lineage"]},
                     "warnings": np.array(["lineage set other_lineage has no genes in the data"])},
        K.UNS_SCORE: {K.OBSM_SCORES: {"params": {"method": "ucell", "max_rank": 1500,
                                                 "library": "caf_v1", "library_version": "1.0.0",
                                                 "library_sha256": "cd" * 32},
                                      "coverage": pd.DataFrame(cov)}},
        K.UNS_CLASSIFY: {
            "params": {"estimator": "logreg", "threshold": 0.5, "random_state": 0},
            "training": {
                "seeds_per_class": {c: int(20 + 10 * i) for i, c in enumerate(CLASSES)},
                "cv_macro_f1": 0.83,
                "per_class": pd.DataFrame({"class": list(CLASSES), "precision": np.linspace(0.7, 0.95, 6),
                                           "recall": np.linspace(0.9, 0.6, 6)}),
                "confusion_matrix": (np.eye(len(CLASSES)) * 20 + rng.integers(0, 4, size=(6, 6))).astype(int),
                "confusion_labels": np.array(CLASSES),
                "ece_before": 0.12, "ece_after": 0.03,
                "reliability": {"before": {"bin_centres": np.linspace(0.05, 0.95, 10),
                                           "accuracy": np.linspace(0.05, 0.95, 10) ** 1.5,
                                           "confidence": np.linspace(0.05, 0.95, 10),
                                           "counts": rng.integers(5, 50, size=10)},
                                "after": {"bin_centres": np.linspace(0.05, 0.95, 10),
                                          "accuracy": np.linspace(0.06, 0.94, 10),
                                          "confidence": np.linspace(0.05, 0.95, 10),
                                          "counts": rng.integers(5, 50, size=10)}},
                "absent_classes": np.array(["dCAF"]),
            },
            "unassigned_fraction": float((final == K.UNASSIGNED).sum() / max(fib_called.sum(), 1)),
            "ltbp2_caveat": "LTBP2+ CAFs are described in one study; treat the flag as exploratory.",
        },
        K.UNS_PROVENANCE: {"package_version": "0.1.0", "signatures": "caf_v1", "signatures_version": "1.0.0",
                           "signatures_sha256": "cd" * 32, "input_sha256": "ab" * 32, "random_state": 0,
                           "run_date": "2025-01-01T00:00:00Z"},
    }
    adata.uns[K.UNS] = root
    return adata
