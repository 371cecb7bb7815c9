"""Programme evidence per fibroblast, judged against random gene sets: the seed rule.

Why not z-scores across cells
-----------------------------
The first seed rule (``seed_rule="zscore"``, kept for comparison) standardised every
subtype score across the fibroblasts of the dataset and asked for ``z >= 1``. A
population that is most of the fibroblasts sits near the mean of its own score and
never qualifies (measured on a sorted mouse CAF dataset: 485 author vCAFs, 9 seeds),
and a subtype that does not exist still has a top tail that does. This module replaces
it with evidence that is read *within each cell* and judged against a null.

Method
------
1. **Structure.** Log-normalised fibroblasts -> 2,000 highly variable genes (scanpy's
   ``seurat`` flavour; selected on a random 50,000 of them when there are more, to bound
   memory) -> PCA (up to 30 components) -> kNN graph (``n_neighbors`` = 15, scanpy's default; exact up to
   150,000 fibroblasts, :mod:`._knn`). ``W`` is the row-normalised adjacency with the
   cell itself included: ``W @ v`` replaces a cell's value by the mean over itself and
   its neighbours. Shallow cells (median ~600 UMI in a breast atlas sample) lose most
   programme genes to dropout; their neighbours carry the same programme, so the
   average is far less noisy. This is the neighbourhood averaging of MAGIC (van Dijk
   et al. 2018, one step) and of metacells.
2. **Score.** For subtype set ``k`` with genes ``g`` and directions ``w_g`` (+1/-1),
   ``s_k = sum_g w_g (x_g - m_g) / sum_g |w_g|`` where ``m_g`` is the gene's mean over
   fibroblasts. This is ``scanpy.tl.score_genes`` with perfectly matched controls.
   The smoothed score is ``W s_k``.
3. **Null.** Random gene sets per subtype set, each gene replaced by a
   random gene of the same mean-expression bin among fibroblasts (the expressed genes
   cut into 25 bins of equal gene count, as ``score_genes``) with the same direction,
   scored and smoothed the same way. A bin holds at least ``MIN_POOL`` = 50 expressed
   genes (``score_genes`` draws ``ctrl_size`` = 50 control genes from each of its
   bins): on a targeted panel there are fewer bins, down to one (every expressed gene
   is a candidate) below 100 genes. Why: with 25 bins over a few hundred genes a bin
   holds a handful of genes, the 50 draws reuse them, and in a shallow cell, where
   most of them are zero, the draws hardly differ, so the null SD collapses and any
   set with one detected gene reads as many SDs above random genes. Measured on the
   breast sample cut to marker panels (``docs/classifier.md``; ARI, mean over
   ``random_state`` 0-2): 40 common markers 0.036 -> 0.409 (before, with the panel cut
   from the counts, 234 of the 368 gated author CAFs were seeds, most of them wrong),
   five 192-609-gene designs 0.152-0.357 -> 0.172-0.469 (argmax UCell 0.213-0.320). A whole transcriptome keeps
   25 bins; cutting them over the expressed genes only (before, unexpressed genes filled
   the lowest bins) moves those benchmark rows within their seed spread.

   **Reference.** Centred on the genes' fibroblast means, every score is read against
   the average fibroblast, and the average sits with the majority: the cells of a
   subtype that is most of the fibroblasts sit near the mean of their own programme
   and carry little evidence. Measured on the breast sample with its author CAFs
   subsampled (``docs/classifier.md``): its 249 myCAF-like cells gave 120 seeds among
   all 379 CAFs but 37 when only 25 iCAF-like cells were kept; 130 iCAF-like cells
   among 150 CAFs gave 1 seed and the classification was skipped. So each smoothed
   score, real set and null draw alike, is read from its own reference ``r``, the
   midpoint of its 5th and 95th percentiles over fibroblasts (``TAIL``). Wherever a
   population carries the programme and another does not, ``r`` lies between them
   whatever their proportions, as long as each holds 5 % of the fibroblasts or more;
   without such a split (an absent programme, a random gene set) it is the middle of
   the distribution, near the mean. 5 % is the usual tail convention, not a fitted
   value; 2.5 % and 10 % are measured in ``docs/classifier.md``. Per cell,
   ``E_k = ((W s_k - r_k) - mean_r (W n_kr - r_kr)) / sd_r (W n_kr - r_kr)``: how
   many null SDs the programme sits above random genes of the same expression level
   *in this cell and its neighbourhood*. The cell's own score is read from the same
   ``r_k``. The units are the same for every programme, so programmes of different
   size and expression level are compared within a cell without standardising
   across cells. The mean and SD of the null are read from ``n_moments`` (500) draws
   per set, of which the first ``n_null`` (``N_EXIST``, 200) are kept for step 6
   (:mod:`._evidence_null`): the draws are shared by every cell, so with 50 of them
   their Monte-Carlo error moved whole classes across the seed threshold with
   ``random_state``.
4. **Seeds.** A cell seeds subtype ``k`` when ``E_k >= z_alpha`` (one-sided
   ``alpha`` = 0.05, ``z`` = 1.645: the programme is expressed beyond random genes)
   and ``E_k - E_j >= sqrt(2) z_alpha`` for every other programme ``j`` (the
   difference of two null-standardised values has SD ``sqrt(2)``: the winner is
   ahead at the same alpha). These are fixed statistical conventions, not fitted.
5. **The cell agrees with its neighbourhood.** Seeds are the training labels of a
   classifier that reads each cell's *own* expression, so a seed must also carry its
   programme itself. The same evidence computed without averaging (``W = I``), ``e``,
   must point the same way as both comparisons of step 4: ``e_k >= 0`` (above random
   genes) and ``e_k >= e_j`` for the runner-up ``j``. Only the direction is asked, not
   significance: one shallow cell alone is rarely significant. The neighbourhood gives
   the power, the cell a veto; this is consensus filtering of noisy training labels
   (Brodley & Friedl 1999, *J Artif Intell Res* 11:131). Where the graph mixes
   subtypes (a full-length protocol, a small gene panel) a cell inherits its
   neighbours' programme and, unvetoed, teaches the model the wrong mapping. Measured
   (``benchmarks/bench_real.py`` chains, ARI, mean over ``random_state`` 0-2, without
   -> with the veto): breast sample 0.605 -> 0.639, synthetic full-length-like reads
   0.412 -> 0.567, 1,200-gene panel-like matrix 0.465 -> 0.504, synthetic control
   0.631 -> 0.653; costs: breast without the WU genes 0.586 -> 0.572, ~520 UMI cells
   0.244 -> 0.213. Asking the cell to rank ``k`` above *every* programme gained more
   on synthetic data but cost the real non-circular check (0.586 -> 0.538): with
   several absent programmes, a true seed's noisy profile often tops one of them
   (``docs/classifier.md``).
6. **Existence.** A programme with no population still wins in a few cells by
   chance. For every null draw ``r`` of set ``k`` the seed rule (4-5) is re-applied
   with ``E_kr`` and ``e_kr`` in place of ``E_k`` and ``e_k`` (the other programmes
   unchanged). Subtype ``k`` is *present* only when its seed count exceeds the
   ``1 - alpha / K`` quantile of those null counts over ``N_EXIST`` (200) draws, ``K``
   the number of subtype programmes (Bonferroni: 99.2 % for six; an observed count, not
   interpolated; more cells carry it than carry a random gene set of its size and
   expression), and at least
   ``min_required`` cells pass the neighbourhood rule (4) for it; otherwise it is
   reported absent with both counts and is not a class of the model. Why family-wise:
   which subtypes a sample holds is one answer made of ``K`` decisions, and a false
   "present" is the costly error (the class is learnt and takes cells). Each class at
   0.05 on its own called an absent apCAF present in a simulated sorted sample of
   4,000 CAFs (53 seeds against a 95th percentile of 50; 573 cells called) and a false
   apCAF class in the breast sample's 40-marker panel; 200 draws so that the quantile
   is not the single largest draw (with 50 it was, and it moved with ``random_state``).
   Measured in ``docs/classifier.md`` (Limits). A class that
   passes the null test but not the count is listed apart (``too_few_to_learn``): its
   population may exist but is too small, or its cells too shallow, to be learnt (thin
   data, ``docs/classifier.md``), and the report says so instead of calling it absent
   from the sample. A present class with fewer than ``min_required`` agreeing seeds (a
   population of a few dozen shallow cells, whose own profiles are mostly dropout) is
   topped up to ``min_required`` from its neighbourhood seeds, those whose own evidence
   comes closest to agreeing (largest ``min(e_k, e_k - e_j)``); the report counts them
   (``topped_up``).
7. **A population the graph does not single out.** The neighbourhood gives power only
   where the graph carries the programme. On a targeted panel a subtype measured by a
   handful of genes hardly shapes the PCA, so its cells' neighbourhoods are mostly
   other subtypes: on the benchmark's 306-gene panel the 35 planted apCAFs give 2
   neighbourhood seeds, while 21 cells pass the rule on their own. So for a class that
   is *too few to learn* (it passed the existence test of step 6, but fewer than
   ``min_required`` cells pass the neighbourhood rule), and only for such a class, the
   rule is read the other way round: a cell seeds ``k`` when the rule of step 4 holds
   on its own evidence ``e`` and its neighbourhood does not contradict it (``E_k >= 0``,
   the direction-only consensus of step 5 with the roles swapped). The class is learnt
   when more cells pass this way than pass for the null draws of ``k`` (95th
   percentile, the same rule) and, with its neighbourhood seeds, it has at least
   ``min_required`` seeds; the report lists it under ``learnt_from_cells_alone`` and
   the HTML report warns that it rests on fewer, noisier seeds. Why only then: applied
   to every class (the symmetric rule of ``docs/classifier.md``) per-cell passes of a
   500-cell population add a few wrong seeds to present classes and revive absent ones
   (sorted mouse data 0.619 -> 0.600, and 0.574 when absent classes may be revived),
   whereas a class that is already evidenced but too thin loses all its cells to other
   classes when it is not learnt. Measured (ARI, mean over ``random_state`` 0-2): six
   panel designs of 190-629 genes 0.235 / 0.364 / 0.444 / 0.446 / 0.540 / 0.392 ->
   0.269 / 0.435 / 0.444 / 0.492 / 0.583 / 0.493; every dataset without a too-few class
   is unchanged (``docs/classifier.md``).

Gene audit
----------
Before scoring, every gene of every subtype set is checked against the rest of its
set in these data: the Pearson correlation, across fibroblasts, of the gene's
smoothed expression (times its direction) with the smoothed leave-one-out score of
its set. A gene that contradicts its set here (``r < 0``), or that no fibroblast
expresses, is left out of the set *for this dataset* (weight 0); everything is
reported per gene (``uns[...]["classify"]["gene_audit"]``) and the library itself is
not changed. Measured reason: on a real sorted mouse CAF dataset one subtype gene had
AUROC 0.27 for its own population and pulled the majority population into its set.
"""

