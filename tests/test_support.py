"""FActScore's NP check (flame.factscore.support) and the scorer's LM + NP ensemble."""

import pytest
import test_factscore
from test_factscore import ScriptedLM

from flame.factscore import FactScorer
from flame.factscore.support import check, tokens

PAGE = (
    "Marie Curie was a Polish and naturalised-French physicist. She was born in Warsaw in 1867 "
    "and won 2 Nobel Prizes. Her husband, Pierre Curie, shared the 1,903 prize money with her."
)


def test_tokens_split_negation_possessive_and_thousands():
    assert tokens("Curie's prize wasn't 1,500 francs.") == [
        "Curie", "prize", "was", "n't", "1500", "francs",
    ]  # fmt: skip


@pytest.mark.parametrize(
    "fact, passed, missing",
    [
        ("Marie Curie was born in Warsaw in 1867.", True, []),  # verbatim words
        ("She was born in Warsaw in 1876.", False, ["1876"]),  # year
        ("She won 3 Nobel Prizes.", False, ["3"]),  # number
        ("She was born in Krakow.", False, ["krakow"]),  # place / name
        ("Marie Curie was a German physicist.", False, ["german"]),  # nationality
        ("Marie Curie was not a physicist.", False, ["not"]),  # inserted negation
        ("She wasn't born in Warsaw.", False, ["n't"]),
        ("Marie Curie was a physicist.", True, []),
        ("The prize money was 1903.", True, []),  # "1,903" in the page
        ("She worked as a chemistry professor.", False, []),  # content words missing
    ],
)
def test_check_flags_the_changed_token(fact, passed, missing):
    got = check(fact, [PAGE], threshold=0.5)
    assert got.passed is passed and got.missing == missing


def test_content_share_and_threshold():
    fact = "She studied radioactivity and chemistry."  # studied/radioactivity/chemistry
    got = check(fact, [PAGE], threshold=0.5)
    assert got.support == 0.0 and not got.passed and got.missing == []
    assert check(fact, [PAGE + " She studies chemistry."], threshold=0.5).passed  # 2 of 3
    assert not check(fact, [PAGE + " She studies chemistry."], threshold=0.9).passed
    # prefix matching: "physicist" finds "physics"; a first capitalised word is not salient
    assert check("Physics was her field.", ["Her field: physics."], 1.0).passed
    assert check("Nothing here.", [], 0.0).support == 0.0


kb = test_factscore.kb  # the knowledge-base fixture of the FActScore tests


def test_scorer_ensemble_rejects_what_the_passages_lack(kb):
    yes = ScriptedLM(choices=lambda t: [0.0, -1.0])  # a verifier that says True to everything
    response = "Ada Lovelace was born in London in 1815. She was born in Paris in 1816."
    item = {"id": "a", "prompt": "Tell me a bio of Ada Lovelace.", "topic": "Ada Lovelace",
            "response": response}  # fmt: skip
    plain = FactScorer(None, yes, kb, unit="sentence", k=2).score([item])[0]
    assert plain["score"] == 1.0 and "np_support" not in plain["facts"][0]
    scorer = FactScorer(None, yes, kb, unit="sentence", k=2, np_threshold=0.5)
    res = scorer.score([item])[0]
    assert [f["supported"] for f in res["facts"]] == [True, False] and res["score"] == 0.5
    assert [f["verifier_supported"] for f in res["facts"]] == [True, True]
    assert res["facts"][1]["np_missing"] == ["paris", "1816"]
    assert scorer.counts["np_rejected"] == 1
    no = ScriptedLM(choices=lambda t: [-1.0, 0.0])  # the verifier's False is never overruled
    assert (
        FactScorer(None, no, kb, unit="sentence", k=2, np_threshold=0.0).score([item])[0]["score"]
        == 0.0
    )
    with pytest.raises(ValueError, match="np_threshold"):
        FactScorer(None, yes, kb, unit="sentence", np_threshold=1.5)
