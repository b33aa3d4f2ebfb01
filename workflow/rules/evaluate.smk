# Evaluation (FLAME 5): responses of every model on Bio, the AlpacaEval-style set and the
# FAVA-style set; FActScore (no length penalty) and # correct / # erroneous facts; pairwise
# win rates against the paper's baseline rows.


rule eval_generate:
    input:
        bio=rules.build_data.output.bio,
        alpaca=rules.classify.output.alpaca,
        fava=rules.build_data.output.fava,
        model=lambda wc: model_input(wc.model),
    output:
        expand(f"{R}/eval/{{{{model}}}}/{{s}}.jsonl", s=EVAL_SETS),
    log:
        f"{LOGS}/eval_generate/{{model}}.log",
    benchmark:
        f"{BENCH}/eval_generate/{{model}}.tsv"
    wildcard_constraints:
        model="|".join(m.replace("+", r"\+") for m in CHAT_EVAL_MODELS),
    conda:
        conda_env("chat_baseline", policy_backend=True)
        if CHAT
        else conda_env(policy_backend=True)
    threads: 1
    resources:
        mem_mb=4000,
        gpu=1,
    params:
        py=(
            rule_python("chat_baseline", policy_backend=True)
            if CHAT
            else rule_python(policy_backend=True)
        ),
        cache=CACHE,
        model=lambda wc: model_spec(wc.model),
        sampling=eval_sampling(),
    shell:
        "{params.py} -m flame.generate --model {params.model:q} --name {wildcards.model:q}"
        " --inputs {input.bio} {input.alpaca} {input.fava} --outs {output} --n 1"
        " {params.sampling} --cache {params.cache} --threads {threads} > {log} 2>&1"


rule eval_generate_pt:
    input:
        bio=rules.build_data.output.bio,
        demos=rules.build_data.output.seed,
        model=role_input("pretrained"),
    output:
        f"{R}/eval/PT/bio.jsonl",
    log:
        f"{LOGS}/eval_generate/PT.log",
    benchmark:
        f"{BENCH}/eval_generate/PT.tsv"
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
        sampling=eval_sampling(),
        k=config["fewshot"]["k"],
        demo_chars=config["fewshot"]["demo_chars"],
    shell:
        "{params.py} -m flame.fewshot --model {params.model:q} --demos {input.demos}"
        " --inputs {input.bio} --out {output} --k {params.k} --n 1"
        " --demo-chars {params.demo_chars} {params.sampling}"
        " --cache {params.cache} --threads {threads} > {log} 2>&1"


rule eval_factuality:
    input:
        gens=eval_generations,
        knowledge=rules.build_knowledge.output[0],
        decomposer=role_input("fact_decomposer"),
        verifier=role_input("fact_verifier"),
    output:
        summary=f"{R}/eval/{{model}}/factuality.json",
        facts=directory(f"{R}/eval/{{model}}/facts"),
    log:
        f"{LOGS}/eval_factuality/{{model}}.log",
    benchmark:
        f"{BENCH}/eval_factuality/{{model}}.tsv"
    conda:
        conda_env("fact_decomposer", "fact_verifier")
    threads: 1
    resources:
        mem_mb=4000,
        gpu=1,
    params:
        py=rule_python("fact_decomposer", "fact_verifier"),
        cache=CACHE,
        sets=eval_sets,
        decomposer=role_spec("fact_decomposer"),
        verifier=role_spec("fact_verifier"),
        c=config["evaluation"],
        scorer=scorer_args("evaluation"),
    shell:
        "{params.py} -m flame.evaluate --sets {params.sets} --only-fact-based alpaca_fact"
        " --knowledge {input.knowledge} --decomposer {params.decomposer:q}"
        " --verifier {params.verifier:q} --out {output.summary} --facts-dir {output.facts}"
        " --unit {params.c[unit]} --k {params.c[k]} --passage-chars {params.c[passage_chars]}"
        " --n-fixed {params.c[n_fixed]} --n-bm25 {params.c[n_bm25]} --gamma {params.c[gamma]}"
        " --max-fact-tokens {params.c[max_fact_tokens]} {params.scorer}"
        " --cache {params.cache} --threads {threads} > {log} 2>&1"


rule winrate:
    input:
        gens=winrate_inputs,
        judge=role_input("eval_judge"),
    output:
        f"{R}/eval/winrate_{{table}}.json",
    log:
        f"{LOGS}/winrate/{{table}}.log",
    benchmark:
        f"{BENCH}/winrate/{{table}}.tsv"
    wildcard_constraints:
        table="|".join(WINRATE),
    conda:
        conda_env("eval_judge")
    threads: 1
    resources:
        mem_mb=4000,
        gpu=1,
    params:
        py=rule_python("eval_judge"),
        cache=CACHE,
        judge=judge_spec(),
        compared=winrate_args,
        mode=config["winrate"]["mode"],
    shell:
        "{params.py} -m flame.winrate --judge {params.judge:q} {params.compared}"
        " --mode {params.mode} --out {output} --cache {params.cache} --threads {threads}"
        " > {log} 2>&1"
