"""Data stage of FLAME: SFT seed set, DPO prompts, evaluation sets and classifier labels.

    python -m flame.data build --out-dir results/data

Modules: schema (record schema, shipped resources, split checks), wiki (fact-seeking
instructions from the embedded Wikipedia summaries), embedded (the offline default), hub (the
paper's OASST1 / AlpacaEval / FActScore / FAVA data), build (the command line).
"""

from flame.data.embedded import CountError, EmbeddedOptions, build_embedded
from flame.data.hub import (
    HubOptions,
    build_hub,
    load_alpaca_eval,
    load_factscore_entities,
    load_oasst1_pairs,
    load_prompts,
    load_table,
)
from flame.data.schema import (
    FIELDS,
    check_splits,
    load_classifier_labels,
    load_nonfact,
    make_record,
    norm,
)
from flame.data.wiki import Entity, entities, load_wiki_summaries, wiki_summaries_path

__all__ = [
    "FIELDS",
    "CountError",
    "EmbeddedOptions",
    "Entity",
    "HubOptions",
    "build_embedded",
    "build_hub",
    "check_splits",
    "entities",
    "load_alpaca_eval",
    "load_classifier_labels",
    "load_factscore_entities",
    "load_nonfact",
    "load_oasst1_pairs",
    "load_prompts",
    "load_table",
    "load_wiki_summaries",
    "make_record",
    "norm",
    "wiki_summaries_path",
]
