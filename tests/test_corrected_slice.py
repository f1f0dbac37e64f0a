"""Promotion's corrected slice: the corrected production requests as test rows, both models' scores on them, and
the part the candidate learned counted apart."""

import time

from tests.test_monitoring import record, store  # noqa: F401 (fixture: a fresh MLflow store)
from tuneline.config import DataConfig
from tuneline.evaluate.corrected import compare_slice, slice_examples, slice_html
from tuneline.evaluate.evaluation import select_test
from tuneline.evaluate.metrics import score
from tuneline.config import EvaluationConfig
from tuneline.serve.recording import Window, log_correction, read_requests

RIGHT = ["give_opinion(name[Doom], rating[poor])", "inform(name[Halo])", "request(name[Myst])"]


def test_corrected_requests_become_rows_rendered_as_training_rows_and_are_scored_both_ways(store, tiny_tokenizer):
    from tuneline.data.chat_format import ensure_chat_template, render
    from tuneline.data.feedback import correction_rows
    from tuneline.data.formats import to_messages

    now = int(time.time() * 1000)
    texts = ["Doom is poor.", "Halo.", "What about Myst?"]
    traces = [record("m", [t], ["inform"], now - 5000 + i) for i, t in enumerate(texts)]
    for trace, answer in zip(traces, RIGHT):
        log_correction(trace, answer, "viggo")
    record("m", ["Never corrected."], ["inform"], now - 100)
    log_correction(record("m", ["Secret."], ["inform"], now - 50, mode="redacted"), "inform(name[X])", "viggo")
    records = read_requests("m", Window(0, now + 1))
    cfg = DataConfig(system_prompt="Give the meaning representation.")
    ensure_chat_template(tiny_tokenizer)
    examples = select_test(slice_examples(records, cfg, tiny_tokenizer), EvaluationConfig())
    assert [e["messages"][-2]["content"] for e in examples] == texts  # uncorrected and redacted left out
    training_row = to_messages(correction_rows(records, cfg)[0], cfg)
    assert examples[0]["prompt"] == render(tiny_tokenizer, training_row)["prompt"]
    assert examples[0]["source"] == f"mlflow-trace:{traces[0]}:1" and examples[0]["served_by"] == "1"

    # The candidate gets every answer right, production only the first; the candidate learned the first one.
    _, candidate = score("viggo", RIGHT, RIGHT)
    _, production = score("viggo", [RIGHT[0], "inform(name[Doom])", "inform(name[Doom])"], RIGHT)
    found = compare_slice("exact_match", examples, candidate, production, {examples[0]["source"]}, "production v1")
    assert (found.all.n_examples, found.all.candidate, found.learned, found.served_by) == (3, 1.0, 1, {"1": 3})
    assert abs(found.all.reference - 1 / 3) < 1e-9 and abs(found.all.difference - 2 / 3) < 1e-9
    assert (found.unseen.n_examples, found.unseen.candidate, found.unseen.reference) == (2, 1.0, 0.0)
    html = slice_html(found)
    assert "Corrected production requests" in html and "trained on 1 of them" in html and "+0.6667" in html
    everything = compare_slice("exact_match", examples, candidate, production, {e["source"] for e in examples}, "p")
    assert everything.unseen is None and everything.learned == 3
