# Download datasets given by URL (https/ftp/file) into resources/downloads/<id>/,
# verified against the sheet's sha256. Local-path datasets skip this rule.


localrules:
    fetch,


rule fetch:
    output:
        data="resources/downloads/{dataset}/{filename}",
    log:
        "logs/fetch/{dataset}/{filename}.log",
    params:
        url=lambda wc: datasets.loc[wc.dataset, "path_or_url"],
        opts=lambda wc: cli_opts(
            sha256=datasets.loc[wc.dataset, "sha256"],
            allow_http=config["fetch"]["allow_http"],
            retries=config["fetch"]["retries"],
        ),
    threads: 1
    retries: 1
    conda:
        "../envs/cafclassify.yaml"
    shell:
        "cafclassify fetch {params.url:q} {output.data:q} {params.opts} > {log:q} 2>&1"


rule simulate:
    output:
        h5ad="resources/simulated/{dataset}.h5ad",
    log:
        "logs/simulate/{dataset}.log",
    params:
        opts=lambda wc: cli_opts(**simulate_options(datasets.loc[wc.dataset, "path_or_url"])),
    threads: 1
    resources:
        mem_mb=4000,
    conda:
        "../envs/cafclassify.yaml"
    shell:
        "cafclassify simulate {params.opts} -o {output.h5ad:q} > {log:q} 2>&1"
