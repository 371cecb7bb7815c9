# Small R files that are not (or not unambiguously) one single-cell object, for the
# bad-input catalogue (tests/test_bad_inputs.py, docs/errors.md), which runs without R.
# Written with R 4.2.2 and SingleCellExperiment 1.20.0 (Debian bookworm) by
#   Rscript --vanilla make_bad_objects.R
suppressPackageStartupMessages({library(Matrix); library(SingleCellExperiment)})
counts <- Matrix(c(0, 3, 1, 0, 2, 0, 5, 1, 0, 4, 0, 2), 4, 3, sparse = TRUE,
                 dimnames = list(c("COL1A1", "DCN", "PTPRC", "EPCAM"), c("c1", "c2", "c3")))
saveRDS(list(counts = counts, genes = rownames(counts)), "list.rds")
saveRDS(c("COL1A1", "DCN", "PTPRC"), "character.rds")
tumour <- SingleCellExperiment(assays = list(counts = counts))
normal <- tumour
save(tumour, normal, file = "two_sce.RData")
