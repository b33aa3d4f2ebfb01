import json

import pytest

from flame import pairs
from flame.pairs import build_pairs, extremes, mix


def sample(pid, fact, n=4):
    return {
        "id": pid,
        "instruction": f"q {pid}",
        "responses": [f"{pid}-r{i}" for i in range(n)],
        "fact_based": fact,
    }


def test_extremes_ties_and_unknowns():
    assert extremes([1.0, 3.0, 2.0, 3.0]) == (1, 0)  # first best, first worst
    assert extremes([2.0, 2.0, 2.0]) is None  # all tie
    assert extremes([None, 2.0, None]) is None  # fewer than two known
    assert extremes([None, 2.0, 1.0]) == (1, 2)


def test_if_and_fact_pairs_with_gap_filter():
    s = [sample("a", True), sample("b", True), sample("c", False), sample("d", True)]
    rm_if = {
        "a": [3.0, 3.2, 4.0, 1.0],
        "b": [5.0, 1.0, 2.0, 2.0],
        "c": [2.0, 2.0, 2.0, 2.0],
        "d": [3.0, None, 3.0, 3.0],
    }
    rm_fact = {"a": [0.9, 0.1, 0.5, 0.5], "b": [0.2, 0.9, 0.5, 0.5], "d": [0.5, 0.5, 0.5, 0.5]}
    if_pairs, fact_pairs, drops = build_pairs(s, rm_if, rm_fact, max_if_gap=0.5)
    assert [p["id"] for p in if_pairs] == ["a:if", "b:if"]  # c and d tie on RM_IF
    assert if_pairs[0]["chosen"] == "a-r2" and if_pairs[0]["rejected"] == "a-r3"
    # a: fact chosen r0 (RM_IF 3.0) vs rejected r1 (3.2): gap 0.2 kept.
    # b: chosen r1 (1.0) vs r0 (5.0): gap 4 dropped. d: RM_fact tie dropped.
    assert [p["id"] for p in fact_pairs] == ["a:fact"]
    assert fact_pairs[0]["chosen"] == "a-r0" and fact_pairs[0]["rm_if"] == [3.0, 3.2]
    assert drops == {"if_tie_or_unscored": 2, "fact_rm_if_gap": 1, "fact_tie_or_unscored": 1}


def test_gap_boundary_is_inclusive():
    s = [sample("a", True, n=2)]
    _, kept, _ = build_pairs(s, {"a": [3.0, 3.5]}, {"a": [1.0, 0.0]}, max_if_gap=0.5)
    _, dropped, _ = build_pairs(s, {"a": [3.0, 3.51]}, {"a": [1.0, 0.0]}, max_if_gap=0.5)
    assert len(kept) == 1 and dropped == []


def test_mix_union_and_balanced():
    ifp = [{"id": f"i{k}", "kind": "if"} for k in range(6)]
    fp = [{"id": f"f{k}", "kind": "fact"} for k in range(2)]
    u = mix(ifp, fp, "union", seed=1)
    assert sorted(p["id"] for p in u) == sorted(p["id"] for p in ifp + fp)
    assert mix(ifp, fp, "union", seed=1) == u  # seeded
    b = mix(ifp, fp, "balanced", seed=1)
    kinds = [p["kind"] for p in b]
    assert kinds.count("if") == kinds.count("fact") == 6
    assert len({p["id"] for p in b}) == len(b)  # up-sampled copies get distinct ids
    assert mix([], fp, "balanced", seed=0) == mix([], fp, "union", seed=0)
    with pytest.raises(ValueError):
        mix(ifp, fp, "other", seed=0)


def test_cli_writes_sets_and_counts(tmp_path):
    s = [sample("a", True), sample("b", False)]
    (tmp_path / "s.jsonl").write_text("".join(json.dumps(x) + "\n" for x in s))
    (tmp_path / "if.jsonl").write_text(
        json.dumps({"id": "a", "scores": [1, 2, 3, 4]})
        + "\n"
        + json.dumps({"id": "b", "scores": [1, 2, 3, 4]})
        + "\n"
    )
    (tmp_path / "fact.jsonl").write_text(
        json.dumps({"id": "a", "scores": [0.2, 0.1, 0.9, 0.5]}) + "\n"
    )
    pairs.main(
        [
            "--samples",
            str(tmp_path / "s.jsonl"),
            "--rm-if",
            str(tmp_path / "if.jsonl"),
            "--rm-fact",
            str(tmp_path / "fact.jsonl"),
            "--out-dir",
            str(tmp_path / "o"),
            "--counts",
            str(tmp_path / "o" / "counts.json"),
        ]
    )
    counts = json.loads((tmp_path / "o" / "counts.json").read_text())
    # fact pair a: chosen r2 (RM_IF 3) vs rejected r1 (RM_IF 2): gap 1 > 0.5 -> dropped
    assert counts["sets"]["DPO"] == {"if": 2, "fact": 0, "total": 2}
    assert counts["sets"]["DPO_fact"]["total"] == 0
    assert counts["dropped"] == {"fact_rm_if_gap": 1}
    assert (tmp_path / "o" / "pairs_DPO_FLAME.jsonl").read_text().count("\n") == 2


def test_cli_rejects_missing_scores(tmp_path):
    (tmp_path / "s.jsonl").write_text(json.dumps(sample("a", False)) + "\n")
    (tmp_path / "if.jsonl").write_text(json.dumps({"id": "a", "scores": [1, 2]}) + "\n")
    (tmp_path / "fact.jsonl").write_text("")
    with pytest.raises(SystemExit, match="no RM_IF scores"):
        pairs.main(
            [
                "--samples",
                str(tmp_path / "s.jsonl"),
                "--rm-if",
                str(tmp_path / "if.jsonl"),
                "--rm-fact",
                str(tmp_path / "fact.jsonl"),
                "--out-dir",
                str(tmp_path),
                "--counts",
                str(tmp_path / "c.json"),
            ]
        )
