# Helpers shared by the stage modules: names of the paper's models, model roles -> specs and
# inputs, and config checks that JSON Schema cannot express. No rule lives here.

import json
import os
import shlex
import sys
from pathlib import Path

from snakemake.settings.types import DeploymentMethod


def sorted_keys(value):
    """`value` with every mapping's keys in sorted order (lists keep theirs)."""
    if isinstance(value, dict):
        return {k: sorted_keys(value[k]) for k in sorted(value)}
    if isinstance(value, list):
        return [sorted_keys(v) for v in value]
    return value


# Snakemake compares a rule's params with the last run's by their text, and a config section
# passed as a param prints in the key order of the config file: the same config written in
# another order (e.g. by yaml.safe_dump) would re-run every job. Sorted once, here, it does not.
_config_sorted = sorted_keys(dict(config))
config.clear()
config.update(_config_sorted)

R = "results"
CACHE = f"{R}/cache/lm.sqlite"
LOGS = f"{R}/logs"
BENCH = f"{R}/benchmarks"

# With --use-conda each rule's env provides `python`; otherwise use the interpreter running
# Snakemake (so `.venv/bin/snakemake` works without activating the venv).
PY = (
    "python"
    if DeploymentMethod.CONDA in workflow.deployment_settings.deployment_method
    else shlex.quote(sys.executable)
)

# Steps print bad input as one `error: file:line: ...` line (flame.cli); in a rule's log the
# traceback above it is kept too.
os.environ.setdefault("FLAME_DEBUG", "1")

SFT_VARIANTS = ["SFT", "SFT_fact", "SFT_FLAME"]
DPO_RUNS = [
    "SFT+DPO",
    "SFT+DPO_fact",
    "SFT+DPO_FLAME",
    "SFT_FLAME+DPO",
    "SFT_FLAME+DPO_FLAME",
]
POLICY_INITS = sorted({run.split("+")[0] for run in DPO_RUNS})
CHAT = ["Chat"] if config["roles"].get("chat_baseline") else []
TABLE2_ROWS = ["PT", *SFT_VARIANTS]
TABLE3_ROWS = [
    *CHAT,
    "SFT",
    "SFT+DPO",
    "SFT+DPO_fact",
    "SFT+DPO_FLAME",
    "SFT_FLAME",
    "SFT_FLAME+DPO",
    "SFT_FLAME+DPO_FLAME",
]
# models evaluated with chat prompts on every set (PT is evaluated 5-shot on Bio only)
CHAT_EVAL_MODELS = list(dict.fromkeys([*SFT_VARIANTS, *TABLE3_ROWS]))
EVAL_SETS = ["bio", "alpaca", "fava"]
TABLES = expand(
    f"{R}/tables/{{table}}.{{ext}}",
    table=["table2_sft", "table3_dpo", "table8_length", "table11_pairs"],
    ext=["csv", "md"],
)
# optional results named in config `tables` (Table 5, Figure 1, ablations, alignment tax): each
# rule module adds its targets to EXTRA_TARGETS when its name is listed
EXTRA_TABLES = config.get("tables", ["table5_truthfulqa", "figure1"])
EXTRA_TARGETS = []
# ablation models (workflow/rules/ablations.smk): Table 6's SFT without the classifier and
# Table 7's DPO_FLAME with other fact-pair selections, trained from SFT
ABLATION_SFT = ["SFT_FLAME_noclf"] if "table6_classifier" in EXTRA_TABLES else []
PAIR_SELECTIONS = (
    ["threshold", "combined"] if "table7_pair_selection" in EXTRA_TABLES else []
)
ABLATION_DPO = [f"DPO_FLAME_{s}" for s in PAIR_SELECTIONS]
SFT_NAMES = [*SFT_VARIANTS, *ABLATION_SFT]
DPO_NAMES = ["DPO", "DPO_fact", "DPO_FLAME", *ABLATION_DPO]
CHAT_EVAL_MODELS += [*ABLATION_SFT, *(f"SFT+{d}" for d in ABLATION_DPO)]
# Table 1, the Bio pilot study (workflow/rules/pilot.smk): SFT on PT's own bios and on PT+RAG
# bios; DPO from SFT_PT on FActScore-ranked own bios, or with RAG bios chosen. Its models are
# evaluated on Bio only, like PT.
PILOT = "table1_bio_pilot" in EXTRA_TABLES
PILOT_SFT = ["SFT_PT", "SFT_RAG"] if PILOT else []
PILOT_DPO = ["DPO_FS", "DPO_RAG"] if PILOT else []
PILOT_CHAT = [*PILOT_SFT, *(f"SFT_PT+{d}" for d in PILOT_DPO)]
PILOT_ROWS = ["PT", "PT_RAG", *PILOT_CHAT] if PILOT else []
SFT_NAMES += PILOT_SFT
DPO_NAMES += PILOT_DPO
POLICIES = ["SFT", "SFT_FLAME", *(["SFT_PT"] if PILOT else [])]
BIO_ONLY_MODELS = ["PT", *PILOT_ROWS[1:]]

