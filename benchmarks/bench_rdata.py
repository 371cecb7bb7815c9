"""Reading R objects (.rds) versus the same data as .h5ad: time and peak memory.

Run: ``python benchmarks/bench_rdata.py [--n-cells 100000] [--n-genes 5000] [--nnz-per-cell 300]``
(needs Rscript with SeuratObject and SingleCellExperiment, e.g. Debian's r-base-core,
r-cran-seuratobject, r-bioc-singlecellexperiment; R is used only to *write* the objects).

Rscript writes a random sparse count matrix (genes x cells, Poisson-like integer counts,
``--nnz-per-cell`` detected genes per cell, real human gene symbols) into a Seurat object
(counts + log-normalised ``data`` + meta.data, as ``CreateSeuratObject`` + ``SetAssayData``
make it) and a SingleCellExperiment (counts + logcounts + colData), both with ``saveRDS``
(gzip, R's default). The counts the Seurat reader returns are then written as ``.h5ad``
(gzip, anndata's usual compression, X = counts + obs) so both formats hold the same
matrix. Each measurement runs in a fresh Python process started by a small parent (peak
RSS from ``resource``, which counts from the parent's size at fork time, ~100 MB):

- ``parse``: the format's own loader only (``rdata`` parse + conversion into an AnnData of
  the counts vs ``anndata.read_h5ad``);
- ``cafclassify.read``: the whole reader (detection, value type, normalisation, gene identity).

Prints one table. Timings on a shared 2-core machine are noisy.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

R_WRITE = r"""
suppressPackageStartupMessages({library(Matrix); library(SeuratObject); library(SingleCellExperiment)})
a <- commandArgs(trailingOnly = TRUE); d <- a[1]; nc <- as.integer(a[2]); k <- as.integer(a[3])
genes <- readLines(file.path(d, "genes.txt")); ng <- length(genes)
set.seed(0)
i <- as.integer(unlist(lapply(seq_len(nc), function(j) sort(sample.int(ng, k)))))
p <- as.integer(c(0, cumsum(rep(k, nc))))
x <- as.numeric(rpois(length(i), 2) + 1)
counts <- new("dgCMatrix", i = i - 1L, p = p, x = x, Dim = c(ng, nc),
              Dimnames = list(genes, sprintf("cell%06d", seq_len(nc))))
meta <- data.frame(sample = sprintf("s%d", seq_len(nc) %% 4), row.names = colnames(counts))
lib <- unname(colSums(counts))
data <- counts; data@x <- log1p(data@x / rep(lib, diff(data@p)) * 1e4)
s <- CreateSeuratObject(counts = counts, meta.data = meta)
s <- SetAssayData(s, slot = "data", new.data = data)
saveRDS(s, file.path(d, "seurat.rds"))
sce <- SingleCellExperiment(assays = list(counts = counts, logcounts = data), colData = DataFrame(meta))
saveRDS(sce, file.path(d, "sce.rds"))
"""

WRITE_H5AD = r"""
import sys, warnings
from pathlib import Path
warnings.simplefilter("ignore")
from cafclassify.io._rdata import read_r_file
d = Path(sys.argv[1])
same, _ = read_r_file(d / "seurat.rds", "rds")  # counts + obs, as stored in R
same.write_h5ad(d / "same.h5ad", compression="gzip")
"""

MEASURE = r"""
import json, resource, sys, time, warnings
warnings.simplefilter("ignore")
path, what = sys.argv[1], sys.argv[2]
t0 = time.perf_counter()
if what == "parse_rds":
    from cafclassify.io._rdata import read_r_file
    from pathlib import Path
    adata, info = read_r_file(Path(path), "rds")
elif what == "parse_h5ad":
    import anndata as ad
    adata = ad.read_h5ad(path)
else:
    import cafclassify as cc
    adata = cc.read(path, species="human")
dt = time.perf_counter() - t0
print(json.dumps({"seconds": dt, "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "n_obs": adata.n_obs, "n_vars": adata.n_vars, "nnz": int(adata.X.nnz)}))
"""


def _measure(path: Path, what: str) -> dict:
    proc = subprocess.run([sys.executable, "-c", MEASURE, str(path), what],
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"measurement {what} on {path} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-cells", type=int, default=100_000)
    ap.add_argument("--n-genes", type=int, default=5000)
    ap.add_argument("--nnz-per-cell", type=int, default=300)
    ap.add_argument("--keep", default=None, metavar="DIR",
                    help="keep the written files in DIR (and reuse them when DIR has them)")
    args = ap.parse_args()
    rscript = shutil.which("Rscript")
    if rscript is None:
        raise SystemExit("Rscript is needed to write the R objects (apt-get install r-base-core "
                         "r-cran-seuratobject r-bioc-singlecellexperiment)")
    from importlib.metadata import version

    from cafclassify.datasets import simulate

    tmp = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="bench_rdata_"))
    tmp.mkdir(parents=True, exist_ok=True)
    try:
        written = all((tmp / f).exists() for f in ("seurat.rds", "sce.rds", "same.h5ad"))
        if written:  # --keep DIR of an earlier run with the same sizes
            print(f"reusing the objects in {tmp}", file=sys.stderr)
        genes = list(simulate(10, n_genes=args.n_genes, random_state=0).var_names)
        (tmp / "genes.txt").write_text("\n".join(genes) + "\n")
        (tmp / "write.R").write_text(R_WRITE)
        if not written:
            t0 = time.perf_counter()
            subprocess.run([rscript, "--vanilla", str(tmp / "write.R"), str(tmp),
                            str(args.n_cells), str(args.nnz_per_cell)], check=True)
            print(f"R wrote the objects in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
            # in a child process, so this process stays small: a child's peak RSS
            # (ru_maxrss) starts from its parent's size at fork time
            subprocess.run([sys.executable, "-c", WRITE_H5AD, str(tmp)], check=True)
        rows = []
        for label, path, kind in (
            ("Seurat .rds", tmp / "seurat.rds", "rds"),
            ("SCE .rds", tmp / "sce.rds", "rds"),
            (".h5ad (same counts)", tmp / "same.h5ad", "h5ad"),
        ):
            parse = _measure(path, f"parse_{kind}")
            full = _measure(path, "read")
            rows.append((label, path.stat().st_size / 2**20, parse, full))
        n = rows[0][2]
        print(f"\n{n['n_obs']} cells x {n['n_vars']} genes, {n['nnz']:,} stored counts "
              f"(anndata {version('anndata')}, rdata {version('rdata')})\n")
        h5 = rows[-1]
        print(f"{'file':<22}{'MB':>7}{'parse s':>9}{'peak MB':>9}{'read() s':>10}{'peak MB':>9}"
              f"{'x h5ad':>8}")
        for label, mb, parse, full in rows:
            print(f"{label:<22}{mb:>7.0f}{parse['seconds']:>9.1f}{parse['peak_mb']:>9.0f}"
                  f"{full['seconds']:>10.1f}{full['peak_mb']:>9.0f}"
                  f"{full['seconds'] / h5[3]['seconds']:>8.1f}")
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
