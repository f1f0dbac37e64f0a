"""Serving without ZenML: the extractor answers exactly as the offline evaluator does, confidences included, marks
answers below the version's threshold for review, refuses bad requests with a message naming the text, survives
concurrent requests on its one tokenizer, and a followed stage swaps models between requests without failing one.
The request guard, in front of a small ASGI app, refuses large bodies before reading them and checks texts off the
event loop."""

import asyncio
import json
import re
import threading
import time

import pytest

from tuneline.config import DataConfig, EvaluationConfig, ServingConfig
from tuneline.generate.confidence import ANSWER_MEASURE
from tuneline.evaluate.evaluation import evaluate_model
from tuneline.serve.serving import ModelSlot, RequestError, load_extractor, review_rule
from tuneline.data.sources import load_splits
from tuneline.data.validation import prepare

DATA = DataConfig(source="synthetic:viggo")
EVAL = EvaluationConfig(batch_size=4, max_new_tokens=16)


@pytest.fixture(scope="module")
def adapter_dir(tiny_model_dir, tiny_tokenizer, tmp_path_factory):
    """A LoRA adapter with random (not zero) B matrices, so the merged model differs from the base."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    import torch

    torch.manual_seed(0)
    model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(tiny_model_dir),
        LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False),
    )
    out = tmp_path_factory.mktemp("adapter")
    model.save_pretrained(out)
    tiny_tokenizer.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def extractor(tiny_model_dir, adapter_dir):
    return load_extractor(
        "tiny v1", "viggo", tiny_model_dir, adapter_dir, DATA, EVAL, ServingConfig(max_texts=8, max_input_tokens=40)
    )


def test_answers_equal_the_offline_evaluators(extractor, tiny_model_dir, tiny_tokenizer, adapter_dir):
    test = prepare(load_splits(DATA), DATA, tiny_tokenizer).splits["test"][:7]
    offline = evaluate_model("tuned", "viggo", tiny_model_dir, test, EVAL, adapter_dir=adapter_dir)
    texts = [p["input"] for p in offline.predictions]
    assert [extractor.prompt(t) for t in texts] == [r["prompt"] for r in test]
    served = extractor.extract(texts)
    assert [r["answer"] for r in served["results"]] == [p["prediction"] for p in offline.predictions]
    assert served["model"] == "tiny v1" and served["device"] == "cpu"
    for r, p in zip(served["results"], offline.predictions):
        assert r["text"] == p["input"] and r["parsed"] == p["parsed"] and r["seconds"] > 0
        assert (r["fields"] is None) == (not r["parsed"])
        assert r["confidence"] == p["confidence"] and r["field_confidence"] == p["field_confidence"]
        assert r.get("act_confidence") == p.get("act_confidence") and (r["act"] is None) == ("act_confidence" not in r)
        assert r["needs_review"] is True, "a version that recorded no threshold: every answer needs review"
    assert served["threshold"] == {"min_confidence": None, "source": "auto: the model version recorded no threshold"}


RECORDED = {
    "min_confidence": 0.4,
    "precision": 0.96,
    "coverage": 0.5,
    "target_precision": 0.95,
    "setting": "auto",
    "n_examples": 150,
    "measure": ANSWER_MEASURE,
}


@pytest.mark.parametrize(
    "setting, recorded, threshold, warning",
    [
        ("auto", RECORDED, 0.4, None),
        (
            "auto",
            RECORDED | {"min_confidence": None, "precision": None, "coverage": 0.0},
            None,
            "no confidence threshold",
        ),
        ("auto", None, None, "recorded no confidence_threshold"),
        (0.7, RECORDED, 0.7, None),  # a configured threshold wins over the recorded one
        (0.0, None, 0.0, None),
    ],
)
def test_the_review_threshold_is_the_versions_or_the_configured(setting, recorded, threshold, warning, caplog):
    rule = review_rule(ServingConfig(min_confidence=setting), recorded, "tiny v1")
    assert rule.min_confidence == threshold
    said = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(said) == (warning is not None) and all(warning in m for m in said), said
    for confidence in (0.0, 0.39, 0.4, 0.69, 0.7, 1.0):
        assert rule.needs_review(confidence) == (threshold is None or confidence < threshold)
    shown = rule.as_dict()
    assert shown["min_confidence"] == threshold and shown["source"]
    from_version = setting == "auto" and recorded is not None
    assert shown.get("coverage") == (recorded["coverage"] if from_version else None)


def test_a_threshold_recorded_for_another_confidence_measure_is_not_used(caplog):
    """A version whose threshold was picked on another measure's scale (before the answer's confidence became the
    geometric mean) would accept answers by a number that means something else: every answer needs review."""
    for recorded in (
        RECORDED | {"measure": "least likely token"},
        {k: v for k, v in RECORDED.items() if k != "measure"},
    ):
        rule = review_rule(ServingConfig(), recorded, "tiny v1")
        assert rule.min_confidence is None and rule.needs_review(1.0)
    assert caplog.text.count("another confidence measure") == 2


def test_another_target_precision_than_recorded_is_said(caplog):
    rule = review_rule(ServingConfig(target_precision=0.9), RECORDED, "tiny v1")
    assert rule.min_confidence == 0.4 and "target_precision 0.95, not the configured 0.9" in caplog.text


def test_answers_below_the_threshold_need_review(extractor):
    """A fixed threshold between the answers' confidences: those below it, and only those, need review."""
    from dataclasses import replace

    texts = ["I like Tetris.", "Portal 2 is a great puzzle game on PlayStation.", "zzkq", "asdf qwerty zxcv"]
    confidences = sorted(r["confidence"] for r in extractor.extract(texts)["results"])
    middle = (confidences[1] + confidences[2]) / 2
    assert confidences[1] < middle < confidences[2]
    rule = review_rule(ServingConfig(min_confidence=middle), None, "tiny v1")
    served = replace(extractor, review=rule).extract(texts)
    assert [r["needs_review"] for r in served["results"]] == [r["confidence"] < middle for r in served["results"]]
    assert sum(r["needs_review"] for r in served["results"]) == 2
    assert served["threshold"] == {"min_confidence": middle, "source": "serving.min_confidence"}


