# Data: seed instructions with human answers, DPO prompts, evaluation sets, classifier labels.


rule build_data:
    input:
        data_files(),
    output:
        seed=f"{R}/data/seed.jsonl",
        dpo_prompts=f"{R}/data/dpo.jsonl",
        labels=f"{R}/data/classifier_labels.jsonl",
        bio=f"{R}/data/eval/bio.jsonl",
        alpaca=f"{R}/data/eval/alpaca.jsonl",
        fava=f"{R}/data/eval/fava.jsonl",
        manifest=f"{R}/data/manifest.json",
    log:
        f"{LOGS}/build_data.log",
    conda:
        BASE_ENV
    threads: 1
    resources:
        mem_mb=2000,
    params:
        py=PY,
        args=data_args(),
        out_dir=lambda wc, output: Path(output.manifest).parent,
    shell:
        "{params.py} -m flame.data build --out-dir {params.out_dir} {params.args} > {log} 2>&1"
