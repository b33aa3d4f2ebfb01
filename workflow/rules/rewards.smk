# Rewards (FLAME 3.3): m responses per DPO prompt from each SFT model that DPO starts from,
# RM_IF (the SFT model's own rubric judgments) and RM_fact (FActScore with retrieval).


rule sample_responses:
    input:
        prompts=rules.classify.output.dpo_prompts,
        model=lambda wc: model_input(wc.policy),
    output:
        f"{R}/dpo/{{policy}}/samples.jsonl",
    log:
        f"{LOGS}/sample_responses/{{policy}}.log",
    benchmark:
        f"{BENCH}/sample_responses/{{policy}}.tsv"
    priority: 40
    conda:
        conda_env(policy_backend=True)
    threads: 1
    resources:
        mem_mb=4000,
        gpu=1,
    params:
        py=rule_python(policy_backend=True),
        cache=CACHE,
        model=lambda wc: model_spec(wc.policy),
        c=config["sampling"],
        seed=config["seed"],
    shell:
        "{params.py} -m flame.generate --model {params.model:q} --name {wildcards.policy}"
        " --inputs {input.prompts} --out {output} --n {params.c[m]}"
        " --temperature {params.c[temperature]} --top-p {params.c[top_p]}"
        " --max-new-tokens {params.c[max_new_tokens]} --seed {params.seed}"
        " --cache {params.cache} --threads {threads} > {log} 2>&1"


rule rm_if:
    input:
        samples=rules.sample_responses.output[0],
        judge=lambda wc: role_input("if_judge", wc.policy),
    output:
        f"{R}/dpo/{{policy}}/rm_if.jsonl",
    log:
        f"{LOGS}/rm_if/{{policy}}.log",
    benchmark:
        f"{BENCH}/rm_if/{{policy}}.tsv"
    priority: 35
    conda:
        conda_env("if_judge", policy_backend=True)
    threads: 1
    resources:
        mem_mb=4000,
        gpu=1,
    params:
        py=rule_python("if_judge", policy_backend=True),
        cache=CACHE,
        judge=lambda wc: role_spec("if_judge", wc.policy),
        c=config["rm_if"],
        seed=config["seed"],
    shell:
        "{params.py} -m flame.rm_if --judge {params.judge:q} --samples {input.samples}"
        " --out {output} --r {params.c[r]} --temperature {params.c[temperature]}"
        " --top-p {params.c[top_p]} --max-new-tokens {params.c[max_new_tokens]}"
        " --prefix={params.c[prefix]:q} --mode {params.c[mode]} --seed {params.seed}"
        " --cache {params.cache} --threads {threads} > {log} 2>&1"


rule rm_fact:
    input:
        samples=rules.sample_responses.output[0],
        knowledge=rules.build_knowledge.output[0],
        decomposer=role_input("fact_decomposer"),
        verifier=role_input("fact_verifier"),
    output:
        scores=f"{R}/dpo/{{policy}}/rm_fact.jsonl",
        facts=f"{R}/dpo/{{policy}}/rm_fact_facts.jsonl",
    log:
        f"{LOGS}/rm_fact/{{policy}}.log",
    benchmark:
        f"{BENCH}/rm_fact/{{policy}}.tsv"
    priority: 36
    conda:
        conda_env("fact_decomposer", "fact_verifier")
    threads: 1
    resources:
        mem_mb=4000,
        gpu=1,
    params:
        py=rule_python("fact_decomposer", "fact_verifier"),
        cache=CACHE,
        decomposer=role_spec("fact_decomposer"),
        verifier=role_spec("fact_verifier"),
        c=config["rm_fact"],
        scorer=scorer_args("rm_fact"),
    shell:
        "{params.py} -m flame.rm_fact --samples {input.samples} --knowledge {input.knowledge}"
        " --decomposer {params.decomposer:q} --verifier {params.verifier:q}"
        " --out {output.scores} --facts {output.facts} --unit {params.c[unit]}"
        " --retrieval {params.c[retrieval]} --k {params.c[k]}"
        " --passage-chars {params.c[passage_chars]} --n-fixed {params.c[n_fixed]}"
        " --n-bm25 {params.c[n_bm25]} --max-fact-tokens {params.c[max_fact_tokens]} {params.scorer} --cache {params.cache} --threads {threads} > {log} 2>&1"
