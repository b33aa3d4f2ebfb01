# The paper's tables, our numbers beside the paper's (Tables 2, 3, 8 and 11).


rule tables:
    input:
        factuality=expand(
            f"{R}/eval/{{model}}/factuality.json", model=["PT", *CHAT_EVAL_MODELS]
        ),
        winrates=expand(f"{R}/eval/winrate_{{table}}.json", table=["table2", "table3"]),
        pair_counts=expand(f"{R}/dpo/{{policy}}/pair_counts.json", policy=POLICY_INITS),
        data_manifest=rules.build_data.output.manifest,
    output:
        **{
            f"{t}_{ext}": report(
                f"{R}/tables/{t}.{ext}",
                caption=f"../report/{t}.rst",
                category="Tables",
            )
            for t in ["table2_sft", "table3_dpo", "table8_length", "table11_pairs"]
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
        out_dir=lambda wc, output: Path(output.table2_sft_csv).parent,
        rows2=" ".join(TABLE2_ROWS),
        rows3=" ".join(f"'{m}'" for m in TABLE3_ROWS),
    shell:
        "{params.py} -m flame.tables --eval-dir {params.eval_dir} --dpo-dir {params.dpo_dir}"
        " --out-dir {params.out_dir} --table2-rows {params.rows2} --table3-rows {params.rows3}"
        " --data-manifest {input.data_manifest} > {log} 2>&1"
