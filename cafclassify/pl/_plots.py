"""The plotting functions of :mod:`cafclassify.pl` (see the package docstring).

They read only what the analysis steps wrote (``obs``, ``obsm``, ``uns["cafclassify"]``),
never modify ``adata`` and never compute an embedding: pass ``basis=`` of one you made
(``sc.tl.umap``), as in scanpy.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import matplotlib
import matplotlib.patches
import matplotlib.ticker
import numpy as np
import pandas as pd

from .. import _keys as K
from .._errors import ConfigError
from ..report._colors import color_for
from ..tl._compartment import caf_mask

__all__ = ["agreement", "composition", "lineages", "reliability", "signature_scores", "subtypes"]

SUBTYPE_ORDER = ("myCAF", "iCAF", "apCAF", "meCAF", "vCAF", "dCAF", "LTBP2_CAF", "LRRC15_myCAF")
TAIL = (K.UNASSIGNED, K.NOT_FIBROBLAST)


def _plt():
    import matplotlib.pyplot as plt

    return plt


def _axes(ax, figsize):
    if ax is not None:
        return ax
    _fig, ax = _plt().subplots(figsize=figsize)
    return ax


def _finish(ax, show: bool | None, save: str | os.PathLike | None):
    if save:
        ax.figure.savefig(save, bbox_inches="tight", dpi=150, facecolor="white")
    if show:
        _plt().show()
    return ax


def _order(labels: Sequence[str], first: Sequence[str]) -> list[str]:
    labels = list(dict.fromkeys(str(x) for x in labels))
    tail = [x for x in TAIL if x in labels]
    head = [x for x in first if x in labels and x not in tail]
    return head + sorted(x for x in labels if x not in head and x not in tail) + tail


def _need(adata, key: str, where: str, fix: str) -> None:
    cols = adata.obs.columns if where == "obs" else adata.obsm.keys()
    if key not in cols:
        raise ConfigError(f"{where}[{key!r}] is not in this AnnData.", fix=fix)


def _scatter(adata, key, *, basis, order, mask, ax, title, size):
    if basis not in adata.obsm:
        raise ConfigError(
            f"obsm[{basis!r}] is not in this AnnData.",
            fix="compute an embedding first (e.g. sc.pp.neighbors(adata); sc.tl.umap(adata)) or "
                "pass basis= of one you have.")
    xy = np.asarray(adata.obsm[basis])[:, :2]
    lab = adata.obs[key].astype("object").where(adata.obs[key].notna(), "NA").astype(str).to_numpy()
    ax = _axes(ax, (5.6, 4.2))
    if mask is not None and (~mask).any():
        ax.scatter(xy[~mask, 0], xy[~mask, 1], s=size, c="#eeeeee", lw=0, rasterized=True)
    sel = np.ones(len(lab), bool) if mask is None else mask
    cats = _order(lab[sel], order)
    for c in cats:
        m = sel & (lab == c)
        ax.scatter(xy[m, 0], xy[m, 1], s=size, c=color_for(c), lw=0, label=f"{c} ({int(m.sum()):,})",
                   rasterized=True)
    ax.set_xticks([])
    ax.set_yticks([])
    name = basis.removeprefix("X_").upper()
    ax.set_xlabel(f"{name} 1", fontsize=8)
    ax.set_ylabel(f"{name} 2", fontsize=8)
    ax.set_title(title, fontsize=10)
    ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=7, frameon=False, markerscale=2)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    return ax


def _size(n: int) -> float:
    return float(np.clip(12000.0 / max(n, 1), 0.5, 25.0))


def lineages(adata, *, basis: str = "X_umap", key: str = K.OBS_LINEAGE, ax=None,
             show: bool | None = None, save: str | os.PathLike | None = None):
    """Embedding coloured by the lineage the gate assigned (``obs["caf_lineage"]``).

    Parameters
    ----------
    adata
        AnnData after :func:`cafclassify.gate`, with an embedding in ``obsm[basis]``.
    basis
        ``obsm`` key of the embedding (``"X_umap"``, ``"X_tsne"``...).
    key
        ``obs`` column with the lineage labels.
    ax, show, save
        Axes to draw on (default: a new figure); show it; save it to this file.

    Returns
    -------
    The matplotlib Axes.
    """
    _need(adata, key, "obs", "run cafclassify.gate(adata) first.")
    ax = _scatter(adata, key, basis=basis, order=K.LINEAGES, mask=None, ax=ax,
                  title="lineage (gate)", size=_size(adata.n_obs))
    return _finish(ax, show, save)


def subtypes(adata, *, basis: str = "X_umap", key: str = K.OBS_SUBTYPE, fibroblasts_only: bool = True,
             ax=None, show: bool | None = None, save: str | os.PathLike | None = None):
    """Embedding coloured by CAF subtype; other cells light grey underneath.

    Parameters
    ----------
    adata
        AnnData after :func:`cafclassify.classify`, with ``obsm[basis]``.
    basis
        ``obsm`` key of the embedding.
    key
        ``obs`` column with the subtype calls.
    fibroblasts_only
        Colour only cells that reached subtyping (not ``not_fibroblast``).
    ax, show, save
        As in :func:`lineages`.

    Returns
    -------
    The matplotlib Axes.
    """
    _need(adata, key, "obs", "run cafclassify.classify(adata) first (it needs covered subtype gene sets).")
    mask = (adata.obs[key].astype(str) != K.NOT_FIBROBLAST).to_numpy() if fibroblasts_only else None
    ax = _scatter(adata, key, basis=basis, order=SUBTYPE_ORDER, mask=mask, ax=ax,
                  title="CAF subtype", size=_size(int(mask.sum()) if mask is not None else adata.n_obs))
    return _finish(ax, show, save)


def signature_scores(adata, *, key: str = K.OBSM_SCORES, groupby: str = K.OBS_SUBTYPE,
                     sets: Sequence[str] | None = None, ax=None, show: bool | None = None,
                     save: str | os.PathLike | None = None):
    """Heatmap of the mean signature score per subtype (z-scored per set across groups).

    Parameters
    ----------
    adata
        AnnData after :func:`cafclassify.score` (and :func:`cafclassify.classify`).
    key
        ``obsm`` key of the score DataFrame.
    groupby
        ``obs`` column to group by; ``not_fibroblast`` cells are left out.
    sets
        Score columns to show (default: every subtype set present).
    ax, show, save
        As in :func:`lineages`.

    Returns
    -------
    The matplotlib Axes.
    """
    _need(adata, key, "obsm", "run cafclassify.score(adata) first.")
    _need(adata, groupby, "obs", f"pass groupby= of an obs column; {groupby!r} is missing.")
    scores = adata.obsm[key]
    if not isinstance(scores, pd.DataFrame):
        raise ConfigError(f"obsm[{key!r}] is not a DataFrame of named scores.",
                          fix="use the scores written by cafclassify.score.")
    groups = adata.obs[groupby].astype(str)
    keep = (groups != K.NOT_FIBROBLAST).to_numpy()
    cols = list(sets) if sets is not None else [c for c in scores.columns
                                               if c in SUBTYPE_ORDER or c.startswith(("dCAF", "LTBP2"))]
    if not cols:
        raise ConfigError(f"obsm[{key!r}] has no subtype score columns.",
                          fix="score the subtype gene sets (cafclassify.score) or pass sets=.")
    means = scores.loc[keep, cols].groupby(groups[keep].to_numpy(), observed=True).mean()
    means = means.loc[_order(means.index, SUBTYPE_ORDER)]
    sd = means.std(axis=0).replace(0, 1.0)
    z = (means - means.mean(axis=0)) / sd
    ax = _axes(ax, (0.55 * len(cols) + 2.2, 0.4 * len(means) + 1.4))
    im = ax.imshow(z.to_numpy(float), cmap="RdBu_r", vmin=-2, vmax=2, aspect="auto")
    ax.set_xticks(range(len(cols)), cols, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(len(means)), [f"{g} ({int((groups[keep] == g).sum()):,})" for g in means.index],
                  fontsize=8)
    for t, g in zip(ax.get_yticklabels(), means.index, strict=False):
        t.set_color(color_for(g))
    ax.figure.colorbar(im, ax=ax, shrink=0.7, label="mean score (z across groups)")
    ax.set_xlabel("signature (score set)", fontsize=9)
    ax.set_title("signature scores per assigned subtype", fontsize=10)
    return _finish(ax, show, save)


def composition(adata, *, sample_key: str | None = None, key: str = K.OBS_SUBTYPE, ax=None,
                show: bool | None = None, save: str | os.PathLike | None = None):
    """Stacked bars: subtype composition of the CAFs of each sample.

    CAFs are the fibroblasts plus, under the classifier's ``perivascular="vcaf"`` reading,
    the mural cells called ``vCAF``; cells called ``mural`` (the ``"separate"`` reading,
    or normal tissue) and ``not_fibroblast`` are left out.

    Parameters
    ----------
    adata
        AnnData after :func:`cafclassify.classify`.
    sample_key
        ``obs`` column with the sample of each cell (``None``: one bar for all cells).
    key
        ``obs`` column with the calls; ``not_fibroblast`` cells are left out.
    ax, show, save
        As in :func:`lineages`.

    Returns
    -------
    The matplotlib Axes.
    """
    _need(adata, key, "obs", "run cafclassify.classify(adata) first.")
    if sample_key is not None:
        _need(adata, sample_key, "obs", f"pass sample_key= of an obs column (columns: {', '.join(map(str, adata.obs.columns[:15]))}).")
    calls = adata.obs[key].astype(str)
    samples = adata.obs[sample_key].astype(str) if sample_key else pd.Series("all cells", index=adata.obs.index)
    keep = caf_mask(adata.obs[key])
    ct = pd.crosstab(samples[keep], calls[keep])
    cats = _order(ct.columns, SUBTYPE_ORDER)
    ct = ct[cats]
    totals = ct.sum(axis=1)
    frac = ct.div(totals.replace(0, np.nan), axis=0).fillna(0.0)
    ax = _axes(ax, (5.8, 0.45 * len(frac) + 1.3))
    y = np.arange(len(frac))
    left = np.zeros(len(frac))
    for c in cats:
        v = frac[c].to_numpy(float)
        ax.barh(y, v, left=left, color=color_for(c), label=c, edgecolor="white", lw=0.5)
        for yi, (lft, w) in enumerate(zip(left, v, strict=False)):
            if w >= 0.07:
                ax.text(lft + w / 2, yi, f"{w:.0%}", ha="center", va="center", fontsize=7,
                        color="white" if c not in (K.UNASSIGNED,) else "black")
        left += v
    ax.set_yticks(y, [f"{s} (n={int(t):,})" for s, t in zip(frac.index, totals, strict=False)], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.xaxis.set_major_formatter(matplotlib.ticker.PercentFormatter(1.0))
    ax.set_xlabel("fraction of CAFs", fontsize=9)
    ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=7, frameon=False)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    return _finish(ax, show, save)


def reliability(adata, *, ax=None, show: bool | None = None, save: str | os.PathLike | None = None):
    """Reliability diagram of the classifier (out-of-fold, before and after calibration).

    Drawn on the training cells (seeds and pseudo-labels), the clearest fibroblasts: the
    other cells are called with more confidence than agreement with another annotation
    supports (``docs/classifier.md``, Limits).

    Parameters
    ----------
    adata
        AnnData after :func:`cafclassify.classify` with a self-trained classifier
        (its record in ``uns["cafclassify"]["classify"]``).
    ax, show, save
        As in :func:`lineages`.

    Returns
    -------
    The matplotlib Axes.
    """
    from ..report._figures import draw_reliability_curve
    from ..report._subtypes import _reliability_curves
    from ..report._uns import as_mapping

    cl = as_mapping(adata.uns.get(K.UNS, {}).get(K.UNS_CLASSIFY))
    curves = _reliability_curves(cl)
    if not curves:
        raise ConfigError("this AnnData has no reliability record of a classifier.",
                          fix="run cafclassify.classify(adata) (a model trained on these cells records one).")
    ax = _axes(ax, (4.4, 3.8))
    ax.plot([0, 1], [0, 1], ls=":", color="grey", lw=1, label="perfect calibration")
    for (name, c), (color, marker) in zip(curves.items(), (("#e15759", "o"), ("#4e79a7", "s"), ("#59a14f", "^")),
                                          strict=False):
        draw_reliability_curve(ax, c, color=color, marker=marker, label=name)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("confidence (predicted probability)", fontsize=9)
    ax.set_ylabel("fraction correct (seed labels)", fontsize=9)
    ax.legend(fontsize=7, frameon=False, loc="upper left")
    ax.set_title("reliability diagram (out-of-fold)", fontsize=10)
    return _finish(ax, show, save)


def agreement(adata, label_key: str, *, key: str = K.OBS_SUBTYPE, subset=None, max_labels: int = 30,
              ax=None, show: bool | None = None, save: str | os.PathLike | None = None):
    """Heatmap of calls against someone else's labels (authors, a simulation).

    Colour is the fraction of each label's cells (row) given each call (column);
    the numbers are cells. Title: adjusted Rand index and the agreement of labels
    that name a call (see :func:`cafclassify.agreement`).

    Parameters
    ----------
    adata
        Annotated data with ``obs[key]`` and ``obs[label_key]``.
    label_key
        ``obs`` column with the labels.
    key
        ``obs`` column with the calls (``caf_subtype`` or ``caf_lineage``).
    subset
        As in :func:`cafclassify.agreement` (``"fibroblasts"``: the gate's fibroblasts).
    max_labels
        Show at most this many labels (the largest).
    ax, show, save
        As in :func:`lineages`.

    Returns
    -------
    The matplotlib Axes.
    """
    from ..tl._agreement import agreement as _agreement

    res = _agreement(adata, label_key, key=key, subset=subset)
    ct = res.crosstab
    ct = ct[ct.sum(axis=1) > 0]
    if len(ct) > max_labels:
        largest = set(ct.sum(axis=1).nlargest(max_labels).index)
        ct = ct.loc[[i for i in ct.index if i in largest]]
    ct = ct.loc[:, ct.sum(axis=0) > 0]
    rows = ct.sum(axis=1).to_numpy(float)[:, None]
    frac = np.divide(ct.to_numpy(float), rows, out=np.zeros(ct.shape), where=rows > 0)
    nr, nc = ct.shape
    ax = _axes(ax, (1.6 + 0.62 * nc + 0.06 * max(len(str(i)) for i in ct.index), 1.0 + 0.3 * nr))
    ax.imshow(frac, cmap="Blues", vmin=0, vmax=1, aspect="auto")
    named = dict(zip(res.per_label["label"], res.per_label["named_call"], strict=False))
    cols = list(ct.columns)
    for i in range(nr):
        for j in range(nc):
            v = int(ct.iat[i, j])
            if v:
                ax.text(j, i, f"{v:,}", ha="center", va="center", fontsize=7,
                        color="white" if frac[i, j] > 0.6 else "black")
        nc_ = named.get(ct.index[i])
        if nc_ in cols:  # outline the call the label names
            j = cols.index(nc_)
            ax.add_patch(matplotlib.patches.Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False,
                                                      ec="#d62728", lw=1.2))
    ax.set_xticks(range(nc), cols, rotation=50, ha="right", fontsize=8)
    for t, c in zip(ax.get_xticklabels(), cols, strict=False):
        t.set_color(color_for(c) if c in SUBTYPE_ORDER else "#333333")
    ax.set_yticks(range(nr), [f"{i} ({int(r):,})" for i, r in zip(ct.index, rows[:, 0], strict=False)], fontsize=8)
    ax.set_xlabel(f"cafclassify call ({key})", fontsize=9)
    ax.set_ylabel(f"label ({label_key})", fontsize=9)
    overall = "" if not np.isfinite(res.overall) else f", same-name agreement {res.overall:.0%}"
    ax.set_title(f"ARI {res.ari:.2f}{overall}\n({res.subset}; red box = the call the label names)", fontsize=9)
    return _finish(ax, show, save)
