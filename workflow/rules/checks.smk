# Config checks that need every rule module's settings (TQA, TAX, PILOT_CFG, FDPO, RM) or the
# rules themselves: a config that cannot run fails here, at parse time, with a message that
# names the key, before any job. No rule lives here.

import subprocess


def config_error(key, message):
    raise ValueError(f"config {key}: {message}")


def openai_api(spec):
    """A model served by the OpenAI API itself (not an OpenAI-compatible server such as vLLM's):
    it echoes no prompt log-probs, so it gives no log-likelihoods (flame.lm.openai)."""
    return spec.get("backend") == "openai" and "api.openai.com" in spec.get(
        "base_url", ""
    )


def check_values():
    """Values a step would reject (or a table would silently not compare) that the schema
    cannot see: local files the steps read, and the baselines of Tables 5 and 9."""
    if "table5_truthfulqa" in EXTRA_TABLES:
        data = TQA["data"]
        if (
            data != "embedded"
            and not data.startswith("hf:")
            and not Path(data).is_file()
        ):
            config_error(
                "truthfulqa.data",
                f"no file {data!r} (embedded, hf:NAME[:split] or a file)",
            )
    for key, table, block in [
        ("truthfulqa", "table5_truthfulqa", TQA),
        ("alignment_tax", "table9_alignment_tax", TAX),
    ]:
        if table in EXTRA_TABLES and block["baseline"] not in block["models"]:
            config_error(
                f"{key}.baseline",
                f"{block['baseline']!r} is not one of {key}.models ({', '.join(block['models'])})",
            )
    if "table9_alignment_tax" in EXTRA_TABLES:
        for key in ("mmlu", "gsm8k"):
            value = TAX[key]
            if value != "embedded" and not value.startswith("lm-eval:"):
                if not Path(value).is_dir():
                    config_error(
                        f"alignment_tax.{key}",
                        f"no folder {value!r} (embedded, lm-eval:TASK or a folder)",
                    )
    if PILOT:
        entities = PILOT_CFG["entities"]
        if entities != "embedded" and not Path(entities).is_file():
            config_error(
                "pilot.entities", f"no file {entities!r} (embedded or a file of names)"
            )
    if TRAINING.get("launcher", "python") == "accelerate":
        path = TRAINING["accelerate_config"]
        if not Path(path).is_file():
            config_error("training.accelerate_config", f"no file {path!r}")
    if config["rm_fact"].get("mode") == "reward_model":
        path = config["rm_fact"]["reward_model"]
        if not Path(path).is_dir():
            config_error(
                "rm_fact.reward_model",
                f"no folder {path!r} (a reward model written by flame.train_rm, e.g. "
                "results/models/rm/RM_BT of a run with reward_model.enabled)",
            )


def check_backends():
    """A role whose backend lacks what its step needs: training (a checkpoint), lm-eval (a local
    model), log-likelihoods (not the OpenAI API)."""
    if config["trained_models"].get("backend") == "openai":
        config_error(
            "trained_models.backend",
            "the checkpoints this workflow trains are local folders: serve them with "
            "transformers or vllm, not openai",
        )
    if config["roles"].get("fact_verifier") == "verifier":
        if config["models"][VERIFIER.get("init", "smollm2")]["backend"] == "openai":
            config_error("verifier.init", "an HTTP-served model cannot be trained")
    if RM_ROWS and resolve(RM["init"])[0].get("backend") == "openai":
        config_error("reward_model.init", "an HTTP-served model cannot be trained")
    if "table9_alignment_tax" in EXTRA_TABLES:
        for m in TAX["models"]:
            if json.loads(model_spec(m)).get("backend") == "openai":
                config_error(
                    "alignment_tax.models",
                    f"{m!r} is served by backend openai; lm-eval needs a transformers or "
                    "vllm model",
                )
    if "table5_truthfulqa" in EXTRA_TABLES:
        for m in TQA["models"]:
            if openai_api(json.loads(model_spec(m))):
                config_error(
                    "truthfulqa.models",
                    f"{m!r} is served by the OpenAI API, which gives no log-likelihoods "
                    "(TruthfulQA's MC scores); serve it with vLLM or transformers",
                )
    modes = {config["winrate"]["mode"], *(config["winrate"].get("quality_modes") or [])}
    if "reverse" in modes and openai_api(json.loads(judge_spec())):
        config_error(
            "winrate.mode",
            "reverse (also in winrate.quality_modes) needs log-likelihoods, which the OpenAI "
            "API of roles.eval_judge does not give; use mode prompt or logprob",
        )


