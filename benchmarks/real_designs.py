"""How the real-data benchmark's datasets are made (``bench_real.py`` runs them).

A real tumour cannot be re-sequenced, but its cells can be shared as another study
would share them: in another species' gene names, as another protocol's values, on a
panel's genes, with another composition. Each function here turns the breast sample
(or a simulated tumour) into one such dataset; ``bench_real.py`` runs the chain and
the baselines on it and scores the calls against the labels.

The datasets, in the order ``bench_real.py`` prints them (the breast rows are skipped with a
message when the file is absent):

* ``wu2021`` - Wu et al. 2021 breast tumour CID4465, author CAFs (``author_caf_subtype``:
  iCAF-like -> iCAF, myCAF-like -> myCAF);
* ``wu2021 without WU genes`` - the same with every gene sourced from Wu et al. 2020
  (source key ``WU``) removed from the library: the authors named their subsets with
  that group's signatures, so agreement must not rest on them;
* ``wu2021, marker panel`` - the same sample restricted to the genes of
  :func:`marker_panel` (the design of the synthetic 306-gene panel row below), before
  QC: a real tumour measured as a targeted panel. It is restricted after ``read``, so
  its values are normalised by the whole transcriptome's totals; the same panel cut from
  the counts and run through the CLI with defaults (normalised by the panel's own
  totals) gives ARI 0.480 at seed 0, against 0.504 here. Planted programmes cannot show
  what real cells do on a panel (a set's few remaining genes are often all zero in a
  cell); this row was lost (0.156) until the seed rule's null drew from expression bins
  of at least 50 expressed genes (``docs/classifier.md``, "A real tumour as a marker
  panel");
* ``wu2021, common markers`` - the same sample restricted to :data:`SMALL_PANEL`, 40
  common lineage and CAF markers (all in the file): the size of an imaging or
  targeted protein panel. Only myCAF, iCAF, apCAF and vCAF keep genes (8, 5, 2 and 2).
* ``wu2021 as mouse`` - the same sample as a mouse dataset (:func:`as_mouse`): every gene
  renamed to its mouse orthologue, genes without one dropped (``CXCL8`` and ``HLA-DP``
  among the signature genes), the species detected by ``read``; the baselines' genes
  mapped the same way. Another species, on real cells: the synthetic sorted mouse rows
  below plant programmes on mouse symbols, this row keeps real expression.
* ``wu2021 as full-length reads`` and ``as reads as log2(1 + TPM)`` - the same sample as a
  full-length (plate) protocol would share it (:func:`as_full_length`): its UMI counts
  turned into reads by :func:`full_length_reads` (a per-gene length factor and
  amplification noise), once as those read counts and once as ``log2(1 + TPM)``, read by
  ``cafclassify.read``. Another protocol's values on real cells (the synthetic
  full-length rows below plant programmes); reads cannot add genes, so the detection
  depth stays the 10x sample's.
* ``wu2021: where calls and author labels part`` (its own table, mean over the seeds):
  for every breast row, the fraction of each author subset (``celltype_subset``:
  iCAF-like s1, s2; myCAF-like s3 "Transitioning", s4, s5) called the authors'
  population, and the ARI without the transitioning cells (``bench_real.by_author_subset``).
* ``wu2021, author CAFs subsampled to a majority`` (its own table, at the first seed):
  every cell but the author CAFs kept, and of these a random subset of one population
  (:data:`MAJORITY_DESIGNS`: 87 % and 76 % iCAF-like, 80 %, 91 % and 95 % myCAF-like;
  three random subsets each, mean ARI over them). A real tumour whose CAFs are mostly
  one subtype, and the minority still there.
* ``wu2021 stroma only, a sorted-CAF design`` (its own table, at the first seed): only the
  author CAFs and perivascular (PVL) cells, as a sample sorted for stromal cells would
  hold (every CAF and PVL cell, 46 % PVL; and :data:`SORTED_STROMA_CAFS` random author
  CAFs with every PVL cell, 68 % PVL, the vCAF share of the study that named vCAFs,
  three random subsets). The labels: the author subtypes, PVL read as vCAF. Here the
  perivascular compartment is most of the cells and the baselines score every cell (in
  a sorted sample every cell is taken as a CAF), over the six subtype sets and over the
  labelled classes. A real counterpart of the synthetic sorted mouse rows, with the gate
  in the loop; printed three times: as the sample is, as mouse orthologues (a sorted
  mouse stroma sample with a perivascular majority, as in the study that named vCAFs),
  and as mouse orthologues shared as a full-length protocol's read counts (sorted cells
  are often sequenced on plates: :func:`as_mouse`, then :func:`as_full_length`).
Then the compartment tables (issue 14): the gate against the authors' major types, the
author stroma (CAFs + PVL) against ``caf_subtype`` under both perivascular readings, and
the colorectal gate with its normal-tissue mural cells.

* ``synthetic`` - the workflow's synthetic control (``simulate`` 3,000 cells, 8,000
  genes, 2 batches, seed 0) against its planted truth (identity mapping);
* ``synthetic, 70 % myCAF`` - a majority subtype with two subtypes absent (apCAF, dCAF;
  3,000 cells, 3,000 genes, seed 5, as ``tests/test_classify.py``), against its truth;
* ``synthetic sorted mouse CAFs, 68 % vCAF`` - mouse symbols, fibroblasts only (a sorted
  sample), 800 cells, seed 3, as ``tests/test_prior.py``; the baselines' human symbols are
  mapped to mouse orthologues. Once as UMI counts, once as full-length-protocol-like reads
  (:func:`full_length_reads`: sorted-cell plate protocols are full length), and once as
  those reads normalised as such data are often shared, ``log2(1 + TPM)`` (:func:`log2_tpm`,
  through ``cafclassify.read``);
* ``synthetic tumour, full-length reads`` and ``synthetic tumour, 1,200-gene panel`` -
  the settings where the fibroblast graph mixes subtypes (``docs/classifier.md``,
  Limits): an unsorted tumour (2,000 cells, 8,000 genes, seed 4) as full-length reads,
  and a tumour measured on 1,200 genes only (3,000 cells, seed 0), a panel-like matrix;
* ``synthetic tumour, ~520 UMI per cell`` and ``synthetic tumour, 306-gene marker panel`` -
  thin data, where cafclassify loses to per-cell scoring (``docs/classifier.md``, Limits):
  the counts of an unsorted tumour (3,000 cells, 8,000 genes, seed 2) thinned to 10 %
  (:func:`thinned`), and a targeted panel of the kind spatial and targeted assays measure
  (:func:`marker_panel`: half of each lineage set, 30 % of every other set, 200 other
  genes; 3,000 cells, seed 0).

Last, the gate on the thinned tumour against its planted lineages (``docs/gate.md``,
contested clusters).
"""

