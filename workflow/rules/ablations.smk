# Ablations (config `tables`): Table 6, SFT_FLAME without the classifier (every seed
# instruction's human and PT answers, sampled 50/50); Table 7, DPO_FLAME with other fact-pair
# selections (all pairs with dRM_fact >= 0.2; max/min of RM_IF + 5 RM_fact), with pair counts.

if ABLATION_SFT:
    EXTRA_TARGETS += expand(f"{R}/tables/table6_classifier.{{ext}}", ext=["csv", "md"])
if ABLATION_DPO:
    EXTRA_TARGETS += expand(
        f"{R}/tables/table7_pair_selection.{{ext}}", ext=["csv", "md"]
    )


rule fewshot_pt_all:
    input:
        seed=rules.classify.output.seed,
        model=role_input("pretrained"),
    output:
        f"{R}/sft_data/pt_fewshot_all.jsonl",
    log:
        f"{LOGS}/fewshot_pt_all.log",
    benchmark:
        f"{BENCH}/fewshot_pt_all.tsv"
    conda:
        conda_env("pretrained")
    threads: 1
    resources:
        mem_mb=4000,
        gpu=1,
    params:
        py=rule_python("pretrained"),
        cache=CACHE,
        model=role_spec("pretrained"),
        c=config["fewshot"],
        seed=config["seed"],
    shell:
        "{params.py} -m flame.fewshot --model {params.model:q} --demos {input.seed}"
        " --inputs {input.seed} --out {output}"
        " --k {params.c[k]} --n {params.c[n]} --temperature {params.c[temperature]}"
        " --top-p {params.c[top_p]} --max-new-tokens {params.c[max_new_tokens]}"
        " --demo-chars {params.c[demo_chars]} --seed {params.seed}"
        " --cache {params.cache} --threads {threads} > {log} 2>&1"


rule sft_data_noclf:
    input:
        seed=rules.classify.output.seed,
        fewshot=rules.fewshot_pt_all.output[0],
    output:
        f"{R}/sft_data/SFT_FLAME_noclf.jsonl",
    log:
        f"{LOGS}/sft_data_noclf.log",
    conda:
        BASE_ENV
    threads: 1
    params:
        py=PY,
        seed=config["seed"],
        out_dir=lambda wc, output: Path(output[0]).parent,
    shell:
        "{params.py} -m flame.sft_data --without-classifier --seed {input.seed}"
        " --fewshot {input.fewshot} --out-dir {params.out_dir} --seed-value {params.seed}"
        " > {log} 2>&1"


rule pairs_selection:
    input:
        samples=rules.sample_responses.output[0],
        rm_if=rules.rm_if.output[0],
        rm_fact=rules.rm_fact.output.scores,
    output:
        fact=f"{R}/dpo/{{policy}}/pairs_DPO_fact_{{selection}}.jsonl",
        flame=f"{R}/dpo/{{policy}}/pairs_DPO_FLAME_{{selection}}.jsonl",
        counts=f"{R}/dpo/{{policy}}/pair_counts_{{selection}}.json",
    log:
        f"{LOGS}/pairs/{{policy}}_{{selection}}.log",
    wildcard_constraints:
        selection="threshold|combined",
    conda:
        BASE_ENV
    threads: 1
    params:
        py=PY,
        c=config["pairs"],
        seed=config["seed"],
        out_dir=lambda wc, output: Path(output.counts).parent,
    shell:
        "{params.py} -m flame.pairs --samples {input.samples} --rm-if {input.rm_if}"
        " --rm-fact {input.rm_fact} --out-dir {params.out_dir} --counts {output.counts}"
        " --max-if-gap {params.c[max_if_gap]} --mix {params.c[mix]} --seed {params.seed}"
        " --fact-selection {wildcards.selection} --suffix _{wildcards.selection}"
        " --min-fact-gap 0.2 --fact-weight 5 > {log} 2>&1"


rule table6:
    input:
        factuality=expand(
            f"{R}/eval/{{model}}/factuality.json", model=["SFT_FLAME", *ABLATION_SFT]
        ),
        winrate=f"{R}/eval/winrate_table6.json",
    output:
        csv=report(
            f"{R}/tables/table6_classifier.csv",
            caption="../report/table6.rst",
            category="Tables",
        ),
        md=report(
            f"{R}/tables/table6_classifier.md",
            caption="../report/table6.rst",
            category="Tables",
        ),
    log:
        f"{LOGS}/table6.log",
    conda:
        BASE_ENV
    threads: 1
    params:
        py=PY,
        eval_dir=lambda wc, input: Path(input.winrate).parent,
        rows=" ".join(["SFT_FLAME", *ABLATION_SFT]),
        out=lambda wc, output: output.csv[: -len(".csv")],
    shell:
        "{params.py} -m flame.tables_extra classifier --eval-dir {params.eval_dir}"
        " --rows {params.rows} --baseline SFT_FLAME --winrate {input.winrate}"
        " --out {params.out} > {log} 2>&1"


rule table7:
    input:
        factuality=expand(
            f"{R}/eval/{{model}}/factuality.json",
            model=["SFT+DPO_FLAME", *(f"SFT+{d}" for d in ABLATION_DPO)],
        ),
        winrate=f"{R}/eval/winrate_table7.json",
        counts=[
            f"{R}/dpo/SFT/pair_counts.json",
            *expand(f"{R}/dpo/SFT/pair_counts_{{s}}.json", s=PAIR_SELECTIONS),
        ],
    output:
        csv=report(
            f"{R}/tables/table7_pair_selection.csv",
            caption="../report/table7.rst",
            category="Tables",
        ),
        md=report(
            f"{R}/tables/table7_pair_selection.md",
            caption="../report/table7.rst",
            category="Tables",
        ),
    log:
        f"{LOGS}/table7.log",
    conda:
        BASE_ENV
    threads: 1
    params:
        py=PY,
        eval_dir=lambda wc, input: Path(input.winrate).parent,
        rows=" ".join(
            f"'{m}'" for m in ["SFT+DPO_FLAME", *(f"SFT+{d}" for d in ABLATION_DPO)]
        ),
        out=lambda wc, output: output.csv[: -len(".csv")],
    shell:
        "{params.py} -m flame.tables_extra pair-selection --eval-dir {params.eval_dir}"
        " --rows {params.rows} --baseline SFT+DPO_FLAME --winrate {input.winrate}"
        " --pair-counts {input.counts} --out {params.out} > {log} 2>&1"
