# FLAME Table 1, the biography pilot study (config `tables` lists table1_bio_pilot): PT and
# PT+RAG bios of training people; SFT on each kind (SFT_PT, SFT_RAG); DPO from SFT_PT on pairs of
# PT's own bios ranked by FActScore (DPO_FS) or with the RAG bio chosen (DPO_RAG); every model's
# FActScore on the Bio eval set. Training and evaluation reuse train_sft, train_dpo and
# eval_factuality.

PILOT_CFG = {
    "entities": "embedded",
    "n_people": 6,
    "n": 3,
    "passages": 2,
    "passage_chars": 300,
    "selection": "all",
    **config.get("pilot", {}),
}
PILOT_RAG = (
    f"--passages {PILOT_CFG['passages']} --passage-chars {PILOT_CFG['passage_chars']}"
)
if PILOT:
    EXTRA_TARGETS += expand(f"{R}/tables/table1_bio_pilot.{{ext}}", ext=["csv", "md"])


rule pilot_prompts:
    input:
        data=[
            rules.build_data.output.seed,
            rules.build_data.output.dpo_prompts,
            rules.build_data.output.labels,
            rules.build_data.output.bio,
            rules.build_data.output.alpaca,
            rules.build_data.output.fava,
        ],
        knowledge=rules.build_knowledge.output[0],
        entities=[e for e in [PILOT_CFG["entities"]] if Path(e).is_file()],
    output:
        f"{R}/pilot/bio_train.jsonl",
    log:
        f"{LOGS}/pilot/prompts.log",
    conda:
        BASE_ENV
    threads: 1
    resources:
        mem_mb=2000,
    params:
        py=PY,
        c=PILOT_CFG,
        seed=config["seed"],
    shell:
        "{params.py} -m flame.pilot prompts --entities={params.c[entities]:q}"
        " --knowledge {input.knowledge} --exclude {input.data} --n {params.c[n_people]}"
        " --seed {params.seed} --out {output} > {log} 2>&1"


rule pilot_generate:
    input:
        prompts=rules.pilot_prompts.output[0],
        demos=rules.build_data.output.seed,
        knowledge=rules.build_knowledge.output[0],
        model=role_input("pretrained"),
    output:
        f"{R}/pilot/{{kind}}.jsonl",
    log:
        f"{LOGS}/pilot/generate_{{kind}}.log",
    benchmark:
        f"{BENCH}/pilot/generate_{{kind}}.tsv"
    wildcard_constraints:
        kind="pt|rag",
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
        c=config["fewshot"],
        n=PILOT_CFG["n"],
        seed=config["seed"],
        rag=lambda wc, input: (
            f"--knowledge {input.knowledge} {PILOT_RAG}" if wc.kind == "rag" else ""
        ),
    shell:
        "{params.py} -m flame.fewshot --model {params.model:q} --demos {input.demos}"
        " --inputs {input.prompts} --out {output} {params.rag}"
        " --k {params.c[k]} --n {params.n} --temperature {params.c[temperature]}"
        " --top-p {params.c[top_p]} --max-new-tokens {params.c[max_new_tokens]}"
        " --demo-chars {params.c[demo_chars]} --seed {params.seed}"
        " --cache {params.cache} --threads {threads} > {log} 2>&1"


rule pilot_factscore:
    input:
        samples=f"{R}/pilot/pt.jsonl",
        knowledge=rules.build_knowledge.output[0],
        decomposer=role_input("fact_decomposer"),
        verifier=role_input("fact_verifier"),
    output:
        scores=f"{R}/pilot/pt_factscore.jsonl",
        facts=f"{R}/pilot/pt_factscore_facts.jsonl",
    log:
        f"{LOGS}/pilot/factscore.log",
    benchmark:
        f"{BENCH}/pilot/factscore.tsv"
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
        c=config["evaluation"],
        scorer=scorer_args("evaluation"),
    shell:
        "{params.py} -m flame.rm_fact --samples {input.samples} --knowledge {input.knowledge}"
        " --decomposer {params.decomposer:q} --verifier {params.verifier:q}"
        " --out {output.scores} --facts {output.facts} --unit {params.c[unit]}"
        " --retrieval topic --k {params.c[k]} --passage-chars {params.c[passage_chars]}"
        " --n-fixed {params.c[n_fixed]} --n-bm25 {params.c[n_bm25]}"
        " --max-fact-tokens {params.c[max_fact_tokens]} {params.scorer}"
        " --cache {params.cache} --threads {threads} > {log} 2>&1"