from __future__ import annotations

import functools
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

import cafclassify as caf
from cafclassify.genes import to_species

HERE = Path(__file__).resolve().parent
LIB = HERE.parent / "signatures" / "caf_v1"

#: a majority subtype, two subtypes absent (as tests/test_classify.py)
MAJORITY = {"myCAF": 0.7, "iCAF": 0.15, "apCAF": 0.0, "meCAF": 0.1, "vCAF": 0.05, "dCAF": 0.0}
#: author CAFs kept (iCAF-like, myCAF-like) in the breast sample's majority table
MAJORITY_DESIGNS = ((130, 20), (130, 40), (62, 249), (25, 249), (13, 249))
#: author CAFs kept with every PVL cell in the sorted-stroma table (68 % PVL)
SORTED_STROMA_CAFS = 150


#: sorted mouse CAFs, 68 % vCAF (the composition of the study that named vCAFs; tests/test_prior.py)
SORTED_MOUSE = {"vCAF": 0.68, "iCAF": 0.17, "myCAF": 0.1, "dCAF": 0.05, "apCAF": 0.0, "meCAF": 0.0}


def library_without(source_key: str, dest: Path) -> Path:
    """Copy of the built-in library without the genes sourced (also) from ``source_key``."""
    shutil.copytree(LIB, dest)
    genes = pd.read_csv(dest / "genes.tsv", sep="\t", comment="#", dtype=str, keep_default_na=False)
    keep = ~genes["sources"].str.split(";").apply(lambda s: source_key in s)
    genes[keep].to_csv(dest / "genes.tsv", sep="\t", index=False)
    return dest


