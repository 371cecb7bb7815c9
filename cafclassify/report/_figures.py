"""Figures for the HTML reports, returned as embedded ``data:image/png;base64`` URIs.

Every function builds one matplotlib figure with the Agg backend (no display, no
``pyplot.show``), encodes it as PNG at a modest dpi to keep the report small and
closes it. Colours come from :mod:`cafclassify.report._colors` so a label looks the
same in every figure and on every page.
"""

from __future__ import annotations

import base64
import io
import logging
from collections.abc import Mapping, Sequence

import matplotlib

matplotlib.use("Agg", force=False)

import matplotlib.pyplot as plt
import matplotlib.ticker
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from ._colors import color_for

logger = logging.getLogger(__name__)

DPI = 120

__all__ = [
    "DPI",
    "MIN_BIN_CELLS",
    "compute_umap",
    "draw_reliability_curve",
    "fig_confusion",
    "fig_dotplot",
    "fig_embedding_categorical",
    "fig_embedding_continuous",
    "fig_proportions",
    "fig_qc_distributions",
    "fig_reliability",
    "fig_score_distributions",
    "to_data_uri",
]


def to_data_uri(fig: Figure, *, dpi: int = DPI) -> str:
    """Encode ``fig`` as a base64 PNG data URI and close it."""
    buf = io.BytesIO()
    try:
        fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight", facecolor="white")
    finally:
        plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def png_display_size(uri: str, *, dpi: int = DPI) -> tuple[int, int] | None:
    """CSS pixel size of an embedded PNG drawn at ``dpi`` (its size in inches x 96)."""
    try:
        head = base64.b64decode(uri.split(",", 1)[1][:44])
    except (ValueError, IndexError):
        return None
    if head[:8] != b"\x89PNG\r\n\x1a\n":
        return None
    w, h = int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")
    return round(w * 96 / dpi), round(h * 96 / dpi)


def _new(figsize: tuple[float, float], nrows: int = 1, ncols: int = 1, **kw):
    fig, axes = plt.subplots(nrows, ncols, figsize=figsize, squeeze=False, **kw)
    return fig, axes


def _style(ax) -> None:
    ax.spines["top"].set_visible(False)
    ax.spines["right"].set_visible(False)
    ax.tick_params(labelsize=8)


# --------------------------------------------------------------------------- QC
_QC_PANELS = (
    ("n_genes_by_counts", "genes detected per cell", ("gene",)),
    ("total_counts", "counts per cell", ("count", "umi")),
    ("pct_counts_mt", "mitochondrial counts (%)", ("mt", "mito")),
)


def _threshold_lines(thresholds: Mapping[str, Mapping[str, float]], words: Sequence[str]):
    """Pick cut-offs (``min_*``/``max_*``) whose name mentions one of ``words``."""
    out = []
    for sample, values in thresholds.items():
        for name, value in values.items():
            lname = name.lower()
            if not lname.startswith(("min", "max", "lower", "upper")):
                continue  # medians, cell numbers: not cut-offs
            if "mt" in words and "mt" not in lname and "mito" not in lname:
                continue
            if "mt" not in words and ("mt" in lname.split("_") or "mito" in lname):
                continue
            if any(w in lname for w in words):
                out.append((str(sample), name, float(value)))
    return out


def _compact(x: float, _pos=None) -> str:
    """Tick label: 1,500 -> 1.5k, 20,000 -> 20k (short labels never overlap)."""
    if abs(x) >= 1000:
        v = x / 1000
        return f"{v:.0f}k" if v == int(v) or abs(v) >= 10 else f"{v:.1f}k"
    return f"{x:g}"