# F-DPO and the Bradley-Terry reward model (workflow/rules/fdpo.smk, reward_model.smk): their
# rows come from config (one F-DPO checkpoint per lambda) and join the evaluated models.
FDPO = config.get("fdpo", {})
FDPO_ROWS = (
    {f"{FDPO['policy']}+FDPO_l{lam:g}": lam for lam in FDPO["lambdas"]}
    if FDPO.get("enabled")
    else {}
)
RM = config.get("reward_model", {})
RM_ROWS = (
    {
        f"{RM['policy']}+DPO_fact": f"{RM['policy']} + DPO_fact (FActScore)",
        f"{RM['policy']}+DPO_fact_RMBT": f"{RM['policy']} + DPO_fact (RM_BT)",
    }
    if RM.get("enabled")
    else {}
)
CHAT_EVAL_MODELS += [m for m in [*FDPO_ROWS, *RM_ROWS] if m not in CHAT_EVAL_MODELS]
TABLES += expand(
    f"{R}/tables/{{table}}.{{ext}}",
    table=(["table_fdpo"] if FDPO_ROWS else []) + (["table_rm"] if RM_ROWS else []),
    ext=["csv", "md"],
)


SPECIAL_ROLES = {"policy", "verifier", *SFT_VARIANTS}
# roles.fact_verifier: verifier = the verifier trained on the knowledge source (verifier.smk)
VERIFIER = config.get("verifier", {})
VERIFIER_PATH = f"{R}/models/verifier"


def check_roles():
    """Every role names a configured model (or SFT/policy); fail at parse time otherwise."""
    names = set(config["models"])
    for role, value in config["roles"].items():
        if value is None and role == "chat_baseline":
            continue
        if value == "policy" and role != "if_judge":
            raise ValueError(
                f"config roles.{role}: 'policy' is only meaningful for if_judge"
            )
        if value == "verifier" and role != "fact_verifier":
            raise ValueError(
                f"config roles.{role}: 'verifier' (the trained fact verifier) is only "
                "meaningful for fact_verifier"
            )
        if value in SFT_VARIANTS and role in ("pretrained", "sft_init"):
            raise ValueError(
                f"config roles.{role}: cannot be a model the workflow trains ({value})"
            )
        if value not in names and value not in SPECIAL_ROLES:
            raise ValueError(
                f"config roles.{role}: unknown model {value!r}; "
                f"configured models: {', '.join(sorted(names))} (or SFT, policy, verifier)"
            )
    if config["roles"].get("fact_verifier") == "verifier":
        vinit = VERIFIER.get("init", "smollm2")
        if vinit not in names:
            raise ValueError(
                f"config verifier.init: unknown model {vinit!r} (the model the trained "
                f"verifier starts from); configured models: {', '.join(sorted(names))}"
            )
    init = config["models"][config["roles"]["sft_init"]]
    if init["backend"] == "openai":
        raise ValueError(
            "config roles.sft_init: an HTTP-served model cannot be trained"
        )


def check_classifier():
    """The probe reads hidden states: only a model run by transformers has them."""
    if config.get("classify", {}).get("mode") != "probe":
        return
    spec, _ = resolve(config["roles"]["classifier"], "SFT")
    if spec.get("backend", "transformers") != "transformers":
        raise ValueError(
            f"config classify.mode: probe reads the classifier's hidden states, which the "
            f"{spec.get('backend')} backend of roles.classifier does not give; use mode prompt "
            f"or a transformers model"
        )


