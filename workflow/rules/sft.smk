# SFT stage (FLAME 3.2): few-shot responses of the pre-trained model for fact-based seed
# instructions, the SFT data variants of Table 2, and SFT training with TRL.


rule fewshot_pt:
    input:
        seed=rules.classify.output.seed,
        model=role_input("pretrained"),
    output:
        f"{R}/sft_data/pt_fewshot.jsonl",
    log:
        f"{LOGS}/fewshot_pt.log",
    benchmark:
        f"{BENCH}/fewshot_pt.tsv"
    priority: 50
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
        " --inputs {input.seed} --only-fact-based --out {output}"
        " --k {params.c[k]} --n {params.c[n]} --temperature {params.c[temperature]}"
        " --top-p {params.c[top_p]} --max-new-tokens {params.c[max_new_tokens]}"
        " --demo-chars {params.c[demo_chars]} --seed {params.seed}"
        " --cache {params.cache} --threads {threads} > {log} 2>&1"


rule sft_data:
    input:
        seed=rules.classify.output.seed,
        fewshot=rules.fewshot_pt.output[0],
    output:
        sft_fact=f"{R}/sft_data/SFT_fact.jsonl",
        sft_flame=f"{R}/sft_data/SFT_FLAME.jsonl",
        stats=f"{R}/sft_data/stats.json",
    log:
        f"{LOGS}/sft_data.log",
    priority: 50
    conda:
        BASE_ENV
    threads: 1
    params:
        py=PY,
        out_dir=lambda wc, output: Path(output.stats).parent,
        allow_empty=ALLOW_EMPTY_SFT,
    shell:
        "{params.py} -m flame.sft_data --seed {input.seed} --fewshot {input.fewshot}"
        " --out-dir {params.out_dir} {params.allow_empty} > {log} 2>&1"


rule train_sft:
    input:
        data=sft_training_data,
        init=role_input("sft_init"),
    output:
        directory(f"{R}/models/sft/{{sft}}"),
    log:
        f"{LOGS}/train_sft/{{sft}}.log",
    benchmark:
        f"{BENCH}/train_sft/{{sft}}.tsv"
    priority: 60
    conda:
        TRAIN_ENV
    threads: sft_threads
    resources:
        **train_resources(),
        mem_mb=8000,
        gpu=TRAIN_PROCS,
    params:
        launcher=launcher(),
        threads=process_threads,
        init=sft_init_source,
        recipe=recipe_args("sft", keys_to_skip=("allow_empty_data",)),
        seed=config["seed"],
        allow_empty=ALLOW_EMPTY_SFT,
    shell:
        "{params.launcher} -m flame.train_sft --init {params.init:q} --data {input.data}"
        " --out {output} {params.recipe} --set seed={params.seed} --threads {params.threads}"
        " {params.allow_empty} > {log} 2>&1"