from __future__ import annotations

import gc
import logging
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy import stats

from ._evidence_null import (
    N_BINS,
    N_MOMENTS,
    N_NULL,
    Moments,
    NullSampler,
    averaged,
    centred_scores,
)
from ._knn import neighbors

__all__ = ["Evidence", "audit_genes", "fibroblast_graph", "programme_evidence", "evidence_seeds"]

logger = logging.getLogger(__name__)

#: conventions (not fitted to any dataset)
ALPHA = 0.05
#: null draws per set kept for the existence test (step 6): enough to read its 1 - alpha / K
#: quantile (Bonferroni over the K programmes; 0.992 for six) from more than one draw
N_EXIST = 200
#: each programme's reference: the midpoint of its TAIL and 1 - TAIL quantiles over fibroblasts
TAIL = 0.05
N_NEIGHBORS = 15
N_PCS = 30


@dataclass
class Evidence:
    """Evidence of every subtype programme per fibroblast (module docstring, steps 2-5).

    ``E`` and ``E_null`` are read over each cell's neighbourhood, ``cell`` and
    ``cell_null`` in the cell alone (the same random gene sets, no averaging); the
    null arrays are cells x sets x draws.
    """

    E: np.ndarray
    E_null: np.ndarray
    cell: np.ndarray
    cell_null: np.ndarray
    null: dict = field(default_factory=dict)