def check_fdpo_and_rm():
    """F-DPO needs a hallucinator and FActScore's RM_fact (its labels are shares of facts)."""
    mode = config["rm_fact"].get("mode", "factscore")
    if FDPO.get("enabled") and not config["roles"].get("hallucinator"):
        raise ValueError(
            "config fdpo.enabled: set roles.hallucinator (the inversion model)"
        )
    if (FDPO.get("enabled") or RM.get("enabled")) and mode != "factscore":
        raise ValueError(
            "config rm_fact.mode: fdpo and reward_model need FActScore's RM_fact (mode factscore)"
        )
    if RM.get("allow_empty_pairs") and not config["dpo"].get("allow_empty_pairs"):
        raise ValueError(
            "config reward_model.allow_empty_pairs needs dpo.allow_empty_pairs: "
            "an untrained reward model gives the RM_BT row zero pairs"
        )
    if mode == "reward_model" and not config["rm_fact"].get("reward_model"):
        raise ValueError(
            "config rm_fact.mode reward_model: set rm_fact.reward_model to a reward model folder"
        )
    init = RM.get("init", "SFT")
    if RM.get("enabled") and init not in config["models"]:
        if init not in SFT_NAMES and "+" not in init:
            raise ValueError(
                f"config reward_model.init: unknown model {init!r}; a name from models or a "
                f"trained model ({', '.join(SFT_NAMES)}, or e.g. SFT+DPO)"
            )


check_roles()
check_fdpo_and_rm()


def needs_prepare(model):
    source = model.get("source", "")
    return source.startswith(("embedded:", "gguf:"))


def trained_path(name):
    return f"{R}/models/dpo/{name}" if "+" in name else f"{R}/models/sft/{name}"


def resolve(value, policy=None):
    """(spec, inputs) for a role value: a configured model, a trained model or the policy."""
    if value == "policy":
        value = policy
    if value == "verifier":
        return {**config["trained_models"], "source": VERIFIER_PATH}, [VERIFIER_PATH]
    if value in SFT_NAMES or "+" in value:
        path = trained_path(value)
        return {**config["trained_models"], "source": path}, [path]
    model = dict(config["models"][value])
    if model["backend"] == "openai":
        return model, []
    if needs_prepare(model):
        path = f"{R}/models/base/{value}"
        return {**model, "source": path}, [path]
    source = model["source"]
    return model, [source] if Path(source).exists() else []


def role_spec(role, policy=None):
    """The role's model spec as a JSON string (pass it with {params.x:q})."""
    return json.dumps(resolve(config["roles"][role], policy)[0], sort_keys=True)


def role_input(role, policy=None):
    return resolve(config["roles"][role], policy)[1]


def judge_spec():
    """roles.eval_judge's spec, in winrate.dtype when that is set and the judge is local."""
    spec = json.loads(role_spec("eval_judge"))
    if config["winrate"].get("dtype") and spec.get("backend") != "openai":
        spec["dtype"] = config["winrate"]["dtype"]
    return json.dumps(spec, sort_keys=True)


def model_spec(name):
    """Spec of an evaluated model by its table name."""
    if name == "Chat":
        return json.dumps(resolve(config["roles"]["chat_baseline"])[0], sort_keys=True)
    return json.dumps(resolve(name)[0], sort_keys=True)


def model_input(name):
    if name == "Chat":
        return resolve(config["roles"]["chat_baseline"])[1]
    return resolve(name)[1]


def set_args(recipe, keys_to_skip=()):
    """A recipe mapping as `--set key=<JSON>` arguments, each one shell word (the trainers read
    the value as YAML, of which JSON is a subset: strings with spaces or quotes arrive intact).
    Sorted by key: the same config written in another key order gives the same command line, so
    Snakemake's params trigger re-runs nothing.
    """
    return " ".join(
        f"--set {shlex.quote(f'{k}={json.dumps(v)}')}"
        for k, v in sorted(recipe.items())
        if k not in keys_to_skip
    )


def recipe_args(section, keys_to_skip=()):
    """A trainer section of the config as `--set key=value` arguments."""
    return set_args(config[section], keys_to_skip)


# sft.allow_empty_data: an SFT set with no examples keeps its init model (flame.sft_data and
# flame.train_sft --allow-empty)
ALLOW_EMPTY_SFT = "--allow-empty" if config["sft"].get("allow_empty_data") else ""

TRAINING = config["training"]
TRAIN_NODES = TRAINING.get("nodes", 1)
# training processes per node (a job without Slurm is one node): one per GPU, or on CPUs one per
# group of `training.threads` cores; training.num_processes is the world size over all nodes
TRAIN_PROCS = (
    TRAINING.get("num_processes", 1) // TRAIN_NODES
    if TRAINING.get("launcher") == "accelerate"
    else 1
)


def launcher():
    """How training steps start: plain python; accelerate launch (DDP or DeepSpeed ZeRO-2/3, by
    the config file named in training.accelerate_config) on port 0, so that two training jobs
    can run side by side on one machine; or, over several Slurm nodes, one accelerate launcher
    per node under srun (flame.launch)."""
    t = TRAINING
    if TRAIN_NODES > 1:
        return (
            f"srun --nodes {TRAIN_NODES} --ntasks-per-node 1 --kill-on-bad-exit=1"
            f" {PY} -m flame.launch --config_file {shlex.quote(t['accelerate_config'])}"
            f" --num_processes {t['num_processes']} --"
        )
    if t.get("launcher", "python") == "python":
        return PY
    return (
        f"{PY} -m accelerate.commands.launch"
        f" --config_file {shlex.quote(t['accelerate_config'])}"
        f" --num_processes {TRAIN_PROCS} --main_process_port 0"
    )


