# Builds seurat_v5.rds: a Seurat object with a SeuratObject v5 `Assay5` whose counts and
# data are split by sample into layers (counts.s1, counts.s2, data.s1, data.s2), plus the
# expected_*.csv files the test compares with. Run: Rscript --vanilla make_fixture.R
#
# Debian's SeuratObject (4.1.3) predates v5 and cannot create Assay5 objects, so the classes
# are declared here with base R's `methods`, slot for slot as SeuratObject 5.0 declares them
# (classes Seurat, Assay5 (StdAssay), LogMap, DimReduc; package attribute "SeuratObject").
# `saveRDS()` then writes exactly what SeuratObject 5 writes for such an object: the class
# names with their package, the slots as attributes, layers without dimnames (v5 keeps the
# cell and feature names in the `cells`/`features` LogMaps) and `version` 5.0.2.
suppressPackageStartupMessages(library(Matrix))
setClass("LogMap", contains = "matrix", package = "SeuratObject")
setClass("Assay5", package = "SeuratObject", representation(
  layers = "list", cells = "LogMap", features = "LogMap", default = "integer",
  assay.orig = "character", meta.data = "data.frame", misc = "list", key = "character"))
setClass("JackStrawData", package = "SeuratObject", representation(
  empirical.p.values = "matrix", fake.reduction.scores = "matrix",
  empirical.p.values.full = "matrix", overall.p.values = "matrix"))
setClass("DimReduc", package = "SeuratObject", representation(
  cell.embeddings = "matrix", feature.loadings = "matrix", feature.loadings.projected = "matrix",
  assay.used = "character", global = "logical", stdev = "numeric", jackstraw = "JackStrawData",
  misc = "list", key = "character"))
setClass("Seurat", package = "SeuratObject", representation(
  assays = "list", meta.data = "data.frame", active.assay = "character", active.ident = "factor",
  graphs = "list", neighbors = "list", reductions = "list", images = "list",
  project.name = "character", misc = "list", version = "package_version", commands = "list",
  tools = "list"))

genes <- c("COL1A1", "COL1A2", "COL3A1", "DCN", "LUM", "PDGFRA", "PDGFRB", "ACTA2", "TAGLN",
           "MYL9", "FAP", "POSTN", "THY1", "VIM", "PTPRC", "CD3E", "CD4", "CD8A", "MS4A1", "CD14",
           "LYZ", "EPCAM", "KRT8", "KRT18", "KRT19", "PECAM1", "VWF", "CDH5", "MKI67", "TOP2A",
           "GAPDH", "ACTB", "B2M", "MALAT1", "IL6", "CXCL12", "CFD", "HLA-DRA", "CD74", "RGS5")
cells <- sprintf("AAACCTG%02d-1", 1:12)
set.seed(5)
counts <- Matrix(rpois(length(genes) * length(cells), 1.5), length(genes), length(cells),
                 sparse = TRUE, dimnames = list(genes, cells))
counts <- as(counts, "CsparseMatrix")
data <- as(log1p(t(t(counts) / colSums(counts)) * 1e4), "CsparseMatrix")
sample <- rep(c("s1", "s2"), length.out = length(cells))  # interleaved: joining must reorder
celltype <- factor(rep(c("CAF", "T cell", "epithelial"), each = 4), levels = c("epithelial", "CAF", "T cell"))
in1 <- sample == "s1"; in2 <- sample == "s2"
strip <- function(m) { dimnames(m) <- NULL; m }
layers <- list(counts.s1 = strip(counts[, in1]), counts.s2 = strip(counts[, in2]),
               data.s1 = strip(data[, in1]), data.s2 = strip(data[, in2]))
cellmap <- new("LogMap", cbind(counts.s1 = in1, counts.s2 = in2, data.s1 = in1, data.s2 = in2))
rownames(cellmap) <- cells
featmap <- new("LogMap", matrix(TRUE, length(genes), 4, dimnames = list(genes, names(layers))))
assay <- new("Assay5", layers = layers, cells = cellmap, features = featmap, default = 1L,
             assay.orig = character(0), key = "rna_", misc = list(),
             meta.data = data.frame(feature_type = rep("Gene Expression", length(genes))))
meta <- data.frame(orig.ident = factor(rep("fixture", 12)), nCount_RNA = colSums(counts),
                   nFeature_RNA = colSums(counts > 0), sample = sample, celltype = celltype,
                   row.names = cells)
umap <- matrix(round(sin(seq_len(24)), 6), 12, 2, dimnames = list(cells, c("umap_1", "umap_2")))
jack <- new("JackStrawData")
red <- new("DimReduc", cell.embeddings = umap, assay.used = "RNA", global = TRUE, key = "umap_",
           jackstraw = jack)
obj <- new("Seurat", assays = list(RNA = assay), meta.data = meta, active.assay = "RNA",
           active.ident = factor(setNames(as.character(celltype), cells)),
           reductions = list(umap = red), project.name = "fixture",
           version = package_version("5.0.2"))
saveRDS(obj, "seurat_v5.rds")
write.csv(as.matrix(t(counts)), "expected_counts.csv")
write.csv(format(as.matrix(t(data)), digits = 17), "expected_data.csv", quote = FALSE)
write.csv(meta, "expected_meta.csv")
write.csv(format(umap, digits = 17), "expected_umap.csv", quote = FALSE)