def fibroblast_graph(Xf: sp.csr_matrix, *, n_neighbors: int = N_NEIGHBORS, n_pcs: int = N_PCS,
                     n_hvg: int = 2000, random_state: int = 0) -> sp.csr_matrix:
    """Row-stochastic kNN averaging operator ``W`` (self included) among fibroblasts.

    ``Xf`` is log-normalised (cells x genes). Returns an identity matrix when there are
    too few cells for a graph (fewer than ``n_neighbors + 2``).
    """
    import anndata as ad
    import scanpy as sc

    n = Xf.shape[0]
    if n < n_neighbors + 2:
        return sp.identity(n, format="csr")
    Xf = sp.csr_matrix(Xf)
    hvg = _highly_variable(Xf, n_top=int(min(n_hvg, Xf.shape[1])), random_state=random_state)
    # float32 as scanpy's defaults: cast after the gene subset, not the whole matrix first
    Xh = sp.csr_matrix(Xf[:, hvg] if hvg is not None else Xf, dtype=np.float32)
    tmp = ad.AnnData(X=Xh.toarray())  # HVGs only: dense is fine
    del Xh
    sc.pp.scale(tmp, max_value=10)
    n_comp = int(max(2, min(n_pcs, tmp.n_vars - 1, n - 2)))
    sc.pp.pca(tmp, n_comps=n_comp, random_state=random_state)
    neighbors(tmp, n_neighbors=n_neighbors, use_rep="X_pca", random_state=random_state)
    A = sp.csr_matrix(tmp.obsp["distances"])
    del tmp
    gc.collect()  # the dense scaled HVG matrix (1.2 GB at 150,000 fibroblasts), as above
    A.data[:] = 1.0
    A = A + sp.identity(n, format="csr")
    deg = np.asarray(A.sum(axis=1)).ravel()
    return sp.csr_matrix(sp.diags(1.0 / deg) @ A)


