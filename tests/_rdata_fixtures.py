"""R objects written by R itself (Rscript at test time) for the ``.rds``/``.RData`` reader tests.

:func:`write_r_objects` exports a small simulated data set (counts as Matrix Market, gene
and cell names, cell metadata) and runs one Rscript that builds, from it, a Seurat object
(SeuratObject's ``Assay``), a SingleCellExperiment with Ensembl row names, plain sparse and
dense matrices, ``.RData`` files and malformed objects, and writes next to each object
what R holds in it (matrices as triplets printed with 17 significant digits, names, metadata,
factor levels, embeddings), so the tests compare what Python read with what R wrote.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.io
import scipy.sparse as sp

RSCRIPT = shutil.which("Rscript")

R_SCRIPT = r"""
suppressPackageStartupMessages({
  library(Matrix); library(SeuratObject); library(SingleCellExperiment)
})
args <- commandArgs(trailingOnly = TRUE); d <- args[1]
f <- function(...) file.path(d, ...)
counts <- as(readMM(f("in_counts.mtx")), "CsparseMatrix")  # genes x cells
genes <- readLines(f("in_genes.txt")); cells <- readLines(f("in_cells.txt"))
ens <- readLines(f("in_ensembl.txt"))
dimnames(counts) <- list(genes, cells)
meta <- read.csv(f("in_meta.csv"), row.names = 1, stringsAsFactors = FALSE)
meta$lineage <- factor(meta$lineage, levels = rev(sort(unique(meta$lineage))))
lognorm <- log1p(t(t(counts) / colSums(counts)) * 1e4)
pca <- matrix(round(rnorm(ncol(counts) * 3, sd = 2), 6) + 1/3, ncol = 3,
              dimnames = list(cells, paste0("PC_", 1:3)))

dump_mat <- function(m, name) {  # genes x cells, every stored value
  m <- as(m, "CsparseMatrix"); s <- summary(m)
  write.table(data.frame(i = s$i, j = s$j, x = sprintf("%.17g", s$x)), f(paste0(name, "_x.tsv")),
              sep = "\t", quote = FALSE, row.names = FALSE)
  writeLines(if (is.null(rownames(m))) character(0) else rownames(m), f(paste0(name, "_rows.txt")))
  writeLines(if (is.null(colnames(m))) character(0) else colnames(m), f(paste0(name, "_cols.txt")))
  writeLines(as.character(dim(m)), f(paste0(name, "_dim.txt")))
}
dump_df <- function(df, name) {
  out <- df
  for (c in names(out)) if (is.numeric(out[[c]])) out[[c]] <- sprintf("%.17g", out[[c]])
  write.table(out, f(paste0(name, "_meta.tsv")), sep = "\t", quote = FALSE, col.names = NA)
  for (c in names(df)) if (is.factor(df[[c]])) writeLines(levels(df[[c]]), f(paste0(name, "_levels_", c, ".txt")))
}
dump_emb <- function(m, name) write.table(matrix(sprintf("%.17g", m), nrow(m)), f(paste0(name, ".tsv")),
                                          sep = "\t", quote = FALSE, row.names = rownames(m), col.names = FALSE)

## Seurat (SeuratObject v3/v4 Assay): counts + normalised data + meta.data + PCA + idents
s <- CreateSeuratObject(counts = counts, project = "simcaf", meta.data = meta)
s <- SetAssayData(s, slot = "data", new.data = lognorm)
s[["pca"]] <- CreateDimReducObject(embeddings = pca, key = "PC_", assay = "RNA")
Idents(s) <- "lineage"
saveRDS(s, f("seurat.rds"))
dump_mat(GetAssayData(s, slot = "counts"), "seurat_counts")
dump_mat(GetAssayData(s, slot = "data"), "seurat_data")
dump_df(s[[]], "seurat")
dump_emb(Embeddings(s, "pca"), "seurat_pca")
writeLines(as.character(Idents(s)), f("seurat_idents.txt"))
writeLines(levels(Idents(s)), f("seurat_idents_levels.txt"))
writeLines(c(as.character(packageVersion("SeuratObject")), DefaultAssay(s)), f("seurat_version.txt"))

## Seurat whose assay holds normalised data only (no counts)
s2 <- CreateSeuratObject(CreateAssayObject(data = lognorm), meta.data = meta)
saveRDS(s2, f("seurat_data_only.rds"))

## SingleCellExperiment: Ensembl row names with a Symbol column, counts + logcounts,
## colData, two reducedDims; xz-compressed (saveRDS's compress = "xz")
cnt_e <- counts; rownames(cnt_e) <- ens
sce <- SingleCellExperiment(assays = list(counts = cnt_e, logcounts = as(log1p(cnt_e), "CsparseMatrix")),
                            colData = DataFrame(meta, check.names = FALSE),
                            rowData = DataFrame(Symbol = genes, row.names = ens))
reducedDim(sce, "PCA") <- unname(pca)
reducedDim(sce, "UMAP") <- pca[, 1:2] * 2
saveRDS(sce, f("sce.rds"), compress = "xz")
dump_mat(assay(sce, "counts"), "sce_counts")
dump_mat(assay(sce, "logcounts"), "sce_logcounts")
dump_df(as.data.frame(colData(sce)), "sce")
writeLines(rowData(sce)$Symbol, f("sce_symbols.txt"))
dump_emb(reducedDim(sce, "PCA"), "sce_PCA"); dump_emb(reducedDim(sce, "UMAP"), "sce_UMAP")
writeLines(as.character(packageVersion("SingleCellExperiment")), f("sce_version.txt"))

