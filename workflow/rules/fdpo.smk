# F-DPO (Chaduvula et al., arXiv 2601.03027) on FLAME's pairs: hallucination inversion,
# labels, balancing and flipping, then one checkpoint per lambda (the rows of table_fdpo).


rule invert:
    input:
        samples=rules.sample_responses.output[0],
        rm_fact=rules.rm_fact.output.scores,
        knowledge=rules.build_knowledge.output[0],
        hallucinator=lambda wc: role_input("hallucinator", wc.policy),
        decomposer=role_input("fact_decomposer"),
        verifier=role_input("fact_verifier"),
    output:
        pairs=f"{R}/fdpo/{{policy}}/inversion.jsonl",
        counts=f"{R}/fdpo/{{policy}}/inversion_counts.json",
    log:
        f"{LOGS}/invert/{{policy}}.log",
    benchmark:
        f"{BENCH}/invert/{{policy}}.tsv"
    priority: 30
    conda:
        conda_env("hallucinator", "fact_decomposer", "fact_verifier")
    threads: 1
    resources:
        mem_mb=4000,
        gpu=1,
    params:
        py=rule_python("hallucinator", "fact_decomposer", "fact_verifier"),
        cache=CACHE,
        hallucinator=lambda wc: role_spec("hallucinator", wc.policy),
        decomposer=role_spec("fact_decomposer"),
        verifier=role_spec("fact_verifier"),
        f=FDPO,
        c=config["rm_fact"],
        scorer=scorer_args("rm_fact"),
        seed=config["seed"],
    shell:
        "{params.py} -m flame.invert --samples {input.samples} --rm-fact {input.rm_fact}"
        " --hallucinator {params.hallucinator:q} --out {output.pairs} --counts {output.counts}"
        " --threshold {params.f[threshold]} --errors={params.f[inversion][errors]:q}"
        " --max-rewrites {params.f[inversion][max_rewrites]}"
        " --temperature {params.f[inversion][temperature]} --top-p {params.f[inversion][top_p]}"
        " --max-new-tokens {params.f[inversion][max_new_tokens]} --seed {params.seed}"
        " --knowledge {input.knowledge} --decomposer {params.decomposer:q}"
        " --verifier {params.verifier:q} --unit {params.c[unit]}"
        " --retrieval {params.c[retrieval]} --k {params.c[k]}"
        " --passage-chars {params.c[passage_chars]} --n-fixed {params.c[n_fixed]}"
        " --n-bm25 {params.c[n_bm25]} --max-fact-tokens {params.c[max_fact_tokens]}"
        " {params.scorer} --cache {params.cache} --threads {threads} > {log} 2>&1"


rule fdpo_pairs:
    input:
        pairs=f"{R}/dpo/{{policy}}/pairs_{FDPO['pair_set']}.jsonl",
        inversion=rules.invert.output.pairs,
    output:
        pairs=f"{R}/fdpo/{{policy}}/pairs_FDPO.jsonl",
        counts=f"{R}/fdpo/{{policy}}/fdpo_counts.json",
    log:
        f"{LOGS}/fdpo_pairs/{{policy}}.log",
    priority: 30
    conda:
        BASE_ENV
    threads: 1
    params:
        py=PY,
        threshold=FDPO["threshold"],
        balance=json.dumps(FDPO.get("balance")),
        seed=config["seed"],
    shell:
        "{params.py} -m flame.fdpo --pairs {input.pairs} {input.inversion}"
        " --out {output.pairs} --counts {output.counts} --threshold {params.threshold}"
        " --balance {params.balance:q} --seed {params.seed} > {log} 2>&1"