#: HVGs of the graph are selected on at most this many fibroblasts (a random subsample)
HVG_MAX_CELLS = 50_000


def _highly_variable(Xf: sp.csr_matrix, *, n_top: int, random_state: int) -> np.ndarray | None:
    """Columns of the ``n_top`` highly variable genes (scanpy's ``seurat`` flavour), or
    ``None`` when the selection fails on tiny or degenerate data (all genes are used).

    The values are cast to float32 (scanpy's default precision). scanpy's ``seurat``
    flavour copies the matrix twice (``copy``, then ``expm1``): on the 1M-cell
    benchmark's 150,074 fibroblasts (2.8 GB) the graph, which also cast the whole matrix
    to float32 first, peaked at 5.7 GB over the matrix. Above :data:`HVG_MAX_CELLS`
    fibroblasts the genes are selected on a random subsample of that many cells, and the
    copies shrink with it. The selection does move: on that benchmark 3.8 % of the
    fibroblasts changed subtype against HVGs from every cell (ARI against the planted
    subtypes 0.533 with the subsample, 0.516 with every cell; ``benchmarks/README.md``).
    Smaller data are selected on every cell, as before.
    """
    import anndata as ad
    import scanpy as sc

    n = Xf.shape[0]
    if n > HVG_MAX_CELLS:
        rows = np.sort(np.random.default_rng(random_state).choice(n, HVG_MAX_CELLS, replace=False))
        sample = sp.csr_matrix(Xf[rows], dtype=np.float32)
    else:
        sample = sp.csr_matrix(Xf, dtype=np.float32)
    tmp = ad.AnnData(X=sample)
    try:
        sc.pp.highly_variable_genes(tmp, n_top_genes=n_top, flavor="seurat")
    except (ValueError, IndexError) as exc:  # tiny or degenerate data
        logger.info("HVG selection for the fibroblast graph failed (%s); all genes used", exc)
        return None
    hvg = np.flatnonzero(tmp.var["highly_variable"].to_numpy())
    del tmp, sample
    gc.collect()  # an AnnData sits in reference cycles: free its matrix copy now, not at the next collection
    return hvg


#: above this many stored values, column statistics are accumulated over blocks of rows
BLOCKWISE_NNZ = 100_000_000
_BLOCK_ROWS = 20_000


def _column_mean(Xf: sp.csr_matrix) -> np.ndarray:
    """Mean of every column. scipy's ``mean`` copies the matrix twice (``astype``, then
    the scaled copy it sums); on 150,074 fibroblasts x 15,000 genes (3.5e8 stored values)
    that and :func:`_column_detected` peaked at 10.4 GB over the matrix itself. Above
    :data:`BLOCKWISE_NNZ` stored values the same arithmetic runs on blocks of rows
    (float32 blocks, summed in float64); smaller matrices keep scipy's (so their results
    are bit for bit those of before)."""
    if Xf.nnz <= BLOCKWISE_NNZ:
        return np.asarray(Xf.mean(axis=0)).ravel()
    total = np.zeros(Xf.shape[1])
    for a in range(0, Xf.shape[0], _BLOCK_ROWS):
        total += np.asarray(Xf[a : a + _BLOCK_ROWS].sum(axis=0), dtype=np.float64).ravel()
    return (total / Xf.shape[0]).astype(Xf.dtype)


