"""Time and memory of cafclassify.gate on synthetic data (10k and 100k cells).

Run: ``python benchmarks/bench_gate.py [n_cells ...]``. Prints a table. The data
are sparse log-normalised cells of five planted lineages (marker genes from the
``caf_v1`` lineage sets plus 3000 background genes); above ``max_cells_graph``
(50 000) the gate clusters a subsample and assigns the rest by nearest centroid.
Each size is run without and with the stage-2 refinement (``refine``).
Timings on a shared 2-core machine are noisy.
"""

from __future__ import annotations

import sys
import time
import tracemalloc

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData

from cafclassify.genesets import load_signatures
from cafclassify.tl import gate

TYPES = ("fibroblast", "mural", "epithelial", "immune", "endothelial")
N_BG = 3000


def simulate(n_cells: int, seed: int = 0) -> AnnData:
    rng = np.random.default_rng(seed)
    lib = load_signatures("caf_v1")
    markers = {t: list(lib.sets[t].genes) for t in TYPES}
    mk = list(dict.fromkeys(g for v in markers.values() for g in v))
    genes = mk + [f"BG{i}" for i in range(N_BG)]
    col = {g: i for i, g in enumerate(genes)}
    truth = rng.choice(len(TYPES), size=n_cells, p=[0.15, 0.05, 0.4, 0.3, 0.1])
    blocks = {t: len(mk) + rng.choice(N_BG, 100, replace=False) for t in range(len(TYPES))}
    rows, cols, vals = [], [], []
    for t in range(len(TYPES)):
        idx = np.flatnonzero(truth == t)
        own = np.array([col[g] for g in markers[TYPES[t]]])
        for cols_t, p in ((own, 0.6), (blocks[t], 0.5), (np.arange(len(mk), len(genes)), 0.03)):
            hit = rng.random((idx.size, cols_t.size)) < p
            r, c = np.nonzero(hit)
            rows.append(idx[r])
            cols.append(cols_t[c])
            vals.append(rng.gamma(2.0, 0.8, r.size))
    r = np.concatenate(rows)
    c = np.concatenate(cols)
    v = np.concatenate(vals).astype(np.float32)
    X = sp.csr_matrix((v, (r, c)), shape=(n_cells, len(genes)))
    X.sum_duplicates()
    obs = pd.DataFrame({"truth": np.array(TYPES)[truth]}, index=[f"c{i}" for i in range(n_cells)])
    return AnnData(X, obs=obs, var=pd.DataFrame(index=genes))


def main(sizes: list[int]) -> None:
    print(f"{'n_cells':>8} {'graph':>7} {'refine':>6} {'seconds':>8} {'peak_MB':>8} {'fib_recall':>10} "
          f"{'fib_prec':>9} {'changed':>8}")
    for n in sizes:
        a = simulate(n)
        for refine in (False, True):
            tracemalloc.start()
            t0 = time.perf_counter()
            gate(a, species="human", refine=refine)
            dt = time.perf_counter() - t0
            peak = tracemalloc.get_traced_memory()[1] / 1e6
            tracemalloc.stop()
            f = (a.obs["caf_lineage"] == "fibroblast").to_numpy()
            tf = (a.obs["truth"] == "fibroblast").to_numpy()
            u = a.uns["cafclassify"]["gate"]
            g = u["embedding"]["n_cells_graph"]
            ch = u["refine"].get("n_changed", 0)
            print(f"{n:>8} {g:>7} {str(refine):>6} {dt:>8.1f} {peak:>8.0f} {(f & tf).sum() / tf.sum():>10.3f} "
                  f"{(f & tf).sum() / max(f.sum(), 1):>9.3f} {ch:>8}")


if __name__ == "__main__":
    main([int(x) for x in sys.argv[1:]] or [10_000, 100_000])
