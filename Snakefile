# LP-BERT reproduction pipeline. `all` is the default target:
#   snakemake all --cores 8 --resources gpu=1        (target first: --resources swallows what follows it)
#   snakemake --cores 8 --resources gpu=1            (no target: builds `all`)
from snakemake.utils import min_version

min_version("9.0")


configfile: "config.yaml"


report: "report/workflow.rst"


include: "rules/common.smk"
include: "rules/preflight.smk"
include: "rules/data.smk"
include: "rules/pretrain.smk"
include: "rules/finetune.smk"
include: "rules/score.smk"
include: "rules/kgbert.smk"
include: "rules/inductive.smk"
include: "rules/tables.smk"
include: "rules/breakdown.smk"
include: "rules/study.smk"


rule all:
    default_target: True
    input:
        all_targets(),
        breakdown_targets(),