def _column_detected(Xf: sp.csr_matrix) -> np.ndarray:
    """Fraction of cells in which each column is above zero (blockwise above
    :data:`BLOCKWISE_NNZ` stored values, as :func:`_column_mean`)."""
    if Xf.nnz <= BLOCKWISE_NNZ:
        return np.asarray((Xf > 0).mean(axis=0)).ravel()
    count = np.zeros(Xf.shape[1], dtype=np.int64)
    for a in range(0, Xf.shape[0], _BLOCK_ROWS):
        b = Xf[a : a + _BLOCK_ROWS]
        count += np.bincount(b.indices[b.data > 0], minlength=Xf.shape[1])
    return count / Xf.shape[0]


def audit_genes(Xf: sp.csr_matrix, W: sp.csr_matrix, sets: dict[str, tuple[np.ndarray, np.ndarray]],
                symbols: np.ndarray) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], pd.DataFrame]:
    """Leave out, for this dataset, set genes that contradict their set (module docstring).

    Parameters
    ----------
    Xf
        Log-normalised fibroblasts (cells x genes).
    W
        Averaging operator from :func:`fibroblast_graph`.
    sets
        Set name -> (gene column indices, directions).
    symbols
        Gene symbol per column (for the report).

    Returns
    -------
    The audited sets (left-out genes removed) and one row per (set, gene).
    """
    mean, detected = _column_mean(Xf), _column_detected(Xf)
    out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    rows = []
    for name, (idx, w) in sets.items():
        idx = np.asarray(idx, dtype=np.int64)
        w = np.asarray(w, dtype=np.float64)
        block = Xf[:, idx]
        sm = np.asarray(W @ (block.toarray() - mean[idx][None, :]))  # smoothed, centred
        signed = sm * w[None, :]
        total = signed.sum(axis=1)
        keep = np.zeros(idx.size, dtype=bool)
        for j in range(idx.size):
            det = detected[idx[j]]
            loo = (total - signed[:, j]) / max(idx.size - 1, 1)
            if det == 0 or idx.size < 2 or np.std(signed[:, j]) == 0 or np.std(loo) == 0:
                r = np.nan
            else:
                r = float(np.corrcoef(signed[:, j], loo)[0, 1])
            if det == 0:
                status = "left out: not expressed by any fibroblast"
            elif idx.size < 2:
                status = "kept (single gene: nothing to compare with)"
                keep[j] = True
            elif not np.isfinite(r):
                status = "left out: no variation among fibroblasts"
            elif r < 0:
                status = "left out: contradicts its set in these data (r < 0)"
            else:
                status = "kept"
                keep[j] = True
            rows.append({"set": name, "gene": str(symbols[idx[j]]), "direction": "+" if w[j] > 0 else "-",
                         "detected_fraction": float(det), "r_with_set": None if np.isnan(r) else r, "weight": float(w[j]) if keep[j] else 0.0,
                         "status": status})
        out[name] = (idx[keep], w[keep])
        n_out = int((~keep).sum())
        if n_out:
            logger.info("gene audit: %d of %d %s genes left out for this dataset", n_out, idx.size, name)
    return out, pd.DataFrame(rows)


