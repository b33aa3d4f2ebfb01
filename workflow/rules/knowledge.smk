# Knowledge source: passages (at most max_passage_tokens each) and a BM25 index, built once.


rule build_knowledge:
    output:
        directory(f"{R}/knowledge/index"),
    log:
        f"{LOGS}/build_knowledge.log",
    benchmark:
        f"{BENCH}/build_knowledge.tsv"
    conda:
        BASE_ENV
    threads: 1
    resources:
        mem_mb=4000,
    params:
        py=PY,
        source=config["knowledge"]["source"],
        max_tokens=config["knowledge"]["max_passage_tokens"],
        retriever=knowledge_args(),
    shell:
        "{params.py} -m flame.knowledge build --source {params.source:q} --out {output}"
        " --max-passage-tokens {params.max_tokens} {params.retriever} > {log} 2>&1"
