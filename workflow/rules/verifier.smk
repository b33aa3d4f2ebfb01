# The trained fact verifier (issue 15): SmolLM2 (or verifier.init) fine-tuned on True/False
# examples made from the knowledge source itself, used where roles.fact_verifier is `verifier`.


rule train_verifier:
    input:
        knowledge=rules.build_knowledge.output[0],
        # lazy: the rule's inputs are resolved only where a role names the verifier
        init=lambda wc: model_input(VERIFIER.get("init", "smollm2")),
    output:
        directory(VERIFIER_PATH),
    log:
        f"{LOGS}/train_verifier.log",
    benchmark:
        f"{BENCH}/train_verifier.tsv"
    priority: 45
    conda:
        TRAIN_ENV
    threads: TRAIN_THREADS
    resources:
        mem_mb=6000,
        gpu=1,
    params:
        py=PY,
        init=lambda wc: json.loads(model_spec(VERIFIER.get("init", "smollm2")))[
            "source"
        ],
        c=VERIFIER,
        kinds=",".join(VERIFIER.get("kinds", [])),
    shell:
        "{params.py} -m flame.train_verifier --init {params.init:q} --knowledge {input.knowledge}"
        " --out {output} --n-pages {params.c[n_pages]} --n-examples {params.c[n_examples]}"
        " --steps {params.c[steps]} --batch-size {params.c[batch_size]} --lr {params.c[lr]}"
        " --kinds {params.kinds} --k {params.c[k]} --passage-chars {params.c[passage_chars]}"
        " --train-layers {params.c[train_layers]} --held-out {params.c[held_out]}"
        " --eval-examples {params.c[eval_examples]} --seed {params.c[seed]}"
        " --threads {threads} > {log} 2>&1"
