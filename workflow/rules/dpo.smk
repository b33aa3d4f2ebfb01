# DPO stage (FLAME 3.3): IF and fact preference pairs, then DPO training with TRL (beta 0.1)
# for each row of Table 3.


rule pairs:
    input:
        samples=rules.sample_responses.output[0],
        rm_if=rules.rm_if.output[0],
        rm_fact=rules.rm_fact.output.scores,
    output:
        expand(
            f"{R}/dpo/{{{{policy}}}}/pairs_{{dpo}}.jsonl",
            dpo=["DPO", "DPO_fact", "DPO_FLAME"],
        ),
        counts=f"{R}/dpo/{{policy}}/pair_counts.json",
    log:
        f"{LOGS}/pairs/{{policy}}.log",
    priority: 30
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
        " --rm-fact {input.rm_fact} --out-dir {params.out_dir}"
        " --counts {output.counts} --max-if-gap {params.c[max_if_gap]} --mix {params.c[mix]}"
        " --seed {params.seed} > {log} 2>&1"


rule train_dpo:
    input:
        pairs=f"{R}/dpo/{{policy}}/pairs_{{dpo}}.jsonl",
        init=f"{R}/models/sft/{{policy}}",
    output:
        directory(f"{R}/models/dpo/{{policy}}+{{dpo}}"),
    log:
        f"{LOGS}/train_dpo/{{policy}}+{{dpo}}.log",
    benchmark:
        f"{BENCH}/train_dpo/{{policy}}+{{dpo}}.tsv"
    priority: 20
    conda:
        TRAIN_ENV
    threads: TRAIN_THREADS
    resources:
        **train_resources(),
        mem_mb=12000,
        gpu=TRAIN_PROCS,
    params:
        launcher=launcher(),
        threads=process_threads,
        recipe=recipe_args("dpo", keys_to_skip=("allow_empty_pairs",)),
        allow_empty="--allow-empty" if config["dpo"].get("allow_empty_pairs") else "",
        seed=config["seed"],
    shell:
        "{params.launcher} -m flame.train_dpo --init {input.init} --pairs {input.pairs}"
        " --out {output} {params.recipe} --set seed={params.seed} {params.allow_empty}"
        " --threads {params.threads} > {log} 2>&1"
