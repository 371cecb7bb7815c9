"""Lineage gate: which cells are fibroblasts (CAFs or normal fibroblasts)?

The gate labels every cell with one lineage (``fibroblast``, ``mural``,
``epithelial``, ``immune``, ``endothelial`` or ``other``) so that CAF subtyping
runs only on fibroblasts. The decision is made per *cluster*, so dropout in a
single cell does not flip its call, and every comparison is relative: a lineage
set is compared with random gene sets of the same size in the same cell (is it
expressed at all? :mod:`._gate_null`) and with the other lineage sets (which
lineage is it?). No expression cut-off is fitted to a particular dataset. See
``docs/gate.md``.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData
from scipy import stats

from .. import _keys as K
from .._errors import ConfigError, DataError, SignatureError
from .._utils import get_matrix, stack_rows
from ._gate_decide import (
    _ALPHA_CELL,
    _ALPHA_CLUSTER,
    _ALPHA_CONTESTED,
    _MIN_EFFECT,
    _OVERRIDE_RATIO,
    _contested_info,
    _decide,
)
from ._gate_embed import _embed_and_cluster, _embedding_record, _graph_subsample, _select_hvg
from ._gate_null import _null_scores
from ._gate_refine import refine_lineages
from ._gate_stroma import merge_compartment, recluster_stroma

__all__ = ["gate"]

logger = logging.getLogger(__name__)

#: lineage-group set name -> label written to ``obs``
LINEAGE_SETS = {
    "fibroblast": "fibroblast",
    "mural": "mural",
    "epithelial": "epithelial",
    "immune": "immune",
    "endothelial": "endothelial",
    "other_lineage": "other",
}
#: optional sets used for ``caf_fibroblast_state``
STATE_SETS = ("caf_activation", "normal_fibroblast")
STATE_CATEGORIES = ("CAF", "normal-like", "unknown")

_METHODS = ("ucell", "aucell")
# Statistical conventions (not fitted to any dataset):
_MIN_GENES = 2  # a lineage set needs >= 2 genes in the data (one gene is no signature)
_PREGATED_FRACTION = 0.9  # auto-detect pre-gated input: >= 90% of cells gate fibroblast
_FEW_FIBROBLASTS = 50  # fewer fibroblasts than this: warn that subtyping is unreliable
_MIN_CELLS_GRAPH = 30  # fewer cells: decide per cell (no clustering)
_MAX_RANK = 1500  # UCell rank cap of the gate (scoring's default)


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------
def _matrix(adata: AnnData, layer: str | None):
    X, where = get_matrix(adata, layer)
    if sp.issparse(X) and not sp.isspmatrix_csr(X) and not isinstance(X, sp.csr_array):
        X = sp.csr_matrix(X)
    return X, where


def _split_genes(value) -> list[str]:
    if isinstance(value, str):
        return [g for g in value.split(";") if g]
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return []
    return [str(g) for g in value]


def _value_type(X, where: str) -> tuple[str, str | None]:
    """The matrix's value type, and a warning when it holds log values of another base or
    scale than ``ln(1 + CP10k)`` (which :func:`cafclassify.read` rewrites; here, in data
    built by hand, they are used as they are)."""
    from ..io._values import log_rewrite
    from ..io._valuetype import log_label, value_type_details

    try:
        details = value_type_details(X)
    except Exception:  # pragma: no cover - detection is advisory only
        return "unknown", None
    rewrite = log_rewrite(details)
    if rewrite is None:
        return str(details["value_type"]), None
    base, total = rewrite
    return str(details["value_type"]), (
        f"{where} holds {log_label(base)}(1 + x) values of {total:,.0f} per cell, not ln(1 + x) of 10,000 per "
        "cell as the gate's, the scores' and the classifier's defaults assume; they are used as "
        "they are, and the calls can differ (on the breast example, log2(1 + CPM) values "
        "lowered the subtype ARI from 0.62 to 0.51). Read the file with cafclassify.read "
        "(which rewrites them) or put counts in layers['counts']."
    )


# ---------------------------------------------------------------------------
# public API
# ---------------------------------------------------------------------------
def gate(
    adata: AnnData,
    signatures: Any = "caf_v1",
    *,
    layer: str | None = None,
    pregated: bool | None = None,
    method: str = "ucell",
    n_pcs: int = 30,
    resolution: float = 1.0,
    cluster_key: str | None = None,
    max_cells_graph: int = 50_000,
    n_null: int = 20,
    refine: bool = True,
    stroma: bool = False,
    species: str | None = None,
    symbol_column: str | None = None,
    random_state: int = 0,
    key_added: str = K.OBS_LINEAGE,
    copy: bool = False,
) -> AnnData | None:
    """Gate cells into lineages and find the fibroblasts (CAFs and normal fibroblasts).

    1. **Scores.** The library's lineage sets (group ``"lineage"``: ``fibroblast``,
       ``mural``, ``epithelial``, ``immune``, ``endothelial``, ``other_lineage``) are
       scored per cell with :func:`cafclassify.score` (rank-based, so the result does
       not depend on the other cells). A set is used when it has at least 2 genes and
       its library ``min_coverage`` in the data; missing markers are recorded.
    2. **Null.** ``n_null`` random gene sets of the same size (drawn uniformly from all
       genes) are scored the same way; ``score - mean(null)`` in units of the null's
       SD says whether a cell, or a cluster, expresses a set at all.
    3. **Clusters.** HVGs -> PCA -> kNN -> Leiden (or ``obs[cluster_key]``). Above
       ``max_cells_graph`` cells the graph is built on a random subsample and the other
       cells join the nearest cluster centroid in PCA space. Fewer than 30 cells: every
       cell is decided on its own.
    4. **Cluster call.** A lineage is *expressed* in a cluster when its mean excess
       over the null is significant (one-sided z, alpha 0.05 Bonferroni over clusters x
       sets) and at least half a null SD. Among expressed lineages the cluster takes
       the one with the largest ``level x level / peak level`` (cluster mean score times
       its fraction of the lineage's best cluster), which makes mural cells (whose
       mural score is at the mural peak) beat the fibroblast set even where they share
       some signal. No expressed lineage: the cluster is *ambiguous*.
    5. **Cells.** Cells take their cluster's call (dropout cannot flip it). A cell
       leaves it only with strong own evidence: it expresses another lineage at
       alpha 0.01 with at least twice the evidence of the cluster's lineage (e.g. a
       pericyte inside a fibroblast cluster). In ambiguous clusters each cell gets its
       own call at alpha 0.01, else ``"other"``. A cluster whose call is significantly
       a minority among its cells with evidence (binomial, alpha 0.05) is *contested*:
       its cells without evidence become ``"other"`` and stage 2 may place them.
       ``other_lineage`` is written as ``"other"``.
    6. **Stage 2** (``refine=True``). Cells of confidently called clusters (margin
       >= 0.5, own evidence not contradicting) seed a multinomial logistic regression
       on the HVGs *without* the lineage markers (an independent view); cells of
       ambiguous clusters without any marker evidence seed an ``unmarked`` class in a
       second, open-set model. An uncertain cell (stage-1 ``other``, or not a seed)
       takes the stage-2 lineage when the lineage model gives it >= 0.9 and the
       open-set model agrees, or becomes ``other`` when the open-set model says
       ``unmarked`` with >= 0.9; a seed is overturned only at >= 0.99 by models that
       did not see it (5-fold cross-fitting). Lineages with < 10 seeds cannot be
       predicted and their cells are not re-judged. See ``docs/gate.md``.

    Mural vs fibroblast and vCAF: the ``fibroblast`` set has no PDGFRB/ACTA2 and the
    ``mural`` set holds the hard pericyte/vSMC markers (RGS5, KCNJ8, ABCC9, HIGD1B,
    MYH11, DES, ...). A cluster is mural when the mural evidence beats the fibroblast
    evidence. Perivascular-like CAFs (NOTCH3/COL4A1/NID2 but PDGFRA/DCN/LUM+) stay
    fibroblasts here; ``vCAF`` is decided later by the subtype classifier, only among
    fibroblast-gated cells, on the ``vCAF`` set (which excludes hard pericyte markers).

    Parameters
    ----------
    adata
        Cells x genes; log-normalised (or counts: scores are rank-based and the
        embedding normalises its own copy). Not modified unless ``copy=False``, and
        then only by the fields listed under Returns.
    signatures
        Library with lineage sets (default the built-in ``"caf_v1"``).
    layer
        Use ``adata.layers[layer]`` instead of ``adata.X``.
    pregated
        ``True``: the input holds fibroblasts only (already gated); every cell is
        labelled ``fibroblast`` (nothing is thrown away) and cells the gate would call
        another lineage are counted as possible contaminants in ``uns``. ``None``
        (default): detected (>= 90% of cells gate as fibroblast) and recorded, labels
        unchanged. ``False``: never assume.
    method
        ``"ucell"`` (default) or ``"aucell"``: per-cell rank-based scores, so that a
        cell's score does not depend on which other cells are in the dataset.
    n_pcs, resolution
        PCA components and Leiden resolution for the clustering.
    cluster_key
        Use these clusters (``obs`` column) instead of computing them.
    max_cells_graph
        Largest number of cells for the kNN graph (see step 3).
    n_null
        Random gene sets per lineage set for the null.
    refine
        Run the stage-2 whole-profile refinement (step 6). ``False``: stage-1 calls.
    stroma
        Opt-in hierarchical step before stage 2: the fibroblast/mural compartment gets
        its own HVGs, PCA and Leiden clusters, each decided by the same test; see
        ``docs/gate.md`` (measured trade-offs; off by default).
    species, symbol_column
        Passed to gene matching (default: detected from the gene names; ``var_names``
        or an auto-detected symbol column for Ensembl IDs).
    random_state
        Seed of the null draw, the subsample, PCA and Leiden.
    key_added
        ``obs`` column of the lineage; the other fields are named after it.
    copy
        Return a modified copy instead of writing into ``adata``.

    Returns
    -------
    ``None``, or the modified copy if ``copy=True``. Writes

    ``obs[key_added]`` (default ``"caf_lineage"``)
        Categorical with categories ``fibroblast, mural, epithelial, immune,
        endothelial, other``.
    ``obs[key_added + "_confidence"]``
        Float in [0, 1]: mean of the cell's share of the lineage evidence and the
        fraction of its cluster whose own evidence agrees; for cells whose call
        stage 2 changed, the stage-2 probability of the new call.
    ``obs["caf_lineage_stage1"]``
        Categorical stage-1 (marker/cluster) call (``key_added + "_stage1"`` if
        ``key_added`` is not the default).
    ``obs["caf_lineage_contaminant"]``
        Only with ``pregated=True``: bool, the gate calls the cell another lineage
        (``key_added + "_contaminant"`` if ``key_added`` is not the default).
    ``obs["caf_gate_cluster"]``
        Categorical cluster id used for the decision (``key_added + "_cluster"`` if
        ``key_added`` is not the default).
    ``obs["caf_fibroblast_state"]``
        Categorical ``CAF`` / ``normal-like`` / ``unknown`` for fibroblasts (NaN for
        other cells), from ``caf_activation`` vs ``normal_fibroblast`` (only when both
        sets are usable).
    ``obsm[key_added + "_scores"]``
        DataFrame cells x usable lineage sets (raw scores of ``method``).
    ``uns["cafclassify"]["gate"]``
        ``params``, ``counts`` per lineage, ``clusters`` (per-cluster table: size,
        lineage, margin, mean score and effect per set, purity, evidence purity,
        contested), ``contested`` (contested clusters, their calls and evidence purity,
        cells left to stage 2), ``coverage`` and ``missing_markers`` per set, ``sets_used``, ``pregated`` (given/detected,
        possible contaminants), ``embedding``, ``stage1_counts``, ``refine`` (applied,
        seeds and training cells per class, cross-validated balanced accuracy of both
        models, ``changes`` from -> to -> n, ``n_changed``, conventions), ``stroma``
        (the hierarchical step: applied or reason, compartment size, sub-cluster
        table, changes) and ``warnings``.

    Raises
    ------
    ConfigError
        Invalid options.
    SignatureError
        The library has no usable ``fibroblast`` lineage set in these data.
    DataError
        Missing layer or cluster column, empty data.
    """
    # ---- options -----------------------------------------------------------
    if method not in _METHODS:
        raise ConfigError(
            f"gate(method={method!r}) is not supported.",
            fix=f"use one of {', '.join(_METHODS)}: the gate needs per-cell rank-based scores "
            "that do not depend on the composition of the dataset.",
        )
    if pregated not in (None, True, False):
        raise ConfigError(f"pregated must be True, False or None, got {pregated!r}.")
    if refine not in (True, False):
        raise ConfigError(f"refine must be True or False, got {refine!r}.")
    if stroma not in (True, False):
        raise ConfigError(f"stroma must be True or False, got {stroma!r}.")
    for name, val, lo in (("n_pcs", n_pcs, 2), ("max_cells_graph", max_cells_graph, 100), ("n_null", n_null, 5)):
        if isinstance(val, bool) or not isinstance(val, int | np.integer) or val < lo:
            raise ConfigError(f"{name} must be an integer >= {lo}, got {val!r}.")
    if not np.isfinite(resolution) or resolution <= 0:
        raise ConfigError(f"resolution must be a positive number, got {resolution!r}.")
    if not isinstance(key_added, str) or not key_added:
        raise ConfigError(f"key_added must be a non-empty string, got {key_added!r}.")
    if adata.n_obs == 0 or adata.n_vars == 0:
        raise DataError(f"the data are empty ({adata.n_obs} cells x {adata.n_vars} genes).",
                        path="adata", fix="pass a non-empty AnnData.")
    if cluster_key is not None and cluster_key not in adata.obs:
        raise DataError(f"cluster column {cluster_key!r} not found in obs.", path="adata.obs",
                        fix="pass an existing obs column or cluster_key=None to cluster here.")

    if copy:
        adata = adata.copy()
    X, where = _matrix(adata, layer)
    value_type, scale_warning = _value_type(X, where)
    warnings: list[str] = []
    if scale_warning is not None:
        logger.warning(scale_warning)
        warnings.append(scale_warning)

    # ---- lineage sets ----------------------------------------------------------
    from ..genesets import coverage_table, load_signatures, match_signatures
    from ..scoring import score

    library = load_signatures(signatures)
    lin_names = [n for n, s in library.sets.items() if s.group == "lineage"]
    if "fibroblast" not in lin_names:
        raise SignatureError(
            "the library has no lineage set named 'fibroblast'.",
            path=f"signature library {library.name!r}",
            fix="use the built-in 'caf_v1' library or add lineage sets (group 'lineage') "
            "named fibroblast, mural, epithelial, immune, endothelial, other_lineage.",
        )
    state_names = [n for n in STATE_SETS if n in library.sets]
    tmp = AnnData(X=X, obs=pd.DataFrame(index=adata.obs_names.copy()), var=adata.var.copy())
    wanted = library.subset(names=lin_names + state_names)
    if species is None:  # the species chosen at `read` (recorded in uns) is used downstream
        from ..genes import recorded_species

        species = recorded_species(adata)
    gene_kw = dict(species=species, symbol_column=symbol_column)
    cov = coverage_table(wanted, tmp, **gene_kw)
    matched = match_signatures(wanted, tmp, min_genes=_MIN_GENES, on_low_coverage="warn", **gene_kw)
    missing = {str(r["set"]): _split_genes(r["missing"]) for _, r in cov.iterrows()}
    usable_lin = [n for n in lin_names if n in matched]
    usable_state = [n for n in state_names if n in matched]
    for n in lin_names:
        if n not in matched:
            msg = f"lineage set {n!r} has too few of its genes in the data and is not used"
            warnings.append(msg)
            logger.warning("%s (missing: %s).", msg, ", ".join(missing.get(n, [])[:15]))
    if not usable_lin:
        raise SignatureError(
            "none of the lineage sets has enough of its genes in the data "
            f"(fibroblast markers missing: {', '.join(missing.get('fibroblast', [])[:20])}).",
            path=where,
            fix="check the gene identifiers and species (var_names or a symbol column); "
            "Ensembl IDs need a symbol column or a known species.",
        )
    if "fibroblast" not in matched:
        msg = ("no fibroblast marker set is usable in these data (markers absent): no cell can be "
               "gated as fibroblast")
        warnings.append(msg)
        logger.warning("%s.", msg)
    sets_used = usable_lin + usable_state
    rng = np.random.default_rng(random_state)
    n = adata.n_obs
    # the clustering subsample is read during the scoring pass (no second read from disk)
    clustering = cluster_key is None and n >= _MIN_CELLS_GRAPH
    sub_idx = _graph_subsample(n, int(max_cells_graph), random_state) if clustering else None
    sub_parts: list = []
    pass_kw = dict(method=method, n_null=n_null, rng=rng, max_rank=_MAX_RANK, collect=sub_idx,
                   collected=sub_parts)
    if method == "ucell":
        # the sets' UCell scores and their random-set null in one pass over the matrix
        S, mu, sigma = _null_scores(X, {n: matched[n] for n in sets_used}, with_sets=True, **pass_kw)
    else:
        score(tmp, wanted, method=method, sets=sets_used, key_added="_gate", min_coverage=0.0,
              on_low_coverage="keep", random_state=random_state, **gene_kw)
        S_all = tmp.obsm["_gate"]
        missing_cols = [n for n in sets_used if n not in S_all.columns]
        if missing_cols:  # pragma: no cover - score() and match_signatures() disagree
            raise SignatureError(f"scoring returned no column for {missing_cols}.")
        S = S_all[sets_used].to_numpy(dtype=float)
        mu, sigma = _null_scores(X, {n: matched[n] for n in sets_used}, **pass_kw)

    # ---- clusters ---------------------------------------------------------------
    hvg: np.ndarray | None = None
    gene_sums = None
    if cluster_key is not None:
        clusters = adata.obs[cluster_key].astype(str).to_numpy()
        emb_info: dict[str, Any] = {"source": f"obs[{cluster_key!r}]"}
    elif n < _MIN_CELLS_GRAPH:
        clusters = np.arange(n).astype(str)
        emb_info = {"source": "per-cell (fewer than 30 cells)"}
        logger.info("Only %d cells: deciding every cell on its own (no clustering).", n)
    else:
        sub_rows = stack_rows(sub_parts)
        sub_parts.clear()
        labels_cl, emb_info = _embed_and_cluster(
            X, value_type=value_type, n_pcs=int(n_pcs), resolution=float(resolution),
            max_cells_graph=int(max_cells_graph), random_state=random_state, sub_rows=sub_rows)
        del sub_rows
        clusters = labels_cl.astype(str)
        gene_sums = emb_info.pop("_colsums")
        emb_info["source"] = "leiden"
        hvg = emb_info.pop("_hvg", None)

    L = len(usable_lin)
    lab_names = [LINEAGE_SETS[s] for s in usable_lin]
    res = _decide(S[:, :L], mu[:, :L], sigma[:L], clusters, lab_names)
    lab_arr = np.array([*lab_names, "other"], dtype=object)
    n_override = int(res["override"].sum())
    contested_info = _contested_info(res["table"], res["unplaced"])

    # ---- hierarchical step: re-cluster the mesenchymal compartment -----------------
    stroma_info: dict[str, Any] = {"applied": False, "reason": "stroma=False"}
    if stroma and n < _MIN_CELLS_GRAPH:
        stroma_info = {"applied": False, "reason": "per-cell decision (fewer than 30 cells)"}
    elif stroma:
        st = recluster_stroma(X, value_type=value_type, S=S[:, :L], mu=mu[:, :L], sigma=sigma[:L],
                              labels=lab_names, stage1=res, n_pcs=int(n_pcs),
                              resolution=float(resolution), max_cells_graph=int(max_cells_graph),
                              random_state=random_state, taken=set(clusters.tolist()))
        stroma_info = st["info"]
        if st["applied"]:
            res = merge_compartment(res, st, clusters)
            clusters = res["clusters"]
    stage1_call = lab_arr[res["final"]]
    conf = res["conf"].copy()

    # ---- stage 2: whole-profile refinement -----------------------------------------
    refine_info: dict[str, Any] = {"applied": False, "reason": "refine=False"}
    final_codes = res["final"]
    if refine:
        if hvg is None:
            hvg = _select_hvg(X, value_type=value_type, max_cells=int(max_cells_graph),
                              random_state=random_state)
        # the features are the HVGs *without* the lineage markers: an independent view
        # (co-training), so stage 2 does not re-learn the marker rule that chose the
        # seeds and a cell that lost its markers is judged on the rest of its profile
        marker_idx = [matched[s].indices for s in usable_lin]
        feat = np.setdiff1d(hvg, np.concatenate(marker_idx)).astype(int)
        ref = refine_lineages(X, value_type=value_type, final=res["final"], own=res["own"],
                              codes=res["codes"], cl_call=res["cl_call"],
                              margin=res["margin"], labels=lab_names, genes=feat,
                              random_state=random_state, gene_sums=gene_sums, unplaced=res["unplaced"])
        refine_info = ref["info"]
        final_codes = ref["final"]
        conf = np.where(ref["changed"], ref["prob"], conf)
    gate_call = lab_arr[final_codes]

    # ---- pre-gated input -----------------------------------------------------------
    frac_fib = float(np.mean(gate_call == "fibroblast"))
    detected = frac_fib >= _PREGATED_FRACTION
    pg_info: dict[str, Any] = {"given": pregated, "detected": bool(detected),
                               "fraction_fibroblast": frac_fib}
    final = gate_call.copy()
    contaminant = np.zeros(n, dtype=bool)
    if pregated is True:
        contaminant = gate_call != "fibroblast"
        pg_info["possible_contaminants"] = {str(k): int(v) for k, v in
                                            pd.Series(gate_call[contaminant]).value_counts().items()}
        pg_info["n_possible_contaminants"] = int(contaminant.sum())
        final[:] = "fibroblast"
        # confidence = the gate's own confidence for fibroblast cells, else 1 - it
        conf = np.where(contaminant, 1.0 - conf, conf)
        if contaminant.any():
            logger.info("pregated=True: %d cells look like other lineages (%s); kept as fibroblasts.",
                        int(contaminant.sum()), pg_info["possible_contaminants"])
    elif detected and pregated is None:
        logger.info("%.0f%% of cells gate as fibroblasts: the input looks pre-gated.", 100 * frac_fib)

    # ---- fibroblast state -------------------------------------------------------------
    state = None
    if len(usable_state) == 2:
        ia, i_n = sets_used.index("caf_activation"), sets_used.index("normal_fibroblast")
        d = (S[:, ia] - mu[:, ia]) - (S[:, i_n] - mu[:, i_n])
        sd = float(np.hypot(sigma[ia], sigma[i_n]))
        zc = stats.norm.isf(0.05)
        st = np.where(d >= zc * sd, "CAF", np.where(d <= -zc * sd, "normal-like", "unknown")).astype(object)
        st[final != "fibroblast"] = np.nan
        state = pd.Categorical(st, categories=list(STATE_CATEGORIES))
    else:
        logger.info("caf_fibroblast_state not computed: sets %s are not usable in these data.",
                    [s for s in STATE_SETS if s not in usable_state])

    # ---- warnings: few fibroblasts ------------------------------------------------------
    n_fib = int((final == "fibroblast").sum())
    if n_fib < _FEW_FIBROBLASTS:
        msg = (f"only {n_fib} fibroblasts ({100 * n_fib / n:.2f}%) found; CAF subtyping will be "
               "skipped or unreliable")
        warnings.append(msg)
        logger.warning("%s.", msg)

    if contested_info["clusters"]:
        unplaced = res["unplaced"]
        left = int(((final == "other") & unplaced).sum())
        one = len(contested_info["clusters"]) == 1
        warnings.append(
            ("cluster " if one else "clusters ") + ", ".join(
                f"{c} ({lin}, evidence purity {p:.2f})" for c, lin, p in zip(
                    contested_info["clusters"], contested_info["calls"], contested_info["evidence_purity"],
                    strict=True))
            + (" is" if one else " are") + " contested: most of "
            + ("its" if one else "their") + " cells with marker evidence name other lineages, so "
            + ("its" if one else "their") + f" {int(unplaced.sum())} cells without evidence did not "
            "inherit the call; the whole-profile "
            f"model placed {int(unplaced.sum()) - left} of them and {left} stay 'other' (shallow cells "
            "of every lineage clustering together do this)")

    # ---- write ------------------------------------------------------------------------
    default = key_added == K.OBS_LINEAGE
    k_conf = K.OBS_LINEAGE_CONF if default else f"{key_added}_confidence"
    k_cl = K.OBS_LINEAGE_CLUSTER if default else f"{key_added}_cluster"
    k_sc = K.OBSM_LINEAGE_SCORES if default else f"{key_added}_scores"
    k_state = K.OBS_FIBRO_STATE if default else f"{key_added}_fibroblast_state"
    k_stage1 = K.OBS_LINEAGE_STAGE1 if default else f"{key_added}_stage1"
    k_contam = K.OBS_LINEAGE_CONTAMINANT if default else f"{key_added}_contaminant"
    adata.obs[key_added] = pd.Categorical(final.astype(str), categories=list(K.LINEAGES))
    adata.obs[k_stage1] = pd.Categorical(stage1_call.astype(str), categories=list(K.LINEAGES))
    if pregated is True:
        adata.obs[k_contam] = contaminant
    adata.obs[k_conf] = conf.astype(float)
    cl_cats = sorted(set(clusters.tolist()), key=lambda s: (len(s), s))
    adata.obs[k_cl] = pd.Categorical(clusters, categories=cl_cats)
    if state is not None:
        adata.obs[k_state] = state
    adata.obsm[k_sc] = pd.DataFrame(S, index=adata.obs_names.copy(), columns=pd.Index(sets_used, dtype=object))

    counts = pd.Series(final).value_counts().reindex(list(K.LINEAGES), fill_value=0)
    cov_records = cov.to_dict(orient="records") if hasattr(cov, "to_dict") else []
    uns = K.uns_section(adata, K.UNS_GATE)
    uns.clear()
    uns.update({
        "params": {"signatures": getattr(library, "name", str(signatures)),
                   "library_version": getattr(library, "version", ""),
                   "library_sha256": getattr(library, "sha256", ""),
                   "layer": "X" if layer is None else layer, "pregated": pregated,
                   "method": method, "n_pcs": int(n_pcs), "resolution": float(resolution),
                   "cluster_key": cluster_key, "max_cells_graph": int(max_cells_graph),
                   "n_null": int(n_null), "refine": bool(refine), "stroma": bool(stroma),
                   "random_state": int(random_state), "key_added": key_added,
                   "species": species, "symbol_column": symbol_column,
                   "alpha_cluster": _ALPHA_CLUSTER, "min_effect": _MIN_EFFECT,
                   "alpha_cell": _ALPHA_CELL, "override_ratio": _OVERRIDE_RATIO,
                   "alpha_contested": _ALPHA_CONTESTED,
                   "min_genes": _MIN_GENES, "value_type_detected": value_type},
        "counts": {k: int(v) for k, v in counts.items()},
        "n_fibroblasts": n_fib,
        "n_overridden_cells": n_override,
        "contested": contested_info,
        "stroma": stroma_info,
        "stage1_counts": {k: int(v) for k, v in pd.Series(stage1_call).value_counts()
                          .reindex(list(K.LINEAGES), fill_value=0).items()},
        "refine": refine_info,
        "clusters": res["table"].to_dict(orient="list"),
        "coverage": pd.DataFrame(cov_records).astype(str).to_dict(orient="list") if cov_records else {},
        "missing_markers": {k: [str(g) for g in v] for k, v in missing.items()},
        "sets_used": sets_used,
        "null_sd": {s: float(v) for s, v in zip(sets_used, sigma, strict=True)},
        "pregated": pg_info,
        "embedding": _embedding_record(emb_info),
        "warnings": warnings,
    })
    logger.info("Gate: %s.", ", ".join(f"{k} {v}" for k, v in counts.items() if v))
    return adata if copy else None