def programme_evidence(Xf: sp.csr_matrix, W: sp.csr_matrix, sets: dict[str, tuple[np.ndarray, np.ndarray]],
                       *, n_null: int = N_EXIST, n_moments: int = N_MOMENTS, n_bins: int = N_BINS,
                       random_state: int = 0) -> Evidence:
    """Evidence over the neighbourhood and in the cell alone, with their null draws.

    See the module docstring, steps 2-3 and 5. ``n_null`` draws per set are kept (for
    the existence test, step 6; float32); the null's mean and SD are read from every
    draw made, ``max(n_null, n_moments)`` (:mod:`._evidence_null`).
    """
    mean = _column_mean(Xf)
    sampler = NullSampler(mean, sets, n_bins=n_bins, random_state=random_state)
    null = {"n_null": int(n_null), **sampler.info()}
    names = list(sets)
    if not names:
        empty, empty_null = np.zeros((Xf.shape[0], 0)), np.zeros((Xf.shape[0], 0, n_null))
        return Evidence(empty, empty_null, empty, empty_null, null)

    def scores(cols: list[tuple[np.ndarray, np.ndarray]], n_draws: int) -> tuple[np.ndarray, ...]:
        """In the cell and over the neighbourhood (cells x sets x draws), each column read
        from its own reference (step 3), and the references (sets x draws)."""
        cell = centred_scores(Xf, mean, cols).reshape(Xf.shape[0], len(names), n_draws)
        hood = averaged(W, cell.reshape(Xf.shape[0], -1)).reshape(cell.shape)
        refs = np.empty((len(names), n_draws))
        for j in range(len(names)):  # one set at a time: np.quantile copies what it is given
            refs[j] = _midpoint(hood[:, j, :])
            hood[:, j, :] -= refs[j][None, :]
            cell[:, j, :] -= refs[j][None, :]
        return cell, hood, refs

    # every score, real set and null draw alike, measured from its own two-tail midpoint
    S_cell, S_hood, ref = scores([sets[n] for n in names], 1)
    S_cell, S_hood = S_cell[:, :, 0], S_hood[:, :, 0]
    # the first n_null draws are kept (float32: they are only compared with thresholds),
    # N_NULL at a time; the null's moments pool every draw, up to n_moments
    N_cell = np.empty((Xf.shape[0], len(names), n_null), dtype=np.float32)
    N_hood = np.empty_like(N_cell)
    m_hood = m_cell = None
    done = 0
    while done < max(n_null, n_moments):
        m = min(N_NULL, max(n_null, n_moments) - done)
        more_cell, more_hood, _ = scores(sampler.draw(m), m)
        if done < n_null:
            keep = min(m, n_null - done)
            N_cell[:, :, done:done + keep] = more_cell[:, :, :keep]
            N_hood[:, :, done:done + keep] = more_hood[:, :, :keep]
        if m_hood is None:
            m_hood, m_cell = Moments(more_hood), Moments(more_cell)
        else:
            m_hood.add(more_hood)
            m_cell.add(more_cell)
        done += m
        del more_cell, more_hood
    null["n_moments"] = int(m_hood.n)
    null["reference"] = (f"each score from the midpoint of its {TAIL:.0%} and {1 - TAIL:.0%} quantiles "
                         "over fibroblasts (neighbourhood-averaged), not from its mean")
    null["reference_minus_mean"] = {n: float(v) for n, v in zip(names, ref[:, 0], strict=True)}
    E, E_null = m_hood.standardise(S_hood, N_hood)  # N_hood becomes E_null (in place)
    cell, cell_null = m_cell.standardise(S_cell, N_cell)
    return Evidence(E, E_null, cell, cell_null, null)


def _midpoint(scores: np.ndarray, tail: float = TAIL) -> np.ndarray:
    """Per column, the midpoint of the ``tail`` and ``1 - tail`` quantiles over cells (rows).

    The reference a programme is read from (module docstring, step 3): it sits between
    a population that carries the programme and one that does not whatever their
    proportions, as long as each holds at least ``tail`` of the cells; the mean sits
    with the majority.
    """
    lo, hi = np.quantile(scores, [tail, 1.0 - tail], axis=0)
    return 0.5 * (lo + hi)


