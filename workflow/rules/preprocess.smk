# Read any supported input into .h5ad (with provenance), then per-sample QC.


rule read:
    input:
        data=input_data,
    output:
        h5ad="results/{dataset}/read.h5ad",
    log:
        "logs/read/{dataset}.log",
    params:
        opts=lambda wc: step_opts(
            format=row(wc)["format"],
            r_object=row(wc)["r_object"],
            layer=row(wc)["layer"],
            value_type=row(wc)["value_type"],
            species=row(wc)["species"],
            sample_column=row(wc)["sample_column"],
            label_column=row(wc)["label_column"],
            # URL datasets are verified by the fetch rule; local files here
            sha256=row(wc)["sha256"] if not is_url(row(wc)["path_or_url"]) else None,
            no_normalize=not config["read"]["normalize"],
        ),
    # out of core (backed), a second process writes the counts layer while X is written
    threads: 2
    resources:
        mem_mb=mem_mb(12),
    conda:
        "../envs/cafclassify.yaml"
    shell:
        "cafclassify --threads {threads} read {input.data:q} -o {output.h5ad:q} {params.opts}"
        " > {log:q} 2>&1"


rule qc:
    input:
        h5ad="results/{dataset}/read.h5ad",
    output:
        h5ad="results/{dataset}/qc.h5ad",
    log:
        "logs/qc/{dataset}.log",
    wildcard_constraints:
        dataset=UNSHARDED_RE,  # sharded datasets: qc per shard + merge (workflow/rules/shard.smk)
    params:
        opts=lambda wc: step_opts(
            sample_key=row(wc)["sample_column"],
            nmads=config["qc"]["nmads"],
            max_pct_mt=config["qc"]["max_pct_mt"],
            min_genes=config["qc"]["min_genes"],
            doublets=config["qc"]["doublets"],
            no_filter=not config["qc"]["filter"],
        ),
    # out of core (backed), a second process writes the counts layer while X is written
    threads: 2
    resources:
        mem_mb=mem_mb(10),
    conda:
        "../envs/cafclassify.yaml"
    shell:
        "cafclassify --threads {threads} qc {input.h5ad:q} -o {output.h5ad:q} {params.opts}"
        " > {log:q} 2>&1"
