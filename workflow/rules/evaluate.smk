# Evaluation (FLAME 5): responses of every model on Bio, the AlpacaEval-style set and the
# FAVA-style set; FActScore (no length penalty) and # correct / # erroneous facts; pairwise
# win rates against the paper's baseline rows.


def eval_sampling():
    e = config["evaluation"]
    return (
        f"--temperature {e['temperature']} --top-p {e['top_p']}"
        f" --max-new-tokens {e['max_new_tokens']} --seed {config['seed']}"
    )


rule eval_generate:
    input:
        bio=rules.build_data.output.bio,
        alpaca=rules.classify.output.alpaca,
        fava=rules.build_data.output.fava,
        model=lambda wc: model_input(wc.model),
    output:
        expand(f"{R}/eval/{{{{model}}}}/{{s}}.jsonl", s=EVAL_SETS),
    params:
        py=PY,
        model=lambda wc: model_spec(wc.model),
        sampling=eval_sampling(),
    log:
        f"{LOGS}/eval_generate/{{model}}.log",
    benchmark:
        f"{BENCH}/eval_generate/{{model}}.tsv"
    threads: 2
    resources:
        mem_mb=4000,
        gpu=1,
    shell:
        "{params.py} -m flame.generate --model {params.model:q} --name {wildcards.model:q}"
        " --inputs {input.bio} {input.alpaca} {input.fava} --outs {output} --n 1"
        " {params.sampling} --cache {CACHE} --threads {threads} > {log} 2>&1"


rule eval_generate_pt:
    input:
        bio=rules.build_data.output.bio,
        demos=rules.build_data.output.seed,
        model=role_input("pretrained"),
    output:
        f"{R}/eval/PT/bio.jsonl",
    params:
        py=PY,
        model=role_spec("pretrained"),
        sampling=eval_sampling(),
        k=config["fewshot"]["k"],
        demo_chars=config["fewshot"]["demo_chars"],
    log:
        f"{LOGS}/eval_generate/PT.log",
    benchmark:
        f"{BENCH}/eval_generate/PT.tsv"
    threads: 2
    resources:
        mem_mb=4000,
        gpu=1,
    shell:
        "{params.py} -m flame.fewshot --model {params.model:q} --demos {input.demos}"
        " --inputs {input.bio} --out {output} --k {params.k} --n 1"
        " --demo-chars {params.demo_chars} {params.sampling}"
        " --cache {CACHE} --threads {threads} > {log} 2>&1"


def eval_sets(wc):
    r = config["evaluation"]["retrieval"]
    d = f"{R}/eval/{wc.model}"
    sets = [f"bio={d}/bio.jsonl:{r['bio']}"]
    if wc.model != "PT":
        sets += [
            f"alpaca_fact={d}/alpaca.jsonl:{r['alpaca_fact']}",
            f"fava={d}/fava.jsonl:{r['fava']}",
        ]
    return " ".join(sets)


rule eval_factuality:
    input:
        gens=lambda wc: (
            [f"{R}/eval/PT/bio.jsonl"]
            if wc.model == "PT"
            else expand(f"{R}/eval/{wc.model}/{{s}}.jsonl", s=EVAL_SETS)
        ),
        knowledge=rules.build_knowledge.output[0],
        decomposer=role_input("fact_decomposer"),
        verifier=role_input("fact_verifier"),
    output:
        summary=f"{R}/eval/{{model}}/factuality.json",
        facts=directory(f"{R}/eval/{{model}}/facts"),
    params:
        py=PY,
        sets=eval_sets,
        decomposer=role_spec("fact_decomposer"),
        verifier=role_spec("fact_verifier"),
        c=config["evaluation"],
    log:
        f"{LOGS}/eval_factuality/{{model}}.log",
    benchmark:
        f"{BENCH}/eval_factuality/{{model}}.tsv"
    threads: 2
    resources:
        mem_mb=4000,
        gpu=1,
    shell:
        "{params.py} -m flame.evaluate --sets {params.sets} --only-fact-based alpaca_fact"
        " --knowledge {input.knowledge} --decomposer {params.decomposer:q}"
        " --verifier {params.verifier:q} --out {output.summary} --facts-dir {output.facts}"
        " --unit {params.c[unit]} --k {params.c[k]} --passage-chars {params.c[passage_chars]}"
        " --n-fixed {params.c[n_fixed]} --n-bm25 {params.c[n_bm25]} --gamma {params.c[gamma]}"
        " --cache {CACHE} --threads {threads} > {log} 2>&1"


WINRATE = {
    "table2": ("SFT", [m for m in SFT_VARIANTS if m != "SFT"]),
    "table3": ("SFT+DPO", [m for m in TABLE3_ROWS if m != "SFT+DPO"]),
}


rule winrate:
    input:
        gens=lambda wc: [
            f"{R}/eval/{m}/alpaca.jsonl"
            for m in [WINRATE[wc.table][0], *WINRATE[wc.table][1]]
        ],
        judge=role_input("eval_judge"),
    output:
        f"{R}/eval/winrate_{{table}}.json",
    wildcard_constraints:
        table="table2|table3",
    params:
        py=PY,
        judge=role_spec("eval_judge"),
        baseline=lambda wc: f"{WINRATE[wc.table][0]}={R}/eval/{WINRATE[wc.table][0]}/alpaca.jsonl",
        models=lambda wc: " ".join(
            f"{m}={R}/eval/{m}/alpaca.jsonl" for m in WINRATE[wc.table][1]
        ),
    log:
        f"{LOGS}/winrate/{{table}}.log",
    benchmark:
        f"{BENCH}/winrate/{{table}}.tsv"
    threads: 2
    resources:
        mem_mb=4000,
        gpu=1,
    shell:
        "{params.py} -m flame.winrate --judge {params.judge:q} --baseline {params.baseline:q}"
        " --models {params.models} --out {output} --cache {CACHE} --threads {threads}"
        " > {log} 2>&1"
