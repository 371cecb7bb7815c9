"""Time and peak memory of every workflow step at 10k, 100k (and 1M) synthetic cells.

Data: ``cafclassify.datasets.simulate_to_h5ad`` (15,000 genes, ~2,250 detected genes per
cell, raw counts; planted CAF programmes), written once per size to
``$TMPDIR/cafclassify_bench/sim_<n>.h5ad`` (uncompressed; ~1.8 GB per 100k cells).

Each step is the ``cafclassify`` CLI (``--threads 2``) in its own process, run under
``/usr/bin/time -v``, exactly as the workflow runs it. Peak memory is the larger of the
largest process's peak RSS and the largest sum of RSS over the step's processes
(sampled every 0.2 s; ``read`` and ``qc --filter`` write the counts layer in a second
process):

    read -> qc --filter -> gate -> score -> classify (trains on its own seeds)

``--sharded K`` also runs the scatter-gather path of ``workflow/rules/shard.smk``
(shard x K -> qc x K -> score x K -> merge --filter) one shard after the other; on a
cluster the K shard jobs run in parallel, so the "critical path" column counts the
slowest shard only.

``--backed`` measures the out-of-core paths on the classified file: UCell scoring of a
backed AnnData (``anndata.read_h5ad(p, backed="r")``) and prediction with a trained model
(``cafclassify.classify(backed, model)``), each in a fresh process (peak RSS = VmHWM).

The scaling exponent is the least-squares slope of log(time) against log(cells) over
the sizes run (1.0 = linear).

    python benchmarks/bench_workflow.py                       # 10k and 100k
    python benchmarks/bench_workflow.py --sizes 1000000 --steps read,qc,score --backed
    python benchmarks/bench_workflow.py --sizes 10000 --sharded 3

Timings on a shared 2-core machine are noisy; the table is what one run measured.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

STEPS = ("read", "qc", "gate", "score", "classify", "report")
DATA_DIR = Path(os.environ.get("TMPDIR", "/tmp")) / "cafclassify_bench"
#: global CLI options added to every step (--out-of-core sets --backed yes)
GLOBAL_OPTS: list[str] = []
KEEP_INTERMEDIATES = False


def replicate_h5ad(base: Path, out: Path, n: int, chunk_size: int = 50_000) -> Path:
    """``n`` cells made of copies of ``base``'s cells (new barcodes), streamed block by block.

    Used to reach 1M cells when simulating them would take longer than the benchmark:
    every copy is the same tumour, so per-cell costs are those of real-sized data, but
    the data hold only ``base.n_obs`` distinct profiles (stated in the table).
    """
    import anndata as ad
    import h5py
    import pandas as pd
    import scipy.sparse as sp
    from anndata.io import read_elem, sparse_dataset

    from cafclassify.io._h5matrix import _MatrixWriter

    tmp = out.with_name(f".{out.name}.part")
    with h5py.File(base, "r") as fb:
        obs, var = read_elem(fb["obs"]), read_elem(fb["var"])
        uns = read_elem(fb["uns"]) if "uns" in fb else {}
        src = sparse_dataset(fb["X"])
        nb = obs.shape[0]
        idx = np.arange(n) % nb
        new_obs = obs.iloc[idx].copy()
        new_obs.index = pd.Index([f"{b}-r{i // nb}" for i, b in zip(range(n), obs.index[idx], strict=True)])
        ad.AnnData(obs=new_obs, var=var, uns=dict(uns)).write_h5ad(tmp)
        with h5py.File(tmp, "a") as f:
            if "X" in f:
                del f["X"]
            writer = _MatrixWriter(f, "X", n, var.shape[0], None)  # 64-bit indptr when needed
            for start in range(0, n, chunk_size):
                stop = min(n, start + chunk_size)
                rows = idx[start:stop]
                # contiguous runs of base rows (a chunk wraps around the base at most once)
                cut = np.flatnonzero(np.diff(rows) != 1) + 1
                parts = [src[int(r[0]):int(r[-1]) + 1] for r in np.split(rows, cut)]
                writer.append(sp.vstack(parts, format="csr"))
    os.replace(tmp, out)
    return out


def _data(n: int, replicate_from: int | None = None) -> Path:
    p = DATA_DIR / f"sim_{n}.h5ad"
    if not p.exists() and replicate_from and n > replicate_from:
        base = _data(replicate_from)
        t = time.perf_counter()
        p = DATA_DIR / f"rep_{n}_from_{replicate_from}.h5ad"
        if not p.exists():
            replicate_h5ad(base, p, n)
            print(f"# replicated {replicate_from} simulated cells to {n} -> {p} in "
                  f"{time.perf_counter() - t:.0f} s", flush=True)
        return p
    if not p.exists():
        from cafclassify.datasets import simulate_to_h5ad

        DATA_DIR.mkdir(parents=True, exist_ok=True)
        t = time.perf_counter()
        simulate_to_h5ad(p, n, random_state=0, compression=None)
        print(f"# simulated {n} cells -> {p} in {time.perf_counter() - t:.0f} s", flush=True)
    return p


def _tree_rss_mb(proc) -> float:
    """RSS of a process and all its descendants (MB); 0 once it is gone."""
    import psutil

    try:
        procs = [proc, *proc.children(recursive=True)]
    except psutil.Error:
        return 0.0
    total = 0
    for q in procs:
        try:
            total += q.memory_info().rss
        except psutil.Error:
            pass
    return total / 2**20


def _timed(cmd: list[str], log: Path) -> dict:
    """Run ``cmd`` under /usr/bin/time -v: wall seconds and peak memory (MB).

    ``peak_mb`` is the larger of the largest single process's peak RSS (``time -v``) and
    the largest *sum* of RSS over the step's processes, sampled every 0.2 s: steps that
    write X and the counts layer in two processes (``--threads 2``) hold both at once.
    """
    import psutil

    t = time.perf_counter()
    tree_peak = 0.0
    with open(log, "w") as fh:
        r = subprocess.Popen(["/usr/bin/time", "-v", *cmd], stdout=fh, stderr=subprocess.STDOUT)
        ps = psutil.Process(r.pid)
        while r.poll() is None:
            tree_peak = max(tree_peak, _tree_rss_mb(ps))
            time.sleep(0.2)
    wall = time.perf_counter() - t
    text = log.read_text(errors="replace")
    m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", text)
    rss = int(m.group(1)) / 1024 if m else float("nan")
    return {"ok": r.returncode == 0, "seconds": wall, "peak_mb": max(rss, tree_peak),
            "peak_process_mb": rss, "peak_tree_mb": tree_peak, "log": str(log)}


def _cli(*args) -> list[str]:
    return [sys.executable, "-m", "cafclassify.cli", "--threads", "2", *GLOBAL_OPTS, *map(str, args)]


def run_size(n: int, steps: list[str], work: Path, sharded: int,
             replicate_from: int | None = None) -> dict[str, dict]:
    src = _data(n, replicate_from)
    d = work / f"n{n}"
    d.mkdir(parents=True, exist_ok=True)
    f = {s: d / f"{s}.h5ad" for s in ("read", "qc", "gate", "score", "classify")}
    cmds = {
        "read": _cli("read", src, "-o", f["read"]),
        "qc": _cli("qc", f["read"], "-o", f["qc"], "--filter"),
        "gate": _cli("gate", f["qc"], "-o", f["gate"]),
        "score": _cli("score", f["gate"], "-o", f["score"], "--min-coverage", "library"),
        "classify": _cli("classify", f["score"], "-o", f["classify"], "--on-insufficient", "skip",
                         "--cells-csv", d / "cells.csv", "--proportions-csv", d / "proportions.csv"),
        "report": _cli("report", f["classify"], "-o", d / "report.html"),
    }
    out: dict[str, dict] = {}
    # the file each step reads; deleted once the next step has run unless --keep-intermediates
    # (at 1M cells every intermediate .h5ad is >10 GB); score/classify are kept (backed runs)
    consumed = {"qc": f["read"], "gate": f["qc"], "score": f["gate"]}
    for s in steps:
        res = _timed(cmds[s], d / f"{s}.log")
        out[s] = res
        size = f[s].stat().st_size / 1e9 if s in f and f[s].exists() else float("nan")
        res["output_gb"] = size
        print(f"  {n:>8} {s:<10} {res['seconds']:8.1f} s {res['peak_mb']:8.0f} MB  output {size:5.1f} GB"
              f"{'' if res['ok'] else '  FAILED (see ' + res['log'] + ')'}", flush=True)
        if not res["ok"]:
            break
        if not KEEP_INTERMEDIATES and s in consumed and sharded <= 1:
            consumed[s].unlink(missing_ok=True)
    if sharded > 1 and f["read"].exists():
        per_shard: list[float] = []
        peak, total = 0.0, 0.0
        scored = []
        for i in range(sharded):
            sh = d / f"shard_{i}.h5ad"
            t_i = 0.0
            for name, cmd in (
                ("shard", _cli("shard", f["read"], "-o", sh, "--n-shards", sharded, "--index", i)),
                ("qc", _cli("qc", sh, "-o", d / f"shard_{i}_qc.h5ad")),
                ("score", _cli("score", d / f"shard_{i}_qc.h5ad", "-o", d / f"shard_{i}_scored.h5ad",
                               "--min-coverage", "library")),
            ):
                res = _timed(cmd, d / f"shard_{i}_{name}.log")
                t_i += res["seconds"]
                peak = max(peak, res["peak_mb"])
                if not res["ok"]:
                    print(f"  shard {i} {name} FAILED (see {res['log']})")
            per_shard.append(t_i)
            total += t_i
            scored.append(d / f"shard_{i}_scored.h5ad")
        res = _timed(_cli("merge", *scored, "-o", d / "merged.h5ad", "--filter"), d / "merge.log")
        out["sharded"] = {"ok": res["ok"], "seconds": total + res["seconds"],
                          "critical_path": max(per_shard) + res["seconds"],
                          "peak_mb": max(peak, res["peak_mb"]), "merge_seconds": res["seconds"],
                          "merge_peak_mb": res["peak_mb"]}
        print(f"  {n:>8} sharded x{sharded}: shard+qc+score {total:.1f} s (slowest shard "
              f"{max(per_shard):.1f} s), merge {res['seconds']:.1f} s, peak {out['sharded']['peak_mb']:.0f} MB",
              flush=True)
        for p in d.glob("shard_*.h5ad"):
            p.unlink()
    return out


# ----------------------------------------------------------------------------- backed worker


def _vmhwm_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def backed_worker(what: str, path: str, model: str) -> dict:
    import cafclassify as caf
    from cafclassify.io._lazy import open_lazy

    a = open_lazy(path)  # X and every layer stay on disk
    t = time.perf_counter()
    if what == "score":
        caf.score(a, "caf_v1", method="ucell", key_added="bench_scores", chunk_size=20000)
    else:
        caf.classify(a, model, key_added="bench_subtype")
    return {"seconds": time.perf_counter() - t, "peak_mb": _vmhwm_mb(), "n_cells": int(a.n_obs)}


def run_backed(n: int, work: Path) -> dict[str, dict]:
    d = work / f"n{n}"
    scored = d / "score.h5ad"
    model = d / "model.cafmodel"
    out: dict[str, dict] = {}
    if not scored.exists():
        print(f"  backed: {scored} missing (run the score step first)")
        return out
    if not model.exists():
        res = _timed(_cli("train", scored, "-o", model), d / "train.log")
        out["train"] = res
        print(f"  {n:>8} train      {res['seconds']:8.1f} s {res['peak_mb']:8.0f} MB", flush=True)
    for what in ("score", "predict"):
        r = subprocess.run([sys.executable, __file__, "--backed-worker", what, str(scored), str(model)],
                           capture_output=True, text=True)
        if r.returncode != 0:
            print(f"  backed {what} FAILED:\n{r.stderr[-1500:]}")
            continue
        res = json.loads(r.stdout.strip().splitlines()[-1])
        out[f"backed_{what}"] = res
        print(f"  {n:>8} backed {what:<8}{res['seconds']:7.1f} s {res['peak_mb']:8.0f} MB", flush=True)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="10000,100000")
    p.add_argument("--steps", default=",".join(STEPS))
    p.add_argument("--sharded", type=int, default=0, help="also run the sharded path with K shards")
    p.add_argument("--backed", action="store_true", help="also measure backed scoring and prediction")
    p.add_argument("--out-of-core", action="store_true",
                   help="run every step with --backed yes (matrices on disk, blocks of cells)")
    p.add_argument("--compression", choices=("gzip", "lzf", "none"), default=None,
                   help="compression of the .h5ad files the steps write (CLI --compression)")
    p.add_argument("--replicate-from", type=int, default=None, metavar="N",
                   help="build sizes above N by replicating the N-cell simulation (faster than simulating)")
    p.add_argument("--keep-intermediates", action="store_true",
                   help="keep read/qc/gate outputs (deleted by default once used: disk space at 1M cells)")
    p.add_argument("--work", default=str(DATA_DIR / "workflow"))
    p.add_argument("--json", default=None, help="also write the results as JSON")
    p.add_argument("--backed-worker", nargs=3, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.backed_worker:
        print(json.dumps(backed_worker(*args.backed_worker)))
        return 0
    global KEEP_INTERMEDIATES
    KEEP_INTERMEDIATES = bool(args.keep_intermediates)
    if args.out_of_core:
        GLOBAL_OPTS[:] = ["--backed", "yes"]
    if args.compression:
        GLOBAL_OPTS.extend(["--compression", args.compression])
    sizes = [int(s) for s in args.sizes.split(",")]
    steps = [s for s in args.steps.split(",") if s]
    work = Path(args.work)
    print(f"# cafclassify workflow benchmark; {os.cpu_count()} CPUs (shared machine: timings are noisy)"
          + ("; out of core (--backed yes)" if args.out_of_core else "")
          + (f"; --compression {args.compression}" if args.compression else ""))
    results: dict[int, dict] = {}
    for n in sizes:
        results[n] = run_size(n, steps, work, args.sharded, args.replicate_from)
        if args.backed:
            results[n].update(run_backed(n, work))
    cols = [s for s in (*steps, "sharded", "train", "backed_score", "backed_predict")
            if any(s in r for r in results.values())]
    print()
    print("| step | " + " | ".join(f"{n:,} cells: s / peak MB" for n in sizes) + " | exponent |")
    print("|---|" + "---|" * (len(sizes) + 1))
    for s in cols:
        cells, ts = [], []
        for n in sizes:
            r = results[n].get(s)
            if r is None:
                cells.append("-")
                continue
            extra = f" (critical path {r['critical_path']:.0f})" if "critical_path" in r else ""
            cells.append(f"{r['seconds']:.1f}{extra} / {r['peak_mb']:.0f}")
            ts.append((n, r["seconds"]))
        expo = "-"
        if len(ts) >= 2:
            x, y = np.log([t[0] for t in ts]), np.log([max(t[1], 1e-3) for t in ts])
            expo = f"{np.polyfit(x, y, 1)[0]:.2f}"
        print(f"| {s} | " + " | ".join(cells) + f" | {expo} |")
    tot = []
    for n in sizes:
        ok = [results[n][s] for s in steps if s in results[n]]
        tot.append(f"{sum(r['seconds'] for r in ok):.0f} / {max((r['peak_mb'] for r in ok), default=0):.0f}")
    print("| **whole workflow (sum; max)** | " + " | ".join(tot) + " | |")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
