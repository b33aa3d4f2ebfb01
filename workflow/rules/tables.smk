# The paper's tables, our numbers beside the paper's (Tables 2, 3, 8 and 11). A row whose
# model was trained on nothing (zero DPO pairs, its train_summary.json) is marked untrained.


rule tables:
    input:
        factuality=expand(
            f"{R}/eval/{{model}}/factuality.json", model=["PT", *CHAT_EVAL_MODELS]
        ),
        facts=expand(f"{R}/eval/{{model}}/facts", model=["PT", *CHAT_EVAL_MODELS]),
        winrates=expand(f"{R}/eval/winrate_{{table}}.json", table=["table2", "table3"]),
        pair_counts=expand(f"{R}/dpo/{{policy}}/pair_counts.json", policy=POLICY_INITS),
        data_manifest=rules.build_data.output.manifest,
        # the rows' checkpoints: their train_summary.json marks a row trained on nothing
        models=[
            trained_path(m)
            for m in dict.fromkeys([*TABLE2_ROWS, *TABLE3_ROWS])
            if m in SFT_NAMES or "+" in m
        ],
    output:
        **{
            f"{t}_{ext}": report(
                f"{R}/tables/{t}.{ext}",
                caption=f"../report/{t}.rst",
                category="Tables",
            )
            for t in [
                "table2_sft",
                "table3_dpo",
                "table8_length",
                "table11_pairs",
                "table_paired",
            ]
            for ext in ["csv", "md"]
        },
    log:
        f"{LOGS}/tables.log",
    conda:
        BASE_ENV
    threads: 1
    params:
        py=PY,
        eval_dir=lambda wc, input: Path(input.winrates[0]).parent,
        dpo_dir=lambda wc, input: Path(input.pair_counts[0]).parent.parent,
        models_dir=lambda wc, input: Path(input.models[0]).parent.parent,
        out_dir=lambda wc, output: Path(output.table2_sft_csv).parent,
        rows2=" ".join(TABLE2_ROWS),
        rows3=" ".join(f"'{m}'" for m in TABLE3_ROWS),
    shell:
        "{params.py} -m flame.tables --eval-dir {params.eval_dir} --dpo-dir {params.dpo_dir}"
        " --out-dir {params.out_dir} --table2-rows {params.rows2} --table3-rows {params.rows3}"
        " --data-manifest {input.data_manifest} --models-dir {params.models_dir}"
        " > {log} 2>&1"


# Does the win-rate judge judge? Accuracy on 36 obvious pairs per mode (judged early, on idle
# cores), and the judge's tie, unreadable and swap-agreement rates in every comparison of
# Tables 2 and 3 (flame.judge_quality).
TABLES += expand(f"{R}/tables/table_judge.{{ext}}", ext=["csv", "md"])


rule judge_quality:
    input:
        judge=role_input("eval_judge"),
    output:
        f"{R}/eval/judge_quality.json",
    log:
        f"{LOGS}/judge_quality.log",
    benchmark:
        f"{BENCH}/judge_quality.tsv"
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
        modes=" ".join(
            config["winrate"]["quality_modes"] or [config["winrate"]["mode"]]
        ),
    shell:
        "{params.py} -m flame.judge_quality --judge {params.judge:q} --modes {params.modes}"
        " --out {output} --cache {params.cache} --threads {threads} > {log} 2>&1"


rule table_judge:
    input:
        quality=rules.judge_quality.output[0],
        winrates=expand(f"{R}/eval/winrate_{{table}}.json", table=["table2", "table3"]),
    output:
        **{
            ext: report(
                f"{R}/tables/table_judge.{ext}",
                caption="../report/table_judge.rst",
                category="Tables",
            )
            for ext in ["csv", "md"]
        },
    log:
        f"{LOGS}/table_judge.log",
    conda:
        BASE_ENV
    threads: 1
    params:
        py=PY,
        mode=config["winrate"]["mode"],
    shell:
        "{params.py} -m flame.judge_quality --quality {input.quality} --selected {params.mode}"
        " --winrate {input.winrates} --table {output.md} > {log} 2>&1"
