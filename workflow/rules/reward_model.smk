# A Bradley-Terry factuality reward model distilled from RM_fact (TRL RewardTrainer), the row
# "SFT + DPO_fact (RM_BT)" whose fact pairs it chooses, and rm_fact.mode: reward_model.

if RM_ROWS:

    rule train_rm:
        input:
            samples=expand(f"{R}/dpo/{{p}}/samples.jsonl", p=RM["train_on"]),
            rm_fact=expand(f"{R}/dpo/{{p}}/rm_fact.jsonl", p=RM["train_on"]),
            init=model_input(RM["init"]),
        output:
            model=directory(f"{R}/models/rm/RM_BT"),
            metrics=f"{R}/rm/RM_BT_metrics.json",
        log:
            f"{LOGS}/train_rm/RM_BT.log",
        benchmark:
            f"{BENCH}/train_rm/RM_BT.tsv"
        priority: 20
        conda:
            TRAIN_ENV
        threads: TRAIN_THREADS
        resources:
            **train_resources(),
            mem_mb=12000,
            gpu=TRAIN_PROCS,
        params:
            launcher=launcher(),
            threads=process_threads,
            init=lambda wc: json.loads(model_spec(RM["init"]))["source"],
            recipe=set_args(RM.get("recipe", {})),
            c=RM,
            seed=config["seed"],
            allow_empty="--allow-empty" if RM.get("allow_empty_pairs") else "",
        shell:
            "{params.launcher} -m flame.train_rm --init {params.init:q} --samples {input.samples}"
            " --rm-fact {input.rm_fact} --out {output.model} --metrics {output.metrics}"
            " --pairs {params.c[pairs]} --min-gap {params.c[min_gap]}"
            " --margin-scale {params.c[margin_scale]} --heldout {params.c[heldout]}"
            " {params.recipe} --set seed={params.seed} {params.allow_empty}"
            " --threads {params.threads} > {log} 2>&1"

    rule rm_bt:
        input:
            model=rules.train_rm.output.model,
            samples=f"{R}/dpo/{{policy}}/samples.jsonl",
            compare=f"{R}/dpo/{{policy}}/rm_fact.jsonl",
        output:
            scores=f"{R}/rm_bt/{{policy}}/rm_fact.jsonl",
            stats=f"{R}/rm_bt/{{policy}}/rm_bt_stats.json",
        log:
            f"{LOGS}/rm_bt/{{policy}}.log",
        benchmark:
            f"{BENCH}/rm_bt/{{policy}}.tsv"
        priority: 36
        conda:
            TRAIN_ENV
        threads: 1
        resources:
            mem_mb=4000,
            gpu=1,
        params:
            py=PY,
            allow_untrained=("--allow-untrained" if RM.get("allow_empty_pairs") else ""),
        shell:
            "{params.py} -m flame.rm_bt --model {input.model} --samples {input.samples}"
            " --out {output.scores} --compare {input.compare} --stats {output.stats}"
            " {params.allow_untrained} --threads {threads} > {log} 2>&1"

    rule pairs_rm_bt:
        input:
            samples=f"{R}/dpo/{{policy}}/samples.jsonl",
            rm_if=f"{R}/dpo/{{policy}}/rm_if.jsonl",
            rm_fact=rules.rm_bt.output.scores,
        output:
            expand(
                f"{R}/rm_bt/{{{{policy}}}}/pairs_{{dpo}}.jsonl",
                dpo=["DPO", "DPO_fact", "DPO_FLAME"],
            ),
            counts=f"{R}/rm_bt/{{policy}}/pair_counts.json",
        log:
            f"{LOGS}/pairs_rm_bt/{{policy}}.log",
        priority: 30
        conda:
            BASE_ENV
        threads: 1
        params:
            py=PY,
            c=config["pairs"],
            seed=config["seed"],
            out_dir=lambda wc, output: Path(output.counts).parent,
        shell:
            "{params.py} -m flame.pairs --samples {input.samples} --rm-if {input.rm_if}"
            " --rm-fact {input.rm_fact} --out-dir {params.out_dir}"
            " --counts {output.counts} --max-if-gap {params.c[max_if_gap]}"
            " --mix {params.c[mix]} --seed {params.seed} > {log} 2>&1"

    use rule train_dpo as train_dpo_rm_bt with:
        input:
            pairs=f"{R}/rm_bt/{{policy}}/pairs_DPO_fact.jsonl",
            init=f"{R}/models/sft/{{policy}}",
        output:
            directory(f"{R}/models/dpo/{{policy}}+DPO_fact_RMBT"),
        log:
            f"{LOGS}/train_dpo/{{policy}}+DPO_fact_RMBT.log",
        benchmark:
            f"{BENCH}/train_dpo/{{policy}}+DPO_fact_RMBT.tsv"

    rule table_rm:
        input:
            factuality=expand(f"{R}/eval/{{m}}/factuality.json", m=RM_ROWS),
            metrics=rules.train_rm.output.metrics,
            stats=f"{R}/rm_bt/{RM['policy']}/rm_bt_stats.json",
            factscore=f"{BENCH}/rm_fact/{RM['policy']}.tsv",
            pairs=[
                f"{R}/dpo/{RM['policy']}/pairs_DPO_fact.jsonl",
                f"{R}/rm_bt/{RM['policy']}/pairs_DPO_fact.jsonl",
            ],
            models=expand(f"{R}/models/dpo/{{m}}", m=RM_ROWS),
        output:
            **{
                ext: report(
                    f"{R}/tables/table_rm.{ext}",
                    caption="../report/tables.rst",
                    category="Tables",
                )
                for ext in ["csv", "md"]
            },
        log:
            f"{LOGS}/table_rm.log",
        conda:
            BASE_ENV
        threads: 1
        params:
            py=PY,
            eval_dir=lambda wc, input: Path(input.factuality[0]).parent.parent,
            out_dir=lambda wc, output: Path(output.csv).parent,
            models_dir=lambda wc, input: Path(input.models[0]).parent,
            rows=" ".join(f"'{m}={label}'" for m, label in RM_ROWS.items()),
            below=FDPO.get("halluc_below", 5),
        shell:
            "{params.py} -m flame.table_fdpo --eval-dir {params.eval_dir}"
            " --out-dir {params.out_dir} --rm-rows {params.rows}"
            " --rm-metrics {input.metrics} --rm-stats {input.stats}"
            " --factscore-benchmark {input.factscore} --fact-pairs {input.pairs}"
            " --halluc-below {params.below} --models-dir {params.models_dir}"
            " > {log} 2>&1"


if config["rm_fact"].get("mode") == "reward_model":

    # RM_fact by a trained reward model instead of FActScore: same records, no per-fact file
    rule rm_fact_reward_model:
        input:
            model=config["rm_fact"]["reward_model"],
            samples=rules.sample_responses.output[0],
        output:
            scores=f"{R}/dpo/{{policy}}/rm_fact.jsonl",
            facts=f"{R}/dpo/{{policy}}/rm_fact_facts.jsonl",
        log:
            f"{LOGS}/rm_fact/{{policy}}.log",
        benchmark:
            f"{BENCH}/rm_fact/{{policy}}.tsv"
        priority: 36
        conda:
            TRAIN_ENV
        threads: 1
        resources:
            mem_mb=4000,
            gpu=1,
        params:
            py=PY,
        shell:
            "{params.py} -m flame.rm_bt --model {input.model:q} --samples {input.samples}"
            " --out {output.scores} --threads {threads} > {log} 2>&1"
            " && : > {output.facts}"

    ruleorder: rm_fact_reward_model > rm_fact
