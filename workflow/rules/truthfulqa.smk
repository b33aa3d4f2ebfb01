# TruthfulQA (FLAME Table 5): MC1/MC2/MC3 by summed answer log-probs after the original QA
# primer, and BLEU/ROUGE of generated answers; Table 5 with n and bootstrap intervals.

TQA = {
    "data": "embedded",
    "n_questions": None,
    "generation": True,
    "max_new_tokens": 50,
    "models": ["SFT", "SFT+DPO", "SFT_FLAME+DPO_FLAME"],
    "baseline": "SFT+DPO",
    **config.get("truthfulqa", {}),
}
TQA_DATA = (
    [] if TQA["data"] == "embedded" or TQA["data"].startswith("hf:") else [TQA["data"]]
)
for m in TQA["models"]:
    if m not in CHAT_EVAL_MODELS:
        raise ValueError(
            f"config truthfulqa.models: {m!r} is not an evaluated model "
            f"({', '.join(CHAT_EVAL_MODELS)})"
        )
if "table5_truthfulqa" in EXTRA_TABLES:
    EXTRA_TARGETS += expand(f"{R}/tables/table5_truthfulqa.{{ext}}", ext=["csv", "md"])
TQA_ARGS = " ".join(
    [
        f"--data {shlex.quote(TQA['data'])} --max-new-tokens {TQA['max_new_tokens']}",
        f"--n-questions {TQA['n_questions']}" if TQA["n_questions"] else "",
        "--generation" if TQA["generation"] else "",
    ]
)


rule truthfulqa:
    input:
        data=TQA_DATA,
        model=lambda wc: model_input(wc.model),
    output:
        summary=f"{R}/eval/{{model}}/truthfulqa.json",
        records=f"{R}/eval/{{model}}/truthfulqa.jsonl",
    log:
        f"{LOGS}/truthfulqa/{{model}}.log",
    benchmark:
        f"{BENCH}/truthfulqa/{{model}}.tsv"
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
        args=TQA_ARGS,
    shell:
        "{params.py} -m flame.truthfulqa --model {params.model:q} {params.args}"
        " --out {output.summary} --records {output.records} --cache {params.cache}"
        " --threads {threads} > {log} 2>&1"


rule table5:
    input:
        expand(f"{R}/eval/{{model}}/truthfulqa.json", model=TQA["models"]),
    output:
        csv=report(
            f"{R}/tables/table5_truthfulqa.csv",
            caption="../report/table5.rst",
            category="Tables",
        ),
        md=report(
            f"{R}/tables/table5_truthfulqa.md",
            caption="../report/table5.rst",
            category="Tables",
        ),
    log:
        f"{LOGS}/table5.log",
    conda:
        BASE_ENV
    threads: 1
    params:
        py=PY,
        eval_dir=lambda wc, input: Path(input[0]).parent.parent,
        rows=" ".join(map(shlex.quote, TQA["models"])),
        baseline=TQA["baseline"],
        out=lambda wc, output: output.csv[: -len(".csv")],
    shell:
        "{params.py} -m flame.tables_extra truthfulqa --eval-dir {params.eval_dir} --rows {params.rows}"
        " --baseline={params.baseline:q} --out {params.out} > {log} 2>&1"
