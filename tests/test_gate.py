"""Unit tests for cafclassify.tl.gate on synthetic data with planted lineages."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from anndata import AnnData

from cafclassify import _keys as K
from cafclassify._errors import ConfigError, DataError
from cafclassify.genesets import load_signatures
from cafclassify.tl import gate as _gate

LIB = load_signatures("caf_v1")
MARKERS = {n: list(LIB.sets[n].genes) for n in ("fibroblast", "mural", "epithelial", "immune", "endothelial")}
N_BG = 400


def gate(adata, **kw):
    """The synthetic background genes (BG0, BG1, ...) hide the species: say it."""
    return _gate(adata, species="human", **kw)


def _simulate(types: dict[str, int], *, seed: int = 0, dropout_fib: float = 0.0,
              drop_genes: tuple[str, ...] = ()) -> AnnData:
    """Log-normalised cells; each type expresses its lineage markers and its own
    block of background genes (so the clustering sees the type without the markers).

    ``mural`` cells also express a few fibroblast-set genes at a low level (shared
    biology), and ``dropout_fib`` of the fibroblasts lose every fibroblast marker.
    """
    rng = np.random.default_rng(seed)
    marker_genes = list(dict.fromkeys(g for v in MARKERS.values() for g in v))
    bg = [f"BG{i}" for i in range(N_BG)]
    genes = marker_genes + bg
    col = {g: i for i, g in enumerate(genes)}
    blocks = {t: rng.choice(N_BG, 150, replace=False) for t in MARKERS}
    # "unmarked": a population with no lineage marker at all (e.g. glia when the
    # other_lineage set is not measured); its block comes from its own generator so
    # the other types' data do not depend on whether it is requested
    blocks["unmarked"] = np.random.default_rng(seed + 10_000).choice(N_BG, 150, replace=False)
    rows, labels, dropped = [], [], []
    for t, n in types.items():
        for _ in range(n):
            lam = np.full(len(genes), 0.02)
            lam[len(marker_genes):] = rng.gamma(0.5, 0.4, N_BG)
            lam[[len(marker_genes) + b for b in blocks[t]]] += 3.0
            for g in MARKERS.get(t, []):
                lam[col[g]] = 4.0 if rng.random() < 0.7 else 0.3
            if t == "mural":
                for g in MARKERS["fibroblast"][:4]:
                    lam[col[g]] = 0.8
            drop = t == "fibroblast" and rng.random() < dropout_fib
            if drop:
                for g in MARKERS["fibroblast"]:
                    lam[col[g]] = 0.0
            counts = rng.poisson(lam)
            rows.append(counts)
            labels.append(t)
            dropped.append(drop)
    C = np.vstack(rows).astype(float)
    lib = C.sum(1, keepdims=True)
    X = np.log1p(C / np.maximum(lib, 1) * 1e4)
    obs = pd.DataFrame({"truth": labels, "dropped": dropped},
                       index=[f"c{i}" for i in range(len(labels))])
    ad = AnnData(sp.csr_matrix(X.astype(np.float32)), obs=obs, var=pd.DataFrame(index=genes))
    if drop_genes:
        ad = ad[:, ~ad.var_names.isin(drop_genes)].copy()
    return ad


MIXED = {"fibroblast": 100, "mural": 40, "epithelial": 80, "immune": 80, "endothelial": 40}


@pytest.fixture(scope="module")
def mixed():
    ad = _simulate(MIXED)
    ref = ad.copy()
    gate(ad)
    return ad, ref


def test_planted_lineages_recovered(mixed):
    ad, _ = mixed
    lab = ad.obs[K.OBS_LINEAGE]
    assert list(lab.cat.categories) == list(K.LINEAGES)
    acc = (lab.astype(str).to_numpy() == ad.obs["truth"].to_numpy()).mean()
    assert acc >= 0.95
    fib = (lab == "fibroblast").to_numpy()
    truth_fib = (ad.obs["truth"] == "fibroblast").to_numpy()
    assert (fib & truth_fib).sum() / truth_fib.sum() >= 0.95
    assert (fib & truth_fib).sum() / fib.sum() >= 0.95


def test_dropout_cells_keep_cluster_call():
    # 20% of the fibroblasts have lost every fibroblast marker; given the clusters,
    # only the cluster-level decision can call them fibroblasts
    ad = _simulate({"fibroblast": 100, "immune": 60, "mural": 40}, seed=2, dropout_fib=0.2)
    ad.obs["cl"] = ad.obs["truth"].astype("category")
    gate(ad, cluster_key="cl")
    dropped = ad.obs["dropped"].to_numpy()
    assert dropped.sum() >= 10
    assert (ad.obs.loc[dropped, K.OBS_LINEAGE] == "fibroblast").all()
    conf = ad.obs[K.OBS_LINEAGE_CONF].to_numpy()
    keep = (ad.obs["truth"] == "fibroblast").to_numpy() & ~dropped
    assert conf[dropped].mean() < conf[keep].mean()


def test_mural_not_fibroblast(mixed):
    ad, _ = mixed
    m = (ad.obs["truth"] == "mural").to_numpy()
    assert (ad.obs.loc[m, K.OBS_LINEAGE] == "mural").mean() >= 0.9


def test_outputs_and_provenance(mixed):
    ad, ref = mixed
    conf = ad.obs[K.OBS_LINEAGE_CONF].to_numpy()
    assert np.all((conf >= 0) & (conf <= 1))
    assert isinstance(ad.obs[K.OBS_LINEAGE_CLUSTER].dtype, pd.CategoricalDtype)
    sc = ad.obsm[K.OBSM_LINEAGE_SCORES]
    assert isinstance(sc, pd.DataFrame) and sc.index.equals(ad.obs_names)
    assert {"fibroblast", "mural", "immune"} <= set(sc.columns)
    u = ad.uns[K.UNS][K.UNS_GATE]
    assert {"params", "counts", "clusters", "missing_markers", "warnings", "pregated"} <= set(u)
    assert sum(u["counts"].values()) == ad.n_obs
    assert u["counts"]["fibroblast"] == int((ad.obs[K.OBS_LINEAGE] == "fibroblast").sum())
    tab = pd.DataFrame(u["clusters"])
    assert tab["size"].sum() == ad.n_obs and "margin" in tab
    # X untouched
    assert (ad.X != ref.X).nnz == 0


def test_copy_and_determinism():
    ad = _simulate({"fibroblast": 50, "immune": 50, "epithelial": 40}, seed=3)
    X0 = ad.X.copy()
    out = gate(ad, copy=True)
    assert out is not None and K.OBS_LINEAGE not in ad.obs and (ad.X != X0).nnz == 0
    out2 = gate(ad, copy=True)
    assert out.obs[K.OBS_LINEAGE].equals(out2.obs[K.OBS_LINEAGE])
    assert np.array_equal(out.obs[K.OBS_LINEAGE_CONF], out2.obs[K.OBS_LINEAGE_CONF])
    assert gate(ad) is None and K.OBS_LINEAGE in ad.obs
    # dense input gives the same labels as CSR
    dense = AnnData(ad.X.toarray(), obs=ad.obs[["truth"]].copy(), var=ad.var.copy())
    gate(dense)
    assert (dense.obs[K.OBS_LINEAGE].astype(str) == ad.obs[K.OBS_LINEAGE].astype(str)).all()


def test_no_fibroblasts_warns(caplog):
    ad = _simulate({"immune": 80, "epithelial": 60}, seed=4)
    with caplog.at_level("WARNING"):
        gate(ad)
    assert (ad.obs[K.OBS_LINEAGE] == "fibroblast").sum() <= 1
    w = ad.uns[K.UNS][K.UNS_GATE]["warnings"]
    assert any("fibroblasts" in m and "subtyping" in m for m in w)
    assert "fibroblasts" in caplog.text


def test_log_values_of_another_base_are_warned(mixed, caplog):
    """Data built by hand with log2(1 + CPM) values: the gate says they are not the
    ln(1 + CP10k) it assumes (cafclassify.read would rewrite them)."""
    ad = _simulate(MIXED)
    X = ad.X.copy()
    X.data = np.log2(1 + np.expm1(X.data) * 100)  # ln(1 + CP10k) -> log2(1 + CPM)
    ad.X = X
    with caplog.at_level("WARNING"):
        gate(ad)
    w = ad.uns[K.UNS][K.UNS_GATE]["warnings"]
    assert any("log2(1 + x) values of 1,000,000 per cell" in m and "cafclassify.read" in m for m in w)
    assert "log2(1 + x)" in caplog.text
    assert not any("per cell, not ln(1 + x)" in m for m in mixed[0].uns[K.UNS][K.UNS_GATE]["warnings"])


def test_pregated_keeps_all_cells_and_flags_contaminants():
    ad = _simulate({"fibroblast": 120, "immune": 8}, seed=5)
    gate(ad, pregated=True)
    assert (ad.obs[K.OBS_LINEAGE] == "fibroblast").all()
    pg = ad.uns[K.UNS][K.UNS_GATE]["pregated"]
    assert pg["given"] is True
    assert 6 <= pg["n_possible_contaminants"] <= 12
    # auto-detection without the flag: labels stay honest, detection is recorded
    pure = _simulate({"fibroblast": 100}, seed=6)
    gate(pure)
    assert pure.uns[K.UNS][K.UNS_GATE]["pregated"]["detected"] is True
    assert (pure.obs[K.OBS_LINEAGE] == "fibroblast").mean() >= 0.9


def test_missing_markers_recorded():
    drop = ("COL1A1", "DCN", "LUM", "FAP")
    ad = _simulate({"fibroblast": 60, "immune": 60}, seed=7, drop_genes=drop)
    gate(ad)
    miss = ad.uns[K.UNS][K.UNS_GATE]["missing_markers"]["fibroblast"]
    assert set(drop) <= set(miss)
    truth = (ad.obs["truth"] == "fibroblast").to_numpy()
    assert ((ad.obs[K.OBS_LINEAGE] == "fibroblast").to_numpy() == truth).mean() >= 0.95


def test_subsampled_graph_assigns_every_cell():
    ad = _simulate({"fibroblast": 120, "immune": 120, "epithelial": 100}, seed=8)
    gate(ad, max_cells_graph=150)
    emb = ad.uns[K.UNS][K.UNS_GATE]["embedding"]
    assert emb["subsampled"] is True and emb["n_cells_graph"] == 150
    assert ad.obs[K.OBS_LINEAGE_CLUSTER].notna().all()
    acc = (ad.obs[K.OBS_LINEAGE].astype(str).to_numpy() == ad.obs["truth"].to_numpy()).mean()
    assert acc >= 0.95


def test_cluster_key_and_tiny_data():
    ad = _simulate({"fibroblast": 40, "immune": 40}, seed=9)
    ad.obs["my_cl"] = ad.obs["truth"].astype("category")
    gate(ad, cluster_key="my_cl")
    assert set(ad.obs[K.OBS_LINEAGE_CLUSTER].astype(str)) == {"fibroblast", "immune"}
    assert (ad.obs[K.OBS_LINEAGE].astype(str) == ad.obs["truth"]).mean() >= 0.95
    tiny = _simulate({"fibroblast": 8, "immune": 8}, seed=10)
    gate(tiny)
    assert "per-cell" in tiny.uns[K.UNS][K.UNS_GATE]["embedding"]["source"]
    assert (tiny.obs[K.OBS_LINEAGE].astype(str) == tiny.obs["truth"]).mean() >= 0.8


def test_bad_input_errors():
    ad = _simulate({"fibroblast": 20, "immune": 20}, seed=11)
    with pytest.raises(ConfigError):
        gate(ad, method="zmean")
    with pytest.raises(DataError):
        gate(ad, layer="nope")
    with pytest.raises(DataError):
        gate(ad, cluster_key="nope")
    with pytest.raises(ConfigError):
        gate(ad, resolution=-1.0)


# ---------------------------------------------------------------------------
# stage 2: whole-profile refinement
# ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def mixed_cluster():
    """20% of the fibroblasts have lost every fibroblast marker and sit, with
    epithelial-like cells whose markers are not measured, in one given cluster
    (a "mixed low-quality cluster"): stage 1 can only call that cluster ambiguous."""
    epi = tuple(MARKERS["epithelial"])
    ad = _simulate({"fibroblast": 150, "immune": 80, "epithelial": 80}, seed=12, dropout_fib=0.2,
                   drop_genes=epi)
    truth = ad.obs["truth"].to_numpy()
    dropped = ad.obs["dropped"].to_numpy()
    ad.obs["cl"] = pd.Categorical(np.where(dropped | (truth == "epithelial"), "mixed", truth))
    return ad


def test_refine_rescues_markerless_fibroblasts_but_not_unseeded_cells(mixed_cluster):
    ad = mixed_cluster.copy()
    gate(ad, cluster_key="cl")
    lab = ad.obs[K.OBS_LINEAGE].astype(str).to_numpy()
    st1 = ad.obs[K.OBS_LINEAGE_STAGE1].astype(str).to_numpy()
    dropped = ad.obs["dropped"].to_numpy()
    epi = (ad.obs["truth"] == "epithelial").to_numpy()
    assert dropped.sum() >= 20
    # stage 1 has no evidence for them; stage 2 recognises the fibroblast profile
    assert (st1[dropped] == "other").mean() >= 0.9
    assert (lab[dropped] == "fibroblast").mean() >= 0.8
    # epithelial cells have no seeds (no marker measured): never a seeded lineage
    assert (lab[epi] == "other").mean() >= 0.95
    assert (lab[epi] == "fibroblast").sum() == 0
    ref = ad.uns[K.UNS][K.UNS_GATE]["refine"]
    assert ref["applied"] is True
    assert ref["n_seeds"]["fibroblast"] >= 100 and ref["n_seeds"]["unmarked"] >= 50
    assert ref["cv_balanced_accuracy"]["lineage_model"] >= 0.9
    # the change table is exactly the difference between stage 1 and the final call
    n_tab = sum(v for row in ref["changes"].values() for v in row.values())
    assert n_tab == ref["n_changed"] == int((st1 != lab).sum())
    assert ref["changes"]["other"]["fibroblast"] == int(((st1 == "other") & (lab == "fibroblast")).sum())


def test_refine_false_keeps_stage1(mixed_cluster):
    ad = mixed_cluster.copy()
    gate(ad, cluster_key="cl", refine=False)
    lab = ad.obs[K.OBS_LINEAGE].astype(str)
    assert lab.equals(ad.obs[K.OBS_LINEAGE_STAGE1].astype(str))
    assert (lab[ad.obs["dropped"].to_numpy()] == "other").mean() >= 0.9
    assert ad.uns[K.UNS][K.UNS_GATE]["refine"]["applied"] is False
    with pytest.raises(ConfigError):
        gate(ad, refine="yes")


def test_refine_never_moves_cells_of_unlearnt_lineages():
    # 6 mural cells: too few seeds to learn the class, so stage 2 cannot judge
    # (or relabel) them, and no cell can become mural in stage 2
    ad = _simulate({"fibroblast": 100, "immune": 80, "mural": 6}, seed=13)
    gate(ad)
    ref = ad.uns[K.UNS][K.UNS_GATE]["refine"]
    assert "mural" in ref["lineages_not_learnt"]
    st1 = ad.obs[K.OBS_LINEAGE_STAGE1].astype(str).to_numpy()
    lab = ad.obs[K.OBS_LINEAGE].astype(str).to_numpy()
    assert np.array_equal(lab[st1 == "mural"], st1[st1 == "mural"])
    assert not ((lab == "mural") & (st1 != "mural")).any()


def test_pregated_contaminant_flag():
    ad = _simulate({"fibroblast": 120, "immune": 8}, seed=5)
    gate(ad, pregated=True)
    flag = ad.obs[K.OBS_LINEAGE_CONTAMINANT].to_numpy()
    assert flag.dtype == bool
    assert flag.sum() == ad.uns[K.UNS][K.UNS_GATE]["pregated"]["n_possible_contaminants"]
    imm = (ad.obs["truth"] == "immune").to_numpy()
    assert flag[imm].mean() >= 0.75 and flag[~imm].mean() <= 0.02
    plain = _simulate({"fibroblast": 60, "immune": 30}, seed=6)
    gate(plain)
    assert K.OBS_LINEAGE_CONTAMINANT not in plain.obs


# ---------------------------------------------------------------------------
# hierarchical step: the mesenchymal compartment is re-clustered on its own
# ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def fused_mural():
    """One given cluster fuses mural cells with an unmarked population and a few
    fibroblasts (as a coarse global clustering of a tumour does): only a
    clustering of the compartment alone can take them apart."""
    ad = _simulate({"fibroblast": 120, "mural": 60, "unmarked": 30, "immune": 80, "endothelial": 40},
                   seed=14)
    truth = ad.obs["truth"].to_numpy()
    fused = np.isin(truth, ["mural", "unmarked"])
    fused[np.flatnonzero(truth == "fibroblast")[:12]] = True
    ad.obs["cl"] = pd.Categorical(np.where(fused, "fused", truth))
    ad.obs["fused"] = fused
    return ad


def test_stroma_splits_a_fused_mural_cluster(fused_mural):
    off = fused_mural.copy()
    gate(off, cluster_key="cl", refine=False, stroma=False)
    on = fused_mural.copy()
    gate(on, cluster_key="cl", refine=False, stroma=True)
    truth = on.obs["truth"].to_numpy()
    fused = on.obs["fused"].to_numpy()
    lab_off = off.obs[K.OBS_LINEAGE].astype(str).to_numpy()
    lab_on = on.obs[K.OBS_LINEAGE].astype(str).to_numpy()
    unm, fib_in = truth == "unmarked", fused & (truth == "fibroblast")
    # globally the fused cluster is mural: the unmarked cells inherit it (most planted
    # fibroblasts leave it through the per-cell override: strong own markers)
    assert (lab_off[unm] == "mural").mean() >= 0.9
    # in the compartment they form their own sub-clusters, decided by the same test
    assert (lab_on[unm] == "other").mean() >= 0.9
    assert (lab_on[fib_in] == "fibroblast").mean() >= 0.9
    assert (lab_on[truth == "mural"] == "mural").mean() >= 0.95
    # cells outside the compartment are untouched
    outside = np.isin(truth, ["immune", "endothelial"])
    assert np.array_equal(lab_on[outside], lab_off[outside])
    st = on.uns[K.UNS][K.UNS_GATE]["stroma"]
    assert st["applied"] is True and st["from_clusters"] == ["fibroblast", "fused"]
    assert st["n_cells"] == int(np.isin(truth, ["fibroblast", "mural", "unmarked"]).sum())
    n_tab = sum(v for row in st["changes"].values() for v in row.values())
    assert n_tab == st["n_changed"] == int((lab_on != lab_off).sum())
    # the decision cluster of compartment cells is their sub-cluster
    cl = on.obs[K.OBS_LINEAGE_CLUSTER].astype(str)
    comp = np.isin(truth, ["fibroblast", "mural", "unmarked"])
    assert cl[comp].str.startswith("stroma.").all() and not cl[~comp].str.startswith("stroma.").any()
    assert set(cl[comp]) == set(st["subclusters"]["cluster"])
    assert on.uns[K.UNS][K.UNS_GATE]["params"]["stroma"] is True


def test_stroma_graph_is_capped_and_options_checked(fused_mural):
    ad = fused_mural.copy()
    gate(ad, cluster_key="cl", refine=False, stroma=True, max_cells_graph=100)
    st = ad.uns[K.UNS][K.UNS_GATE]["stroma"]
    assert st["n_cells"] > 100
    assert st["embedding"]["subsampled"] is True and st["embedding"]["n_cells_graph"] == 100
    # every compartment cell still got a sub-cluster and a call
    cl = ad.obs[K.OBS_LINEAGE_CLUSTER].astype(str)
    assert cl.str.startswith("stroma.").sum() == st["n_cells"]
    unm = (ad.obs["truth"] == "unmarked").to_numpy()
    assert (ad.obs.loc[unm, K.OBS_LINEAGE] == "other").mean() >= 0.8
    with pytest.raises(ConfigError):
        gate(ad, stroma="yes")
    off = fused_mural.copy()
    gate(off, cluster_key="cl", refine=False)  # opt-in: off by default
    assert off.uns[K.UNS][K.UNS_GATE]["stroma"] == {"applied": False, "reason": "stroma=False"}


def test_contractile_fibroblasts_stay_fibroblasts_pericytes_leave():
    """Issue 14: a fibroblast that also expresses contractile/mural genes but keeps its
    fibroblast genes stays a fibroblast; a pericyte embedded in the fibroblast cluster
    (mural genes, only the low fibroblast genes mural cells share) leaves it."""
    a = _simulate({"fibroblast": 160, "immune": 60, "mural": 60}, seed=5)
    X = a.X.toarray()
    rng = np.random.default_rng(1)
    fib = np.flatnonzero(a.obs["truth"].to_numpy() == "fibroblast")
    contractile, peri_in_fib = fib[:15], fib[15:25]
    mural_cols = [list(a.var_names).index(g) for g in MARKERS["mural"][:8]]
    level = np.log1p(4.0 / 600 * 1e4)  # ~4 counts of a ~600-count cell
    for i in contractile:  # mural genes on top of a full fibroblast profile
        X[i, mural_cols] = level * rng.uniform(0.7, 1.0, len(mural_cols))
    mural_cells = np.flatnonzero(a.obs["truth"].to_numpy() == "mural")
    X[peri_in_fib] = X[mural_cells[:len(peri_in_fib)]]  # pericytes, placed in the fibroblast cluster
    a.X = sp.csr_matrix(X.astype(np.float32))
    a.obs["cl"] = a.obs["truth"].astype("category")  # both groups sit in the fibroblast cluster
    gate(a, cluster_key="cl")
    lab = a.obs[K.OBS_LINEAGE].astype(str).to_numpy()
    assert (lab[contractile] == "fibroblast").all()
    assert (lab[peri_in_fib] == "mural").mean() >= 0.9


# ---------------------------------------------------------------------------
# contested clusters: a cluster call speaks for cells without evidence only when the
# cells with evidence do not, significantly, say that most of the cluster is something else
# ---------------------------------------------------------------------------
def _scores(groups: list[tuple[str, int, tuple[float, float, float]]]):
    """Lineage scores (fibroblast, immune, endothelial) per cell from (cluster, n,
    excess over the null in null SDs) groups; mu 0.1 and sigma 0.05 for every set."""
    rows, cl = [], []
    for name, n, d in groups:
        rows += [d] * n
        cl += [name] * n
    D = np.array(rows, dtype=float)
    mu = np.full_like(D, 0.1)
    sigma = np.full(3, 0.05)
    return mu + D * sigma, mu, sigma, np.array(cl, dtype=object)


def test_contested_cluster_does_not_pass_its_call_to_cells_without_evidence():
    from cafclassify.tl._gate_decide import _decide

    labels = ["fibroblast", "immune", "endothelial"]
    sub, ev = 2.0, 4.0  # below / above the per-cell threshold (z 2.33 at alpha 0.01)
    S, mu, sigma, cl = _scores([
        ("F", 100, (ev, -1, -1)), ("I", 100, (-1, ev, -1)), ("E", 60, (-1, -1, ev)),
        # shallow cells of every lineage: endothelial wins the cluster mean, but 50 of
        # the 70 cells with evidence name other lineages
        ("X", 60, (0, 0, sub)), ("X", 20, (0, 0, ev)), ("X", 25, (0, ev, 0)),
        ("X", 25, (ev, 0, 0)), ("X", 30, (0, 0, 0)),
        # few cells with evidence, one of three agreeing: not significant, so the call
        # stays with the cells without evidence (absence of evidence moves no cell)
        ("G", 50, (0.5, 0, 0)), ("G", 1, (ev, 0, 0)), ("G", 2, (0, ev, 0)),
    ])
    res = _decide(S, mu, sigma, cl, labels)
    tab = res["table"].set_index("cluster")
    assert tab.loc["X", "lineage"] == "endothelial"
    assert tab.loc["X", "evidence_purity"] == pytest.approx(20 / 70)
    assert bool(tab.loc["X", "contested"]) and not tab.drop("X")["contested"].any()
    final = res["final"]
    idx = np.flatnonzero(cl == "X")
    no_ev = np.r_[idx[:60], idx[130:]]  # below the threshold, or nothing at all
    assert (final[no_ev] == -1).all() and res["unplaced"][no_ev].all()
    assert res["unplaced"].sum() == 90
    # the cells with evidence take their own lineage
    assert (final[idx[60:80]] == 2).all() and (final[idx[80:105]] == 1).all()
    assert (final[idx[105:130]] == 0).all()
    g = cl == "G"
    assert tab.loc["G", "lineage"] == "fibroblast" and not bool(tab.loc["G", "contested"])
    assert (final[g][:50] == 0).all() and not res["unplaced"][g].any()


def test_thinned_tumour_contested_cluster_keeps_fibroblasts():
    """The shallow cells of every lineage of a tumour thinned to ~520 UMI per cell form one
    cluster that only the endothelial set passes; its cells without evidence must not all
    become endothelial (benchmarks/bench_real.py, row "~520 UMI per cell")."""
    import cafclassify as caf

    a = caf.simulate(n_cells=3000, n_genes=8000, random_state=2)
    X = sp.csr_matrix(a.X)
    X.data = np.random.default_rng(0).binomial(X.data.astype(np.int64), 0.1).astype(np.float32)
    X.eliminate_zeros()
    a.X = X
    caf.pp.qc(a)
    a = a[a.obs["qc_pass"].to_numpy()].copy()
    caf.gate(a)
    u = a.uns[K.UNS][K.UNS_GATE]
    assert len(u["contested"]["clusters"]) >= 1 and u["contested"]["n_unplaced_cells"] >= 100
    warn = [w for w in u["warnings"] if "contested" in w]
    assert len(warn) == 1 and f"{u['contested']['n_unplaced_cells']} cells without evidence" in warn[0]
    # its cells whose own evidence names the call still seed that lineage in stage 2
    called = u["contested"]["calls"][0]
    assert u["refine"]["n_seeds"][called] >= 50
    truth = a.obs["true_lineage"].astype(str).to_numpy()
    lab = a.obs[K.OBS_LINEAGE].astype(str).to_numpy()
    st1 = a.obs[K.OBS_LINEAGE_STAGE1].astype(str).to_numpy()
    fib = truth == "fibroblast"
    assert (lab[fib] == "fibroblast").mean() >= 0.92  # 0.898 when the call was passed on
    assert (truth[lab == "fibroblast"] == "fibroblast").mean() >= 0.99
    # the contested cluster's call no longer goes to cells of other lineages without evidence
    cl = a.obs[K.OBS_LINEAGE_CLUSTER].astype(str).to_numpy()
    in_x = cl == u["contested"]["clusters"][0]
    assert ((st1 == called) & in_x & (truth != called)).sum() < ((truth != called) & in_x).sum() / 3


def test_leiden_keeps_the_best_of_its_starts():
    """The embedding's clusters are the highest-modularity partition of its Leiden starts
    (``_gate_embed._leiden_best``): never worse than any single start, and reproducible."""
    import anndata as ad
    import igraph as ig
    import scanpy as sc
    from sklearn.neighbors import NearestNeighbors

    from cafclassify.tl._gate_embed import _leiden_best

    rng = np.random.default_rng(0)
    centres = rng.normal(0, 3, (6, 10))
    X = centres[rng.integers(0, 6, 600)] + rng.normal(0, 2.5, (600, 10))  # overlapping groups
    adj = NearestNeighbors(n_neighbors=10).fit(X).kneighbors_graph(X, mode="connectivity")
    adj.setdiag(0)
    adj.eliminate_zeros()
    adj = adj.maximum(adj.T).tocsr()
    emb = ad.AnnData(np.zeros((600, 1), dtype=np.float32))
    src, dst = adj.nonzero()
    g = ig.Graph(n=600, edges=[(i, j) for i, j in zip(src, dst, strict=True) if i < j])

    lab, info = _leiden_best(emb, adj, resolution=1.0, random_state=3, n_runs=5)
    singles, labels = [], []
    for i in range(5):  # the starts it documents (random_state * n_runs + i), each scanpy's run
        sc.tl.leiden(emb, resolution=1.0, flavor="igraph", n_iterations=2, random_state=15 + i,
                     key_added="c", adjacency=adj)
        labels.append(emb.obs["c"].astype(int).to_numpy())
        singles.append(g.modularity(labels[-1].tolist(), resolution=1.0))
    assert np.array_equal(lab, labels[int(np.argmax(singles))])  # scanpy's labels of the best start
    assert info["leiden_runs"] == 5
    assert info["modularity"] == pytest.approx(max(singles))
    assert info["modularity_range"] == pytest.approx([min(singles), max(singles)])
    assert g.modularity(lab.tolist(), resolution=1.0) == pytest.approx(max(singles))
    again, _ = _leiden_best(emb, adj, resolution=1.0, random_state=3, n_runs=5)
    assert np.array_equal(lab, again)
    one, info1 = _leiden_best(emb, adj, resolution=1.0, random_state=3, n_runs=1)
    assert info1["modularity"] <= info["modularity"]
