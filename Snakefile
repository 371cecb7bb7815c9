# cafclassify workflow: find cancer-associated fibroblasts and classify their subtypes.
# Every rule calls one `cafclassify <step>` command; the science lives in the package.
# Run:  snakemake --cores 2 --profile profiles/local   (see README.md)

from snakemake.utils import min_version

min_version("8.10")


configfile: "config/config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/shard_common.smk"
include: "workflow/rules/fetch.smk"
include: "workflow/rules/preprocess.smk"
include: "workflow/rules/annotate.smk"
include: "workflow/rules/shard.smk"
include: "workflow/rules/report.smk"


rule all:
    input:
        final_outputs(),
    default_target: True
