"""LM.loglikelihood: the transformers backend (shared-prefix and plain paths against a naive
full forward pass), the disk cache, and the OpenAI-compatible echo parsing."""

import pytest

from flame.lm import load_lm


def naive(lm, context: str, continuation: str) -> float:
    import torch

    tok = lm.tokenizer
    c = tok.encode(context, add_special_tokens=False)
    full = tok.encode(context + continuation, add_special_tokens=False)
    with torch.inference_mode():
        logp = torch.log_softmax(lm.model(input_ids=torch.tensor([full])).logits[0].float(), -1)
    return float(sum(logp[a - 1, full[a]] for a in range(len(c), len(full))))


PRIMER = "Q: What is human life expectancy in the United States?\nA: 78 years.\n\n" * 4


def test_loglikelihood_matches_a_full_forward_pass(tiny_model, tmp_path):
    lm = load_lm({"source": str(tiny_model), "batch_size": 3})
    pairs = [
        (PRIMER + "Q: Who wrote Hamlet?\nA:", " Shakespeare."),
        (PRIMER + "Q: Who wrote Hamlet?\nA:", " Christopher Marlowe wrote it in 1599."),
        (PRIMER + "Q: Who wrote Hamlet?\nA:", " I have no comment."),
        (PRIMER + "Q: What is the capital of France?\nA:", " Paris."),
        ("Q: short, no shared prefix\nA:", " yes"),
        ("Another context", " and a much longer continuation " * 5),
        ("x", ""),  # no continuation tokens: 0
    ]
    got = lm.loglikelihood(pairs)
    want = [naive(lm, c, x) for c, x in pairs]
    assert got[-1] == 0.0
    assert got == pytest.approx(want, abs=2e-3)
    assert all(g < 0 for g in got[:-1])
    assert lm.loglikelihood(pairs[4:6]) == pytest.approx(got[4:6], abs=2e-3)  # plain path alone
    cached = load_lm({"source": str(tiny_model)}, cache=tmp_path / "c.sqlite")
    assert cached.loglikelihood(pairs[:2]) == pytest.approx(got[:2], abs=2e-3)
    cached.inner.loglikelihood = None  # a second call must come from the cache
    assert cached.loglikelihood(pairs[:2]) == pytest.approx(got[:2], abs=2e-3)


def test_openai_echo_logprobs_sum_the_continuation():
    from flame.lm.openai import continuation_logprob

    # "Q: x\nA:" + " yes no": tokens with their character offsets, as /completions echo gives
    lp = {
        "tokens": ["Q", ":", " x", "\nA", ":", " yes", " no", "!"],
        "token_logprobs": [None, -1.0, -2.0, -0.5, -0.25, -3.0, -4.0, -9.0],
        "text_offset": [0, 1, 2, 4, 6, 7, 11, 14],
    }
    assert continuation_logprob(lp, 7, 14) == -7.0  # the generated "!" is left out
    # a token that straddles the boundary belongs to the continuation
    assert continuation_logprob(lp, 8, 14) == -7.0
    with pytest.raises(ValueError, match="no log-prob"):
        continuation_logprob({**lp, "token_logprobs": [None] * 8}, 0, 14)


def test_openai_loglikelihood_over_http():
    """A local OpenAI-compatible /completions server that echoes prompt log-probs (each word
    token scores minus its length); the backend sends context + continuation and sums the
    continuation's tokens."""
    import json
    import re
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer

    from flame.lm.openai import OpenAILM

    seen = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            seen.append(body)
            toks = re.findall(r"\s*\S+", body["prompt"]) + ["!"]
            offsets, pos = [], 0
            for t in toks:
                offsets.append(pos)
                pos += len(t)
            logprobs = [None] + [-float(len(t.strip())) for t in toks[1:-1]] + [-9.0]
            lp = {"tokens": toks, "token_logprobs": logprobs, "text_offset": offsets}
            out = json.dumps({"choices": [{"text": body["prompt"] + "!", "logprobs": lp}]})
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(out.encode())

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        lm = OpenAILM({"base_url": f"http://127.0.0.1:{server.server_port}/v1", "model": "m"})
        got = lm.loglikelihood([("Q: a b\nA:", " ccc dd"), ("x", " y")])
    finally:
        server.shutdown()
    assert got == [-5.0, -1.0]
    assert all(b["echo"] is True and b["logprobs"] == 1 and b["max_tokens"] == 1 for b in seen)
