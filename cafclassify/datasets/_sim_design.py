"""Design of the synthetic tumour: gene sets, symbols, orthologue pairs and planted programmes.

Turns the signature library (or, when it is not importable, a built-in copy of
its sets) into the genes of the simulated matrix and the programmes planted on
them (:func:`_build_design`); :mod:`cafclassify.datasets._simulate` draws the
cells and their counts from this design. What the design plants, and why:

* Tumour-like lineage mix (epithelial/tumour ~35 %, immune ~35 %, fibroblasts
  ~15 %, endothelial ~7 %, mural ~3 %, other ~5 %); immune cells split into T, B,
  myeloid, plasma and mast cells.
* Lineage programmes on the lineage gene sets of the signature library (plus
  ~150 "hidden" lineage genes each that no signature names), CAF subtype
  programmes on the subtype sets (plus ~40 hidden genes each).
* Signature lists are imperfect: each listed gene carries the planted programme
  only with probability ``p_informative`` (default 0.75), the way literature
  lists contain genes that do not mark the subtype in a given tumour.
* Overlaps as in real tumours: genes shared between sets keep all their
  memberships (IL6 in iCAF, vCAF and senescence; CTHRC1 in myCAF and
  senescence); pericyte genes (RGS5, NOTCH3, MCAM, HIGD1B) in mural cells *and*
  vCAF; MHC-II/CD74 in myeloid and B cells *and* apCAF; contractile genes
  (ACTA2, TAGLN, MYL9) in mural cells *and* myCAF; SOX10/PLP1 in "other" glia
  *and* dCAF; a glycolysis/hypoxia programme in tumour cells and some
  fibroblasts (meCAF confound); an immediate-early "dissociation stress"
  programme (FOS, JUN, DUSP1, NFKBIA, CEBPD, ...) in ~15 % of all cells that hits
  iCAF list genes.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from .._errors import DataError

__all__ = ["SIM_SUBTYPES"]

logger = logging.getLogger(__name__)

#: CAF subtypes the simulator plants as mutually exclusive primary identities.
#: LTBP2-high, senescence and cycling are separate axes (obs columns), as in the
#: classifier.
SIM_SUBTYPES = ("myCAF", "iCAF", "apCAF", "meCAF", "vCAF", "dCAF")

_LINEAGE_SET = {
    "fibroblast": "fibroblast",
    "mural": "mural",
    "epithelial": "epithelial",
    "immune": "immune",
    "endothelial": "endothelial",
    "other": "other_lineage",
}
_DEFAULT_LINEAGE_FRACTIONS = {
    "epithelial": 0.35,
    "immune": 0.35,
    "fibroblast": 0.15,
    "endothelial": 0.07,
    "mural": 0.03,
    "other": 0.05,
}
_DEFAULT_SUBTYPE_FRACTIONS = {
    "myCAF": 0.36,
    "iCAF": 0.30,
    "meCAF": 0.12,
    "vCAF": 0.10,
    "apCAF": 0.08,
    "dCAF": 0.04,
}

# Built-in minimal copy of the caf_v1 sets (human symbols; positive genes), used
# ONLY when cafclassify.genesets is not importable. The library is the source of truth.
_FALLBACK_SETS: dict[str, list[str]] = {
    "fibroblast": ["COL1A1", "COL1A2", "COL3A1", "DCN", "LUM", "PDGFRA", "PDGFRB", "FAP", "PDPN",
                   "VIM", "FN1", "MMP2", "FBLN1", "PRRX1", "CDH11", "COL6A1"],
    "epithelial": ["EPCAM", "CDH1", "KRT8", "KRT18", "KRT19", "KRT7", "KRT5", "KRT14", "KRT13",
                   "KRT6A", "TP63", "SFN", "CLDN4"],
    "immune": ["PTPRC", "CD3E", "CD3D", "CD2", "NKG7", "GNLY", "MS4A1", "CD79A", "MZB1", "JCHAIN",
               "CD68", "CD14", "LYZ", "CSF1R", "AIF1", "LST1", "TYROBP", "FCER1G", "TPSAB1",
               "CPA3", "HBB"],
    "endothelial": ["PECAM1", "VWF", "CDH5", "CLDN5", "KDR", "EMCN", "RAMP2", "PLVAP", "PROX1",
                    "LYVE1"],
    "mural": ["RGS5", "KCNJ8", "ABCC9", "HIGD1B", "CSPG4", "MYH11", "DES", "CNN1", "ACTG2",
              "NDUFA4L2"],
    "other_lineage": ["SOX10", "S100B", "PLP1", "MPZ", "PMEL", "MLANA", "ADIPOQ", "PLIN1", "MSLN",
                      "UPK3B"],
    "myCAF": ["ACTA2", "FAP", "LOX", "MRC2", "COL1A1", "FN1", "TAGLN", "MYL9", "TPM1", "TPM2",
              "CALD1", "MMP11", "HOPX", "POSTN", "CTHRC1", "COL10A1", "INHBA", "BGN", "IGFBP7",
              "CCN2"],
    "iCAF": ["IL6", "CXCL8", "CXCL12", "IL11", "LIF", "CXCL1", "CXCL2", "CCL2", "CFD", "DPT", "C3",
             "HAS1", "FBLN1", "EFEMP1", "SOD2", "NFKBIA", "CEBPD", "PTGDS", "TNFAIP6", "PTX3",
             "PDGFRA"],
    "apCAF": ["HLA-DRA", "HLA-DRB1", "HLA-DPA1", "HLA-DPB1", "HLA-DQA1", "HLA-DQB1", "CD74",
              "HLA-DMA", "HLA-DMB", "SLPI", "CIITA"],
    "meCAF": ["SLC16A3", "SLC2A1", "LDHA", "PKM", "SLC16A1", "PLA2G2A", "CRABP2", "HK2", "PFKFB3",
              "PGK1", "ENO1", "ALDOA", "TPI1", "PGAM1", "GAPDH", "BNIP3"],
    "vCAF": ["VEGFA", "ANGPTL4", "IL6", "MMP9", "NOTCH3", "FGF2", "PDGFC", "ANGPT1", "NID2", "MCAM",
             "COL18A1", "ESAM", "HIGD1B", "GUCY1A1", "SPARCL1", "RGS5", "COL4A1", "COL4A2"],
    "dCAF": ["SCRG1", "SOX9", "SOX10", "NGFR", "PLP1", "CRYAB", "FABP7", "TBX2"],
    "LTBP2_CAF": ["LTBP2", "FBN1", "MFAP2", "MFAP4", "MFAP5", "ELN", "EMILIN1", "LOXL1", "LTBP1",
                  "FBN2"],
    "senescence": ["CDKN2A", "IL6", "IL1A", "IL1B", "TNF", "CXCL8", "CTHRC1", "GLB1", "IGF1",
                   "CDKN1A", "SERPINE1", "IGFBP3", "IGFBP7", "MMP1", "MMP3", "CCL2"],
    "cycling": ["MKI67", "TOP2A", "CENPF", "BIRC5", "CDK1", "UBE2C", "TPX2", "STMN1"],
}
_FALLBACK_NEGATIVE: dict[str, list[str]] = {"iCAF": ["ACTA2"]}

# Programmes that are biology rather than signatures (human, mouse) pairs.
_EXTRA: dict[str, list[tuple[str, str]]] = {
    "stress": [("FOS", "Fos"), ("FOSB", "Fosb"), ("JUN", "Jun"), ("JUNB", "Junb"),
               ("DUSP1", "Dusp1"), ("NR4A1", "Nr4a1"), ("EGR1", "Egr1"), ("ZFP36", "Zfp36"),
               ("IER2", "Ier2"), ("HSPA1A", "Hspa1a"), ("HSPA1B", "Hspa1b"), ("NFKBIA", "Nfkbia"),
               ("CEBPD", "Cebpd"), ("KLF4", "Klf4"), ("SOCS3", "Socs3"), ("SOD2", "Sod2")],
    "hypoxia": [("VEGFA", "Vegfa"), ("BNIP3", "Bnip3"), ("PGK1", "Pgk1"), ("LDHA", "Ldha"),
                ("SLC2A1", "Slc2a1"), ("ENO1", "Eno1"), ("NDRG1", "Ndrg1"), ("CA9", "Car9"),
                ("ANGPTL4", "Angptl4"), ("ADM", "Adm"), ("SLC16A3", "Slc16a3")],
    "contractile": [("ACTA2", "Acta2"), ("TAGLN", "Tagln"), ("MYL9", "Myl9"), ("CALD1", "Cald1"),
                    ("TPM2", "Tpm2"), ("MCAM", "Mcam"), ("NOTCH3", "Notch3"), ("PDGFRB", "Pdgfrb")],
    "vascular": [("ESAM", "Esam"), ("COL4A1", "Col4a1"), ("COL4A2", "Col4a2"),
                 ("SPARCL1", "Sparcl1"), ("COL18A1", "Col18a1")],
    "mhc2": [("HLA-DRA", "H2-Ea"), ("HLA-DRB1", "H2-Eb1"), ("HLA-DPA1", ""), ("HLA-DPB1", ""),
             ("HLA-DQA1", "H2-Aa"), ("HLA-DQB1", "H2-Ab1"), ("CD74", "Cd74"),
             ("HLA-DMA", "H2-DMa"), ("HLA-DMB", "H2-DMb1")],
    "T": [("CD3E", "Cd3e"), ("CD3D", "Cd3d"), ("CD2", "Cd2"), ("NKG7", "Nkg7"), ("GNLY", ""),
          ("IL7R", "Il7r"), ("CD8A", "Cd8a")],
    "B": [("MS4A1", "Ms4a1"), ("CD79A", "Cd79a"), ("CD79B", "Cd79b")],
    "plasma": [("MZB1", "Mzb1"), ("JCHAIN", "Jchain"), ("CD79A", "Cd79a")],
    "myeloid": [("CD68", "Cd68"), ("CD14", "Cd14"), ("LYZ", "Lyz2"), ("CSF1R", "Csf1r"),
                ("AIF1", "Aif1"), ("TYROBP", "Tyrobp"), ("FCER1G", "Fcer1g"), ("C1QA", "C1qa"),
                ("MMP9", "Mmp9"), ("IL1B", "Il1b"), ("TNF", "Tnf")],
    "mast": [("TPSAB1", "Tpsab1"), ("CPA3", "Cpa3"), ("KIT", "Kit")],
}
_IMMUNE_TYPES = ("T", "B", "myeloid", "plasma", "mast")
_IMMUNE_P = (0.50, 0.12, 0.28, 0.07, 0.03)


@dataclass
class _Programme:
    name: str
    idx: np.ndarray
    lfc: np.ndarray


@dataclass
class _Design:
    genes: list[str]
    base: np.ndarray  # log base weight per gene (sum of exp == 1)
    inv_disp: np.ndarray  # NB shape r per gene
    programmes: list[_Programme]
    prog_index: dict[str, int]
    soup: np.ndarray  # ambient profile (sums to 1)
    roles: np.ndarray
    source: str
    extra: dict = field(default_factory=dict)


# --------------------------------------------------------------------------- library


def _load_sets(signatures, species: str) -> tuple[dict[str, list[tuple[str, str]]], dict, str]:
    """Gene sets as lists of (human, species) symbol pairs, negatives, and a source label."""
    wanted = list(_FALLBACK_SETS)
    pos: dict[str, list[tuple[str, str]]] = {}
    neg: dict[str, list[tuple[str, str]]] = {}
    from ..genesets import load_signatures

    lib = load_signatures(signatures)
    source = f"{lib.name} {lib.version} sha256={lib.sha256[:12]}"
    for name in wanted:
        gs = lib.sets.get(name)
        if gs is not None:
            mouse = list(getattr(gs, "mouse", ()) or [None] * len(gs.genes))
            weights = list(getattr(gs, "weights", ()) or [1.0] * len(gs.genes))
            pairs = [(h, m or "") for h, m, _w in zip(gs.genes, mouse, weights, strict=False) if _w > 0]
            npairs = [(h, m or "") for h, m, _w in zip(gs.genes, mouse, weights, strict=False) if _w < 0]
        else:
            logger.warning("simulate: set %r not in library %s; using the built-in gene list for it.",
                           name, lib.name)
            hum = _FALLBACK_SETS[name] + _FALLBACK_NEGATIVE.get(name, [])
            mmap = _human_to_mouse(hum) if species == "mouse" else {g: g for g in hum}
            pairs = [(g, mmap.get(g, "")) for g in _FALLBACK_SETS[name]]
            npairs = [(g, mmap.get(g, "")) for g in _FALLBACK_NEGATIVE.get(name, [])]
        if species == "human":
            pairs = [(h, h) for h, _ in pairs]
            npairs = [(h, h) for h, _ in npairs]
        pos[name] = pairs
        neg[name] = npairs
    return pos, neg, source


def _human_to_mouse(genes: list[str]) -> dict[str, str]:
    """Orthologue map via cafclassify.genes (never by changing the case of a symbol)."""
    from ..genes import to_species

    return dict(to_species(genes, source="human", target="mouse"))


def _sym(pair: tuple[str, str], species: str) -> str:
    return pair[0] if species == "human" else pair[1]


# --------------------------------------------------------------------------- design


def _orthologue_pairs() -> list[tuple[str, str]]:
    """1:1 human/mouse protein-coding-like symbol pairs from the shipped Ensembl table."""
    import csv
    import gzip
    from importlib import resources

    try:
        ref = resources.files("cafclassify") / "_data" / "ensembl105_human2mouse.csv.gz"
        with ref.open("rb") as fh, gzip.open(fh, "rt", encoding="utf-8") as txt:
            rows = [(r[0].strip(), r[1].strip()) for r in csv.reader(txt) if len(r) >= 2]
    except (OSError, FileNotFoundError, ModuleNotFoundError):
        return []
    rows = [(h, m) for h, m in rows if h and m and not h.startswith(("MT-", "MIR", "LINC", "ENSG"))
            and "." not in h and "-AS" not in h]
    hc = pd.Series([h for h, _ in rows]).value_counts()
    mc = pd.Series([m for _, m in rows]).value_counts()
    return sorted({(h, m) for h, m in rows if hc[h] == 1 and mc[m] == 1})


def _background_symbols(n: int, species: str, *, exclude: set[str], rng: np.random.Generator) -> list[str]:
    """Real 1:1 orthologue symbols for background genes (placeholders if the table is absent)."""
    pairs = _orthologue_pairs()
    col = 0 if species == "human" else 1
    excl_upper = {e.upper() for e in exclude}
    pool = [p for p in pairs if p[0].upper() not in excl_upper and p[1].upper() not in excl_upper]
    if len(pool) >= n:
        pick = np.sort(rng.choice(len(pool), size=n, replace=False))
        return [pool[i][col] for i in pick]
    logger.info("simulate: orthologue table unavailable or too small; using placeholder gene names.")
    prefix = "SIMG" if species == "human" else "Simg"
    return [f"{prefix}{i:05d}" for i in range(1, n + 1)]


def _build_design(
    *, species: str, n_genes: int, signatures, program_strength: float, p_informative: float,
    n_batches: int, rng: np.random.Generator,
) -> _Design:
    pos, neg, source = _load_sets(signatures, species)
    named: list[str] = []
    seen: set[str] = set()

    def add(sym: str) -> None:
        if sym and sym not in seen:
            seen.add(sym)
            named.append(sym)

    for pairs in list(pos.values()) + list(neg.values()):
        for p in pairs:
            add(_sym(p, species))
    for pairs in _EXTRA.values():
        for p in pairs:
            add(_sym(p, species))
    if n_genes < len(named) + 200:
        raise DataError(
            f"n_genes={n_genes} is too small: the planted programmes alone use {len(named)} "
            "named genes and at least 200 background genes are needed.",
            fix=f"use n_genes >= {len(named) + 200}.",
        )
    n_bg = n_genes - len(named)
    background = _background_symbols(n_bg, species, exclude=seen, rng=rng)
    genes = named + background
    roles = np.array(["signature"] * len(named) + ["background"] * n_bg, dtype=object)
    gi = {g: i for i, g in enumerate(genes)}
    G = len(genes)

    # gene-specific baseline means (log-normal); named marker genes start lower
    base = rng.normal(0.0, 1.9, size=G)
    base[: len(named)] = rng.normal(-1.0, 1.2, size=len(named))
    base -= np.log(np.exp(base).sum())
    inv_disp = np.clip(np.exp(rng.normal(np.log(2.5), 0.6, size=G)), 0.3, 30.0)
    lib_ref = 6000.0
    m_base = lib_ref * np.exp(base)

    bg_pool = rng.permutation(np.arange(len(named), G))
    pool_pos = 0

    def hidden(n: int) -> np.ndarray:
        nonlocal pool_pos
        out = bg_pool[pool_pos : pool_pos + n]
        pool_pos += n
        return out

    def lfc_for(idx: np.ndarray, mean_on: float, sd: float = 0.9, floor: float = 0.7) -> np.ndarray:
        target = np.exp(rng.normal(np.log(mean_on), sd, size=idx.size))
        return np.maximum(np.log(target / m_base[idx]), floor) * program_strength

    programmes: list[_Programme] = []

    def add_prog(name: str, idx_list, lfc_list) -> None:
        idx = np.concatenate([np.asarray(i, dtype=np.int64) for i in idx_list])
        lfc = np.concatenate([np.asarray(v, dtype=np.float64) for v in lfc_list])
        # merge duplicates (a gene listed twice keeps its largest effect)
        df = pd.DataFrame({"i": idx, "l": lfc}).groupby("i")["l"].max()
        programmes.append(_Programme(name, df.index.to_numpy(np.int64), df.to_numpy(np.float32)))

    def set_idx(name: str) -> np.ndarray:
        return np.array([gi[_sym(p, species)] for p in pos[name] if _sym(p, species) in gi], dtype=np.int64)

    def extra_idx(name: str) -> np.ndarray:
        return np.array([gi[_sym(p, species)] for p in _EXTRA[name] if _sym(p, species) in gi], dtype=np.int64)

    # lineage programmes (all listed lineage genes carry them: lineage markers are reliable)
    for lin, set_name in _LINEAGE_SET.items():
        idx = set_idx(set_name)
        if lin == "immune":
            # immune sub-types carry their own markers; PTPRC etc. are shared
            sub = {g for t in _IMMUNE_TYPES for g in extra_idx(t)}
            idx = np.array([i for i in idx if i not in sub], dtype=np.int64)
        h = hidden(150)
        parts_i, parts_l = [idx, h], [lfc_for(idx, 6.0), lfc_for(h, 1.5, sd=0.7)]
        if lin == "mural":
            c = extra_idx("contractile")
            parts_i.append(c)
            parts_l.append(lfc_for(c, 8.0, sd=0.6))
        if lin == "endothelial":
            v = extra_idx("vascular")
            parts_i.append(v)
            parts_l.append(lfc_for(v, 4.0, sd=0.6))
        if lin == "fibroblast":
            # resting fibroblasts express some ACTA2 / contractile genes at low level
            c = extra_idx("contractile")[:3]
            parts_i.append(c)
            parts_l.append(lfc_for(c, 1.0, sd=0.4, floor=0.3))
        add_prog(f"lin:{lin}", parts_i, parts_l)
    for t in _IMMUNE_TYPES:
        idx = extra_idx(t)
        h = hidden(60)
        parts_i, parts_l = [idx, h], [lfc_for(idx, 6.0), lfc_for(h, 1.5, sd=0.7)]
        if t in ("B", "myeloid"):
            m = extra_idx("mhc2")
            parts_i.append(m)
            parts_l.append(lfc_for(m, 10.0 if t == "myeloid" else 6.0, sd=0.6))
        add_prog(f"imm:{t}", parts_i, parts_l)

    # CAF subtype programmes: imperfect lists (p_informative) + hidden DE genes
    informative: dict[str, list[str]] = {}
    for st in SIM_SUBTYPES:
        idx = set_idx(st)
        keep = rng.random(idx.size) < p_informative
        if keep.sum() < 2:  # never plant a programme on fewer than 2 listed genes
            keep[: min(2, idx.size)] = True
        idx = idx[keep]
        informative[st] = [genes[i] for i in idx]
        h = hidden(40)
        parts_i, parts_l = [idx, h], [lfc_for(idx, 3.0), lfc_for(h, 1.2, sd=0.7)]
        nidx = np.array([gi[_sym(p, species)] for p in neg[st] if _sym(p, species) in gi], dtype=np.int64)
        if nidx.size:
            parts_i.append(nidx)
            parts_l.append(np.full(nidx.size, -np.log(4.0) * program_strength))
        add_prog(f"sub:{st}", parts_i, parts_l)

    # state axes
    for st in ("senescence", "cycling"):
        idx = set_idx(st)
        h = hidden(20)
        add_prog(f"state:{st}", [idx, h], [lfc_for(idx, 3.0), lfc_for(h, 1.0)])
    lt = set_idx("LTBP2_CAF")
    lt_anchor = gi.get(_sym(pos["LTBP2_CAF"][0], species)) if pos["LTBP2_CAF"] else None
    lt_rest = np.array([i for i in lt if i != lt_anchor], dtype=np.int64)
    lt_rest = lt_rest[rng.random(lt_rest.size) < 0.6]
    parts_i, parts_l = [lt_rest], [lfc_for(lt_rest, 1.5, sd=0.5)]
    if lt_anchor is not None:
        parts_i.append(np.array([lt_anchor]))
        parts_l.append(lfc_for(np.array([lt_anchor]), 6.0, sd=0.3, floor=2.0))
    add_prog("axis:ltbp2", parts_i, parts_l)
    for name, mean_on in (("stress", 4.0), ("hypoxia", 3.0)):
        idx = extra_idx(name)
        add_prog(f"env:{name}", [idx], [lfc_for(idx, mean_on, sd=0.6)])
    # batches: gene-wise multiplicative effects on the log scale
    for b in range(1, n_batches):
        add_prog(f"batch:{b}", [np.arange(G)], [rng.normal(0.0, 0.25, size=G)])

    prog_index = {p.name: k for k, p in enumerate(programmes)}
    # ambient profile: population average of the lineage programmes
    soup_log = np.tile(base, (len(_LINEAGE_SET), 1))
    fr = np.array([_DEFAULT_LINEAGE_FRACTIONS[lin] for lin in _LINEAGE_SET])
    for r, lin in enumerate(_LINEAGE_SET):
        p = programmes[prog_index[f"lin:{lin}"]]
        soup_log[r, p.idx] += p.lfc
    soup_w = np.exp(soup_log)
    soup_w /= soup_w.sum(axis=1, keepdims=True)
    soup = (fr[:, None] * soup_w).sum(axis=0)
    soup /= soup.sum()
    for p in programmes:
        if not p.name.startswith("batch:"):
            roles[p.idx[roles[p.idx] == "background"]] = "hidden_" + p.name.split(":")[0]
    return _Design(
        genes=genes, base=base, inv_disp=inv_disp, programmes=programmes, prog_index=prog_index,
        soup=soup, roles=roles, source=source, extra={"informative": informative},
    )
