"""Classifier throughput (cells/s): cafclassify vs CellTypist, same features and labels.

Input: a scored ``.h5ad`` (gate + UCell scores) of simulated cells, by default the one
``benchmarks/bench_workflow.py`` writes (``$TMPDIR/cafclassify_bench/workflow/n<N>/score.h5ad``).

* **labels**: the weak (seed) labels of :func:`cafclassify.tl.weak_labels` (confident
  fibroblasts per subtype), the labels cafclassify itself trains on;
* **features**: the genes of the trained ``CafModel`` (HVGs among fibroblasts + the
  signature genes), log1p(CP10k) values;
* **ours**: ``cafclassify.train`` (seeds, HVGs, 5-fold CV, temperature scaling,
  one round of self-training: the whole training procedure) and
  ``cafclassify.classify(adata, model)`` (prediction of every fibroblast, plus the
  LTBP2/state axes);
* **CellTypist**: ``celltypist.train(X_seeds[:, genes], labels, genes=genes,
  feature_selection=False, check_expression=False, n_jobs=2)`` (its logistic
  regression, no CV/calibration) and ``celltypist.annotate(fibroblasts, model,
  majority_voting=False)``.

Throughput = cells handled / wall seconds: seeds for CellTypist training, all
fibroblasts for our training (ours computes HVGs and seeds over all of them) and for
prediction. Agreement with the planted truth (``obs["true_subtype"]``) on the
fibroblasts is printed next to it, so speed is not bought with accuracy.

    python benchmarks/bench_classifier_throughput.py                 # 100k cells
    python benchmarks/bench_classifier_throughput.py --n-cells 10000

Timings on a shared 2-core machine are noisy; the table is what one run measured.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np

DATA_DIR = Path(os.environ.get("TMPDIR", "/tmp")) / "cafclassify_bench"


def _celltypist_sklearn_shim() -> str:
    """CellTypist 1.7 passes ``multi_class="ovr"``, which scikit-learn >= 1.8 no longer accepts.

    The argument is dropped (lbfgs then fits a multinomial model, the same estimator
    family and cost). Returns a note for the output.
    """
    import inspect

    import celltypist  # noqa: F401 - loads celltypist.train
    from sklearn.linear_model import LogisticRegression

    ct_train = sys.modules["celltypist.train"]  # the module, not the function of that name

    if "multi_class" in inspect.signature(LogisticRegression.__init__).parameters:
        return "CellTypist as released (one-vs-rest logistic regression)"

    class _LR(LogisticRegression):
        def __init__(self, multi_class=None, **kw):  # multi_class accepted and dropped
            super().__init__(**kw)

        @classmethod
        def _get_param_names(cls):  # sklearn introspection: the parameters of the parent
            return LogisticRegression._get_param_names()

    ct_train.LogisticRegression = _LR
    return ("CellTypist 1.7 with multi_class='ovr' dropped (removed in this scikit-learn): "
            "multinomial logistic regression")


def _accuracy(pred, truth) -> float:
    pred, truth = np.asarray(pred, dtype=str), np.asarray(truth, dtype=str)
    return float((pred == truth).mean()) if pred.size else float("nan")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n-cells", type=int, default=100_000)
    p.add_argument("--scored", default=None, help="scored .h5ad (default: bench_workflow's)")
    args = p.parse_args(argv)

    import anndata as ad
    import celltypist
    import pandas as pd
    import scipy.sparse as sp

    import cafclassify as caf
    from cafclassify.tl._classify import weak_labels

    path = Path(args.scored or DATA_DIR / "workflow" / f"n{args.n_cells}" / "score.h5ad")
    if not path.exists():
        print(f"{path} is missing: run benchmarks/bench_workflow.py --sizes {args.n_cells} first.")
        return 2
    a = ad.read_h5ad(path)
    fib = (a.obs["caf_lineage"] == "fibroblast").to_numpy()
    n_fib = int(fib.sum())
    print(f"# {path}: {a.n_obs} cells, {n_fib} gated fibroblasts; {os.cpu_count()} CPUs (shared)", flush=True)

    # ---- ours: train
    t = time.perf_counter()
    model = caf.train(a, random_state=0)
    t_train = time.perf_counter() - t
    genes = list(model.genes)
    # ---- labels: the weak labels ours trains on
    seeds = weak_labels(a, copy=True).obs["caf_seed_label"]
    seed_mask = seeds.notna().to_numpy()
    labels = seeds[seed_mask].astype(str).to_numpy()
    n_seeds = int(seed_mask.sum())
    # ---- ours: predict
    t = time.perf_counter()
    b = caf.classify(a, model, copy=True)
    t_pred = time.perf_counter() - t
    ours = b.obs["caf_subtype"].astype(str).to_numpy()[fib]

    # ---- CellTypist on the same seeds and genes (log1p CP10k, as in X)
    ct_note = _celltypist_sklearn_shim()
    gidx = a.var_names.get_indexer(genes)
    if (gidx < 0).any():  # model genes are symbols; var_names may differ
        sym = a.var["cafclassify_symbol"].astype(str)
        gidx = pd.Index(sym).get_indexer(genes)
    keep = gidx >= 0
    gidx, ct_genes = gidx[keep], np.asarray(genes)[keep]
    Xs = a.X[np.flatnonzero(seed_mask)][:, gidx]
    Xs = Xs.toarray() if sp.issparse(Xs) else np.asarray(Xs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t = time.perf_counter()
        ct_model = celltypist.train(Xs, labels=labels, genes=ct_genes, feature_selection=False,
                                    check_expression=False, n_jobs=2, use_SGD=False)
        t_ct_train = time.perf_counter() - t
        fib_ad = ad.AnnData(a.X[np.flatnonzero(fib)], obs=a.obs.iloc[np.flatnonzero(fib)][[]],
                            var=pd.DataFrame(index=a.var_names))
        fib_ad.var_names = a.var["cafclassify_symbol"].astype(str).where(
            a.var["cafclassify_symbol"].astype(str) != "", a.var_names.astype(str)).to_numpy()
        fib_ad.var_names_make_unique()
        t = time.perf_counter()
        pred = celltypist.annotate(fib_ad, model=ct_model, majority_voting=False)
        t_ct_pred = time.perf_counter() - t
    ct = pred.predicted_labels["predicted_labels"].astype(str).to_numpy()

    truth = a.obs["true_subtype"].astype(str).to_numpy()[fib] if "true_subtype" in a.obs else None
    acc_o = _accuracy(ours, truth) if truth is not None else float("nan")
    acc_c = _accuracy(ct, truth) if truth is not None else float("nan")
    assigned = ours != "unassigned"
    acc_o_assigned = _accuracy(ours[assigned], truth[assigned]) if truth is not None else float("nan")
    agree = _accuracy(ours[assigned], ct[assigned])

    print()
    print(f"{a.n_obs:,} cells, {n_fib:,} fibroblasts, {n_seeds:,} seed cells, {len(ct_genes)} feature genes")
    print()
    print("| task | cafclassify s | cafclassify cells/s | CellTypist s | CellTypist cells/s | ratio (ours/CT throughput) |")
    print("|---|---|---|---|---|---|")
    tr_o, tr_c = n_fib / t_train, n_seeds / t_ct_train
    pr_o, pr_c = n_fib / t_pred, n_fib / t_ct_pred
    print(f"| train | {t_train:.1f} | {tr_o:,.0f} (fibroblasts) | {t_ct_train:.1f} | {tr_c:,.0f} (seeds) | {tr_o / tr_c:.2f} |")
    print(f"| predict fibroblasts | {t_pred:.1f} | {pr_o:,.0f} | {t_ct_pred:.1f} | {pr_c:,.0f} | {pr_o / pr_c:.2f} |")
    print()
    print(f"CellTypist: {ct_note}")
    print(f"accuracy vs planted subtype (all fibroblasts; 'unassigned' counts as wrong): ours {acc_o:.3f}, "
          f"CellTypist {acc_c:.3f}; ours on assigned cells ({assigned.mean():.0%}) {acc_o_assigned:.3f}; "
          f"agreement ours vs CellTypist on assigned cells {agree:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
