# Data: seed instructions with human answers, DPO prompts, evaluation sets, classifier labels.


def data_args():
    d = config["data"]
    args = [f"--source {d['source']}", f"--seed {config['seed']}"]
    args += [f"--{k.replace('_', '-')} {v}" for k, v in d.items() if k.startswith("n_")]
    for k, v in d.get("hub", {}).items():
        args.append(f"--{k.replace('_', '-')} {v}")
    return " ".join(args)


rule build_data:
    output:
        seed=f"{R}/data/seed.jsonl",
        dpo_prompts=f"{R}/data/dpo_prompts.jsonl",
        labels=f"{R}/data/classifier_labels.jsonl",
        bio=f"{R}/data/eval/bio.jsonl",
        alpaca=f"{R}/data/eval/alpaca.jsonl",
        fava=f"{R}/data/eval/fava.jsonl",
        manifest=f"{R}/data/manifest.json",
    params:
        py=PY,
        args=data_args(),
    log:
        f"{LOGS}/build_data.log",
    threads: 1
    resources:
        mem_mb=2000,
    shell:
        "{params.py} -m flame.data build --out-dir {R}/data {params.args} > {log} 2>&1"