rule train_fdpo:
    input:
        pairs=rules.fdpo_pairs.output.pairs,
        init=f"{R}/models/sft/{{policy}}",
    output:
        directory(f"{R}/models/dpo/{{policy}}+FDPO_l{{lam}}"),
    log:
        f"{LOGS}/train_fdpo/{{policy}}+FDPO_l{{lam}}.log",
    benchmark:
        f"{BENCH}/train_fdpo/{{policy}}+FDPO_l{{lam}}.tsv"
    wildcard_constraints:
        lam=r"[0-9.e+-]+",
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
        recipe=set_args(FDPO.get("recipe", {}), keys_to_skip=("allow_empty_pairs",)),
        allow_empty=(
            "--allow-empty" if FDPO.get("recipe", {}).get("allow_empty_pairs") else ""
        ),
        epochs=f"--epochs {FDPO['epochs']}" if FDPO.get("epochs") else "",
        quantize=FDPO["quantize"],
        seed=config["seed"],
    shell:
        "{params.launcher} -m flame.train_fdpo --lam {wildcards.lam} --quantize {params.quantize}"
        " --init {input.init} --pairs {input.pairs} --out {output} {params.recipe}"
        " {params.epochs} --set seed={params.seed} {params.allow_empty}"
        " --threads {params.threads} > {log} 2>&1"


FDPO_BASELINE = min(FDPO_ROWS, key=FDPO_ROWS.get)


rule winrate_fdpo:
    input:
        gens=expand(f"{R}/eval/{{m}}/alpaca.jsonl", m=FDPO_ROWS),
        judge=role_input("eval_judge"),
    output:
        f"{R}/eval/winrate_fdpo.json",
    log:
        f"{LOGS}/winrate/fdpo.log",
    benchmark:
        f"{BENCH}/winrate/fdpo.tsv"
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
        baseline=f"'{FDPO_BASELINE}={R}/eval/{FDPO_BASELINE}/alpaca.jsonl'",
        models=" ".join(
            f"'{m}={R}/eval/{m}/alpaca.jsonl'" for m in FDPO_ROWS if m != FDPO_BASELINE
        )
        or f"'{FDPO_BASELINE}={R}/eval/{FDPO_BASELINE}/alpaca.jsonl'",
        mode=config["winrate"]["mode"],
    shell:
        "{params.py} -m flame.winrate --judge {params.judge:q} --baseline {params.baseline}"
        " --models {params.models} --mode {params.mode} --out {output} --cache {params.cache}"
        " --threads {threads} > {log} 2>&1"


rule table_fdpo:
    input:
        factuality=expand(f"{R}/eval/{{m}}/factuality.json", m=FDPO_ROWS),
        winrate=rules.winrate_fdpo.output[0],
        counts=f"{R}/fdpo/{FDPO['policy']}/fdpo_counts.json",
        inversion=f"{R}/fdpo/{FDPO['policy']}/inversion_counts.json",
        models=expand(f"{R}/models/dpo/{{m}}", m=FDPO_ROWS),
    output:
        **{
            ext: report(
                f"{R}/tables/table_fdpo.{ext}",
                caption="../report/tables.rst",
                category="Tables",
            )
            for ext in ["csv", "md"]
        },
    log:
        f"{LOGS}/table_fdpo.log",
    conda:
        BASE_ENV
    threads: 1
    params:
        py=PY,
        eval_dir=lambda wc, input: Path(input.winrate).parent,
        out_dir=lambda wc, output: Path(output.csv).parent,
        models_dir=lambda wc, input: Path(input.models[0]).parent,
        rows=" ".join(f"'{m}={lam:g}'" for m, lam in FDPO_ROWS.items()),
        baseline=FDPO_BASELINE,
        below=FDPO["halluc_below"],
    shell:
        "{params.py} -m flame.table_fdpo --eval-dir {params.eval_dir}"
        " --out-dir {params.out_dir} --rows {params.rows} --baseline {params.baseline:q}"
        " --winrate {input.winrate} --counts {input.counts} --inversion {input.inversion}"
        " --halluc-below {params.below} --models-dir {params.models_dir} > {log} 2>&1"
