# Lineage gate -> signature scores -> classifier training -> subtype classification.


rule gate:
    input:
        h5ad="results/{dataset}/qc.h5ad",
    output:
        h5ad="results/{dataset}/gate.h5ad",
    log:
        "logs/gate/{dataset}.log",
    params:
        opts=lambda wc: step_opts(
            signatures=config["signatures"],
            resolution=config["gate"]["resolution"],
            seed=config["seed"],
        ),
    threads: 2
    resources:
        mem_mb=mem_mb(12),
    conda:
        "../envs/cafclassify.yaml"
    shell:
        "cafclassify --threads {threads} gate {input.h5ad:q} -o {output.h5ad:q} {params.opts}"
        " > {log:q} 2>&1"


# Datasets scored per shard (workflow/rules/shard.smk) carry their scores in qc.h5ad
# already: the gate writes scored.h5ad directly and the score step is not run.
use rule gate as gate_scored with:
    output:
        h5ad="results/{dataset}/scored.h5ad",
    wildcard_constraints:
        dataset=SHARD_SCORED_RE,


rule score:
    input:
        h5ad="results/{dataset}/gate.h5ad",
    output:
        h5ad="results/{dataset}/scored.h5ad",
        coverage="results/{dataset}/signature_coverage.csv",
    log:
        "logs/score/{dataset}.log",
    wildcard_constraints:
        dataset=NOT_SHARD_SCORED_RE,  # shard-scored datasets: see workflow/rules/shard.smk
    params:
        opts=score_opts,
    threads: 2
    resources:
        mem_mb=mem_mb(10),
    conda:
        "../envs/cafclassify.yaml"
    shell:
        "cafclassify --threads {threads} score {input.h5ad:q} -o {output.h5ad:q}"
        " --coverage-csv {output.coverage:q} {params.opts} > {log:q} 2>&1"


# Pooled model: one classifier trained on the cells of all datasets in config train.pool,
# then used to classify each of them. Datasets not pooled are classified by a model trained
# on their own cells inside the classify step (it also records the seed cells it used).
rule train:
    input:
        h5ad=expand("results/{dataset}/scored.h5ad", dataset=config["train"]["pool"]),
    output:
        model=f"results/{POOLED}/{MODEL_FILE}",
    log:
        f"logs/train/{POOLED}.log",
    params:
        opts=step_opts(
            signatures=config["signatures"],
            estimator=config["train"]["estimator"],
            seed=config["seed"],
            batch_key="dataset",
        ),
    threads: 2
    resources:
        mem_mb=mem_mb(10),
    conda:
        "../envs/cafclassify.yaml"
    shell:
        "cafclassify --threads {threads} train {input.h5ad:q} -o {output.model:q} {params.opts}"
        " > {log:q} 2>&1"


rule classify:
    input:
        h5ad="results/{dataset}/scored.h5ad",
        model=model_for,
    output:
        h5ad="results/{dataset}/classified.h5ad",
        cells=report(
            "results/{dataset}/cells.csv",
            caption="../report/cells.rst",
            category="Per-cell tables",
            labels={"dataset": "{dataset}"},
        ),
        proportions=report(
            "results/{dataset}/proportions.csv",
            caption="../report/proportions.rst",
            category="Proportions",
            labels={"dataset": "{dataset}"},
        ),
    log:
        "logs/classify/{dataset}.log",
    params:
        opts=lambda wc, input: step_opts(
            model=input.model or None,
            signatures=config["signatures"],
            estimator=None if input.model else config["train"]["estimator"],
            on_insufficient=config["classify"]["on_insufficient"],
            sample_key=row(wc)["sample_column"],
            threshold=config["classify"]["threshold"],
            smooth=config["classify"]["smooth"],
            perivascular=config["classify"]["perivascular"],
            prior=config["classify"]["prior"],
            tissue_key=row(wc).get("tissue_column", "") or None,
            seed=config["seed"],
        ),
    threads: 2
    resources:
        mem_mb=mem_mb(10),
    conda:
        "../envs/cafclassify.yaml"
    shell:
        "cafclassify --threads {threads} classify {input.h5ad:q}"
        " -o {output.h5ad:q} --cells-csv {output.cells:q}"
        " --proportions-csv {output.proportions:q} {params.opts} > {log:q} 2>&1"