def fig_qc_distributions(
    obs: pd.DataFrame,
    *,
    thresholds: Mapping[str, Mapping[str, float]],
    pass_key: str | None,
    labels: Mapping[str, str] | None = None,
    drop: Sequence[str] = (),
    notes: Mapping[str, str] | None = None,
) -> str | None:
    """Histograms of genes, counts and mt% per cell with the QC thresholds drawn.

    ``labels`` renames a panel's axis (e.g. the "counts" of log-normalised data are
    sums of log values), ``drop`` leaves panels out (mt% without mitochondrial
    genes), ``notes`` writes a line into a panel (why it has no threshold). The x
    range is the data's: a threshold far outside it is named in the panel, not
    drawn at the end of a stretched axis.
    """
    labels = dict(labels or {})
    notes = dict(notes or {})
    panels = [(c, labels.get(c, lab), w) for c, lab, w in _QC_PANELS if c in obs.columns and c not in drop]
    if not panels:
        return None
    fig, axes = _new((4.0 * len(panels), 3.0), 1, len(panels))
    passed = None
    if pass_key is not None and pass_key in obs.columns:
        passed = obs[pass_key].astype(bool).to_numpy()
    sample_colors = {}
    for ax, (col, label, words) in zip(axes[0], panels, strict=False):
        values = pd.to_numeric(obs[col], errors="coerce").to_numpy(dtype=float)
        finite = np.isfinite(values)
        v = values[finite]
        log = col == "total_counts" and v.size > 0 and v.min() > 0 and v.max() / v.min() > 30
        if v.size == 0:
            ax.set_visible(False)
            continue
        if v.max() == v.min():  # e.g. no mitochondrial genes: every cell at 0
            bins = np.linspace(v.min() - 0.5, v.min() + 0.5, 11)
            log = False
            ax.text(0.5, 0.9, f"all cells: {v.min():g}", transform=ax.transAxes, ha="center",
                    fontsize=8)
        elif log:
            bins = np.logspace(np.log10(v.min()), np.log10(v.max()), 50)
        else:
            bins = np.linspace(v.min(), v.max(), 50)
        if passed is not None and (~passed).any():
            ax.hist(values[finite & passed], bins=bins, color="#4e79a7", alpha=0.8, label="kept")
            ax.hist(values[finite & ~passed], bins=bins, color="#e15759", alpha=0.7, label="removed")
            ax.legend(fontsize=7, frameon=False)
        else:
            ax.hist(v, bins=bins, color="#4e79a7", alpha=0.85)
        if log:
            ax.set_xscale("log")
            ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        lines = _threshold_lines(thresholds, words)
        lo, hi = float(v.min()), float(v.max())
        span = (hi - lo) or 1.0
        off = []
        for sample, name, value in lines[:16]:
            color = sample_colors.setdefault(sample, plt.cm.tab10(len(sample_colors) % 10))
            if lo - 0.25 * span <= value <= hi + 0.25 * span or (log and lo / 2 <= value <= hi * 2):
                ax.axvline(value, color=color, ls="--", lw=1)
            else:
                off.append(f"{name.replace('_', ' ')} {value:,.0f}")
        text = "; ".join(x for x in (notes.get(col, ""), ("off the scale: " + ", ".join(sorted(set(off))[:3])) if off else "") if x)
        if text:
            ax.text(0.98, 0.97, text, transform=ax.transAxes, ha="right", va="top", fontsize=7,
                    color="#555555", wrap=True)
        if log:
            ax.xaxis.set_major_locator(matplotlib.ticker.LogLocator(base=10, numticks=5))
            ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(_compact))
        else:
            ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(nbins=5))
            ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(_compact))
        ax.yaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
        ax.set_xlabel(label, fontsize=9)
        ax.set_ylabel("cells", fontsize=9)
        _style(ax)
    if sample_colors:
        handles = [
            plt.Line2D([], [], color=c, ls="--", label=f"threshold {s}") for s, c in sample_colors.items()
        ][:10]
        fig.legend(handles=handles, loc="upper center", ncol=min(len(handles), 5), fontsize=7,
                   frameon=False, bbox_to_anchor=(0.5, 1.08))
    fig.tight_layout()
    return to_data_uri(fig)


# -------------------------------------------------------------------- embeddings
def compute_umap(adata, *, random_state: int = 0) -> np.ndarray:
    """UMAP coordinates for (a subsample of) ``adata``, computed on a copy.

    Uses a stored ``X_pca`` when there is one, otherwise a PCA of the
    (log-normalised) expression on up to 2000 highly variable genes.
    Neighbours use scikit-learn's exact search (robust, deterministic).
    """
    import scanpy as sc

    work = adata.copy()
    n = work.n_obs
    if n < 10:
        raise ValueError("too few cells for an embedding")
    use_rep = None
    if "X_pca" in work.obsm and work.obsm["X_pca"].shape[1] >= 2:
        use_rep = "X_pca"
    else:
        for key in list(work.obsm):
            del work.obsm[key]
        if work.n_vars > 2000:
            try:
                sc.pp.highly_variable_genes(work, n_top_genes=2000, flavor="seurat")
                work = work[:, work.var["highly_variable"].to_numpy()].copy()
            except Exception as exc:  # pragma: no cover - degenerate data
                logger.info("highly variable genes failed (%s); using all genes", exc)
        n_comps = int(max(2, min(30, work.n_obs - 1, work.n_vars - 1)))
        sc.pp.pca(work, n_comps=n_comps, random_state=random_state)
        use_rep = "X_pca"
    n_neighbors = int(max(2, min(15, n - 1)))
    sc.pp.neighbors(
        work, n_neighbors=n_neighbors, use_rep=use_rep, random_state=random_state,
        transformer="sklearn",
    )
    sc.tl.umap(work, random_state=random_state)
    return np.asarray(work.obsm["X_umap"], dtype=float)


