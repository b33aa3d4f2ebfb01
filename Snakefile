"""FLAME: factuality-aware alignment (Lin et al., NeurIPS 2024), from raw data to the paper's tables.

snakemake --cores 2                                    # the embedded default (config.yaml)
snakemake --cores 8 --configfile workflow/configs/paper.yaml --workflow-profile workflow/profiles/slurm
snakemake --cores 2 --configfile config.yaml workflow/configs/fdpo.yaml  # + F-DPO and RM_BT rows
"""

from snakemake.utils import min_version, validate

min_version("9.0")


configfile: "config.yaml"


validate(config, "workflow/schemas/config.schema.yaml")


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"


wildcard_constraints:
    sft="|".join(SFT_NAMES),
    dpo="|".join(DPO_NAMES),
    policy="|".join(POLICIES),
    model="|".join(m.replace("+", r"\+") for m in [*BIO_ONLY_MODELS, *CHAT_EVAL_MODELS]),
    name="[A-Za-z0-9_.-]+",


include: "workflow/rules/models.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/knowledge.smk"
include: "workflow/rules/verifier.smk"
include: "workflow/rules/classify.smk"
include: "workflow/rules/sft.smk"
include: "workflow/rules/rewards.smk"
include: "workflow/rules/dpo.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/tables.smk"
include: "workflow/rules/truthfulqa.smk"
include: "workflow/rules/figures.smk"
include: "workflow/rules/ablations.smk"
include: "workflow/rules/alignment_tax.smk"
include: "workflow/rules/pilot.smk"


if FDPO_ROWS:

    include: "workflow/rules/fdpo.smk"


include: "workflow/rules/reward_model.smk"
include: "workflow/rules/checks.smk"


rule all:
    input:
        TABLES,
        EXTRA_TARGETS,
