# Per-dataset HTML reports and the cross-dataset summary.


rule report:
    input:
        h5ad="results/{dataset}/classified.h5ad",
    output:
        html=report(
            "results/{dataset}/report.html",
            caption="../report/dataset_report.rst",
            category="Dataset reports",
            labels={"dataset": "{dataset}"},
        ),
        agreement="results/{dataset}/agreement.csv",
    log:
        "logs/report/{dataset}.log",
    params:
        opts=lambda wc: step_opts(
            title=f"cafclassify: {wc.dataset}",
            seed=config["seed"],
            label_column=row(wc)["label_column"],
        ),
    threads: 1
    resources:
        mem_mb=mem_mb(10),
    conda:
        "../envs/cafclassify.yaml"
    shell:
        "cafclassify report {input.h5ad:q} -o {output.html:q} --agreement-csv {output.agreement:q}"
        " {params.opts} > {log:q} 2>&1"


rule summary:
    input:
        h5ad=expand("results/{dataset}/classified.h5ad", dataset=DATASETS),
        reports=expand("results/{dataset}/report.html", dataset=DATASETS),
    output:
        html=report(
            "results/summary/summary.html",
            caption="../report/summary.rst",
            category="Summary",
            labels={"file": "summary page"},
        ),
        table=report(
            "results/summary/summary.csv",
            caption="../report/summary.rst",
            category="Summary",
            labels={"file": "summary table"},
        ),
        figure=report(
            "results/summary/summary.png",
            caption="../report/summary.rst",
            category="Summary",
            labels={"file": "summary figure"},
        ),
    log:
        "logs/summary.log",
    params:
        names=",".join(DATASETS),
        links=lambda wc, input: shlex.join(a for r in input.reports for a in ("--report", r)),
    threads: 1
    resources:
        mem_mb=mem_mb(4),
    conda:
        "../envs/cafclassify.yaml"
    shell:
        "cafclassify summary {input.h5ad:q} --names {params.names:q} -o {output.html:q}"
        " --table {output.table:q} --figure {output.figure:q}"
        " {params.links} > {log:q} 2>&1"
