# Fact-based instruction classification (FLAME 3.2) of the seed, the DPO prompts and the
# AlpacaEval-style set (its fact-based part is Alpaca Fact); accuracy on hand labels.


rule classify:
    input:
        seed=rules.build_data.output.seed,
        dpo_prompts=rules.build_data.output.dpo_prompts,
        alpaca=rules.build_data.output.alpaca,
        labels=rules.build_data.output.labels,
        model=role_input("classifier"),
    output:
        seed=f"{R}/classified/seed.jsonl",
        dpo_prompts=f"{R}/classified/dpo_prompts.jsonl",
        alpaca=f"{R}/classified/alpaca.jsonl",
        report=report(
            f"{R}/classified/report.json",
            caption="../report/classify.rst",
            category="Classification",
        ),
    log:
        f"{LOGS}/classify.log",
    priority: 55
    conda:
        conda_env("classifier")
    threads: 1
    resources:
        mem_mb=4000,
        gpu=1,
    params:
        py=rule_python("classifier"),
        cache=CACHE,
        model=role_spec("classifier"),
        calibrate="--calibrate" if config.get("classify", {}).get("calibrate") else "",
        c=config.get("classify", {}),
    shell:
        "{params.py} -m flame.classify --model {params.model:q} --labels {input.labels}"
        " --inputs {input.seed} {input.dpo_prompts} {input.alpaca}"
        " --outputs {output.seed} {output.dpo_prompts} {output.alpaca}"
        " --report {output.report} {params.calibrate} --mode {params.c[mode]}"
        " --probe-c {params.c[probe_c]} --folds {params.c[folds]} --cache {params.cache}"
        " --threads {threads} > {log} 2>&1"
