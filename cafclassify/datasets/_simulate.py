"""Synthetic tumour single-cell data with planted, overlapping CAF programmes.

This module draws the cells and their counts from the design of
:mod:`cafclassify.datasets._sim_design` and assembles them in memory
(:func:`simulate`); :mod:`cafclassify.datasets._simulate_h5ad` writes the same
data straight to disk, chunk by chunk (:func:`simulate_to_h5ad`).

The generator is meant to be *hard enough to be honest*: it is not a separable
toy. What is planted, and why: the lineage mix, the lineage and CAF subtype
programmes, the imperfect signature lists and the overlaps between gene sets
are laid down by the design (listed in the docstring of
:mod:`cafclassify.datasets._sim_design`); the cells and counts drawn here add

* Mixed cells: a fraction ``overlap`` of each subtype's cells also carries part
  (20-60 %) of another subtype programme; iCAF and myCAF form a continuum
  (a myCAF cell carries ``1 - t`` of the iCAF programme, ``t ~ Beta(4, 1.6)``).
* Separate axes: senescence (enriched in myCAF), cycling (all lineages, most in
  tumour cells), LTBP2-high (enriched in myCAF; the LTBP2 gene itself strongly,
  its inferred module weakly).
* Counts: gene-specific baseline means (log-normal), cell-specific library
  sizes (log-normal, median ~6,000 UMI, smaller for immune cells), ambient RNA
  (0.5-4 % of each cell's profile is the tissue average), gamma-Poisson
  (negative binomial) sampling with gene-specific dispersion; dropouts emerge
  from the NB, nothing is zeroed by hand. Optional batches with gene-wise
  multiplicative batch effects.

Counts are drawn in fixed blocks of cells, each block with its own seed derived
from ``random_state``, so :func:`simulate` and :func:`simulate_to_h5ad` give the
same numbers whatever ``chunk_size`` is used.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Mapping

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from .._errors import DataError
from .._keys import LINEAGES
from ._sim_design import (
    _DEFAULT_LINEAGE_FRACTIONS,
    _DEFAULT_SUBTYPE_FRACTIONS,
    _IMMUNE_P,
    _IMMUNE_TYPES,
    _LINEAGE_SET,
    SIM_SUBTYPES,
    _build_design,
    _Design,
)

__all__ = ["simulate"]

logger = logging.getLogger(__name__)

_BLOCK = 1024  # cells per random block (fixed: makes output independent of chunk_size)


# --------------------------------------------------------------------------- cells


def _check_fractions(fr: Mapping[str, float] | None, default: Mapping[str, float], allowed, what: str):
    if fr is None:
        fr = dict(default)
    fr = dict(fr)
    bad = [k for k in fr if k not in allowed]
    if bad:
        raise DataError(
            f"unknown {what} in fractions: {bad}.", fix=f"use keys from {list(allowed)}."
        )
    vals = np.array([float(fr.get(k, 0.0)) for k in allowed])
    if np.any(vals < 0) or vals.sum() <= 0:
        raise DataError(f"{what} fractions must be non-negative and not all zero.", fix="fix the fractions.")
    return vals / vals.sum()


def _draw_cells(n: int, design: _Design, *, lin_p, sub_p, overlap: float, n_batches: int,
                rng: np.random.Generator) -> tuple[pd.DataFrame, np.ndarray, np.ndarray, np.ndarray]:
    lineages = list(_LINEAGE_SET)
    lin = rng.choice(len(lineages), size=n, p=lin_p)
    P = len(design.programmes)
    A = np.zeros((n, P), dtype=np.float32)
    pi = design.prog_index
    for k, name in enumerate(lineages):
        m = lin == k
        A[m, pi[f"lin:{name}"]] = rng.uniform(0.7, 1.1, size=m.sum())
    # immune sub-types
    imm = np.full(n, "none", dtype=object)
    mi = np.flatnonzero(lin == lineages.index("immune"))
    it = rng.choice(len(_IMMUNE_TYPES), size=mi.size, p=_IMMUNE_P)
    for k, t in enumerate(_IMMUNE_TYPES):
        cells = mi[it == k]
        imm[cells] = t
        A[cells, pi[f"imm:{t}"]] = rng.uniform(0.7, 1.1, size=cells.size)
    # fibroblast subtypes
    sub = np.full(n, "none", dtype=object)
    second = np.full(n, "none", dtype=object)
    fi = np.flatnonzero(lin == lineages.index("fibroblast"))
    st = rng.choice(len(SIM_SUBTYPES), size=fi.size, p=sub_p)
    for j, c in enumerate(fi):
        s = SIM_SUBTYPES[st[j]]
        sub[c] = s
        if s in ("myCAF", "iCAF"):
            t = rng.beta(4.0, 1.6)
            other = "iCAF" if s == "myCAF" else "myCAF"
            A[c, pi[f"sub:{s}"]] = t
            A[c, pi[f"sub:{other}"]] = 1.0 - t
        else:
            A[c, pi[f"sub:{s}"]] = rng.uniform(0.5, 1.0)
        if rng.random() < overlap:
            cand = [x for x in SIM_SUBTYPES if x != s]
            o = cand[rng.integers(len(cand))]
            second[c] = o
            A[c, pi[f"sub:{o}"]] = max(A[c, pi[f"sub:{o}"]], rng.uniform(0.2, 0.6))
    # axes
    is_fib = lin == lineages.index("fibroblast")
    is_my = sub == "myCAF"
    p_sen = np.where(is_fib, np.where(is_my, 0.16, 0.06), 0.01)
    sen = rng.random(n) < p_sen
    A[sen, pi["state:senescence"]] = rng.uniform(0.6, 1.0, size=sen.sum())
    p_cyc = np.select(
        [lin == lineages.index("epithelial"), is_fib, lin == lineages.index("immune")],
        [0.15, 0.04, 0.03], 0.02,
    )
    cyc = rng.random(n) < p_cyc
    A[cyc, pi["state:cycling"]] = rng.uniform(0.6, 1.0, size=cyc.sum())
    p_lt = np.where(is_fib, np.where(is_my, 0.20, 0.05), 0.0)
    lt = rng.random(n) < p_lt
    A[lt, pi["axis:ltbp2"]] = rng.uniform(0.6, 1.0, size=lt.sum())
    stress = rng.random(n) < 0.15
    A[stress, pi["env:stress"]] = rng.uniform(0.3, 1.0, size=stress.sum())
    p_hyp = np.select([lin == lineages.index("epithelial"), is_fib], [0.25, 0.10], 0.03)
    hyp = rng.random(n) < p_hyp
    A[hyp, pi["env:hypoxia"]] = rng.uniform(0.4, 1.0, size=hyp.sum())
    batch = rng.integers(n_batches, size=n) if n_batches > 1 else np.zeros(n, dtype=np.int64)
    for b in range(1, n_batches):
        A[batch == b, pi[f"batch:{b}"]] = 1.0
    # library sizes and ambient fraction
    lin_scale = np.array([{"immune": 0.55, "epithelial": 1.3, "fibroblast": 1.0, "endothelial": 0.9,
                           "mural": 0.9, "other": 0.8}[x] for x in lineages])
    batch_scale = np.exp(rng.normal(0.0, 0.25, size=max(n_batches, 1)))
    batch_scale[0] = 1.0
    libsize = np.exp(rng.normal(np.log(6000.0), 0.45, size=n)) * lin_scale[lin] * batch_scale[batch]
    ambient = rng.uniform(0.005, 0.04, size=n)
    obs = pd.DataFrame(
        {
            "true_lineage": pd.Categorical([lineages[k] for k in lin], categories=list(LINEAGES)),
            "true_subtype": pd.Categorical(sub, categories=[*SIM_SUBTYPES, "none"]),
            "true_secondary_subtype": pd.Categorical(second, categories=[*SIM_SUBTYPES, "none"]),
            "true_immune_type": pd.Categorical(imm, categories=[*_IMMUNE_TYPES, "none"]),
            "true_ltbp2": lt,
            "true_senescent": sen,
            "true_cycling": cyc,
            "batch": pd.Categorical([f"batch{b + 1}" for b in batch]),
            "true_library_size": libsize.astype(np.float32),
        },
        index=pd.Index([f"cell{i:07d}" for i in range(n)]),
    )
    return obs, A, libsize, ambient


def _count_blocks(design: _Design, A: np.ndarray, libsize: np.ndarray, ambient: np.ndarray,
                  random_state: int, start: int, stop: int) -> Iterator[sp.csr_matrix]:
    """Yield CSR count blocks for cells [start, stop), block-aligned seeds."""
    base = design.base.astype(np.float32)
    r = design.inv_disp
    first_block = start // _BLOCK
    last_block = (stop - 1) // _BLOCK
    for b in range(first_block, last_block + 1):
        b0, b1 = b * _BLOCK, min((b + 1) * _BLOCK, A.shape[0])
        rng = np.random.default_rng(np.random.SeedSequence([int(random_state), 7919, b]))
        logw = np.tile(base, (b1 - b0, 1))
        Ab = A[b0:b1]
        for k, p in enumerate(design.programmes):
            a = Ab[:, k]
            nz = np.flatnonzero(a)
            if nz.size == 0:
                continue
            logw[np.ix_(nz, p.idx)] += a[nz, None] * p.lfc[None, :]
        logw -= logw.max(axis=1, keepdims=True)
        w = np.exp(logw, dtype=np.float32)
        w /= w.sum(axis=1, keepdims=True)
        amb = ambient[b0:b1, None].astype(np.float32)
        mu = ((1.0 - amb) * w + amb * design.soup[None, :].astype(np.float32)) * libsize[b0:b1, None].astype(np.float32)
        g = rng.standard_gamma(np.broadcast_to(r, mu.shape)) / r[None, :]
        counts = rng.poisson(mu * g)
        block = sp.csr_matrix(counts.astype(np.int32))
        lo, hi = max(start, b0) - b0, min(stop, b1) - b0
        yield block[lo:hi]


def _prepare(n_cells, species, n_genes, lineage_fractions, subtype_fractions, signatures,
             program_strength, overlap, p_informative, n_batches, random_state):
    if species not in ("human", "mouse"):
        raise DataError(f"species must be 'human' or 'mouse', got {species!r}.", fix="pass species='human' or 'mouse'.")
    if int(n_cells) < 1:
        raise DataError(f"n_cells must be >= 1, got {n_cells}.", fix="pass a positive number of cells.")
    if not 0.0 <= float(overlap) <= 1.0:
        raise DataError(f"overlap must be in [0, 1], got {overlap}.", fix="pass a fraction.")
    if not 0.0 < float(p_informative) <= 1.0:
        raise DataError(f"p_informative must be in (0, 1], got {p_informative}.", fix="pass a fraction.")
    if float(program_strength) <= 0:
        raise DataError(f"program_strength must be > 0, got {program_strength}.", fix="pass a positive number.")
    lin_p = _check_fractions(lineage_fractions, _DEFAULT_LINEAGE_FRACTIONS, list(_LINEAGE_SET), "lineage")
    sub_p = _check_fractions(subtype_fractions, _DEFAULT_SUBTYPE_FRACTIONS, list(SIM_SUBTYPES), "subtype")
    rng = np.random.default_rng(np.random.SeedSequence([int(random_state), 104729]))
    design = _build_design(
        species=species, n_genes=int(n_genes), signatures=signatures,
        program_strength=float(program_strength), p_informative=float(p_informative),
        n_batches=int(n_batches), rng=rng,
    )
    obs, A, libsize, ambient = _draw_cells(
        int(n_cells), design, lin_p=lin_p, sub_p=sub_p, overlap=float(overlap),
        n_batches=int(n_batches), rng=rng,
    )
    # shuffle gene order deterministically (markers are not all at the front)
    order = np.random.default_rng(np.random.SeedSequence([int(random_state), 15485863])).permutation(len(design.genes))
    var = pd.DataFrame(
        {"simulated_role": pd.Categorical(design.roles[order].astype(str))},
        index=pd.Index(np.asarray(design.genes, dtype=object)[order]),
    )
    params = {
        "n_cells": int(n_cells), "species": species, "n_genes": int(n_genes),
        "lineage_fractions": dict(zip(_LINEAGE_SET, map(float, lin_p), strict=True)),
        "subtype_fractions": dict(zip(SIM_SUBTYPES, map(float, sub_p), strict=True)),
        "signatures": signatures if isinstance(signatures, str) else "custom",
        "signature_source": design.source, "program_strength": float(program_strength),
        "overlap": float(overlap), "p_informative": float(p_informative),
        "n_batches": int(n_batches), "random_state": int(random_state),
        "informative_genes_json": json.dumps(design.extra["informative"]),
    }
    return design, obs, A, libsize, ambient, order, var, params


def simulate(
    n_cells: int = 5000,
    *,
    species: str = "human",
    n_genes: int = 15000,
    lineage_fractions: Mapping[str, float] | None = None,
    subtype_fractions: Mapping[str, float] | None = None,
    signatures="caf_v1",
    program_strength: float = 1.0,
    overlap: float = 0.25,
    p_informative: float = 0.75,
    n_batches: int = 1,
    random_state: int = 0,
) -> ad.AnnData:
    """Simulate a tumour-like scRNA-seq count matrix with planted CAF programmes.

    See the module docstring for everything that is planted. Gene names of the
    programmes are taken from the signature library (human symbols, or mouse
    orthologues from the library's ``mouse`` field); background genes are real
    1:1 human/mouse orthologue symbols drawn from the shipped Ensembl table, or
    placeholders ``SIMG00001`` ... if the table is absent.

    Parameters
    ----------
    n_cells
        Number of cells.
    species
        ``"human"`` or ``"mouse"`` (mouse uses the library's orthologues; genes
        without a mouse orthologue, e.g. CXCL8, are simply absent).
    n_genes
        Total number of genes (named programme genes + background).
    lineage_fractions
        Mapping lineage -> fraction (keys from ``fibroblast, mural, epithelial,
        immune, endothelial, other``); normalised to sum 1.
    subtype_fractions
        Mapping CAF subtype -> fraction among fibroblasts (keys from
        :data:`SIM_SUBTYPES`); normalised to sum 1. Defaults make dCAF and apCAF rare.
    signatures
        Signature library whose sets define the planted programmes.
    program_strength
        Multiplies every planted log fold change (1.0 = default difficulty).
    overlap
        Fraction of each subtype's cells that also carry 20-60 % of another
        subtype programme.
    p_informative
        Probability that a gene listed in a subtype set actually carries the
        planted programme (literature lists are imperfect).
    n_batches
        Number of batches (gene-wise multiplicative effects, shifted library sizes).
    random_state
        Seed; the same seed gives identical data.

    Returns
    -------
    AnnData with raw integer counts (CSR, int32) in ``X`` and

    ``obs["true_lineage"]``
        lineage (categorical, categories as :data:`cafclassify._keys.LINEAGES`).
    ``obs["true_subtype"]``
        CAF subtype of fibroblasts, ``"none"`` for other cells.
    ``obs["true_secondary_subtype"]``
        the partially carried second programme of mixed cells, else ``"none"``.
    ``obs["true_immune_type"]``, ``obs["batch"]``, ``obs["true_library_size"]``
    ``obs["true_ltbp2"]``, ``obs["true_senescent"]``, ``obs["true_cycling"]``
        boolean axes.
    ``var["simulated_role"]``
        ``signature`` / ``background`` / ``hidden_<kind>`` (unnamed DE gene).
    ``uns["simulation"]``
        all parameters.
    """
    design, obs, A, libsize, ambient, order, var, params = _prepare(
        n_cells, species, n_genes, lineage_fractions, subtype_fractions, signatures,
        program_strength, overlap, p_informative, n_batches, random_state,
    )
    blocks = list(_count_blocks(design, A, libsize, ambient, random_state, 0, int(n_cells)))
    X = sp.vstack(blocks, format="csr")[:, order]
    X = sp.csr_matrix(X, dtype=np.int32)
    X.sort_indices()
    adata = ad.AnnData(X=X, obs=obs, var=var)
    adata.uns["simulation"] = params
    logger.info(
        "simulate: %d cells x %d genes, median %.0f UMI and %.0f genes detected per cell.",
        adata.n_obs, adata.n_vars, float(np.median(np.asarray(X.sum(axis=1)).ravel())),
        float(np.median(np.diff(X.indptr))),
    )
    return adata
