# The alignment tax (FLAME Table 9): MMLU 5-shot and GSM8K 8-shot through lm-eval, on the
# workflow's checkpoints; built when config `tables` lists table9_alignment_tax.

TAX = {
    "mmlu": "embedded",
    "gsm8k": "embedded",
    "mmlu_shots": 5,
    "gsm8k_shots": 8,
    "max_gen_toks": 256,
    "limit": None,
    "batch_size": 8,
    "models": ["SFT+DPO", "SFT_FLAME+DPO_FLAME"],
    "baseline": "SFT+DPO",
    **config.get("alignment_tax", {}),
}
for m in TAX["models"]:
    if m not in CHAT_EVAL_MODELS:
        raise ValueError(
            f"config alignment_tax.models: {m!r} is not an evaluated model "
            f"({', '.join(CHAT_EVAL_MODELS)})"
        )
if "table9_alignment_tax" in EXTRA_TABLES:
    EXTRA_TARGETS += expand(
        f"{R}/tables/table9_alignment_tax.{{ext}}", ext=["csv", "md"]
    )
TAX_ARGS = " ".join(
    [
        f"--mmlu {shlex.quote(TAX['mmlu'])} --gsm8k {shlex.quote(TAX['gsm8k'])}",
        f"--mmlu-shots {TAX['mmlu_shots']}",
        f"--gsm8k-shots {TAX['gsm8k_shots']} --max-gen-toks {TAX['max_gen_toks']}",
        f"--batch-size {TAX['batch_size']}",
        f"--limit {TAX['limit']}" if TAX["limit"] else "",
    ]
)


rule alignment_tax:
    input:
        model=lambda wc: model_input(wc.model),
    output:
        f"{R}/eval/{{model}}/alignment_tax.json",
    log:
        f"{LOGS}/alignment_tax/{{model}}.log",
    benchmark:
        f"{BENCH}/alignment_tax/{{model}}.tsv"
    conda:
        conda_env(policy_backend=True)
    threads: 1
    resources:
        mem_mb=4000,
        gpu=1,
    params:
        py=rule_python(policy_backend=True),
        model=lambda wc: model_spec(wc.model),
        args=TAX_ARGS,
    shell:
        "{params.py} -m flame.alignment_tax --model {params.model:q} {params.args}"
        " --out {output} --threads {threads} > {log} 2>&1"


rule table9:
    input:
        expand(f"{R}/eval/{{model}}/alignment_tax.json", model=TAX["models"]),
    output:
        csv=report(
            f"{R}/tables/table9_alignment_tax.csv",
            caption="../report/table9.rst",
            category="Tables",
        ),
        md=report(
            f"{R}/tables/table9_alignment_tax.md",
            caption="../report/table9.rst",
            category="Tables",
        ),
    log:
        f"{LOGS}/table9.log",
    conda:
        BASE_ENV
    threads: 1
    params:
        py=PY,
        eval_dir=lambda wc, input: Path(input[0]).parent.parent,
        rows=" ".join(map(shlex.quote, TAX["models"])),
        baseline=TAX["baseline"],
        out=lambda wc, output: output.csv[: -len(".csv")],
    shell:
        "{params.py} -m flame.tables_extra alignment-tax --eval-dir {params.eval_dir}"
        " --rows {params.rows} --baseline={params.baseline:q} --out {params.out} > {log} 2>&1"
