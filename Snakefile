# successor-heads: regenerates Gould et al., "Successor Heads" (ICLR 2024) on a model zoo.
# Run: snakemake --cores N   (SLURM: snakemake --profile workflow/profiles/slurm)
import os

from snakemake.utils import min_version, validate

min_version("9.0")


configfile: os.path.join(workflow.basedir, "workflow", "config.yaml")


validate(config, "workflow/schemas/workflow.schema.yaml")


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/models.smk"
include: "workflow/rules/scores.smk"
include: "workflow/rules/features.smk"
include: "workflow/rules/editing.smk"
include: "workflow/rules/wild.smk"
include: "workflow/rules/cycles.smk"
include: "workflow/rules/paper.smk"
include: "workflow/rules/sweep.smk"


rule all:
    input:
        all_outputs,
    default_target: True