def as_mouse(src: Path, dest: Path) -> Path:
    """The breast sample as a mouse dataset: each gene renamed to its mouse orthologue
    (:func:`cafclassify.genes.to_species`, the best one), genes without one dropped (a mouse
    matrix has no ``CXCL8`` or ``HLA-DPA1``), the first of several genes with the same
    orthologue kept; written to ``dest`` so that ``cafclassify.read`` detects the species."""
    import anndata as ad

    a = ad.read_h5ad(src)
    m = to_species(list(a.var_names), source="human", target="mouse")
    names = pd.Series([m.get(g) for g in a.var_names], index=a.var_names)
    keep = names.notna() & ~names.duplicated()
    a = a[:, keep.to_numpy()].copy()
    a.var_names = pd.Index(names[keep].astype(str).to_numpy())
    a.uns.pop("cafclassify", None)  # no human read record travels with it
    a.write_h5ad(dest)
    return dest


def as_full_length(src: Path, dest: Path, *, tpm: bool = False) -> Path:
    """The breast sample as a full-length (plate) protocol would share it: its UMI counts
    turned into reads (:func:`full_length_reads`: a per-gene length factor and
    amplification noise), or, with ``tpm``, those reads as ``log2(1 + TPM)``
    (:func:`log2_tpm_values`); written to ``dest`` for ``cafclassify.read``. Real cells,
    another protocol's values; the detection depth stays the 10x sample's (reads add no
    genes)."""
    import anndata as ad

    a = ad.read_h5ad(src)
    a.uns.pop("cafclassify", None)
    for layer in list(a.layers):
        del a.layers[layer]
    a = full_length_reads(a)
    (log2_tpm_values(a) if tpm else a).write_h5ad(dest)
    return dest


def author_cafs_subsampled(a, n_icaf: int, n_mycaf: int, subset: int):
    """The breast sample with every cell but the author CAFs, and ``n_icaf`` / ``n_mycaf``
    random author iCAF-like / myCAF-like cells (random subset number ``subset``)."""
    rng = np.random.default_rng(subset)
    lab = a.obs["author_caf_subtype"].astype(str).to_numpy()
    keep = ~np.isin(lab, ["iCAF", "myCAF"])
    for c, n in (("iCAF", n_icaf), ("myCAF", n_mycaf)):
        idx = np.flatnonzero(lab == c)
        keep[rng.choice(idx, size=min(n, idx.size), replace=False)] = True
    return a[keep].copy()


def full_length_reads(a, seed: int = 0):
    """UMI counts -> full-length-protocol-like reads: x a per-gene length factor (log-normal,
    SD 0.5) x per-entry amplification noise (gamma, CV 0.5) x 40, rounded."""
    import scipy.sparse as sp

    rng = np.random.default_rng(seed)
    X = sp.csr_matrix(a.X, dtype=np.float64)
    a.var["length_factor"] = np.exp(rng.normal(0.0, 0.5, a.n_vars))
    X = X.multiply(a.var["length_factor"].to_numpy()[None, :]).tocsr()
    X.data = np.round(X.data * rng.gamma(4.0, 1 / 4.0, size=X.data.size) * 40)
    X.eliminate_zeros()
    a.X = X.astype(np.float32)
    return a


def log2_tpm_values(a):
    """Full-length reads (:func:`full_length_reads`) as their public tables often are,
    ``log2(1 + TPM)``: reads / length factor, scaled to 10^6 per cell (a copy, no layers)."""
    import scipy.sparse as sp

    X = sp.csr_matrix(a.X, dtype=np.float64).multiply(1 / a.var["length_factor"].to_numpy()[None, :]).tocsr()
    X = sp.csr_matrix(sp.diags(1e6 / np.asarray(X.sum(axis=1)).ravel()) @ X)
    X.data = np.log2(1 + X.data)
    b = a.copy()
    b.X = X.astype(np.float32)
    for layer in list(b.layers):
        del b.layers[layer]
    return b


def log2_tpm(a, tmp: Path):
    """:func:`log2_tpm_values` read back from an h5ad by :func:`cafclassify.read` (which
    detects them and rewrites them as ln(1 + CP10k))."""
    log2_tpm_values(a).write_h5ad(tmp / "log2tpm.h5ad")
    return caf.read(tmp / "log2tpm.h5ad")


