"""F-DPO: hallucination labels, bucket balancing and flipping (flame.fdpo), and the Δh-margin
loss of flame.train_fdpo against TRL's sigmoid DPO loss and a hand computation."""

from __future__ import annotations

import json
import math

import pytest

from flame import fdpo, train_dpo, train_fdpo, training


def pair(i, sc, sr, kind="if"):
    return {"id": f"p{i}", "prompt": f"Q{i}?", "chosen": f"good {i}", "rejected": f"bad {i}",
            "kind": kind, "rm_fact": [sc, sr], "rm_if": [4.0, 3.0]}  # fmt: skip


HAND = [
    pair(0, 1.0, 1.0),  # 00
    pair(1, 1.0, 0.5),  # 01
    pair(2, 0.5, 1.0),  # 10 -> flipped to 01
    pair(3, 0.25, 1.0, kind="inversion"),  # 10 -> flipped to 01
    pair(4, 0.5, 0.0),  # 11
    pair(5, None, 1.0),  # chosen has no facts: unlabelled
    {**pair(6, 1.0, 1.0), "rm_fact": None},  # prompt not scored by RM_fact: unlabelled
]


def test_labels_follow_the_threshold():
    assert fdpo.label(None) is None
    assert fdpo.label(1.0) == 0 and fdpo.label(0.99) == 1  # default: any unsupported fact
    assert fdpo.label(0.6, threshold=0.5) == 0 and fdpo.label(0.4, threshold=0.5) == 1


def test_flipping_and_bucket_counts_on_hand_made_pairs():
    out, info = fdpo.build(HAND, threshold=1.0)
    assert info["unlabelled"] == 2 and info["input_pairs"] == 7
    assert info["buckets_before_flip"] == {"00": 1, "01": 1, "10": 2, "11": 1}
    assert info["buckets_after_flip"] == {"00": 1, "01": 3, "10": 0, "11": 1}
    assert info["flipped"] == 2 and info["pairs"] == 5
    by_id = {p["id"]: p for p in out}
    assert [by_id[i]["delta_h"] for i in ("p0", "p1", "p2", "p3", "p4")] == [0, 1, 1, 1, 0]
    p2 = by_id["p2"]  # swapped, with its scores
    assert p2["flipped"] and p2["chosen"] == "bad 2" and p2["rejected"] == "good 2"
    assert p2["rm_fact"] == [1.0, 0.5] and p2["rm_if"] == [3.0, 4.0]
    assert not by_id["p1"]["flipped"] and by_id["p1"]["chosen"] == "good 1"
    # a looser threshold changes the labels: 0.5 counts as clean
    _, loose = fdpo.build(HAND, threshold=0.5)
    assert loose["buckets_before_flip"] == {"00": 3, "01": 1, "10": 1, "11": 0}


def test_balance_downsamples_to_shares():
    pairs = [dict(pair(i, 1.0, 1.0), h_w=0, h_l=0) for i in range(9)]
    pairs += [dict(pair(10 + i, 1.0, 0.0), h_w=0, h_l=1) for i in range(4)]
    pairs += [dict(pair(20 + i, 0.0, 1.0), h_w=1, h_l=0) for i in range(2)]
    kept = fdpo.balance(pairs, {"00": 2, "01": 1, "10": 1}, seed=1)
    assert fdpo.counts(kept) == {"00": 4, "01": 2, "10": 2, "11": 0}
    assert fdpo.balance(pairs, {"00": 2, "01": 1, "10": 1}, seed=1) == kept  # seeded
    with pytest.raises(ValueError, match="unknown bucket"):
        fdpo.balance(pairs, {"2x": 1})


def test_cli_writes_pairs_and_counts(tmp_path):
    src = tmp_path / "pairs.jsonl"
    src.write_text("".join(json.dumps(p) + "\n" for p in HAND))
    out, counts = tmp_path / "fdpo.jsonl", tmp_path / "counts.json"
    fdpo.main(["--pairs", str(src), "--out", str(out), "--counts", str(counts),
               "--balance", '{"00": 1, "01": 1, "10": 1, "11": 1}'])  # fmt: skip
    info = json.loads(counts.read_text())
    assert info["buckets_balanced"] == {"00": 1, "01": 1, "10": 1, "11": 1}
    assert info["buckets_after_flip"] == {"00": 1, "01": 2, "10": 0, "11": 1}
    assert len(out.read_text().splitlines()) == 4


# ---- the loss -------------------------------------------------------------------------------