def _point_size(n: int) -> float:
    return float(np.clip(12000.0 / max(n, 1), 0.5, 25.0))


def fig_embedding_categorical(
    coords: np.ndarray,
    labels: pd.Series,
    *,
    title: str,
    order: Sequence[str] | None = None,
    background: Sequence[str] = (),
    basis: str = "UMAP",
) -> str:
    """Scatter of an embedding coloured by a categorical label (fixed palette)."""
    labels = labels.astype("object").where(labels.notna(), "NA").astype(str)
    present = list(pd.unique(labels))
    if order is not None:
        cats = [c for c in order if c in present] + [c for c in present if c not in order]
    else:
        cats = sorted(present)
    fig, axes = _new((5.6, 4.2))
    ax = axes[0, 0]
    s = _point_size(len(labels))
    # background labels first (grey, underneath), then the others
    drawn = [c for c in cats if c in background] + [c for c in cats if c not in background]
    for cat in drawn:
        m = (labels == cat).to_numpy()
        ax.scatter(coords[m, 0], coords[m, 1], s=s, c=color_for(cat), lw=0, rasterized=True,
                   label=cat, alpha=0.9 if cat not in background else 0.6)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_xlabel(f"{basis} 1", fontsize=8)
    ax.set_ylabel(f"{basis} 2", fontsize=8)
    ax.set_title(title, fontsize=10)
    handles, names = ax.get_legend_handles_labels()
    by_name = dict(zip(names, handles, strict=False))
    ordered = [c for c in cats if c in by_name]  # legend in the fixed label order
    ax.legend([by_name[n] for n in ordered], ordered, loc="center left", bbox_to_anchor=(1.0, 0.5),
              fontsize=7, frameon=False, markerscale=max(1.0, 4.0 / max(s, 0.1) ** 0.5))
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    return to_data_uri(fig)


def fig_embedding_continuous(
    coords: np.ndarray,
    values: np.ndarray,
    *,
    title: str,
    mask: np.ndarray | None = None,
    vmin: float | None = 0.0,
    vmax: float | None = 1.0,
    basis: str = "UMAP",
) -> str:
    """Scatter of an embedding coloured by a continuous value (cells outside ``mask`` grey)."""
    fig, axes = _new((5.0, 4.2))
    ax = axes[0, 0]
    s = _point_size(len(values))
    values = np.asarray(values, dtype=float)
    m = np.isfinite(values) if mask is None else (np.asarray(mask, bool) & np.isfinite(values))
    if (~m).any():
        ax.scatter(coords[~m, 0], coords[~m, 1], s=s, c=color_for("not_fibroblast"), lw=0,
                   rasterized=True)
    order = np.argsort(values[m])
    sc_ = ax.scatter(coords[m][order, 0], coords[m][order, 1], s=s, c=values[m][order],
                     cmap="viridis", vmin=vmin, vmax=vmax, lw=0, rasterized=True)
    fig.colorbar(sc_, ax=ax, shrink=0.7)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_xlabel(f"{basis} 1", fontsize=8)
    ax.set_ylabel(f"{basis} 2", fontsize=8)
    ax.set_title(title, fontsize=10)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    return to_data_uri(fig)


# ---------------------------------------------------------------------- dot plot
def fig_dotplot(adata, var_names: Mapping[str, Sequence[str]], *, groupby: str, title: str,
                categories_order: Sequence[str] | None = None) -> str | None:
    """A scanpy dot plot of marker genes (grouped by gene set) per label."""
    import scanpy as sc

    var_names = {k: list(v) for k, v in var_names.items() if len(v)}
    if not var_names or adata.n_obs == 0:
        return None
    cats = list(adata.obs[groupby].cat.categories)
    order = [c for c in (categories_order or cats) if c in cats]
    dp = sc.pl.dotplot(adata, var_names, groupby=groupby, categories_order=order or None,
                       return_fig=True, show=False, title=title, standard_scale="var",
                       colorbar_title="mean expression\n(scaled per gene)",
                       size_title="fraction of cells\nexpressing (%)")
    dp.make_figure()
    fig = dp.fig
    return to_data_uri(fig)


