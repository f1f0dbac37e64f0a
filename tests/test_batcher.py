"""Dynamic batching across requests, on the tiny model: concurrent callers' texts are decoded together, joining the
rows in flight, and each gets exactly what it would get alone; an idle batcher waits at most the window for company,
the rows stay within the token budget (1 turns batching off), and grammars are never mixed; a bad request fails in
its caller's thread and nobody else's. The OpenAI endpoints' JSON schema is enforced by constrained decoding."""

import json
import threading
import time
from dataclasses import replace

import pytest

from test_serving import adapter_dir, extractor  # noqa: F401 (fixtures)
from tuneline.serve.batcher import Batcher
from tuneline.config import EvaluationConfig
from tuneline.generate.grammar import json_schema_grammar
from tuneline.serve.serving import RequestError

TEXTS = [
    "I like Tetris.",
    "Portal 2 is a great puzzle game on PlayStation.",
    "zzkq",
    "Halo is a shooter from 2001.",
    "Do you know any good racing games?",
    "Myst",
    "Celeste is an excellent platformer I played twice.",
]


@pytest.fixture
def spied(extractor):  # noqa: F811
    """A copy of the extractor whose generations are recorded: the texts of each `generate` batch (grammars, and
    requests larger than a batch) in `batches`; in `joins`, the texts of each group that joined the continuous
    decoder, with how many rows were decoding when it joined."""
    copy = replace(extractor)
    batches, joins, generate, decoder = [], [], copy.generate, copy.decoder

    def spy(texts, grammar=None):
        batches.append(list(texts))
        return generate(texts, grammar)

    def spied_decoder():
        made = decoder()
        add = made.add

        def spied_add(prompts, keys):
            joins.append(([request.texts[i] for request, i in keys], len(made)))
            return add(prompts, keys)

        made.add = spied_add
        return made

    copy.generate, copy.decoder = spy, spied_decoder
    return copy, batches, joins


def concurrently(batcher: Batcher, requests: list[list[str]], grammar=None) -> list[dict]:
    """Each request from its own thread, all started together."""
    replies, errors = [None] * len(requests), []

    def call(i):
        try:
            replies[i] = batcher.extract(requests[i], grammar)
        except Exception as err:  # noqa: BLE001 (any failure is what the test counts)
            errors.append(err)

    threads = [threading.Thread(target=call, args=(i,)) for i in range(len(requests))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    return replies


def test_batched_answers_equal_unbatched_ones(spied):
    extractor, batches, joins = spied
    requests = [[t] for t in TEXTS] + [TEXTS[:3]]
    alone = [extractor.extract(r) for r in requests]
    batches.clear()
    replies = concurrently(Batcher(lambda: extractor, wait_s=0.5, max_tokens=None), requests)
    assert not batches and len(joins) < len(requests), "concurrent requests were decoded together"
    assert any(decoding for _, decoding in joins), "requests joined rows already decoding (4 rows at most)"
    for reply, one in zip(replies, alone):
        assert [r["answer"] for r in reply["results"]] == [r["answer"] for r in one["results"]]
        assert [r["text"] for r in reply["results"]] == [r["text"] for r in one["results"]]
        assert [r["confidence"] for r in reply["results"]] == pytest.approx([r["confidence"] for r in one["results"]])
        assert [r["new_tokens"] for r in reply["results"]] == [r["new_tokens"] for r in one["results"]]
        assert reply["model"] == "tiny v1" and reply["seconds"] > 0


def test_a_lone_request_waits_the_window_and_late_ones_join_it(spied):
    extractor, _, joins = spied
    batcher = Batcher(lambda: extractor, wait_s=0.6, max_tokens=None)
    start = time.monotonic()
    batcher.extract(["I like Tetris."])
    assert time.monotonic() - start >= 0.6 and joins == [(["I like Tetris."], 0)]

    late = threading.Timer(0.2, lambda: batcher.extract(["Myst"]))
    late.start()
    batcher.extract(["Halo"])
    late.join()
    assert joins[1:] == [(["Halo", "Myst"], 0)]


def test_the_token_budget_bounds_the_rows_and_1_turns_batching_off(spied):
    extractor, batches, joins = spied
    cost = sum(extractor.check(["I like Tetris."])) + extractor.evaluation.max_new_tokens
    replies = concurrently(Batcher(lambda: extractor, wait_s=0.5, max_tokens=2 * cost), [["I like Tetris."]] * 6)
    assert len(replies) == 6 and sum(len(texts) for texts, _ in joins) == 6
    assert all(decoding + len(texts) <= 2 for texts, decoding in joins), joins
    joins.clear()
    concurrently(Batcher(lambda: extractor, wait_s=0.5, max_tokens=1), [["I like Tetris."]] * 3 + [TEXTS])
    assert joins == [(["I like Tetris."], 0)] * 3, "each request alone"
    assert batches == [TEXTS], "more texts than a batch holds: the evaluator's batches, whole"


def test_a_bad_request_fails_alone_in_its_callers_thread(spied):
    extractor, batches, joins = spied
    batcher = Batcher(lambda: extractor, wait_s=0.05, max_tokens=None)
    with pytest.raises(RequestError, match="texts\\[0\\] is empty"):
        batcher.extract(["  "])
    with pytest.raises(RequestError, match="JSON schema cannot be enforced"):
        batcher.extract(["I like Tetris."], json_schema_grammar({"type": "no such type"}))
    assert not batches and not joins and batcher.extract(["Myst"])["results"][0]["text"] == "Myst"


def test_a_json_schema_is_enforced_and_grammars_are_not_mixed(spied):
    """Even a random toy writes JSON that validates against the client's schema; requests under another grammar
    (here none) wait for a batch of their own."""
    import jsonschema

    extractor, batches, joins = spied
    extractor.evaluation = EvaluationConfig(batch_size=4, max_new_tokens=48)
    schema = {
        "type": "object",
        "properties": {"ok": {"type": "boolean"}},
        "required": ["ok"],
        "additionalProperties": False,
    }
    batcher = Batcher(lambda: extractor, wait_s=0.3, max_tokens=None)
    grammar = json_schema_grammar(schema)
    free = threading.Thread(target=batcher.extract, args=(["Myst"],))
    free.start()
    replies = concurrently(batcher, [["I like Tetris."], ["Halo is a shooter."]], grammar)
    free.join()
    for reply in replies:
        jsonschema.validate(json.loads(reply["results"][0]["answer"]), schema)
    assert sorted(map(sorted, batches)) == [["Halo is a shooter.", "I like Tetris."]]
    assert joins == [(["Myst"], 0)]