LOSS_PAIRS = [
    {"id": f"q{i}", "prompt": f"Who wrote book {i}?", "chosen": f"Author {i} wrote it.",
     "rejected": "No idea." if i % 2 else f"It was written by nobody {i}.", "delta_h": i % 2}
    for i in range(4)
]  # fmt: skip


def make_trainer(tiny_model, tmp_path, trainer_cls, name, lora=False):
    import torch

    recipe = training.load_recipe(
        train_dpo.RECIPE,
        None,
        ["global_batch_size=4", "per_device_train_batch_size=4", "max_length=64", "beta=0.1",
         f"use_lora={str(lora).lower()}"],
    )  # fmt: skip
    trainer = train_dpo.build_trainer(
        str(tiny_model), LOSS_PAIRS, recipe, tmp_path / name, trainer_cls, train_fdpo.to_example
    )
    torch.manual_seed(7)  # the same perturbation for every trainer: policy != reference
    with torch.no_grad():
        for n, p in sorted(trainer.model.named_parameters()):
            if not lora or "lora_" in n:  # with LoRA the reference is the adapter-free model
                p.add_(0.05 * torch.randn_like(p))
    return trainer


def first_batch(trainer):
    batch = next(iter(trainer.get_train_dataloader()))
    return {k: v for k, v in batch.items()}


@pytest.fixture(scope="module")
def torch_threads():
    training.set_threads(2)


@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
def test_lambda_zero_equals_trl_sigmoid_loss(tiny_model, tmp_path, torch_threads, lora):
    import torch
    from trl import DPOTrainer

    ours = make_trainer(tiny_model, tmp_path, train_fdpo.trainer_factory(0.0), "fdpo", lora)
    trl = make_trainer(tiny_model, tmp_path, DPOTrainer, "trl", lora)
    batch = first_batch(ours)
    assert batch["delta_h"].tolist().count(1.0) == 2  # the column reached the batch
    with torch.no_grad():
        a = ours._compute_loss(ours.model, batch, return_outputs=False)
        b = trl._compute_loss(trl.model, {k: v for k, v in batch.items() if k != "delta_h"}, False)
    assert abs(a.item() - b.item()) < 1e-6
    assert abs(a.item() - math.log(2)) > 1e-3  # policy != reference: a real margin


def completion_logps(model, batch):
    import torch

    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    tok = logp.gather(-1, batch["input_ids"][:, 1:].unsqueeze(-1)).squeeze(-1)
    return (tok * batch["completion_mask"][:, 1:]).sum(dim=1)


def test_positive_lambda_matches_hand_computed_loss(tiny_model, tmp_path, torch_threads):
    import torch
    from transformers import AutoModelForCausalLM

    lam, beta = 4.0, 0.1
    ours = make_trainer(tiny_model, tmp_path, train_fdpo.trainer_factory(lam), "fdpo")
    batch = first_batch(ours)
    reference = AutoModelForCausalLM.from_pretrained(tiny_model)
    with torch.no_grad():
        loss = ours._compute_loss(ours.model, batch, return_outputs=False).item()
        pol = completion_logps(ours.model, batch)
        ref = completion_logps(reference, batch)
    n = len(LOSS_PAIRS)
    m = (pol[:n] - ref[:n]) - (pol[n:] - ref[n:])
    dh = batch["delta_h"]
    hand = [math.log1p(math.exp(-beta * (m[i].item() - lam * dh[i].item()))) for i in range(n)]
    assert abs(loss - sum(hand) / n) < 1e-5
    plain = sum(math.log1p(math.exp(-beta * m[i].item())) for i in range(n)) / n
    assert loss > plain + 0.05  # the margin costs something on the delta_h = 1 pairs
    mode = "train" if ours.model.training else "eval"
    assert ours._metrics[mode]["fdpo/penalty"][-1] == pytest.approx(beta * lam * 0.5)


def test_fdpo_trains_and_records_lambda(tiny_model, tmp_path):
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps(p) + "\n" for p in LOSS_PAIRS))
    out = tmp_path / "SFT+FDPO_l2"
    summary = train_fdpo.main(["--lam", "2", "--quantize", "nf4", "--init", str(tiny_model),
                               "--pairs", str(data), "--out", str(out), "--epochs", "1",
                               "--set", "global_batch_size=2", "--set",
                               "per_device_train_batch_size=2", "--threads", "2"])  # fmt: skip
    saved = json.loads((out / "train_summary.json").read_text())
    assert saved["global_step"] == 2  # 1 epoch of 4 pairs, batch 2
    import torch

    if torch.cuda.is_available():
        assert saved["fdpo"] == {"lambda": 2.0, "quantize": "nf4", "epochs": 1.0}
    else:  # the summary says what trained: plain LoRA, not the NF4 that was asked for
        assert saved["fdpo"]["quantize"] == "none"
        assert saved["fdpo"]["quantize_requested"] == "nf4"
        assert "bitsandbytes" in saved["fdpo"]["quantize_note"]
    assert saved["recipe"]["use_lora"] is True  # nf4 implies LoRA; plain LoRA on CPU
    assert summary["fdpo"]["lambda"] == 2.0 and (out / "flame_fingerprint.json").exists()


