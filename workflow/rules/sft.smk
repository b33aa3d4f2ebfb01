# SFT stage (FLAME 3.2): few-shot responses of the pre-trained model for fact-based seed
# instructions, the three SFT data variants of Table 2, and SFT training with TRL.


rule fewshot_pt:
    input:
        seed=rules.classify.output.seed,
        model=role_input("pretrained"),
    output:
        f"{R}/sft_data/pt_fewshot.jsonl",
    params:
        py=PY,
        model=role_spec("pretrained"),
        c=config["fewshot"],
        seed=config["seed"],
    log:
        f"{LOGS}/fewshot_pt.log",
    benchmark:
        f"{BENCH}/fewshot_pt.tsv"
    threads: 2
    resources:
        mem_mb=4000,
        gpu=1,
    shell:
        "{params.py} -m flame.fewshot --model {params.model:q} --demos {input.seed}"
        " --inputs {input.seed} --only-fact-based --out {output}"
        " --k {params.c[k]} --n {params.c[n]} --temperature {params.c[temperature]}"
        " --top-p {params.c[top_p]} --max-new-tokens {params.c[max_new_tokens]}"
        " --demo-chars {params.c[demo_chars]} --seed {params.seed}"
        " --cache {CACHE} --threads {threads} > {log} 2>&1"


rule sft_data:
    input:
        seed=rules.classify.output.seed,
        fewshot=rules.fewshot_pt.output[0],
    output:
        sft_fact=f"{R}/sft_data/SFT_fact.jsonl",
        sft_flame=f"{R}/sft_data/SFT_FLAME.jsonl",
        stats=f"{R}/sft_data/stats.json",
    params:
        py=PY,
    log:
        f"{LOGS}/sft_data.log",
    threads: 1
    shell:
        "{params.py} -m flame.sft_data --seed {input.seed} --fewshot {input.fewshot}"
        " --out-dir {R}/sft_data > {log} 2>&1"


def sft_training_data(wc):
    # SFT trains on the human answers of the seed set: it needs no classification, so the
    # SFT model can be the classifier (as in the paper).
    if wc.sft == "SFT":
        return rules.build_data.output.seed
    return f"{R}/sft_data/{wc.sft}.jsonl"


rule train_sft:
    input:
        data=sft_training_data,
        init=role_input("sft_init"),
    output:
        directory(f"{R}/models/sft/{{sft}}"),
    params:
        launcher=launcher(),
        init=resolve(config["roles"]["sft_init"])[0]["source"],
        recipe=recipe_args("sft"),
        seed=config["seed"],
    log:
        f"{LOGS}/train_sft/{{sft}}.log",
    benchmark:
        f"{BENCH}/train_sft/{{sft}}.tsv"
    threads: 2
    resources:
        mem_mb=8000,
        gpu=1,
    shell:
        "{params.launcher} -m flame.train_sft --init {params.init:q} --data {input.data}"
        " --out {output} {params.recipe} --set seed={params.seed} --threads {threads}"
        " > {log} 2>&1"
