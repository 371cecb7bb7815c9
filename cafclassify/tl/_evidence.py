"""Programme evidence per fibroblast, judged against random gene sets: what the seed rule reads.

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
4-7. **Seeds and existence** are read from this evidence in :mod:`._evidence_seeds`: a
   cell seeds the programme that leads beyond random genes over its neighbourhood, if
   the cell's own evidence agrees; a programme is present only when more cells carry
   it than carry random gene sets. For step 5 the same evidence is also computed in the
   cell alone (``W = I``), ``e``, with the same null draws; ``N_EXIST`` (200) draws per
   set are kept for the existence test (step 6).

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

__all__ = ["Evidence", "audit_genes", "fibroblast_graph", "programme_evidence"]

logger = logging.getLogger(__name__)

#: conventions (not fitted to any dataset)
#: null draws per set kept for the existence test (step 6, :mod:`._evidence_seeds`): enough to
#: read its 1 - alpha / K quantile (Bonferroni over the K programmes; 0.992 for six) from more
#: than one draw
N_EXIST = 200
#: each programme's reference: the midpoint of its TAIL and 1 - TAIL quantiles over fibroblasts
TAIL = 0.05
N_NEIGHBORS = 15
N_PCS = 30


@dataclass
class Evidence:
    """Evidence of every subtype programme per fibroblast (module docstring, steps 2-3; ``cell``, 5).

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
    (each block summed in float64); smaller float64 matrices keep scipy's (so their results
    are bit for bit those of before). float32 values (``_fibroblasts._fibroblast_lognorm``'s) are
    always summed in float64 blocks: scipy would sum them in float32. Returns float64."""
    if Xf.nnz <= BLOCKWISE_NNZ and Xf.dtype == np.float64:
        return np.asarray(Xf.mean(axis=0)).ravel()
    total = np.zeros(Xf.shape[1])
    for a in range(0, Xf.shape[0], _BLOCK_ROWS):
        total += np.asarray(Xf[a : a + _BLOCK_ROWS].astype(np.float64).sum(axis=0)).ravel()
    return total / Xf.shape[0]


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

    See the module docstring, steps 2-3 (and 4-7 for ``e``). ``n_null`` draws per set are
    kept (for the existence test, step 6; float32); the null's mean and SD are read from every
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