def test_concurrent_requests_share_the_tokenizer_safely(extractor):
    """The deployment answers each request in its own thread, all on one fast tokenizer: texts checked while others
    are padded for generation must neither fail ("Unable to create tensor", "Already borrowed") nor change answers.
    Short answers in pairs of unequal length, so tokenizing and padding is most of the work: unlocked, this fails."""
    from dataclasses import replace

    extractor = replace(extractor, evaluation=EvaluationConfig(batch_size=2, max_new_tokens=2))
    batch = ["Portal 2 is a puzzle game I played on PlayStation."[: 10 + 4 * i] for i in range(8)]
    alone = [r["answer"] for r in extractor.extract(batch)["results"]]
    answers, errors = [], []

    def run(work, times):
        try:
            for _ in range(times):
                work()
        except Exception as err:  # noqa: BLE001 (any failure is what the test counts)
            errors.append(err)

    def generate():
        answers.append([r["answer"] for r in extractor.extract(batch)["results"]])

    threads = [threading.Thread(target=run, args=(generate, 20)) for _ in range(3)]
    threads += [threading.Thread(target=run, args=(lambda: extractor.check(batch), 200)) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[0]
    assert answers == [alone] * 60


def test_fields_are_read_as_written():
    from tuneline.tasks import readable_fields

    assert readable_fields("viggo", "inform(name[SpellForce 3], rating[Poor])") == (
        "inform",
        {"name": "SpellForce 3", "rating": "Poor"},
    )
    assert readable_fields("viggo", "inform(name[Halo], genres[shooter, puzzle], platforms[PC])") == (
        "inform",
        {"name": "Halo", "genres": ["shooter", "puzzle"], "platforms": ["PC"]},
    )
    assert readable_fields("json", '{"city": "Paris", "n": 3}') == (None, {"city": "Paris", "n": 3})
    assert readable_fields("json", "[1, 2]") == (None, {"[0]": 1, "[1]": 2})
    assert readable_fields("viggo", "inform(name[x]") is None and readable_fields("text", "anything") is None


@pytest.mark.parametrize(
    "texts, message",
    [
        ([], "texts is empty"),
        (["fine", "  "], r"texts\[1\] is empty"),
        (["a"] * 9, "texts has 9 texts; at most 8"),
        (["fine", "word " * 60], r"texts\[1\] is \d+ tokens; the model reads at most 40"),
        (["x" * 1281], r"texts\[0\] is 1281 characters; the model reads at most 40 tokens"),
    ],
)
def test_bad_requests_name_the_text(extractor, texts, message):
    with pytest.raises(RequestError, match=message):
        extractor.extract(texts)


def test_context_limit_defaults_to_the_models(extractor):
    from dataclasses import replace

    unbounded = replace(extractor, serving=ServingConfig())
    limit = unbounded.max_input_tokens()
    assert 0 < limit < extractor.model.config.max_position_embeddings - EVAL.max_new_tokens


def test_followed_stage_swaps_between_requests_and_none_fails(extractor):
    """Requests keep running while the slot loads and swaps in a new model; each finishes on the model it took."""
    slot = ModelSlot(extractor, "v1")
    newer = {"version": "v1"}
    loaded = []

    def load(version):
        time.sleep(0.3)  # a load takes time; requests must not wait for it
        loaded.append(version)
        from dataclasses import replace

        return replace(extractor, label=f"tiny {version}")

    slot.follow(lambda: newer["version"], load, every_s=0.05)
    labels, errors = [], []

    def client():
        for _ in range(6):
            try:
                labels.append(slot.current()[0].extract(["I like Tetris."])["model"])
            except Exception as err:  # noqa: BLE001 (any failure is what the test counts)
                errors.append(err)

    threads = [threading.Thread(target=client) for _ in range(3)]
    for t in threads:
        t.start()
    newer["version"] = "v2"
    for t in threads:
        t.join()
    deadline = time.monotonic() + 5
    while slot.current()[1] != "v2" and time.monotonic() < deadline:
        time.sleep(0.05)
    slot.close()
    assert not errors and len(labels) == 18
    assert slot.current() == (slot.current()[0], "v2") and slot.current()[0].label == "tiny v2"
    assert loaded == ["v2"], "loaded once, not once per poll"
    assert set(labels) <= {"tiny v1", "tiny v2"}


def test_a_failed_load_keeps_the_current_model(extractor):
    slot = ModelSlot(extractor, "v1")

    def broken(version):
        raise OSError(f"adapter of {version} is gone")

    slot.follow(lambda: "v2", broken, every_s=0.02)
    time.sleep(0.2)
    slot.close()
    assert slot.current() == (extractor, "v1")
    assert extractor.extract(["I like Tetris."])["model"] == "tiny v1"


def test_a_huge_text_is_refused_without_tokenizing(extractor):
    """30 MB: tokenizing it would take a minute; counting its characters takes no time."""
    start = time.monotonic()
    with pytest.raises(RequestError, match="^texts\\[0\\] is 30000000 characters;[^\n]*$"):
        extractor.check(["word " * 6_000_000])
    assert time.monotonic() - start < 0.5


class Echo:
    """The app behind the guard: answers with what it received, and notes the thread it ran on (the event loop's)."""

    def __init__(self):
        self.calls = []

    async def __call__(self, scope, receive, send):
        body, more = b"", True
        while more:
            message = await receive()
            body, more = body + message.get("body", b""), message.get("more_body", False)
        self.calls.append(threading.current_thread())
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": body})


def guarded(check=lambda texts: None, auth_key=None, max_bytes=1000):
    from starlette.testclient import TestClient

    from steps.serve import RequestGuard

    app = Echo()
    return app, TestClient(RequestGuard(app, max_bytes=max_bytes, paths={"/invoke"}, check=check, auth_key=auth_key))


@pytest.mark.parametrize(
    "send",
    [
        dict(content=b"x" * 1001),  # with its Content-Length
        dict(content=iter([b"x" * 600, b"x" * 600])),  # chunked: counted as it arrives
    ],
)
def test_guard_refuses_an_over_large_body_before_the_app(send):
    app, client = guarded()
    reply = client.post("/invoke", **send)
    assert reply.status_code == 413 and not app.calls
    assert "over 1000 bytes" in reply.text or "is 1001 bytes; the server takes at most 1000" in reply.text
    assert "\n" not in reply.json()["detail"] and "xxx" not in reply.text


def test_guard_refuses_a_declared_large_body_without_reading_it():
    from steps.serve import RequestGuard

    async def receive():
        raise AssertionError("the body was read")

    sent = []

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/invoke", "headers": [(b"content-length", b"31457280")]}
    asyncio.run(RequestGuard(Echo(), 1000, {"/invoke"}, lambda texts: None)(scope, receive, send))
    assert sent[0]["status"] == 413
    assert json.loads(sent[1]["body"]) == {
        "detail": "the request body is 31457280 bytes; the server takes at most 1000 (serving.max_request_bytes)"
    }


def test_guard_passes_what_is_within_the_limit_intact():
    app, client = guarded()
    body = json.dumps({"parameters": {"texts": ["fine"]}}).encode()
    assert client.post("/invoke", content=body).content == body
    assert client.post("/other", content=b"x" * 1000).content == b"x" * 1000
    assert client.get("/health").status_code == 200 and len(app.calls) == 3


def test_guard_checks_texts_in_a_worker_thread(extractor):
    """The check tokenizes, so it runs beside the event loop, never on it; a refused text gets a 422 at once."""
    threads = []

    def check(texts):
        threads.append(threading.current_thread())
        extractor.check(texts)

    app, client = guarded(check, max_bytes=100_000)
    reply = client.post("/invoke", json={"parameters": {"texts": ["fine", "word " * 60]}})
    assert reply.status_code == 422 and not app.calls
    assert re.fullmatch(r"texts\[1\] is \d+ tokens; the model reads at most 40 \([^\n]*\)", reply.json()["detail"])
    reply = client.post("/invoke", json={"parameters": {"texts": "x" * 50_000}})
    assert reply.status_code == 422 and "50000 characters" in reply.text and len(reply.content) < 300
    assert client.post("/invoke", json={"parameters": {"texts": "I like Tetris."}}).status_code == 200
    assert len(threads) == 3 and app.calls and app.calls[0] not in threads


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b'{"parameters": {"texts": [1, 2]}}',
        b'{"parameters": {"text": "typo"}}',
        b"[" * 5000 + b"]" * 5000,
    ],
)
def test_guard_leaves_what_is_not_texts_to_the_apps_validation(body):
    checked = []
    app, client = guarded(checked.append, max_bytes=100_000)
    assert client.post("/invoke", content=body).content == body and not checked


@pytest.mark.parametrize("body", [b'{"parameters": {}}', b"{}", b'{"parameters": null}'])
def test_guard_refuses_a_request_without_texts(body):
    """The pipeline's default text is ZenML's, for compiling it: a request without texts must not run on it."""
    app, client = guarded(max_bytes=100_000)
    reply = client.post("/invoke", content=body)
    assert reply.status_code == 422 and not app.calls
    assert reply.json() == {"detail": "parameters.texts is required: one text or a list of texts"}


def test_guard_checks_texts_only_for_a_caller_the_app_lets_in():
    """Tokenizing costs: a caller without the key goes on to the app, which refuses it (401), unchecked."""
    checked = []
    app, client = guarded(checked.append, auth_key="s3cret")
    body = {"parameters": {"texts": "fine"}}
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic s3cret"}):
        assert client.post("/invoke", json=body, headers=headers).status_code == 200
    assert not checked
    client.post("/invoke", json=body, headers={"Authorization": "bearer s3cret"})
    assert checked == [["fine"]]
