"""Benchmark cafclassify's scoring kernels against the reference implementations.

Synthetic sparse data (default 100,000 cells x 20,000 genes, ~1,200 detected genes
per cell, log-normalised float32 from Poisson-like counts, so values tie), 7 gene
sets of ~20 genes. Every method, ours and the peers alike, runs in its own subprocess,
which loads the data, warms up (ours on a tiny matrix, a peer on the first 200 cells:
numba compilation is excluded from the timing), scores, and reports its wall time and
peak RSS (``VmHWM`` from ``/proc/self/status``).

    python benchmarks/bench_scoring.py                       # 100k cells, all methods and peers
    python benchmarks/bench_scoring.py --n-cells 20000
    python benchmarks/bench_scoring.py --peer-cells 20000    # peers on the first 20k cells, time x5
    python benchmarks/bench_scoring.py --backed --no-peers   # stream a backed .h5ad chunk by chunk
    python benchmarks/bench_scoring.py --sizes 10000,100000,1000000 --peer-cells 20000  # one table

Columns: ``ours s`` / ``peer s`` wall time of the scoring call; ``speed-up``;
``peak RSS`` of our subprocess; ``mem/matrix`` = (peak RSS - RSS before the data
were loaded) / in-memory size of the CSR matrix (data + indices + indptr). In
``--backed`` mode the matrix is never loaded, so this ratio is the working set.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

PEERS = {
    "ucell": "pyucell.compute_ucell_scores (n_jobs=-1, chunk_size=500, max_rank=1500)",
    "aucell": "decoupler.mt.aucell (tmin=1; per-cell rankdata on the densified row)",
    "scanpy": "scanpy.tl.score_genes (one call per set, random_state=0)",
    "zmean": "decoupler.mt.ulm (bsize=2000 cells densified per batch; a different linear method)",
}


def _rss_mb() -> float:
    """Peak RSS of this process in MiB.

    Uses ``VmHWM`` from ``/proc/self/status`` (reset by ``execve``); ``ru_maxrss`` is
    inherited from the parent across fork + exec on Linux, so it would report the
    benchmark driver's peak instead.
    """
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:  # pragma: no cover - not Linux
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def make_data(path: Path, n_cells: int, n_genes: int, nnz: int, seed: int = 0) -> None:
    """Write a synthetic log-normalised CSR .h5ad block by block (never the whole matrix).

    Blocks of 10,000 cells are appended to the file as they are drawn (1M cells x
    1,200 values would be ~10 GB in memory twice over if stacked first).
    """
    import anndata as ad
    import h5py
    import pandas as pd
    from scipy import sparse

    from cafclassify.io._h5matrix import _MatrixWriter

    rng = np.random.default_rng(seed)
    popularity = rng.gamma(0.6, 1.0, n_genes) + 0.02
    cdf = np.cumsum(popularity) / popularity.sum()
    tmp = path.with_suffix(".tmp.h5ad")
    ad.AnnData(obs=pd.DataFrame(index=[f"c{i}" for i in range(n_cells)]),
               var=pd.DataFrame(index=[f"G{i}" for i in range(n_genes)])).write_h5ad(tmp)
    step = 10_000
    with h5py.File(tmp, "a") as f:
        if "X" in f:
            del f["X"]
        writer = _MatrixWriter(f, "X", n_cells, n_genes, None)
        for start in range(0, n_cells, step):
            stop = min(start + step, n_cells)
            indptr = [0]
            idx_parts, val_parts = [], []
            for _ in range(start, stop):
                k = int(rng.normal(nnz, nnz * 0.25))
                k = int(np.clip(k, 50, min(n_genes, 3 * nnz)))
                cols = np.unique(np.searchsorted(cdf, rng.random(int(k * 1.6))))
                cols = cols[cols < n_genes]
                if cols.size > k:
                    cols = np.sort(rng.choice(cols, k, replace=False))
                counts = 1 + rng.geometric(0.45, cols.size) - 1 + (rng.random(cols.size) < 0.3)
                vals = np.log1p(counts / counts.sum() * 1e4).astype(np.float32)
                idx_parts.append(cols.astype(np.int32))
                val_parts.append(vals)
                indptr.append(indptr[-1] + cols.size)
            writer.append(sparse.csr_matrix(
                (np.concatenate(val_parts), np.concatenate(idx_parts), np.array(indptr, dtype=np.int64)),
                shape=(stop - start, n_genes)))
        writer.finish()
    os.replace(tmp, path)


def gene_sets(n_genes: int, seed: int = 1) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {f"set{j}": np.sort(rng.choice(n_genes, int(rng.integers(15, 26)), replace=False))
            for j in range(7)}


# ---------------------------------------------------------------------------
def worker(args) -> dict:
    import anndata as ad
    import pandas as pd
    from scipy import sparse

    rss0 = _rss_mb()
    sets_idx = gene_sets(args.n_genes)
    if args.who == "ours":
        from cafclassify.scoring import aucell_scores, scanpy_scores, ucell_scores, zmean_scores

        # warm-up: compile the numba kernels outside the timing
        tiny = sparse.random(50, 300, density=0.2, format="csr", dtype=np.float32, random_state=0)
        tsets = {"a": (np.arange(10), np.ones(10))}
        ucell_scores(tiny, tsets, max_rank=100)
        aucell_scores(tiny, tsets, tie_order="decoupler")
        zmean_scores(tiny, tsets)
        rss0 = _rss_mb()
        a = ad.read_h5ad(args.data, backed="r" if args.backed else None)
        X = a.X
        sets = {k: (v, np.ones(v.size)) for k, v in sets_idx.items()}
        fn = {
            "ucell": lambda: ucell_scores(X, sets, max_rank=1500, chunk_size=args.chunk_size),
            "aucell": lambda: aucell_scores(X, sets, tie_order="decoupler", chunk_size=args.chunk_size),
            "scanpy": lambda: scanpy_scores(X, sets, chunk_size=args.chunk_size),
            "zmean": lambda: zmean_scores(X, sets, chunk_size=args.chunk_size),
        }[args.method]
        n = a.n_obs
    else:
        a = ad.read_h5ad(args.data)
        if args.peer_cells and args.peer_cells < a.n_obs:
            a = a[: args.peer_cells].copy()
        n = a.n_obs
        names = {k: list(a.var_names[v]) for k, v in sets_idx.items()}
        net = pd.DataFrame([(k, g) for k, gs in names.items() for g in gs], columns=["source", "target"])
        if args.method == "ucell":
            import pyucell

            def run(x):
                pyucell.compute_ucell_scores(x, names, max_rank=1500, n_jobs=-1)
        elif args.method == "aucell":
            import decoupler as dc

            def run(x):
                dc.mt.aucell(x, net, tmin=1)
        elif args.method == "scanpy":
            import scanpy as sc

            def run(x):
                for k, gs in names.items():
                    sc.tl.score_genes(x, gs, score_name=k, random_state=0)
        else:
            import decoupler as dc

            def run(x):
                dc.mt.ulm(x, net, tmin=1, bsize=2000)

        # warm-up on 200 cells, as for ours: just-in-time compilation (numba) is not timed
        run(a[:200].copy())

        def fn():
            run(a)
    mat_mb = float("nan")
    if sparse.issparse(a.X):
        mat_mb = (a.X.data.nbytes + a.X.indices.nbytes + a.X.indptr.nbytes) / 2**20
    t = time.perf_counter()
    fn()
    dt = time.perf_counter() - t
    return {"seconds": dt, "n_cells": n, "peak_rss_mb": _rss_mb(), "rss_before_data_mb": rss0,
            "matrix_mb": mat_mb}


def run_one(args, method: str, who: str, peer_cells: int = 0) -> dict | None:
    cmd = [sys.executable, __file__, "--worker", "--who", who, "--method", method,
           "--data", str(args.data), "--n-genes", str(args.n_genes),
           "--chunk-size", str(args.chunk_size)]
    if args.backed:
        cmd.append("--backed")
    if who == "peer" and peer_cells:
        cmd += ["--peer-cells", str(peer_cells)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
    if r.returncode != 0:
        sys.stderr.write(f"[{who} {method}] failed:\n{r.stderr[-2000:]}\n")
        return None
    return json.loads(r.stdout.strip().splitlines()[-1])


def _data_path(args, n_cells: int) -> Path:
    d = Path(args.data_dir)
    d.mkdir(parents=True, exist_ok=True)
    path = d / f"synth_{n_cells}x{args.n_genes}_{args.nnz_per_cell}.h5ad"
    if not path.exists():
        t = time.perf_counter()
        make_data(path, n_cells, args.n_genes, args.nnz_per_cell)
        print(f"# wrote {path} in {time.perf_counter() - t:.0f} s", flush=True)
    return path


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default=None,
                   help="comma-separated cell numbers, one table for all (default: --n-cells)")
    p.add_argument("--n-cells", type=int, default=100_000)
    p.add_argument("--n-genes", type=int, default=20_000)
    p.add_argument("--nnz-per-cell", type=int, default=1_200)
    p.add_argument("--methods", default="ucell,aucell,scanpy,zmean")
    p.add_argument("--chunk-size", type=int, default=20_000)
    p.add_argument("--backed", action="store_true", help="score a backed .h5ad chunk by chunk")
    p.add_argument("--no-peers", action="store_true", help="skip the reference implementations")
    p.add_argument("--peer-cells", type=int, default=0,
                   help="run peers on at most the first N cells and scale their time linearly to the "
                   "size (marked *); one peer run serves every size above N")
    p.add_argument("--data-dir", default=os.environ.get("TMPDIR", "/tmp") + "/cafclassify_bench")
    p.add_argument("--timeout", type=float, default=3600)
    # worker mode (internal)
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--who", default="ours", help=argparse.SUPPRESS)
    p.add_argument("--method", default="ucell", help=argparse.SUPPRESS)
    p.add_argument("--data", default="", help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args.worker:
        print(json.dumps(worker(args)))
        return 0

    sizes = [int(x) for x in args.sizes.split(",")] if args.sizes else [args.n_cells]
    methods = args.methods.split(",")
    print(f"# sizes {sizes} x {args.n_genes} genes, ~{args.nnz_per_cell} detected genes/cell, "
          f"7 sets of 15-25 genes; chunk_size={args.chunk_size}; backed={args.backed}; "
          f"{os.cpu_count()} CPUs", flush=True)
    peer_cache: dict[tuple[str, int], dict | None] = {}
    rows = []
    for n in sizes:
        args.n_cells = n
        args.data = _data_path(args, n)
        for m in methods:
            ours = run_one(args, m, "ours")
            peer = None
            if not (args.no_peers or args.backed):
                run_n = min(n, args.peer_cells) if args.peer_cells else n
                if (m, run_n) not in peer_cache:  # a peer reads the first run_n cells of this size's file
                    peer_cache[(m, run_n)] = run_one(args, m, "peer", run_n if run_n < n else 0)
                peer = peer_cache[(m, run_n)]
            peer_s = peer["seconds"] * (n / peer["n_cells"]) if peer else None
            scaled = bool(peer) and peer["n_cells"] < n
            mem_ratio = None
            if ours:
                mat = ours["matrix_mb"] if not np.isnan(ours["matrix_mb"]) else None
                if mat is None:  # backed: size the matrix from the in-memory equivalent
                    mat = n * args.nnz_per_cell * 8 / 2**20
                mem_ratio = (ours["peak_rss_mb"] - ours["rss_before_data_mb"]) / mat
            o = f"{ours['seconds']:.2f}" if ours else "fail"
            if args.no_peers or args.backed:
                ps = "-"
            elif peer is None:
                ps = "failed (see stderr)"
            else:
                ps = f"{peer_s:.1f}" + ("*" if scaled else "")
            su = "-" if (peer_s is None or not ours) else f"{peer_s / ours['seconds']:.1f}x"
            rss = f"{ours['peak_rss_mb']:.0f}" if ours else "-"
            prss = "-" if (peer is None or scaled) else f"{peer['peak_rss_mb']:.0f}"
            mr = "-" if mem_ratio is None else f"{mem_ratio:.2f}"
            rows.append((f"{n:,}", m, o, ps, su, rss, prss, mr))
            print(f"{n:>9,} {m:8s} ours {o:>8s} s | peer {ps:>9s} s | speed-up {su:>7s} | "
                  f"peak RSS {rss:>6s} MB (peer {prss}) | mem/matrix {mr}", flush=True)
    print()
    print("| cells | method | ours s | peer s | speed-up | our peak RSS MB | peer peak RSS MB "
          "| (our peak - pre-data RSS) / matrix |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print("| " + " | ".join(r) + " |")
    print()
    for m in methods:
        print(f"- peer for {m}: {PEERS[m]}")
    if args.peer_cells and any(n > args.peer_cells for n in sizes):
        print(f"* peer run once on the first {args.peer_cells:,} cells (of the smallest size above it) and "
              "its time scaled linearly (the peers' cost is per cell); peer memory is not shown for "
              "scaled rows.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