## SummarizedExperiment (no reducedDims), bzip2-compressed
se <- SummarizedExperiment(assays = list(counts = counts), colData = DataFrame(meta))
saveRDS(se, f("se.rds"), compress = "bzip2")

## plain matrices; the sparse one has its metadata in a separate file
saveRDS(counts, f("dgc.rds"))
write.csv(meta[rev(seq_len(nrow(meta))), ], f("dgc_meta.csv"))
saveRDS(as.matrix(counts[1:50, 1:20]), f("dense.rds"))
dump_mat(counts[1:50, 1:20], "dense")

## a huge, nearly empty dgCMatrix: 30000 genes x 100000 cells (12 GB if densified)
set.seed(2)
big <- sparseMatrix(i = sample.int(30000, 500), j = sample.int(100000, 500), x = rpois(500, 3) + 1,
                    dims = c(30000, 100000))
saveRDS(big, f("big_sparse.rds"))
dump_mat(big, "big")

## .RData files
save(sce, file = f("one_sce.RData"))
sce2 <- sce; other <- list(a = 1:3)
save(sce, other, file = f("sce_and_list.rda"))
save(sce, sce2, file = f("two_sce.RData"))
x <- 1:10; note <- "hello"
save(x, note, file = f("no_cells.RData"))

## not single-cell objects
saveRDS(list(counts = counts, meta = meta), f("list.rds"))
saveRDS(c("a", "b", "c"), f("chr.rds"))
saveRDS(meta, f("dataframe.rds"))
"""


def _ensembl_ids(symbols: list[str]) -> list[str]:
    """One Ensembl ID per symbol from the shipped table (made-up unique IDs when unmapped)."""
    from cafclassify.genes._tables import ensembl_human_to_symbol

    inv: dict[str, str] = {}
    for ens, sym in ensembl_human_to_symbol().items():
        inv.setdefault(sym, ens)
    out, used = [], set()
    for i, s in enumerate(symbols):
        e = inv.get(s)
        if e is None or e in used:
            e = f"ENSG9{i:010d}"
        used.add(e)
        out.append(e)
    return out


def simulated(n_cells: int = 300, n_genes: int = 2000, seed: int = 0):
    from cafclassify.datasets import simulate

    a = simulate(n_cells, n_genes=n_genes, random_state=seed)
    a.obs = pd.DataFrame(
        {
            "lineage": a.obs["true_lineage"].astype(str).to_numpy(),
            "subtype": a.obs["true_subtype"].astype(str).to_numpy(),
            "batch": a.obs["batch"].astype(str).to_numpy(),
            "library": a.obs["true_library_size"].astype(float).round(3).to_numpy(),
        },
        index=a.obs_names,
    )
    return a


def write_r_objects(folder: Path, adata) -> Path:
    """Export ``adata`` (counts, cells x genes) and build every R object in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    scipy.io.mmwrite(folder / "in_counts.mtx", sp.csr_matrix(adata.X).T.tocoo(), field="integer")
    (folder / "in_genes.txt").write_text("\n".join(adata.var_names) + "\n")
    (folder / "in_cells.txt").write_text("\n".join(adata.obs_names) + "\n")
    (folder / "in_ensembl.txt").write_text("\n".join(_ensembl_ids(list(adata.var_names))) + "\n")
    adata.obs.to_csv(folder / "in_meta.csv")
    (folder / "make.R").write_text(R_SCRIPT)
    proc = subprocess.run(
        [RSCRIPT, "--vanilla", str(folder / "make.R"), str(folder)],
        capture_output=True, text=True, timeout=300,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"Rscript failed:\n{proc.stdout}\n{proc.stderr}")
    return folder


def r_matrix(folder: Path, name: str) -> tuple[sp.csr_matrix, list[str], list[str]]:
    """A matrix R dumped (genes x cells) as cells x genes CSR, with gene and cell names."""
    nrow, ncol = (int(x) for x in (folder / f"{name}_dim.txt").read_text().split())
    t = pd.read_csv(folder / f"{name}_x.tsv", sep="\t", dtype={"x": str})
    x = np.array([float(v) for v in t["x"]])
    m = sp.csr_matrix((x, (t["j"].to_numpy() - 1, t["i"].to_numpy() - 1)), shape=(ncol, nrow))
    rows = (folder / f"{name}_rows.txt").read_text().splitlines()
    cols = (folder / f"{name}_cols.txt").read_text().splitlines()
    return m, rows, cols


def r_table(folder: Path, name: str) -> pd.DataFrame:
    return pd.read_csv(folder / f"{name}_meta.tsv", sep="\t", index_col=0, keep_default_na=False,
                       float_precision="round_trip")


def r_embedding(folder: Path, name: str) -> pd.DataFrame:
    return pd.read_csv(folder / f"{name}.tsv", sep="\t", header=None, index_col=0,
                       float_precision="round_trip")


def r_lines(folder: Path, name: str) -> list[str]:
    return (folder / name).read_text().splitlines()