def thinned(a, p: float = 0.1, seed: int = 0):
    """Binomial thinning of the counts: each molecule kept with probability ``p``."""
    import scipy.sparse as sp

    X = sp.csr_matrix(a.X)
    X.data = np.random.default_rng(seed).binomial(X.data.astype(np.int64), p).astype(np.float32)
    X.eliminate_zeros()
    a.X = X
    return a


def marker_panel(a, frac: float = 0.3, n_background: int = 200, seed: int = 0):
    """A targeted panel: half of each lineage set (its first genes, at least 3), a random
    ``frac`` of every other set of the library (at least 2 genes) and ``n_background``
    random genes outside the library."""
    lib = caf.load_signatures("caf_v1")
    rng = np.random.default_rng(seed)
    present = set(a.var_names)
    keep, named = set(), set()
    for gs in lib.sets.values():
        genes = [g for g in gs.genes if g in present]
        named |= set(genes)
        if gs.group == "lineage":
            keep |= set(genes[: max(3, len(genes) // 2)])
        else:
            k = min(len(genes), max(2, int(round(len(genes) * frac))))
            keep |= set(rng.choice(genes, size=k, replace=False))
    other = [g for g in a.var_names if g not in named]
    keep |= set(rng.choice(other, size=n_background, replace=False))
    return a[:, [g for g in a.var_names if g in keep]].copy()


#: 40 common lineage and CAF markers (``docs/gate.md``, Limits 5): the size of imaging
#: and targeted protein panels, and of the smallest targeted RNA panels
SMALL_PANEL = ("PTPRC CD3E CD68 EPCAM KRT8 KRT18 PECAM1 VWF COL1A1 COL1A2 PDGFRA PDGFRB ACTA2 RGS5 "
               "MCAM FAP PDPN CD74 HLA-DRA IL6 CXCL12 CFD C3 POSTN MMP11 TAGLN MYH11 DCN LUM VIM "
               "NOTCH3 CD34 S100A4 THY1 CXCL14 APOD MYL9 COL11A1 CD19 MS4A1").split()


def small_panel(a):
    """The genes of :data:`SMALL_PANEL` that the data have."""
    keep = set(SMALL_PANEL)
    return a[:, [g for g in a.var_names if g in keep]].copy()


@functools.cache
def thinned_tumour():
    """The unsorted tumour thinned to ~520 UMI (shared by its subtype rows and its gate
    table; callers copy it)."""
    return thinned(caf.simulate(n_cells=3000, n_genes=8000, random_state=2))


def synthetic_datasets():
    """``(name, AnnData)`` of every synthetic row, in the benchmark's order, each with its
    planted subtypes in ``obs["true_subtype"]`` (the designs of the module docstring)."""
    yield "synthetic control", caf.simulate(n_cells=3000, n_genes=8000, n_batches=2, random_state=0)
    yield ("synthetic, 70 % myCAF (apCAF, dCAF absent)",
           caf.simulate(n_cells=3000, n_genes=3000, subtype_fractions=MAJORITY, random_state=5))
    sorted_mouse = caf.simulate(n_cells=800, n_genes=8000, species="mouse",
                                lineage_fractions={"fibroblast": 1.0}, subtype_fractions=SORTED_MOUSE,
                                random_state=3)
    name = "synthetic sorted mouse CAFs, 68 % vCAF"
    yield name, sorted_mouse.copy()  # one simulation, three ways of sharing its values
    yield f"{name}, full-length reads", full_length_reads(sorted_mouse.copy())
    with tempfile.TemporaryDirectory() as tmp:
        tpm = log2_tpm(full_length_reads(sorted_mouse.copy()), Path(tmp))
    yield f"{name}, reads as log2(1 + TPM)", tpm
    yield ("synthetic tumour, full-length reads",
           full_length_reads(caf.simulate(n_cells=2000, n_genes=8000, random_state=4)))
    yield "synthetic tumour, 1,200-gene panel", caf.simulate(n_cells=3000, n_genes=1200, random_state=0)
    yield "synthetic tumour, ~520 UMI per cell", thinned_tumour()
    yield ("synthetic tumour, 306-gene marker panel",
           marker_panel(caf.simulate(n_cells=3000, n_genes=8000, random_state=0)))