# ----------------------------------------------------------------------- scores
def fig_score_distributions(
    scores: pd.DataFrame,
    groups: pd.Series,
    *,
    columns: Sequence[str],
    order: Sequence[str],
    title: str,
    ncols: int = 4,
) -> str | None:
    """One panel per score column: box plots of the score per group label."""
    columns = [c for c in columns if c in scores.columns]
    if not columns:
        return None
    groups = groups.astype("object").where(groups.notna(), "NA").astype(str)
    present = set(groups)
    order = [g for g in order if g in present] + sorted(present - set(order))
    ncols = min(ncols, len(columns))
    nrows = int(np.ceil(len(columns) / ncols))
    width = max(2.4, 0.32 * len(order) + 1.2)
    fig, axes = _new((width * ncols, 2.6 * nrows), nrows, ncols)
    for i, ax in enumerate(axes.ravel()):
        if i >= len(columns):
            ax.set_visible(False)
            continue
        col = columns[i]
        data = [pd.to_numeric(scores.loc[(groups == g).to_numpy(), col], errors="coerce")
                .dropna().to_numpy() for g in order]
        keep = [j for j, d in enumerate(data) if d.size]
        if not keep:
            ax.set_visible(False)
            continue
        bp = ax.boxplot([data[j] for j in keep], patch_artist=True, showfliers=False,
                        widths=0.7, medianprops={"color": "black", "lw": 1})
        for patch, j in zip(bp["boxes"], keep, strict=False):
            patch.set_facecolor(color_for(order[j]))
            patch.set_alpha(0.85)
        ax.set_xticks(range(1, len(keep) + 1))
        ax.set_xticklabels([order[j] for j in keep], rotation=60, ha="right", fontsize=7)
        ax.set_title(col, fontsize=9, color=color_for(col) if col in _known() else "black")
        _style(ax)
    fig.suptitle(title, fontsize=10, y=1.0)
    # fixed spacing instead of tight_layout: one draw less (savefig crops to the content)
    fig.subplots_adjust(hspace=0.95, wspace=0.3, top=0.8 if nrows == 1 else 0.88)
    return to_data_uri(fig)


def _known() -> set[str]:
    from ._colors import LINEAGE_COLORS, SUBTYPE_COLORS

    return set(LINEAGE_COLORS) | set(SUBTYPE_COLORS)


# ------------------------------------------------------------------ proportions
def fig_proportions(
    table: pd.DataFrame,
    *,
    group_col: str,
    label_col: str = "subtype",
    count_col: str = "n_cells",
    order: Sequence[str] | None = None,
    title: str = "",
) -> str | None:
    """Horizontal stacked bars: fraction of each label per group (e.g. sample)."""
    if table.empty:
        return None
    wide = table.pivot_table(index=group_col, columns=label_col, values=count_col,
                             aggfunc="sum", observed=False, sort=False).astype(float).fillna(0.0)
    totals = wide.sum(axis=1).replace(0, np.nan)
    frac = wide.div(totals, axis=0).fillna(0.0)
    labels = list(frac.columns)
    if order is not None:
        labels = [c for c in order if c in labels] + [c for c in labels if c not in order]
    fig, axes = _new((7.5, 0.45 * len(frac) + 1.4))
    ax = axes[0, 0]
    left = np.zeros(len(frac))
    y = np.arange(len(frac))
    for lab in labels:
        vals = frac[lab].to_numpy(dtype=float)
        if not (vals > 0).any():
            continue
        ax.barh(y, vals, left=left, color=color_for(lab), label=str(lab), edgecolor="white", lw=0.5)
        left += vals
    ax.set_yticks(y)
    ax.set_yticklabels([f"{g} (n={int(t) if t == t else 0})" for g, t in zip(frac.index, totals, strict=False)],
                       fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("fraction of CAFs", fontsize=9)
    ax.set_title(title, fontsize=10)
    ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=7, frameon=False)
    _style(ax)
    return to_data_uri(fig)


