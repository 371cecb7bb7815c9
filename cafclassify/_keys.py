"""One registry of every AnnData key cafclassify writes.

Labels live in ``obs`` as categoricals, per-cell x feature matrices in ``obsm``
as named DataFrames, parameters and provenance under ``uns["cafclassify"]``.
Every writer imports its key from here, so the README, the report and the tests
share one source of truth.
"""

from __future__ import annotations

UNS = "cafclassify"  # uns[UNS][<step>] = {"params": ..., ...}

# --- reading / value type -------------------------------------------------
LAYER_COUNTS = "counts"  # raw counts kept here when the input had counts
UNS_READ = "read"  # uns[UNS]["read"]: file, sha256, format, species, id type, value type
VAR_SYMBOL = "cafclassify_symbol"  # var column: resolved (current HGNC/MGI) symbol per gene

# --- QC -----------------------------------------------------------------
OBS_QC_PASS = "qc_pass"  # bool
OBS_QC_REASON = "qc_reason"  # categorical: "pass" or the first failing reason
OBS_DOUBLET_SCORE = "doublet_score"
OBS_PREDICTED_DOUBLET = "predicted_doublet"
# per-cell QC metrics (scanpy's column names)
OBS_N_GENES = "n_genes_by_counts"
OBS_TOTAL_COUNTS = "total_counts"
OBS_PCT_MT = "pct_counts_mt"
OBS_PCT_RIBO = "pct_counts_ribo"
UNS_QC = "qc"
UNS_SHARD = "shard"  # uns[UNS]["shard"]: shard index/bounds, or the merge record

# --- gate ---------------------------------------------------------------
OBS_LINEAGE = "caf_lineage"  # categorical in LINEAGES
OBS_LINEAGE_CONF = "caf_lineage_confidence"  # float in [0, 1]
OBS_LINEAGE_CLUSTER = "caf_gate_cluster"  # cluster id used for the cluster-level decision
OBS_FIBRO_STATE = "caf_fibroblast_state"  # categorical: CAF / normal-like / unknown (within fibroblasts)
OBSM_LINEAGE_SCORES = "caf_lineage_scores"  # DataFrame cells x lineage sets
OBS_LINEAGE_STAGE1 = "caf_lineage_stage1"  # categorical: marker/cluster call before the stage-2 refinement
OBS_LINEAGE_CONTAMINANT = "caf_lineage_contaminant"  # bool: pregated=True and the gate calls another lineage
UNS_GATE = "gate"
LINEAGES = ("fibroblast", "mural", "epithelial", "immune", "endothelial", "other")

# --- scoring ------------------------------------------------------------
OBSM_SCORES = "caf_scores"  # default key_added of score()
UNS_SCORE = "score"  # uns[UNS]["score"][key_added] = {params, coverage}

# --- classifier ---------------------------------------------------------
OBS_SUBTYPE = "caf_subtype"  # categorical: subtypes + "unassigned" (+ "not_fibroblast")
OBS_SUBTYPE_CONF = "caf_subtype_confidence"  # max calibrated probability
OBS_SUBTYPE_SMOOTHED = "caf_subtype_smoothed"  # optional cluster majority vote
OBSM_SUBTYPE_PROBA = "caf_subtype_proba"  # DataFrame cells x classes
OBSM_SUBTYPE_EVIDENCE = "caf_subtype_evidence"  # DataFrame cells x subtype sets (null-SD units)
OBS_SEED = "caf_seed_label"  # weak label used for training (categorical, NaN = not a seed)
OBS_LTBP2 = "ltbp2_positive"  # bool
OBS_LTBP2_SCORE = "ltbp2_score"  # float
OBS_SENESCENT = "senescent_flag"  # bool
OBS_CYCLING = "cycling_flag"  # bool
UNS_CLASSIFY = "classify"
UNASSIGNED = "unassigned"
NOT_FIBROBLAST = "not_fibroblast"

# --- provenance -----------------------------------------------------------
UNS_PROVENANCE = "provenance"  # package version, signature hash, input sha256, seed, run date


def subtype_keys(key_added: str = OBS_SUBTYPE) -> tuple[str, str]:
    """``(obs confidence column, obsm probability key)`` of subtype calls written to
    ``obs[key_added]``: the defaults for ``caf_subtype``, else ``<key>_confidence`` / ``<key>_proba``."""
    if key_added == OBS_SUBTYPE:
        return OBS_SUBTYPE_CONF, OBSM_SUBTYPE_PROBA
    return f"{key_added}_confidence", f"{key_added}_proba"


def uns_section(adata, step: str) -> dict:
    """Return ``adata.uns["cafclassify"][step]``, creating the dicts as needed."""
    root = adata.uns.setdefault(UNS, {})
    return root.setdefault(step, {})
