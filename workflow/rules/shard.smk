# Scatter-gather for large datasets: a dataset with more cells than config shard.max_cells
# is split by cells into shards that run as separate jobs (QC metrics and, for UCell,
# scores), then merged back in the original cell order. What needs all cells runs on the
# merged file: the QC thresholds (recomputed over all cells of each sample by `merge`),
# the lineage gate, non-per-cell scoring methods and the classifier. Per-cell results
# equal those of the unsharded run (tests/test_shard.py).
#
#   read (whole) -> shard x N -> qc (metrics, marks) x N -> [score (ucell) x N]
#       -> merge (QC thresholds over all cells, filter) = results/<id>/qc.h5ad
#       -> gate -> [score] -> classify -> report
#
# The number of shards is decided when the workflow starts, from the cell count in the
# header of the (local or already downloaded) input file.


rule shard:
    input:
        h5ad="results/{dataset}/read.h5ad",
    output:
        h5ad=temp("results/{dataset}/shards/{shard}/read.h5ad"),
    log:
        "logs/shard/{dataset}/{shard}.log",
    wildcard_constraints:
        dataset=SHARDED_RE,
        shard=r"\d{3}",
    params:
        opts=lambda wc: cli_opts(n_shards=N_SHARDS[wc.dataset], index=int(wc.shard), compression="none"),
    threads: 1
    resources:
        mem_mb=1500,
    conda:
        "../envs/cafclassify.yaml"
    shell:
        "cafclassify shard {input.h5ad:q} -o {output.h5ad:q} {params.opts} > {log:q} 2>&1"


# QC metrics and per-shard marks; the thresholds are recomputed over all cells by merge.
rule qc_shard:
    input:
        h5ad="results/{dataset}/shards/{shard}/read.h5ad",
    output:
        h5ad=temp("results/{dataset}/shards/{shard}/qc.h5ad"),
    log:
        "logs/qc/{dataset}/{shard}.log",
    wildcard_constraints:
        dataset=SHARDED_RE,
        shard=r"\d{3}",
    params:
        opts=lambda wc: step_opts(
            sample_key=row(wc)["sample_column"],
            nmads=config["qc"]["nmads"],
            max_pct_mt=config["qc"]["max_pct_mt"],
            min_genes=config["qc"]["min_genes"],
            no_filter=True,  # per shard: mark only; the merge filters on thresholds over all cells
        ),
    threads: 1
    resources:
        mem_mb=mem_mb(10),
    conda:
        "../envs/cafclassify.yaml"
    shell:
        "cafclassify --threads {threads} qc {input.h5ad:q} -o {output.h5ad:q} {params.opts}"
        " > {log:q} 2>&1"


rule score_shard:
    input:
        h5ad="results/{dataset}/shards/{shard}/qc.h5ad",
    output:
        h5ad=temp("results/{dataset}/shards/{shard}/scored.h5ad"),
    log:
        "logs/score/{dataset}/{shard}.log",
    wildcard_constraints:
        dataset=SHARD_SCORED_RE,
        shard=r"\d{3}",
    params:
        opts=lambda wc: score_opts(wc),
    threads: 2
    resources:
        mem_mb=mem_mb(10),
    conda:
        "../envs/cafclassify.yaml"
    shell:
        "cafclassify --threads {threads} score {input.h5ad:q} -o {output.h5ad:q} {params.opts}"
        " > {log:q} 2>&1"


# Gather: QC thresholds over all cells of each sample, failing cells removed (qc.filter),
# shards concatenated in the original cell order. Same file as the unsharded qc step.
rule merge_shards:
    input:
        h5ad=shard_files("qc.h5ad"),
    output:
        h5ad="results/{dataset}/qc.h5ad",
    log:
        "logs/merge/{dataset}.log",
    wildcard_constraints:
        dataset=MERGE_ONLY_RE,
    params:
        opts=step_opts(filter=config["qc"]["filter"]),
    threads: 1
    resources:
        mem_mb=mem_mb(1, floor=2000),
    conda:
        "../envs/cafclassify.yaml"
    shell:
        "cafclassify merge {input.h5ad:q} -o {output.h5ad:q} {params.opts} > {log:q} 2>&1"


rule merge_scored_shards:
    input:
        h5ad=shard_files("scored.h5ad"),
    output:
        h5ad="results/{dataset}/qc.h5ad",
        coverage="results/{dataset}/signature_coverage.csv",
    log:
        "logs/merge/{dataset}.log",
    wildcard_constraints:
        dataset=SHARD_SCORED_RE,
    params:
        opts=step_opts(filter=config["qc"]["filter"]),
    threads: 1
    resources:
        mem_mb=mem_mb(1, floor=2000),
    conda:
        "../envs/cafclassify.yaml"
    shell:
        "cafclassify merge {input.h5ad:q} -o {output.h5ad:q} --coverage-csv {output.coverage:q}"
        " {params.opts} > {log:q} 2>&1"
