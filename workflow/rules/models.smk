# Model preparation: an embedded or GGUF model becomes a normal HF checkpoint folder, once.


rule prepare_model:
    output:
        directory(f"{R}/models/base/{{name}}"),
    log:
        f"{LOGS}/prepare_model/{{name}}.log",
    benchmark:
        f"{BENCH}/prepare_model/{{name}}.tsv"
    conda:
        BASE_ENV
    threads: 2
    resources:
        mem_mb=4000,
    params:
        py=PY,
        source=lambda wc: config["models"][wc.name]["source"],
    shell:
        "{params.py} -m flame.models --source {params.source:q} --out {output} > {log} 2>&1"