def _rule(E: np.ndarray, z: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Winner and runner-up per cell, the winner's lead, and the neighbourhood rule (step 4)."""
    n, K = E.shape
    order = np.argsort(-E, axis=1, kind="stable")
    top = order[:, 0]
    second = order[:, 1] if K > 1 else np.full(n, -1)
    e1 = E[np.arange(n), top]
    e2 = E[np.arange(n), second] if K > 1 else np.full(n, -np.inf)
    ok = (e1 >= z) & (e1 - e2 >= np.sqrt(2.0) * z)
    return top, second, e1 - e2, ok


def _own_agreement(cell: np.ndarray, top: np.ndarray, second: np.ndarray) -> np.ndarray:
    """``min(e_k, e_k - e_j)`` for winner ``k`` and runner-up ``j`` of the neighbourhood rule.

    Non-negative when the cell alone points the same way on both of the rule's
    comparisons (step 5): ``k`` above random genes and above ``j``.
    """
    rows = np.arange(cell.shape[0])
    own = cell[rows, top]
    if cell.shape[1] < 2:
        return own
    return np.minimum(own, own - cell[rows, second])


def _capped(idx: np.ndarray, max_per_class: int | None, rng: np.random.Generator) -> np.ndarray:
    """At most ``max_per_class`` of the seeds ``idx``, drawn at random (sorted).

    The cap bounds the cost of training on a large dataset; it must not change *which*
    cells a class is learnt from. Keeping the seeds with the largest lead instead (the
    rule until 2026-12-07) trains on a tail that narrows as the dataset grows, and the
    model then misplaces the cells between the extremes. On the 1M-cell benchmark
    (150,074 fibroblasts, every class over 2,000 seeds) the top-2,000 cap gave ARI
    0.533 against the planted subtypes (31,174 cells called dCAF, 5,814 planted), a
    random 2,000 0.621 (16,619 dCAF); on a 60,000-cell simulation (9,036 fibroblasts,
    one class capped) 0.640 and 0.638."""
    if max_per_class is None or idx.size <= max_per_class:
        return idx
    return np.sort(rng.choice(idx, max_per_class, replace=False))


def evidence_seeds(ev: Evidence, classes: list[str], *, alpha: float = ALPHA,
                   max_per_class: int | None, min_required: int,
                   random_state: int = 0) -> tuple[np.ndarray, dict]:
    """Seed labels (object array, None = not a seed) and the report (module docstring 4-6).

    A class with more than ``max_per_class`` seeds keeps a random ``max_per_class`` of
    them (:func:`_capped`, drawn with ``random_state``).
    """
    rng = np.random.default_rng(random_state)
    z = float(stats.norm.isf(alpha))
    E, E_null, cell = ev.E, ev.E_null, ev.cell
    n = E.shape[0]
    if E.shape[1] == 0:  # no programme could be evidenced: nothing to seed
        top, ok = np.zeros(n, dtype=int), np.zeros(n, dtype=bool)
        own = np.zeros(n)
    else:
        top, second, _, ok = _rule(E, z)
        own = _own_agreement(cell, top, second)
    agree = ok & (own >= 0)
    labels = np.full(n, None, dtype=object)
    cand, hood, topped, seeds, null_thr, absent, absent_why = {}, {}, {}, {}, {}, [], {}
    unlearnt = []  # absent although more cells carry it than random sets: too few to learn
    n_null = E_null.shape[2]
    # the existence of every class is one family of decisions: Bonferroni over the classes
    q_exist = 1.0 - alpha / max(len(classes), 1)
    pct = f"{100 * q_exist:.1f} % quantile"
    for k, c in enumerate(classes):
        in_hood = np.flatnonzero(ok & (top == k))
        idx = np.flatnonzero(agree & (top == k))
        cand[c], hood[c], topped[c] = int(idx.size), int(in_hood.size), 0
        thr = _null_quantile(ev, k, z, _hood_rule, q_exist)
        null_thr[c] = thr
        if idx.size <= thr or in_hood.size < min_required:
            absent.append(c)
            carry = "cell carries" if idx.size == 1 else "cells carry"
            if idx.size <= thr:
                absent_why[c] = (f"{idx.size} {carry} it, random gene sets of its size and expression "
                                 f"level reach {thr:.0f} ({pct})")
            else:
                unlearnt.append(c)
                absent_why[c] = (f"{idx.size} {carry} it, more than random gene sets of its size and "
                                 f"expression level ({thr:.0f}, {pct}), but only {in_hood.size} "
                                 f"pass{'es' if in_hood.size == 1 else ''} the neighbourhood rule, fewer than "
                                 f"the {min_required} a class needs to be learnt: it may be present, and its "
                                 "cells are called as other subtypes")
            seeds[c] = 0
            continue
        if idx.size < min_required:  # present but thin: top up by the cells' own agreement
            extra = np.setdiff1d(in_hood, idx)
            extra = extra[np.argsort(-own[extra], kind="stable")[: min_required - idx.size]]
            topped[c] = int(extra.size)
            idx = np.concatenate([idx, extra])
        idx = _capped(idx, max_per_class, rng)
        labels[idx] = c
        seeds[c] = int(idx.size)
    # step 7: a class too few to learn from its neighbourhoods may be learnt from its cells
    alone_report = {}
    for c in list(unlearnt):
        k = classes.index(c)
        idx, n_alone, q_alone = _cell_alone_seeds(ev, k, z, top, agree, labels, 1.0 - alpha)
        learnt = n_alone > q_alone and idx.size >= min_required
        alone_report[c] = {"n_cells_alone": n_alone, "null_q95": q_alone, "n_seeds": int(idx.size),
                           "learnt": bool(learnt)}
        if not learnt:
            absent_why[c] += (f"; {n_alone} pass{'es' if n_alone == 1 else ''} the rule in the cell alone "
                              "(random gene sets: "
                              f"{q_alone:.0f}, 95th percentile)")
            continue
        idx = _capped(idx, max_per_class, rng)
        labels[idx] = c
        seeds[c] = int(idx.size)
        unlearnt.remove(c)
        absent.remove(c)
        del absent_why[c]
    report = {
        "rule": (f"evidence against random gene sets (null-SD units, the null's mean and SD from "
                 f"{ev.null.get('n_moments', n_null)} random sets per programme, over the cell's kNN "
                 f"neighbourhood; each score read from the midpoint of its {TAIL:.0%} and {1 - TAIL:.0%} "
                 f"quantiles over fibroblasts); "
                 f"seed of k if E_k >= {z:.3f} (alpha {alpha}) and E_k - E_j >= {np.sqrt(2) * z:.3f} for "
                 f"every other j, and the cell's own evidence e agrees in sign (e_k >= 0, e_k >= e_j for the "
                 f"runner-up j); k present if its seeds exceed "
                 f"the {100 * q_exist:.1f} % quantile (1 - alpha / {len(classes)}, Bonferroni over the "
                 f"programmes) of seeds of {n_null} random sets and at least {min_required} cells "
                 f"pass the neighbourhood rule; a class present but with fewer is learnt from the cells that "
                 f"pass the rule on their own (their neighbourhood E_k >= 0) when more do than for random "
                 f"sets and it reaches {min_required} seeds; a class with more than the cap keeps "
                 f"a random subset of its seeds"),
        "seed_rule": "evidence", "alpha": float(alpha), "z": z, "margin": float(np.sqrt(2) * z),
        "max_seeds_per_class": -1 if max_per_class is None else int(max_per_class),
        "min_seeds_required": int(min_required),
        "candidate_counts": cand, "neighbourhood_counts": hood, "topped_up": topped,
        "existence_quantile": q_exist, "null_seed_threshold": null_thr, "seed_counts": seeds,
        "absent_classes": absent, "absent_reasons": absent_why, "too_few_to_learn": unlearnt,
        "learnt_from_cells_alone": alone_report,
        "n_fibroblasts": int(n), "n_seeds": int(sum(seeds.values())),
    }
    return labels, report


def _cell_alone_seeds(ev: Evidence, k: int, z: float, top: np.ndarray, agree: np.ndarray,
                      labels: np.ndarray, q: float) -> tuple[np.ndarray, int, float]:
    """Seeds of programme ``k`` from the rule read in each cell alone (module docstring, step 7).

    A cell passes when the rule of step 4 holds on its own evidence ``e`` (``e_k >= z``
    and ahead of every other programme by ``sqrt(2) z``) and its neighbourhood does not
    contradict it (``E_k >= 0``: the direction-only consensus of step 5, read the other
    way). The count is judged against the same rule applied to the null draws of ``k``.
    Returns the seeds (cells passing alone that are no other class's seed, with ``k``'s
    neighbourhood seeds), the count passing alone and the null's quantile ``q`` (95th
    percentile: the class has passed its existence test already).
    """
    alone = _alone_rule(ev.E, ev.cell, k, z)
    thr = _null_quantile(ev, k, z, _alone_rule, q)
    idx = np.flatnonzero((alone | (agree & (top == k))) & pd.isna(labels))
    return idx, int(alone.sum()), thr


def _hood_rule(E: np.ndarray, cell: np.ndarray, k: int, z: float) -> np.ndarray:
    """Cells seeding ``k`` by the neighbourhood rule with the cell's agreement (steps 4-5)."""
    top, second, _, ok = _rule(E, z)
    return ok & (top == k) & (_own_agreement(cell, top, second) >= 0)


def _alone_rule(E: np.ndarray, cell: np.ndarray, k: int, z: float) -> np.ndarray:
    """Cells passing the rule for ``k`` on their own evidence, neighbourhood not against (step 7)."""
    top, _, _, ok = _rule(cell, z)
    return ok & (top == k) & (E[:, k] >= 0)


def _null_quantile(ev: Evidence, k: int, z: float, rule, q: float) -> float:
    """Quantile ``q``, over the null draws of set ``k``, of the number of cells that
    ``rule(E, cell, k, z)`` passes when the draw replaces ``k`` (other programmes unchanged).

    Read as an observed count (numpy's ``method="higher"``), not interpolated between
    two counts: where most draws pass no cell and a few pass one, the interpolated
    percentile (0.55) let a single cell make a programme present.
    """
    E_r, cell_r = ev.E.copy(), ev.cell.copy()
    counts = np.empty(ev.E_null.shape[2])
    for r in range(counts.size):
        E_r[:, k] = ev.E_null[:, k, r]
        cell_r[:, k] = ev.cell_null[:, k, r]
        counts[r] = int(rule(E_r, cell_r, k, z).sum())
    return float(np.quantile(counts, q, method="higher"))
