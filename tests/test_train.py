"""SFT and DPO training steps on the tiny random model: checkpoints, label masks, LoRA merge,
resume, recipe and record errors, accelerate configs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from flame import train_dpo, train_sft, training
from flame.io import RecordError

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--set", "global_batch_size=2", "--set", "per_device_train_batch_size=2",
        "--set", "logging_steps=1", "--threads", "2"]  # fmt: skip


def write_lines(path: Path, lines: list) -> Path:
    path.write_text(
        "".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines),
        encoding="utf-8",
    )
    return path


def sft_records(n: int = 6) -> list[dict]:
    return [
        {
            "id": f"s{i}",
            "instruction": f"What is {i} plus {i}?",
            "response": f"It is {2 * i}.",
            "source": "test",
        }  # fmt: skip
        for i in range(n)
    ]


def pair_records(n: int = 4) -> list[dict]:
    return [
        {
            "id": f"p{i}",
            "prompt": f"Who wrote book {i}?",
            "chosen": f"Author {i} wrote it.",
            "rejected": "No idea.",
            "kind": "fact" if i % 2 else "if",
        }  # fmt: skip
        for i in range(n)
    ]


def state_dict(folder: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(folder / "model.safetensors"))


def differs(a: dict, b: dict) -> bool:
    assert a.keys() == b.keys()
    return any(not a[k].float().equal(b[k].float()) for k in a)


def test_sft_writes_loadable_checkpoint(tiny_model, tmp_path):
    from transformers import AutoModelForCausalLM

    data = write_lines(tmp_path / "sft.jsonl", sft_records())
    out = tmp_path / "SFT"
    summary = train_sft.main(["--init", str(tiny_model), "--data", str(data), "--out", str(out),
                              "--set", "max_steps=3", *TINY])  # fmt: skip
    assert summary["global_step"] == 3 and summary["examples"] == 6
    saved = json.loads((out / "train_summary.json").read_text())
    assert saved["global_step"] == 3 and saved["train_loss"] > 0 and saved["examples_per_s"] > 0
    assert saved["precision"] == "fp32" and saved["recipe"]["max_steps"] == 3
    fp = json.loads((out / "flame_fingerprint.json").read_text())
    assert fp["fingerprint"].startswith("sha256:") and "train_sft" in fp["origin"]
    model = AutoModelForCausalLM.from_pretrained(out)
    assert model.config.num_hidden_layers == 2
    assert (out / "tokenizer.json").exists() and (out / "chat_template.jinja").exists()
    # temp and checkpoint folders are gone after success
    assert sorted(p.name for p in tmp_path.iterdir()) == ["SFT", "sft.jsonl"]


@pytest.mark.parametrize("step", ["sft", "dpo"])
def test_min_lr_schedule_is_what_the_optimizer_used(step, tiny_model, tmp_path):
    """One process: the paper recipe's cosine_with_min_lr (1e-6 -> 1e-7) read back from the
    trainer's log_history at every step, down to the floor at the last (ZeRO-3 / ZeRO-2 / DDP:
    tests/test_distributed.py)."""
    from test_distributed import check_min_lr_schedule

    if step == "sft":
        data = ["--data", str(write_lines(tmp_path / "d.jsonl", sft_records()))]
    else:
        pairs = [{"id": f"p{i}", "prompt": f"What is {i} plus {i}?", "chosen": f"It is {2 * i}.",
                  "rejected": "No idea.", "kind": "if"} for i in range(6)]  # fmt: skip
        data = ["--pairs", str(write_lines(tmp_path / "d.jsonl", pairs))]
    main = train_sft.main if step == "sft" else train_dpo.main
    summary = main(["--init", str(tiny_model), *data, "--out", str(tmp_path / "m"),
                    "--set", "max_steps=8", "--set", "global_batch_size=2",
                    "--set", "per_device_train_batch_size=2", "--set", "logging_steps=1",
                    "--set", "learning_rate=1e-6", "--set", "min_learning_rate=1e-7",
                    "--threads", "2"])  # fmt: skip
    check_min_lr_schedule(summary, steps=8, peak=1e-6, floor=1e-7)


def test_sft_labels_mask_the_prompt(tiny_model, tmp_path):
    recipe = training.load_recipe(train_sft.RECIPE, sets=["max_steps=1", "global_batch_size=2"])
    recs = sft_records(2)
    trainer = train_sft.build_trainer(str(tiny_model), recs, recipe, tmp_path / "ckpt")
    tok = trainer.processing_class
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(2)])
    for rec, ids, labels in zip(recs, batch["input_ids"], batch["labels"], strict=True):
        trained = [int(t) for t, lab in zip(ids, labels, strict=True) if lab != -100]
        assert tok.decode(trained) == rec["response"] + "<|im_end|>\n"
        text = tok.decode(ids)
        assert "<|im_start|>user\n" + rec["instruction"] in text
        # every label before the response is masked, and unmasked labels equal the inputs
        n_prompt = len(tok.apply_chat_template(
            [{"role": "user", "content": rec["instruction"]}], add_generation_prompt=True,
            tokenize=True, return_dict=True)["input_ids"])  # fmt: skip
        assert (labels[:n_prompt] == -100).all()
        assert (
            labels[n_prompt : n_prompt + len(trained)] == ids[n_prompt : n_prompt + len(trained)]
        ).all()


def test_dpo_changes_the_weights(tiny_model, tmp_path):
    pairs = write_lines(tmp_path / "pairs.jsonl", pair_records())
    out = tmp_path / "DPO"
    args = ["--init", str(tiny_model), "--pairs", str(pairs), "--out", str(out)]
    summary = train_dpo.main([*args, "--set", "max_steps=2", "--set", "learning_rate=1e-3", *TINY])
    assert summary["global_step"] == 2 and summary["kinds"] == {"if": 2, "fact": 2}
    assert differs(state_dict(out), state_dict(tiny_model))
    assert (out / "flame_fingerprint.json").exists() and (out / "train_summary.json").exists()
    assert not (tmp_path / "DPO.ckpt").exists() and not (tmp_path / "DPO.tmp").exists()


def test_lora_is_merged_into_a_plain_model(tiny_model, tmp_path):
    data = write_lines(tmp_path / "sft.jsonl", sft_records(4))
    out = tmp_path / "SFT"
    train_sft.main(["--init", str(tiny_model), "--data", str(data), "--out", str(out),
                    "--set", "max_steps=2", "--set", "use_lora=true", "--set", "lora_r=4",
                    "--set", "learning_rate=1e-2", *TINY])  # fmt: skip
    assert not (out / "adapter_config.json").exists()
    merged, init = state_dict(out), state_dict(tiny_model)
    assert not any("lora" in k for k in merged)
    assert differs(merged, init)
    assert not (tmp_path / "SFT.adapter").exists()


def test_resume_continues_from_last_checkpoint(tiny_model, tmp_path):
    data = write_lines(tmp_path / "sft.jsonl", sft_records())
    out = tmp_path / "SFT"
    paths = training.RunPaths(out)
    # a first run that stopped after saving checkpoint-2 (as if killed later)
    recipe = training.load_recipe(
        train_sft.RECIPE,
        sets=[
            "max_steps=2",
            "save_steps=2",
            "global_batch_size=2",
            "per_device_train_batch_size=2",
        ],  # fmt: skip
    )
    train_sft.build_trainer(str(tiny_model), sft_records(), recipe, paths.ckpt).train()
    assert training.last_checkpoint(paths.ckpt).endswith("checkpoint-2")
    (paths.ckpt / "checkpoint-3").mkdir()  # a checkpoint killed mid-write is skipped
    summary = train_sft.main(["--init", str(tiny_model), "--data", str(data), "--out", str(out),
                              "--set", "max_steps=4", *TINY])  # fmt: skip
    assert summary["resumed_from_step"] == 2 and summary["global_step"] == 4
    assert not paths.ckpt.exists()


def test_half_removed_deepspeed_checkpoint_is_not_resumed(tmp_path):
    """Found by the first rehearsal (benchmarks/rehearsal.py): an interrupt while a finished run
    removed OUT.ckpt left checkpoint-2 with trainer_state.json but without DeepSpeed's engine
    state, and the re-run died resuming it ("Can't find a valid checkpoint")."""
    ckpt = tmp_path / "SFT.ckpt"
    full, half = ckpt / "checkpoint-1", ckpt / "checkpoint-2"
    for path in (full, half):
        path.mkdir(parents=True)
        (path / "trainer_state.json").write_text("{}")
        (path / "zero_to_torch.py").write_text("")
    (full / "global_step1").mkdir()
    (full / "latest").write_text("global_step1")
    assert training.last_checkpoint(ckpt) == str(full)
    (half / "latest").write_text("global_step2")  # names a folder that is gone
    assert training.last_checkpoint(ckpt) == str(full)
    plain = tmp_path / "P.ckpt" / "checkpoint-3"
    plain.mkdir(parents=True)
    (plain / "trainer_state.json").write_text("{}")
    assert training.last_checkpoint(plain.parent) == str(plain)
    # the folder is renamed away before it is deleted: nothing is left at its path, and a
    # leftover of an earlier interrupted removal goes too
    (tmp_path / ".SFT.ckpt.del-1-2").mkdir()
    training.remove_tree(ckpt)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["P.ckpt"]


def test_precomputed_reference_is_reused_by_a_resumed_run(tiny_model, tmp_path, monkeypatch):
    """precompute_ref_log_probs: the log-probs TRL cached in OUT.ckpt/pairs_dataset/ are read
    back by a run that resumes there (the folder used to be rebuilt, and the log-probs recomputed,
    on every start); other pairs, or another init, recompute them."""
    from conftest import build_tiny_model
    from trl import DPOTrainer

    calls = []
    compute = DPOTrainer.compute_ref_log_probs
    monkeypatch.setattr(DPOTrainer, "compute_ref_log_probs",
                        lambda self, *a: calls.append(1) or compute(self, *a))  # fmt: skip
    recipe = training.load_recipe(
        train_dpo.RECIPE,
        sets=["max_steps=1", "global_batch_size=2", "per_device_train_batch_size=2",
              "precompute_ref_log_probs=true"],
    )  # fmt: skip
    ckpt = tmp_path / "DPO.ckpt"

    def ref_logps(records, init=tiny_model):
        calls.clear()
        trainer = train_dpo.build_trainer(str(init), records, recipe, ckpt)
        return len(calls), list(trainer.train_dataset["ref_chosen_logps"])

    n, first = ref_logps(pair_records())
    assert n == 2 and len(first) == 4  # 4 pairs, 2 per batch
    assert ref_logps(pair_records()) == (0, first)  # the resumed run: read back
    other = [{**r, "chosen": r["chosen"] + " Yes."} for r in pair_records()]
    n, changed = ref_logps(other)
    assert n == 2 and changed != first
    other_init = build_tiny_model(tmp_path / "other", tiny_model, seed=1)
    n, reseeded = ref_logps(pair_records(), other_init)
    assert n == 2 and reseeded != first


def test_unknown_recipe_key_names_the_key(tiny_model, tmp_path):
    data = write_lines(tmp_path / "sft.jsonl", sft_records(2))
    args = ["--init", str(tiny_model), "--data", str(data), "--out", str(tmp_path / "o")]
    with pytest.raises(training.RecipeError, match="unknown recipe key 'warmup_step'"):
        train_sft.main([*args, "--set", "warmup_step=3"])
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("max_steps: 2\nbeta: 0.2\n")  # beta is a DPO key, not an SFT one
    with pytest.raises(training.RecipeError, match=r"recipe.yaml: unknown recipe key 'beta'"):
        train_sft.main([*args, "--recipe", str(recipe)])
    with pytest.raises(training.RecipeError, match="'max_steps' expects int, got 'many'"):
        train_sft.main([*args, "--set", "max_steps=many"])
    assert not (tmp_path / "o").exists()


def test_recipe_values_are_typed():
    recipe = training.load_recipe(train_dpo.RECIPE, sets=["learning_rate=5e-7", "use_lora=true"])
    assert recipe["learning_rate"] == 5e-7 and recipe["use_lora"] is True
    assert recipe["global_batch_size"] == 64 and recipe["beta"] == 0.1  # paper defaults
    assert training.load_recipe(train_sft.RECIPE)["global_batch_size"] == 32


def test_schedule_decays_to_min_lr_and_batch_splits(tmp_path):
    from trl import SFTConfig

    recipe = training.load_recipe(train_sft.RECIPE, sets=["per_device_train_batch_size=8"])
    args = training.training_args(SFTConfig, recipe, tmp_path)
    assert args.gradient_accumulation_steps == 4  # 32 = 8 x 1 process x 4
    assert args.lr_scheduler_type == "cosine_with_min_lr"
    # the floor as a ratio: `min_lr` would read optimizer.defaults, absent under DeepSpeed ZeRO
    assert args.lr_scheduler_kwargs == {"min_lr_rate": pytest.approx(0.1)}
    assert args.bf16 is False and args.use_cpu and not args.activation_checkpointing
    recipe["lr_scheduler_type"] = "linear"
    args = training.training_args(SFTConfig, recipe, tmp_path)
    assert args.lr_scheduler_type == "polynomial" and args.lr_scheduler_kwargs["lr_end"] == 1e-7
    recipe["per_device_train_batch_size"] = 64  # shrunk to the global batch
    assert training.training_args(SFTConfig, recipe, tmp_path).per_device_train_batch_size == 32
    recipe["per_device_train_batch_size"] = 5
    with pytest.raises(training.RecipeError, match="global_batch_size"):
        training.training_args(SFTConfig, recipe, tmp_path)


def test_bad_records_name_file_and_line(tiny_model, tmp_path):
    good = sft_records(1)[0]
    args = ["--init", str(tiny_model), "--out", str(tmp_path / "o")]
    broken = write_lines(tmp_path / "broken.jsonl", [good, "", "{not json"])
    with pytest.raises(RecordError, match=r"broken.jsonl:3: not valid JSON"):
        train_sft.main([*args, "--data", str(broken)])
    missing = write_lines(tmp_path / "missing.jsonl", [good, {"id": 1, "instruction": "x"}])
    with pytest.raises(RecordError, match=r"missing.jsonl:2: missing field\(s\) response"):
        train_sft.main([*args, "--data", str(missing)])
    blank = write_lines(tmp_path / "blank.jsonl", ["", good, {**good, "response": None}])
    with pytest.raises(RecordError, match=r"blank.jsonl:3: field\(s\) response must be"):
        train_sft.main([*args, "--data", str(blank)])
    empty = write_lines(tmp_path / "empty.jsonl", [])
    with pytest.raises(RecordError, match=r"empty.jsonl: no records"):
        train_sft.main([*args, "--data", str(empty)])
    with pytest.raises(RecordError, match=r"zero preference pairs"):
        train_dpo.main([*args, "--pairs", str(empty)])
    no_rejected = write_lines(tmp_path / "p.jsonl", [{"id": 1, "prompt": "a", "chosen": "b"}])
    with pytest.raises(RecordError, match=r"p.jsonl:1: missing field\(s\) rejected"):
        train_dpo.main([*args, "--pairs", str(no_rejected)])


def test_models_without_chat_template_use_plain_transcript(tokenizer_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    assert train_dpo.to_example(pair_records(1)[0], tok)["prompt"][0]["role"] == "user"
    tok.chat_template = None
    ex = train_sft.to_example(sft_records(1)[0], tok)
    assert ex == {"prompt": "User: What is 0 plus 0?\n\nAssistant:", "completion": " It is 0."}
    pair = train_dpo.to_example(pair_records(1)[0], tok)
    assert pair["prompt"].endswith("Assistant:") and pair["chosen"] == " Author 0 wrote it."


@pytest.mark.parametrize(
    ("name", "kind", "stage"),
    [
        ("multi_gpu.yaml", "MULTI_GPU", None),
        ("deepspeed_zero2.yaml", "DEEPSPEED", 2),
        ("deepspeed_zero3.yaml", "DEEPSPEED", 3),
    ],
)
def test_accelerate_configs(name, kind, stage):
    cfg = yaml.safe_load((ROOT / "workflow" / "accelerate" / name).read_text())
    assert cfg["distributed_type"] == kind and cfg["mixed_precision"] == "bf16"
    if kind == "DEEPSPEED":
        assert cfg["deepspeed_config"]["zero_stage"] == stage
        # ZeRO-3 must gather the sharded weights when the final model is saved
        assert cfg["deepspeed_config"].get("zero3_save_16bit_model", stage != 3) is True


def test_empty_sft_set_keeps_the_init_only_when_allowed(tiny_model, tmp_path):
    """sft.allow_empty_data (shrink.yaml): SFT_fact with no fact-based seed instruction is written
    empty by sft_data and its SFT is the init model, said so in train_summary.json; without the
    flag both steps fail naming the set."""
    from flame import sft_data

    seed = write_lines(tmp_path / "seed.jsonl", [
        {"id": f"s{i}", "instruction": f"Write a poem {i}.", "response": "A poem.",
         "fact_based": False} for i in range(3)])  # fmt: skip
    fewshot = write_lines(tmp_path / "fewshot.jsonl", [])
    out_dir = tmp_path / "sft_data"
    args = ["--seed", str(seed), "--fewshot", str(fewshot), "--out-dir", str(out_dir)]
    with pytest.raises(SystemExit, match="SFT_fact: no training examples"):
        sft_data.main(args)
    sft_data.main([*args, "--allow-empty"])
    assert (out_dir / "SFT_fact.jsonl").read_text() == ""
    assert len((out_dir / "SFT_FLAME.jsonl").read_text().splitlines()) == 3
    cmd = ["--init", str(tiny_model), "--data", str(out_dir / "SFT_fact.jsonl"),
           "--out", str(tmp_path / "SFT_fact"), *TINY]  # fmt: skip
    with pytest.raises(RecordError):
        train_sft.main(cmd)
    summary = train_sft.main([*cmd, "--allow-empty"])
    assert summary["skipped"] == "zero examples" and summary["global_step"] == 0
    written = json.loads((tmp_path / "SFT_fact/train_summary.json").read_text())
    assert written["step"] == "sft" and written["skipped"] == "zero examples"
    assert (tmp_path / "SFT_fact/model.safetensors").read_bytes() == (
        tiny_model / "model.safetensors"
    ).read_bytes()
