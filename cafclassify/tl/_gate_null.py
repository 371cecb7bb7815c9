"""The lineage gate's null: scores of random gene sets of the same sizes, per cell.

Whether a cell, or a cluster, expresses a lineage set at all is judged against
random gene sets of the same size scored in the same cell (``docs/gate.md``, step 2):
for every set, ``n_null`` random sets of its size are drawn and scored with the same
rank-based method (UCell or AUCell). Their per-cell mean ``mu`` and their pooled SD
``sigma`` (over cells and draws) turn a score into an excess over the null,
``(score - mu) / sigma``, which the stage-1 decisions (:mod:`._gate_decide`) test.

The random genes are drawn uniformly from all genes of the matrix, *not* matched on
mean expression: expression-matched controls make the null depend on which cell types
dominate the dataset (in blood, immune genes are the highly expressed genes and their
matched controls are high too, so immune cells would look like they do not express
immune genes). Drawn uniformly, the null does not depend on the dataset's composition.

The null is computed in one pass over the matrix, in blocks of cells: each block is read
once, each cell's genes are ranked once, and all null sets are scored from that ranking;
the per-cell means and the squared deviations for the pooled SD accumulate block by
block. With UCell (the gate's default) the real sets are scored in the same pass
(identical to scoring them separately), so scores and null cost one read; with AUCell
the gate scores the real sets with :func:`cafclassify.score`, and the null first finds
the genes detected in any cell (an extra streaming pass), which set AUCell's ranking
depth and tie order as :func:`cafclassify.score` does. The rows of the
clustering subsample (:mod:`._gate_embed`) are collected as their blocks pass by, so they
cost no second read of an on-disk matrix.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["_null_scores"]

_NULL_CHUNK = 50_000  # cells per block of the scoring pass


def _null_scores(X, matched: dict, *, method: str, n_null: int, rng: np.random.Generator,
                 max_rank: int, with_sets: bool = False, collect: np.ndarray | None = None,
                 collected: list | None = None):
    """Per-cell mean and pooled SD of scores of random gene sets of the same sizes.

    Random genes are drawn uniformly from all genes of the matrix (not matched on
    expression), so the null does not depend on which cell types the dataset holds.
    Returns ``mu`` (cells x sets) and ``sigma`` (sets,). With ``with_sets`` the sets'
    own scores are computed in the same pass over the matrix (one read and one
    per-cell ranking for both; identical to scoring them separately) and
    ``(S, mu, sigma)`` is returned. The rows ``collect`` (sorted row numbers) are
    appended to ``collected`` as they pass by, so that the clustering subsample
    costs no second read of an on-disk matrix.
    """
    from ..scoring import _gene_stats
    from ..scoring import _kernels as kern

    n_cells, n_genes = X.shape
    names = list(matched)
    null_sets: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for name in names:
        k = len(matched[name].indices)
        for r in range(n_null):
            idx = np.sort(rng.choice(n_genes, size=k, replace=False))
            null_sets[f"{name}\t{r}"] = (idx, np.ones(k))
    aucell_kw: dict[str, Any] = {}
    if method == "aucell":
        st = _gene_stats.gene_stats(X)
        nonempty = st.n_nonzero > 0
        aucell_kw = dict(n_up=kern.default_n_up(int(nonempty.sum())),
                         tie_order=kern.decoupler_tie_order(nonempty),
                         n_ranked=int(nonempty.sum()))
    n_real = len(names) if with_sets else 0
    all_sets = dict(null_sets)
    if with_sets:
        all_sets = {**{f"real\t{n}": (matched[n].indices, matched[n].weights) for n in names}, **null_sets}
    S = np.zeros((n_cells, n_real))
    mu = np.zeros((n_cells, len(names)))
    ss = np.zeros(len(names))
    for start in range(0, n_cells, _NULL_CHUNK):
        stop = min(start + _NULL_CHUNK, n_cells)
        block = X[start:stop]
        if collect is not None:
            a, b = np.searchsorted(collect, [start, stop])
            if b > a:
                collected.append(block[collect[a:b] - start])
        if method == "ucell":
            s = kern.ucell_scores(block, all_sets, max_rank=max_rank)
        else:
            s = kern.aucell_scores(block, all_sets, **aucell_kw)
        S[start:stop] = s[:, :n_real]
        s = s[:, n_real:].reshape(stop - start, len(names), n_null)
        m = s.mean(axis=2)
        mu[start:stop] = m
        ss += ((s - m[:, :, None]) ** 2).sum(axis=(0, 2))
    sigma = np.sqrt(ss / max(n_cells * (n_null - 1), 1))
    # a set whose random draws never vary (e.g. an all-zero matrix) gets a tiny floor
    sigma = np.maximum(sigma, 1e-6)
    return (S, mu, sigma) if with_sets else (mu, sigma)