# -------------------------------------------------------------------- classifier
def fig_confusion(matrix: np.ndarray, labels: Sequence[str], *, title: str) -> str | None:
    """Confusion matrix (rows = weak label, columns = predicted), row-normalised colours."""
    m = np.asarray(matrix, dtype=float)
    if m.ndim != 2 or m.shape[0] != m.shape[1] or m.shape[0] != len(labels) or m.size == 0:
        return None
    rows = m.sum(axis=1, keepdims=True)
    norm = np.divide(m, rows, out=np.zeros_like(m), where=rows > 0)
    k = len(labels)
    # at least 3.6 x 3.0 inches: with two classes the labels and title need the room
    fig, axes = _new((max(3.6, 1.0 + 0.55 * k), max(3.0, 0.8 + 0.5 * k)))
    ax = axes[0, 0]
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    for i in range(k):
        for j in range(k):
            ax.text(j, i, f"{int(round(m[i, j]))}", ha="center", va="center", fontsize=7,
                    color="white" if norm[i, j] > 0.6 else "black")
    ax.set_xticks(range(k))
    ax.set_yticks(range(k))
    ax.set_xticklabels(labels, rotation=60, ha="right", fontsize=8)
    ax.set_yticklabels(labels, fontsize=8)
    for t, lab in zip(ax.get_xticklabels(), labels, strict=False):
        t.set_color(color_for(lab))
    for t, lab in zip(ax.get_yticklabels(), labels, strict=False):
        t.set_color(color_for(lab))
    ax.set_xlabel("predicted (cross-validation)", fontsize=9)
    ax.set_ylabel("training label", fontsize=9)
    ax.set_title(title, fontsize=10)
    return to_data_uri(fig)


#: a reliability bin with fewer cells is drawn hollow and not joined to the curve
MIN_BIN_CELLS = 10


def draw_reliability_curve(ax, c: Mapping[str, np.ndarray], *, color, marker: str, label: str) -> None:
    """One reliability curve: bins of at least :data:`MIN_BIN_CELLS` cells joined by a line
    (filled markers), smaller bins as hollow markers apart from it.

    The accuracy of a bin of one or two cells is 0 or 1, and joined to the curve such a
    bin draws a spike that says nothing about calibration (ECE weights bins by cells).
    Without counts every bin is drawn joined.
    """
    conf = np.asarray(c["confidence"], dtype=float)
    acc = np.asarray(c["accuracy"], dtype=float)
    counts = c.get("counts")
    big = np.ones(conf.size, dtype=bool) if counts is None or len(counts) != conf.size \
        else np.asarray(counts, dtype=float) >= MIN_BIN_CELLS
    ax.plot(conf[big], acc[big], marker=marker, color=color, lw=1.2, ms=4, label=label)
    if (~big).any():
        ax.plot(conf[~big], acc[~big], ls="none", marker=marker, ms=4, mfc="none", mec=color, mew=0.9,
                alpha=0.8)


def fig_reliability(curves: Mapping[str, Mapping[str, np.ndarray]], *, title: str) -> str | None:
    """Reliability diagram: accuracy vs confidence per bin (+ cells per bin below)."""
    curves = {k: v for k, v in curves.items() if len(v.get("confidence", ())) > 0}
    if not curves:
        return None
    fig, axes = plt.subplots(2, 1, figsize=(4.4, 4.6), sharex=True,
                             gridspec_kw={"height_ratios": [3, 1]})
    ax, axc = axes
    ax.plot([0, 1], [0, 1], ls=":", color="grey", lw=1, label="perfect calibration")
    styles = {0: ("#e15759", "o"), 1: ("#4e79a7", "s")}
    width = None
    for i, (name, c) in enumerate(curves.items()):
        color, marker = styles.get(i, (plt.cm.tab10(i % 10), "^"))
        conf = np.asarray(c["confidence"], dtype=float)
        draw_reliability_curve(ax, c, color=color, marker=marker, label=name)
        counts = c.get("counts")
        centres = c.get("centres")
        if counts is not None and len(counts) == len(conf):
            x = np.asarray(centres if centres is not None and len(centres) == len(conf) else conf, float)
            if width is None:
                width = float(np.min(np.diff(np.sort(x)))) * 0.8 if len(x) > 1 else 0.05
            axc.bar(x + (i - 0.5) * width / 2, np.asarray(counts, float), width=width / 2,
                    color=color, alpha=0.8)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy", fontsize=9)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7, frameon=False, loc="upper left")
    axc.set_xlabel("confidence (predicted probability)", fontsize=9)
    axc.set_ylabel("cells", fontsize=8)
    axc.yaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True, nbins=3))
    for a in axes:
        _style(a)
    fig.tight_layout()
    return to_data_uri(fig)