def test_bad_delta_h_names_the_pair(tokenizer_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    with pytest.raises(Exception, match="q9.*delta_h"):
        train_fdpo.to_example({"id": "q9", "prompt": "a", "chosen": "b", "rejected": "c"}, tok)


# ---- hallucination inversion ----------------------------------------------------------------


def test_inversion_counts_kept_and_discarded_rewrites():
    from flame import invert

    samples = [
        {"id": "a", "instruction": "Who?", "responses": ["Clean A.", "Bad A.", "Clean A2."]},
        {"id": "b", "instruction": "When?", "responses": ["Clean B.", ""]},
        {"id": "c", "instruction": "Not fact-based", "responses": ["x"]},
    ]
    rm_fact = {"a": [1.0, 0.5, 1.0], "b": [1.0, None]}
    originals = invert.clean_responses(samples, rm_fact, threshold=1.0)
    assert [o["id"] for o in originals] == ["a#0", "a#2", "b#0"]
    assert len(invert.clean_responses(samples, rm_fact, limit=2, seed=3)) == 2
    originals.append({**originals[0], "id": "a#9"})
    originals.append({**originals[0], "id": "a#8"})
    rewrites = ["Wrong A.", "Clean A2.", "Wrong B.", "", "Still fine."]
    scores = [0.0, 1.0, None, None, 1.0]
    pairs, counts = invert.select(originals, rewrites, scores)
    assert counts == {"clean_responses": 5, "rewrites": 5, "kept": 1, "discarded_total": 4,
                      "discarded": {"unchanged": 1, "no_facts": 1, "empty": 1,
                                    "not_less_factual": 1}}  # fmt: skip
    # b#0's rewrite was left out by RM_fact (topic retrieval, no page of its topic)
    _, left = invert.select(originals, rewrites, scores, left_out={"b#0"})
    assert left["discarded"] == {"unchanged": 1, "unknown_topic": 1, "empty": 1,
                                 "not_less_factual": 1}  # fmt: skip
    (p,) = pairs
    assert p["chosen"] == "Wrong A." and p["rejected"] == "Clean A." and p["kind"] == "inversion"
    # an inversion pair lands in bucket 10 and is flipped back to (clean, hallucinated)
    (flipped,), info = fdpo.build(pairs)
    assert info["buckets_before_flip"]["10"] == 1 and flipped["flipped"]
    assert flipped["chosen"] == "Clean A." and flipped["delta_h"] == 1


# ---- the table ------------------------------------------------------------------------------


def test_table_fdpo_metrics_from_per_fact_records(tmp_path):
    from flame import table_fdpo

    ev = tmp_path / "eval"
    facts = {  # per response: share supported x 10 -> 10, 5, 0 (l0) and 10, 10 (l10)
        "SFT+FDPO_l0": [("a", [1, 1]), ("b", [1, 0]), ("c", [0])],
        "SFT+FDPO_l10": [("a", [1]), ("b", [1, 1, 1])],
    }
    for model, rows in facts.items():
        (ev / model / "facts").mkdir(parents=True)
        lines = [json.dumps({"id": i, "fact": "x", "supported": bool(s)}) for i, ss in rows
                 for s in ss]  # fmt: skip
        (ev / model / "facts" / "bio.jsonl").write_text("\n".join(lines) + "\n")
        (ev / model / "factuality.json").write_text(json.dumps({"bio": {"factscore": 0.5}}))
    win = {"models": {"SFT+FDPO_l10": {"wins": 3, "losses": 1, "ties_or_unreadable": 4}}}
    (ev / "winrate_fdpo.json").write_text(json.dumps(win))
    counts = tmp_path / "counts.json"
    counts.write_text(json.dumps(fdpo.build(HAND)[1]))
    out = tmp_path / "tables"
    table_fdpo.main(["--eval-dir", str(ev), "--out-dir", str(out), "--rows", "SFT+FDPO_l0=0",
                     "SFT+FDPO_l10=10", "--baseline", "SFT+FDPO_l0", "--winrate",
                     str(ev / "winrate_fdpo.json"), "--counts", str(counts)])  # fmt: skip
    import csv

    rows = {r["model"]: r for r in csv.DictReader((out / "table_fdpo.csv").open())}
    l0, l10 = rows["F-DPO λ=0 (SFT+FDPO_l0)"], rows["F-DPO λ=10 (SFT+FDPO_l10)"]
    assert float(l0["factuality"]) == 5.0 and float(l0["halluc_rate"]) == pytest.approx(1 / 3)
    assert float(l10["factuality"]) == 10.0 and float(l10["halluc_rate"]) == 0.0
    assert float(l10["win_rate"]) == 0.75 and l0["win_rate"] == ""  # wins / non-tied
    assert l0["count"] == "3" and float(l0["bio_fs"]) == 50.0
    assert float(rows["paper: Qwen3-8B + F-DPO"]["halluc_rate"]) == 0.084
    md = (out / "table_fdpo.md").read_text()
    assert "before flipping" in md and "0.424" in md
    # the reward-model table: two rows and the RM's notes
    metrics, stats, bench = tmp_path / "m.json", tmp_path / "s.json", tmp_path / "b.tsv"
    metrics.write_text(json.dumps({"train_pairs": 9, "heldout_pairs": 3, "train_accuracy": 1.0,
                                   "heldout_accuracy": 0.5}))  # fmt: skip
    stats.write_text(json.dumps({"responses": 12, "responses_per_s": 40.0,
                                 "agreement_with_factscore": {"pairwise_accuracy": 0.6, "pairs": 10,
                                                              "kendall_tau_b": 0.2}}))  # fmt: skip
    bench.write_text("s\th:m:s\n24.0\t0:00:24\n")
    fs_pairs, rm_pairs = tmp_path / "fs.jsonl", tmp_path / "rm.jsonl"
    fs_pairs.write_text("".join(json.dumps(p) + "\n" for p in HAND[:3]))
    rm_pairs.write_text("".join(json.dumps(p) + "\n" for p in [HAND[0], fdpo.flip(
        dict(HAND[1], h_w=1, h_l=0))]))  # fmt: skip
    table_fdpo.main(["--eval-dir", str(ev), "--out-dir", str(out), "--rm-rows",
                     "SFT+FDPO_l0=by FActScore", "SFT+FDPO_l10=by RM_BT", "--rm-metrics",
                     str(metrics), "--rm-stats", str(stats),
                     "--factscore-benchmark", str(bench), "--fact-pairs", str(fs_pairs),
                     str(rm_pairs)])  # fmt: skip
    rm_rows = [r["model"] for r in csv.DictReader((out / "table_rm.csv").open())]
    assert rm_rows == ["by FActScore", "by RM_BT"]
    md = (out / "table_rm.md").read_text()
    assert "40.000 responses/s" in md and "FActScore 0.500 responses/s" in md
    assert "1 of 3 FActScore pairs are also chosen" in md and "which chose 2" in md


def test_precomputed_reference_gives_the_same_loss(tiny_model, tmp_path, torch_threads):
    """With TRL's precompute_ref_log_probs (the reference's log-probs computed once, then freed)
    the F-DPO loss is the one computed with the live reference."""
    import torch
    from transformers import AutoTokenizer
    from trl import DPOConfig

    lam = 4.0
    live = make_trainer(tiny_model, tmp_path, train_fdpo.trainer_factory(lam), "live")
    recipe = training.load_recipe(train_dpo.RECIPE, None, ["global_batch_size=4",
                                  "per_device_train_batch_size=4", "max_length=64"])  # fmt: skip
    tok = AutoTokenizer.from_pretrained(tiny_model)
    args = training.training_args(DPOConfig, recipe, tmp_path / "pre", beta=0.1,
                                  loss_type=["sigmoid"], precompute_ref_log_probs=True)  # fmt: skip
    pre = train_fdpo.trainer_factory(lam)(
        model=str(tiny_model), args=args, processing_class=tok,
        train_dataset=train_dpo.build_dataset(LOSS_PAIRS, tok, train_fdpo.to_example),
    )  # fmt: skip
    assert {"delta_h", "ref_chosen_logps"} <= set(pre.train_dataset.column_names)
    torch.manual_seed(7)
    with torch.no_grad():
        for _, p in sorted(pre.model.named_parameters()):
            p.add_(0.05 * torch.randn_like(p))
    a_batch, b_batch = first_batch(live), first_batch(pre)
    assert "ref_chosen_logps" in b_batch and b_batch["delta_h"].sum().item() == 2.0  # all 4 pairs
    with torch.no_grad():
        a = live._compute_loss(live.model, a_batch, return_outputs=False).item()
        b = pre._compute_loss(pre.model, b_batch, return_outputs=False).item()
    assert abs(a - b) < 1e-5


def test_tables_mark_rows_trained_on_zero_pairs(tmp_path):
    """A checkpoint DPO left unchanged (zero pairs) is kept as a row marked "no pairs", and an
    untrained reward model is reported as such, with no accuracy or speed made up."""
    import csv

    from flame import table_fdpo

    ev, models = tmp_path / "eval", tmp_path / "models"
    summaries = {
        "SFT+FDPO_l0": {"global_step": 3, "examples": 4},
        "SFT+FDPO_l10": {"global_step": 0, "skipped": "zero preference pairs"},
    }
    for model, summary in summaries.items():
        (ev / model / "facts").mkdir(parents=True)
        (ev / model / "facts" / "bio.jsonl").write_text(
            json.dumps({"id": "a", "fact": "x", "supported": True}) + "\n"
        )
        (ev / model / "factuality.json").write_text(json.dumps({"bio": {"factscore": 1.0}}))
        (models / model).mkdir(parents=True)
        (models / model / "train_summary.json").write_text(json.dumps(summary))
    out = tmp_path / "tables"
    metrics, stats = tmp_path / "m.json", tmp_path / "s.json"
    metrics.write_text(json.dumps({"trained": False, "skipped": "zero RM_fact pairs (5 tied)",
                                   "train_pairs": 0, "heldout_pairs": 0,
                                   "train_accuracy": None, "heldout_accuracy": None}))  # fmt: skip
    stats.write_text(json.dumps({"trained": False, "responses": 15, "responses_per_s": None}))
    table_fdpo.main(["--eval-dir", str(ev), "--out-dir", str(out), "--models-dir", str(models),
                     "--rows", "SFT+FDPO_l0=0", "SFT+FDPO_l10=10", "--baseline", "SFT+FDPO_l0",
                     "--rm-rows", "SFT+FDPO_l0=by FActScore", "SFT+FDPO_l10=by RM_BT",
                     "--rm-metrics", str(metrics), "--rm-stats", str(stats)])  # fmt: skip
    rows = {r["model"]: r for r in csv.DictReader((out / "table_fdpo.csv").open())}
    assert rows["F-DPO λ=0 (SFT+FDPO_l0)"]["trained"] == "yes"
    assert rows["F-DPO λ=10 (SFT+FDPO_l10)"]["trained"] == "no pairs"
    assert "Not trained (zero preference pairs" in (out / "table_fdpo.md").read_text()
    rm = {r["model"]: r for r in csv.DictReader((out / "table_rm.csv").open())}
    assert rm["by RM_BT"]["trained"] == "no pairs" and rm["by FActScore"]["trained"] == "yes"
    md = (out / "table_rm.md").read_text()
    assert "RM_BT: not trained: zero RM_fact pairs (5 tied)." in md
    assert "scored no responses (untrained)" in md and "responses/s" not in md


def test_nf4_reaches_bitsandbytes_where_a_gpu_is_present(tiny_model, tmp_path):
    """QLoRA's path as far as this CPU machine can take it: with a GPU, nf4 hands TRL a 4-bit
    NF4 BitsAndBytesConfig (double quantisation, bf16 compute), which TRL passes to the model
    loader; transformers then needs bitsandbytes (GPU machines: `pip install -e '.[qlora]'`)."""
    import torch

    factory = train_fdpo.trainer_factory(2.0, "nf4", cuda=True)
    q = factory.keywords["quantization_config"]
    assert q.load_in_4bit and q.bnb_4bit_quant_type == "nf4" and q.bnb_4bit_use_double_quant
    assert q.bnb_4bit_compute_dtype == torch.bfloat16 and factory.keywords["lam"] == 2.0
    assert q.bnb_4bit_quant_storage == torch.bfloat16  # QLoRA under ZeRO-3 (PEFT's recipe)
    assert "quantization_config" not in train_fdpo.trainer_factory(2.0, "nf4", cuda=False).keywords
    recipe = training.load_recipe(train_dpo.RECIPE, None, ["use_lora=true", "max_length=64"])
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="bitsandbytes"):
            train_dpo.build_trainer(str(tiny_model), LOSS_PAIRS, recipe, tmp_path / "o", factory,
                                    train_fdpo.to_example)  # fmt: skip
    else:  # bitsandbytes here (a GPU machine, or its CPU backend): the policy loads in 4 bits
        trainer = train_dpo.build_trainer(str(tiny_model), LOSS_PAIRS, recipe, tmp_path / "o",
                                          factory, train_fdpo.to_example)  # fmt: skip
        assert getattr(trainer.model, "is_loaded_in_4bit", False)