def process_threads(wildcards, threads):
    """CPU threads of each training process: the job's (or node's) threads shared by its
    processes."""
    return max(1, threads // TRAIN_PROCS)


def train_resources():
    """Extra Slurm resources of the training rules: with training.nodes > 1 the job takes that many
    nodes, one task each, and runs its own srun (the plugin's `mpi` jobs: no srun around the rule's
    command; tasks_per_gpu 0 keeps the tasks from becoming --ntasks-per-gpu)."""
    if TRAIN_NODES == 1:
        return {}
    return dict(nodes=TRAIN_NODES, tasks=TRAIN_NODES, mpi="srun", tasks_per_gpu=0)


def check_training():
    t = TRAINING
    if TRAIN_NODES == 1:
        return
    if t.get("launcher", "python") != "accelerate":
        raise ValueError(
            "config training.nodes > 1 needs training.launcher: accelerate"
        )
    if t.get("num_processes", 1) % TRAIN_NODES:
        raise ValueError(
            f"config training.num_processes ({t.get('num_processes', 1)}) must be a multiple"
            f" of training.nodes ({TRAIN_NODES}): it is the world size over all nodes"
        )


check_training()


def uses_vllm(*roles, policy_backend=False):
    backends = {resolve(config["roles"][r], "SFT")[0].get("backend") for r in roles}
    if policy_backend:
        backends.add(config["trained_models"].get("backend"))
    return "vllm" in backends


def conda_env(*roles, policy_backend=False):
    """The conda env of a rule: envs/vllm.yaml when any of its models is served by vLLM."""
    if uses_vllm(*roles, policy_backend=policy_backend):
        return "../../envs/vllm.yaml"
    return "../../envs/base.yaml"


# vLLM pins its own transformers, so it has its own environment. Without --use-conda, rules
# whose models use `backend: vllm` run with its python: $FLAME_VLLM_PYTHON, else config
# `vllm_python` (default .venv-vllm/bin/python, built by `make install`).
VLLM_PY = os.environ.get("FLAME_VLLM_PYTHON") or config.get(
    "vllm_python", ".venv-vllm/bin/python"
)


def rule_python(*roles, policy_backend=False):
    """The interpreter of a rule that runs models (same roles as its conda_env)."""
    if PY == "python" or not uses_vllm(*roles, policy_backend=policy_backend):
        return PY
    if not Path(VLLM_PY).exists() and VLLM_PY not in MISSING:
        MISSING.add(VLLM_PY)
        print(
            f"WARNING: config vllm_python: {VLLM_PY} does not exist, so jobs whose models "
            "use backend vllm will fail: `make install` builds .venv-vllm (or use "
            "--use-conda, or set FLAME_VLLM_PYTHON)",
            file=sys.stderr,
        )
    return shlex.quote(VLLM_PY)


MISSING = set()


# threads of a training job: training.threads per process
TRAIN_THREADS = TRAINING.get("threads", 1) * TRAIN_PROCS


def sft_threads(wildcards):
    """Threads of an SFT job. The SFT baseline gates everything after it (the classifier is the
    SFT model, as in the paper) and only the PT evaluation can run beside it, so it takes at
    least two threads; the variants train side by side with other jobs."""
    return max(TRAIN_THREADS, 2) if wildcards.sft == "SFT" else TRAIN_THREADS


# Rule priorities (higher first; evaluation rules keep 0): the training chain is the DAG's
# critical path (SFT -> classify -> few-shot PT -> SFT variants -> sampling -> rewards ->
# pairs -> DPO), so when cores are short its jobs go before the evaluation of finished models,
# which fill the idle cores instead.
TRAIN_ENV = "../../envs/train.yaml"
BASE_ENV = "../../envs/base.yaml"


def data_args():
    d = config["data"]
    args = [f"--source {d['source']}", f"--seed {config['seed']}"]
    # config.yaml's keys stay under a --configfile that lacks them: the hub source takes only
    # the evaluation-set sizes (null: the whole set)
    only = "n_eval_" if d["source"] == "hub" else "n_"
    args += [
        f"--{k.replace('_', '-')} {v}"
        for k, v in sorted(d.items())  # key order of the config file: not a change
        if k.startswith(only) and v is not None
    ]
    # data.hub applies to the hub source only (an overlay such as shrink.yaml may set it on a
    # config whose source is embedded); null: the set is left out
    hub = d.get("hub", {}) if d["source"] == "hub" else {}
    for k, v in sorted(hub.items()):
        args.append(
            f"--{k.replace('_', '-')} {shlex.quote(str('none' if v is None else v))}"
        )
    return " ".join(args)


def data_files():
    """The local files data.hub names, as build_data's inputs (a changed file re-runs it; a
    missing one is reported by the job, naming the option)."""
    hub = config["data"].get("hub", {}) if config["data"]["source"] == "hub" else {}
    return [v for v in hub.values() if isinstance(v, str) and Path(v).is_file()]


def sft_training_data(wc):
    # SFT trains on the human answers of the seed set: it needs no classification, so the
    # SFT model can be the classifier (as in the paper).
    if wc.sft == "SFT":
        return f"{R}/data/seed.jsonl"
    return f"{R}/sft_data/{wc.sft}.jsonl"


def sft_init_source(wc):
    return resolve(config["roles"]["sft_init"])[0]["source"]


def eval_sampling():
    e = config["evaluation"]
    return (
        f"--temperature {e['temperature']} --top-p {e['top_p']}"
        f" --max-new-tokens {e['max_new_tokens']} --seed {config['seed']}"
    )


def eval_sets(wc):
    """NAME=PATH:retrieval arguments of flame.evaluate (PT and Table 1's models: Bio only)."""
    r = config["evaluation"]["retrieval"]
    d = f"{R}/eval/{wc.model}"
    sets = [f"bio={d}/bio.jsonl:{r['bio']}"]
    if wc.model not in BIO_ONLY_MODELS:
        sets += [
            f"alpaca_fact={d}/alpaca.jsonl:{r['alpaca_fact']}",
            f"fava={d}/fava.jsonl:{r['fava']}",
        ]
    return " ".join(map(shlex.quote, sets))


def eval_generations(wc):
    if wc.model in BIO_ONLY_MODELS:
        return [f"{R}/eval/{wc.model}/bio.jsonl"]
    return [f"{R}/eval/{wc.model}/{s}.jsonl" for s in EVAL_SETS]


# win-rate comparisons: table -> (baseline, compared models)
WINRATE = {
    "table2": ("SFT", [m for m in SFT_VARIANTS if m != "SFT"]),
    "table3": ("SFT+DPO", [m for m in TABLE3_ROWS if m != "SFT+DPO"]),
}
if ABLATION_SFT:
    WINRATE["table6"] = ("SFT", ["SFT_FLAME", *ABLATION_SFT])
if ABLATION_DPO:
    WINRATE["table7"] = (
        "SFT+DPO",
        ["SFT+DPO_FLAME", *(f"SFT+{d}" for d in ABLATION_DPO)],
    )


def winrate_inputs(wc):
    base, models = WINRATE[wc.table]
    return [f"{R}/eval/{m}/alpaca.jsonl" for m in [base, *models]]


def winrate_args(wc):
    base, models = WINRATE[wc.table]
    named = " ".join(shlex.quote(f"{m}={R}/eval/{m}/alpaca.jsonl") for m in models)
    baseline = shlex.quote(f"{base}={R}/eval/{base}/alpaca.jsonl")
    return f"--baseline {baseline} --models {named}"


def knowledge_args():
    k = config["knowledge"]
    args = f"--retriever {shlex.quote(k.get('retriever', 'bm25'))}"
    if k.get("dense_model"):
        args += f" --dense-model {shlex.quote(k['dense_model'])}"
    return args


def reranker_source(value):
    """rm_fact/evaluation.reranker: a name from `models` (its source: swapped by config like any
    model's, e.g. by workflow/configs/shrink.yaml), or a folder / hub id."""
    return config["models"].get(value, {}).get("source", value)


def scorer_args(section):
    """The FActScorer options of a config section beyond those each job spells out (the
    cross-encoder re-ranker, FActScore's NP check, and what topic retrieval does with a topic
    the knowledge source lacks: skip, the CLI default, or fail)."""
    c = config[section]
    args = []
    if c.get("reranker"):
        args.append(
            f"--reranker {shlex.quote(reranker_source(c['reranker']))}"
            f" --candidates {c.get('candidates', 20)}"
        )
    if c.get("np_threshold") is not None:
        args.append(f"--np-threshold {c['np_threshold']}")
    if c.get("unknown_topic", "skip") != "skip":
        args.append(f"--unknown-topic {c['unknown_topic']}")
    return " ".join(args)


check_classifier()