def check_dense_python():
    """Dense retrieval (faiss, sentence_transformers) or a re-ranker (sentence_transformers) in
    rules that run under the vLLM python: that python must import them. Checked once, when such
    a rule is planned and the python exists (rule_python warns when it does not); with
    --use-conda envs/vllm.yaml provides them."""
    if PY == "python" or not Path(VLLM_PY).exists():
        return
    dense = ["faiss", "sentence_transformers"]
    if config["knowledge"].get("retriever", "bm25") != "dense":
        dense = []

    def needs(section):
        return dense + (
            ["sentence_transformers"] if config[section].get("reranker") else []
        )

    factscore = ("fact_decomposer", "fact_verifier")
    rules = {
        "eval_factuality": (uses_vllm(*factscore), needs("evaluation")),
        "rm_fact": (
            uses_vllm(*factscore) and config["rm_fact"].get("mode") != "reward_model",
            needs("rm_fact"),
        ),
        "invert": (
            bool(FDPO_ROWS) and uses_vllm("hallucinator", *factscore),
            needs("rm_fact"),
        ),
        "pilot_factscore": (PILOT and uses_vllm(*factscore), needs("evaluation")),
        "pilot_generate": (PILOT and uses_vllm("pretrained"), dense),
        "pilot_eval_rag": (PILOT and uses_vllm("pretrained"), dense),
    }
    planned = {r: mods for r, (vllm, mods) in rules.items() if vllm and mods}
    modules = sorted({m for mods in planned.values() for m in mods})
    if not modules:
        return
    probe = (
        "import importlib.util, sys; missing = [m for m in sys.argv[1:]"
        " if not importlib.util.find_spec(m)]; print(*missing); sys.exit(1 if missing else 0)"
    )
    res = subprocess.run(
        [VLLM_PY, "-c", probe, *modules], capture_output=True, text=True, timeout=120
    )
    if res.returncode != 0:
        missing = res.stdout.split() or modules
        keys = ["knowledge.retriever"] if dense else []
        keys += [
            f"{s}.reranker"
            for s in ("rm_fact", "evaluation")
            if config[s].get("reranker")
        ]
        config_error(
            " / ".join(keys),
            f"rules {', '.join(planned)} run under the vLLM python {VLLM_PY} (config "
            f"vllm_python or $FLAME_VLLM_PYTHON), which cannot import {', '.join(missing)}: "
            "install flame's [dense] extra there (`make install` does), or use "
            "knowledge.retriever: bm25 and no reranker",
        )


def check_slurm_training():
    """training.nodes > 1: a training job takes that many Slurm nodes and starts one accelerate
    launcher per node with srun. The Slurm plugin's `gpu` resource counts the GPUs of the whole
    job (--gpus), so each node's GPUs must come from a `gres` with gpu 0 in --set-resources
    (workflow/profiles/slurm); without them (or without Slurm) the job cannot train."""
    if TRAIN_NODES == 1:
        return
    overwrite = workflow.resource_settings.overwrite_resources or {}

    def raw(resources, name, default=None):
        value = dict(resources).get(name, default)
        return getattr(value, "raw", value)

    missing = []
    for r in workflow.rules:
        if (raw(r.resources, "nodes") or 1) <= 1:
            continue
        given = overwrite.get(r.name, {})
        if "gpu" not in str(raw(given, "gres", "")) or raw(given, "gpu") not in (
            0,
            "0",
        ):
            missing.append(r.name)
    if missing:
        config_error(
            "training.nodes",
            f"{TRAIN_NODES} nodes per training job need Slurm, with each node's GPUs as a "
            f"gres (and gpu: 0) in --set-resources, which rule(s) {', '.join(missing)} lack "
            "(--workflow-profile workflow/profiles/slurm sets them for every training rule); "
            "or train on one machine with training.nodes: 1 (workflow/configs/one-node.yaml)",
        )


check_values()
check_backends()
check_dense_python()
check_slurm_training()