rule pilot_data:
    input:
        pt=f"{R}/pilot/pt.jsonl",
        rag=f"{R}/pilot/rag.jsonl",
        factscore=rules.pilot_factscore.output.scores,
    output:
        sft=expand(f"{R}/sft_data/{{s}}.jsonl", s=["SFT_PT", "SFT_RAG"]),
        pairs=expand(f"{R}/dpo/SFT_PT/pairs_{{d}}.jsonl", d=["DPO_FS", "DPO_RAG"]),
        counts=f"{R}/pilot/counts.json",
    log:
        f"{LOGS}/pilot/data.log",
    conda:
        BASE_ENV
    threads: 1
    params:
        py=PY,
        selection=PILOT_CFG["selection"],
        sft_dir=lambda wc, output: Path(output.sft[0]).parent,
        pairs_dir=lambda wc, output: Path(output.pairs[0]).parent,
    shell:
        "{params.py} -m flame.pilot data --pt {input.pt} --rag {input.rag}"
        " --factscore {input.factscore} --selection {params.selection}"
        " --sft-dir {params.sft_dir} --pairs-dir {params.pairs_dir} --counts {output.counts}"
        " > {log} 2>&1"


rule pilot_eval_rag:
    input:
        bio=rules.build_data.output.bio,
        demos=rules.build_data.output.seed,
        knowledge=rules.build_knowledge.output[0],
        model=role_input("pretrained"),
    output:
        f"{R}/eval/PT_RAG/bio.jsonl",
    log:
        f"{LOGS}/eval_generate/PT_RAG.log",
    benchmark:
        f"{BENCH}/eval_generate/PT_RAG.tsv"
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
        rag=PILOT_RAG,
    shell:
        "{params.py} -m flame.fewshot --model {params.model:q} --demos {input.demos}"
        " --inputs {input.bio} --out {output} --k {params.k} --n 1"
        " --demo-chars {params.demo_chars} --knowledge {input.knowledge} {params.rag}"
        " {params.sampling} --cache {params.cache} --threads {threads} > {log} 2>&1"


rule pilot_eval_generate:
    input:
        bio=rules.build_data.output.bio,
        model=lambda wc: model_input(wc.model),
    output:
        f"{R}/eval/{{model}}/bio.jsonl",
    log:
        f"{LOGS}/eval_generate/{{model}}.log",
    benchmark:
        f"{BENCH}/eval_generate/{{model}}.tsv"
    wildcard_constraints:
        model="|".join(m.replace("+", r"\+") for m in PILOT_CHAT) or "(?!)",
    conda:
        conda_env(policy_backend=True)
    threads: 1
    resources:
        mem_mb=4000,
        gpu=1,
    params:
        py=rule_python(policy_backend=True),
        cache=CACHE,
        model=lambda wc: model_spec(wc.model),
        sampling=eval_sampling(),
    shell:
        "{params.py} -m flame.generate --model {params.model:q} --name {wildcards.model:q}"
        " --inputs {input.bio} --outs {output} --n 1 {params.sampling}"
        " --cache {params.cache} --threads {threads} > {log} 2>&1"


rule table1:
    input:
        factuality=expand(f"{R}/eval/{{model}}/factuality.json", model=PILOT_ROWS),
        counts=rules.pilot_data.output.counts,
    output:
        csv=report(
            f"{R}/tables/table1_bio_pilot.csv",
            caption="../report/table1.rst",
            category="Tables",
        ),
        md=report(
            f"{R}/tables/table1_bio_pilot.md",
            caption="../report/table1.rst",
            category="Tables",
        ),
    log:
        f"{LOGS}/table1.log",
    conda:
        BASE_ENV
    threads: 1
    params:
        py=PY,
        eval_dir=f"{R}/eval",
        rows=" ".join(f"'{m}'" for m in PILOT_ROWS),
        out=lambda wc, output: output.csv[: -len(".csv")],
    shell:
        "{params.py} -m flame.tables_extra pilot --eval-dir {params.eval_dir}"
        " --rows {params.rows} --baseline PT --pilot-counts {input.counts}"
        " --out {params.out} > {log} 2>&1"
