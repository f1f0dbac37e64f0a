"""Record, monitor, learn: served requests as MLflow traces, their drift and decline, corrections as training rows."""

import random
import time

import pytest

from tuneline.config import DataConfig, MonitoringConfig
from tests.test_serving import adapter_dir, extractor  # noqa: F401 (fixtures: a tiny model with an adapter)
from tuneline.serve.monitoring import monitor, psi, should_retrain, window_ms

DAY = 86_400_000
ACTS = ["inform", "give_opinion", "request", "confirm"]


def served(i: int, act: str, *, parsed: bool = True, review: bool = False, correction=None, t: int = 0) -> dict:
    """A record as `recording.read_requests` returns it."""
    answer = f"{act}(name[Game {i}], rating[good])"
    return {
        "trace_id": f"tr-{i}",
        "index": 0,
        "timestamp_ms": t,
        "redacted": False,
        "model": "m",
        "version": "1",
        "device": "cpu",
        "text": f"Game {i} is fun.",
        "text_chars": 15 + i % 20,
        "answer": answer,
        "answer_sha256": "",
        "parsed": parsed,
        "act": act if parsed else None,
        "field_names": ["name", "rating"] if parsed else [],
        "confidence": 0.9,
        "needs_review": review,
        "latency_ms": 100.0 + i % 50,
        "correction": correction,
    }


def balanced(n: int, offset: int = 0, **kw) -> list[dict]:
    return [served(offset + i, ACTS[i % len(ACTS)], **kw) for i in range(n)]


def shifted(n: int, offset: int = 0) -> list[dict]:
    """Mostly `request`: the act distribution moved."""
    return [served(offset + i, "request" if i % 5 else ACTS[i % len(ACTS)]) for i in range(n)]


TRAINING = [(f"Game {i} is fun.{' ' * (i % 20)}", f"{ACTS[i % 4]}(name[Game {i}], rating[good])") for i in range(200)]
CFG = MonitoringConfig(min_requests=30)


def run(current, previous, training=TRAINING, cfg=CFG, trained_at_ms=None):
    return monitor("m", "1", "viggo", current, previous, (0, DAY, 2 * DAY), training, cfg, trained_at_ms)


# --- core, on hand-made records ------------------------------------------------------------------------------


def test_psi_is_zero_for_equal_distributions_and_grows_with_the_shift():
    from collections import Counter

    same = Counter({"a": 50, "b": 50})
    assert psi(same, same) == pytest.approx(0.0)
    assert psi(same, Counter({"a": 60, "b": 40})) < 0.1 < psi(same, Counter({"a": 90, "b": 10}))


def test_window_lengths():
    assert window_ms("7d") == 7 * DAY and window_ms("12h") == DAY // 2 and window_ms("30m") == 1_800_000
    with pytest.raises(ValueError, match="positive number"):
        window_ms("0d")


def test_undrifted_requests_are_ok_with_their_figures():
    report = run(balanced(100), balanced(100, offset=100))
    assert report.verdict == "ok", report.reasons
    c = report.current
    assert (c.answers, c.requests, c.parse_rate, c.review_share) == (100, 100, 1.0, 0.0)
    assert c.latency_p50_ms is not None and c.latency_p50_ms <= c.latency_p95_ms
    assert set(report.drift_training) >= {"act", "input_length", "field.name", "field.rating"}
    assert all(v < CFG.max_psi for v in report.drift_training.values())


def test_a_shifted_act_distribution_is_drift_naming_the_act():
    report = run(shifted(100), balanced(100, offset=100))
    assert report.verdict == "drift"
    assert any(r.startswith("act: PSI") and "training data" in r for r in report.reasons)
    assert any(r.startswith("act: PSI") and "previous window" in r for r in report.reasons)
    assert not any(r.startswith("field.") for r in report.reasons)  # the fields did not move


def test_unparsed_answers_and_wrong_answers_on_corrections_are_decline():
    broken = balanced(70) + [served(100 + i, "inform", parsed=False) for i in range(30)]
    report = run(broken, balanced(100, offset=200))
    assert report.verdict == "decline" and report.reasons[0].startswith("parse_rate: 0.700 <")
    wrong = {"value": "inform(name[Other])", "time_ms": 5}
    corrected = balanced(100, correction=wrong)
    report = run(corrected, balanced(100, offset=200), cfg=MonitoringConfig(min_corrections=20))
    assert report.current.accuracy == 0.0 and report.current.corrected == 100
    assert any(r.startswith("accuracy: exact match 0.000 on 100 corrected answers") for r in report.reasons)


def test_more_answers_needing_review_than_before_is_decline():
    report = run(balanced(100, review=True), balanced(100, offset=100))
    assert report.verdict == "decline" and report.reasons[0].startswith("review_share: 0.000 -> 1.000")


def test_too_few_answers_are_not_judged():
    report = run(shifted(10), [])
    assert report.verdict == "ok" and "fewer than monitoring.min_requests" in report.reasons[0]


def test_retraining_needs_a_bad_verdict_new_corrections_and_retrain_on():
    right = {"value": "inform(name[Game 0], rating[good])", "time_ms": 10}
    records = shifted(100)
    for r in records[:25]:
        r["correction"] = right
    on = MonitoringConfig(retrain=True, min_corrections=20, min_accuracy=0.0)
    assert should_retrain(run(records, [], cfg=on, trained_at_ms=5), on).startswith("verdict drift and 25 new")
    assert should_retrain(run(records, [], cfg=on, trained_at_ms=50), on) is None  # learned from already
    assert (
        should_retrain(
            run(records, [], cfg=MonitoringConfig(min_corrections=20)), on.model_copy(update={"retrain": False})
        )
        is None
    )
    assert should_retrain(run(balanced(100), [], cfg=on, trained_at_ms=5), on) is None  # ok


# --- the MLflow store: record, correct, read back ------------------------------------------------------------


@pytest.fixture
def store(tmp_path, monkeypatch):
    """A fresh MLflow sqlite store as the tracking store; returns its folder."""
    import mlflow

    monkeypatch.chdir(tmp_path)  # trace artifacts of a sqlite store go under ./mlruns
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    yield tmp_path
    mlflow.set_tracking_uri(previous)


def response(texts: list[str], acts: list[str]) -> dict:
    results = [
        {
            "text": t,
            "answer": f"{a}(name[{t[:12]}])",
            "parsed": True,
            "act": a,
            "fields": {"name": t[:12]},
            "confidence": 0.9,
            "field_confidence": {"name": 0.9},
            "needs_review": False,
            "seconds": 0.05,
        }
        for t, a in zip(texts, acts)
    ]
    return {
        "model": "m version 1",
        "device": "cpu",
        "seconds": 0.05,
        "threshold": {"min_confidence": 0.5},
        "results": results,
    }


def record(model: str, texts: list[str], acts: list[str], at_ms: int, mode: str = "full") -> str:
    from tuneline.serve import recording

    experiment = recording.experiment_id(model, create=True)
    return recording.record_request(
        response(texts, acts), model, "1", mode, at_ms * 1_000_000, at_ms * 1_000_000 + 80_000_000, experiment
    )


def test_traces_read_back_as_records_with_corrections_and_parser_checked(store):
    from tuneline.serve.recording import CorrectionError, Window, log_correction, read_requests

    now = int(time.time() * 1000)
    trace = record("m", ["I like Doom.", "Halo is bad."], ["inform", "give_opinion"], now - 1000)
    log_correction(trace, "inform(name[Doom], rating[good])", "viggo", index=0)
    with pytest.raises(CorrectionError, match="does not parse as a meaning representation"):
        log_correction(trace, "Doom is good", "viggo")
    with pytest.raises(CorrectionError, match="index 2: the request had 2"):
        log_correction(trace, "inform(name[Doom])", "viggo", index=2)
    records = read_requests("m", Window(now - 60_000, now))
    assert [(r["text"], r["act"], r["version"], r["latency_ms"]) for r in records] == [
        ("I like Doom.", "inform", "1", 80.0),
        ("Halo is bad.", "give_opinion", "1", 80.0),
    ]
    assert records[0]["correction"]["value"] == "inform(name[Doom], rating[good])" and records[1]["correction"] is None
    assert read_requests("other", Window(now - 60_000, now)) == []


def test_redacted_requests_and_their_corrections_store_no_text(store):
    from tuneline.serve.recording import Window, log_correction, read_requests

    now = int(time.time() * 1000)
    secret = "Zanzibar Quokka Saga is a bad game."
    trace = record("m", [secret], ["give_opinion"], now - 1000, mode="redacted")
    log_correction(trace, "give_opinion(name[Zanzibar Quokka Saga], rating[poor])", "viggo")
    [r] = read_requests("m", Window(now - 60_000, now))
    assert r["text"] is None and r["text_chars"] == len(secret) and r["act"] == "give_opinion"
    assert r["field_names"] == ["name"] and r["correction"]["value"]["fields"] == ["name", "rating"]
    stored = [p for p in store.rglob("*") if p.is_file()]
    assert stored and not [p for p in stored if b"Quokka" in p.read_bytes()]


def test_monitor_over_recorded_traces_says_drift_naming_the_act_and_ok_when_unshifted(store):
    from tuneline.serve.recording import Window, read_requests

    end = int(time.time() * 1000)
    rng = random.Random(0)
    # The previous window has balanced acts; this one is still balanced (steady) or mostly request (moved).
    for i in range(40):
        at = end - 2 * DAY + i * 60_000
        record("steady", [f"Game {i} is fun."], [ACTS[i % 4]], at)
        record("moved", [f"Game {i} is fun."], [ACTS[i % 4]], at)
        record("steady", [f"Game {i} is great."], [ACTS[(i + 1) % 4]], end - DAY + i * 60_000)
        record(
            "moved", [f"Game {i} is great."], ["request" if rng.random() < 0.85 else "inform"], end - DAY + i * 60_000
        )
    for model, expected in (("steady", "ok"), ("moved", "drift")):
        current, previous = (
            read_requests(model, Window(s, e)) for s, e in ((end - DAY, end), (end - 2 * DAY, end - DAY))
        )
        report = monitor(model, "1", "viggo", current, previous, (end - 2 * DAY, end - DAY, end), [], CFG)
        assert (report.current.answers, report.previous.answers) == (40, 40)
        assert report.verdict == expected, report.reasons
        if expected == "drift":
            assert report.reasons[0].startswith("act: PSI") and "previous window" in report.reasons[0]


# --- learn: corrections become training rows -----------------------------------------------------------------


def test_corrections_become_feedback_rows_screened_for_leakage(store):
    from tuneline.data.feedback import FEEDBACK, load_feedback
    from tuneline.serve.recording import log_correction
    from tuneline.models.tiny import build_tiny_tokenizer
    from tuneline.data.validation import prepare

    now = int(time.time() * 1000)
    corrected = {
        "Doom is a great shooter.": "give_opinion(name[Doom], rating[excellent])",
        "Game 0 is fun.": "give_opinion(name[Game 0], rating[excellent])",
    }  # the second is a test input
    for i, (text, answer) in enumerate(corrected.items()):
        log_correction(record("m", [text], ["inform"], now - 1000 + i), answer, "viggo")
    record("m", ["Uncorrected text."], ["inform"], now - 500)
    redacted = record("m", ["Hidden text."], ["inform"], now - 400, mode="redacted")
    log_correction(redacted, "inform(name[Hidden])", "viggo")
    cfg = DataConfig(system_prompt=None)
    rows, lineage = load_feedback("m", cfg)
    assert [r["messages"][0]["content"] for r in rows] == list(corrected)
    assert rows[0]["_file"].startswith("mlflow-trace:tr-") and rows[0]["_line"] == 1
    assert lineage["rows"] == 2 and lineage["corrections"] == 3 and lineage["redacted_skipped"] == 1

    def row(i):
        return {
            "target": f"Game {i} is fun.",
            "meaning_representation": f"give_opinion(name[Game {i}], rating[good])",
            "_file": "d.jsonl",
            "_line": i + 1,
        }

    raw = {"train": [row(i) for i in range(1, 9)], "validation": [row(9)], "test": [row(0)], FEEDBACK: rows}
    prepared = prepare(raw, cfg, build_tiny_tokenizer())
    feedback = prepared.report.splits[FEEDBACK]
    assert (feedback.input, feedback.accepted, feedback.quarantined) == (2, 1, 1)
    assert prepared.report.reasons[FEEDBACK] == {"leakage": 1}
    assert FEEDBACK not in prepared.splits
    trained = [r["messages"][0]["content"] for r in prepared.splits["train"]]
    assert "Doom is a great shooter." in trained and "Game 0 is fun." not in trained


# --- the monitor pipeline on the stack's own MLflow store ----------------------------------------------------


# --- shadow: a candidate answers beside production, off the request path -------------------------------------


def test_a_shadow_answers_after_the_request_and_the_monitor_compares_it(store, extractor):  # noqa: F811
    import dataclasses

    from tuneline.serve.monitoring import shadow_figures
    from tuneline.serve.recording import log_correction, recorder
    from tuneline.serve.shadow import Shadow

    candidate = dataclasses.replace(extractor, version="2")
    shadow = Shadow(candidate, "full")
    record_and_shadow = shadow.wrap(recorder("m", "full"))
    now = time.time_ns()
    same = candidate.extract(["Doom is fun."]) | {"version": "1"}  # production happened to answer as the candidate
    other = response(["Halo is bad."], ["inform"]) | {"version": "1"}
    with candidate.lock:  # the candidate is busy: production's requests are recorded and returned all the same
        traces = [record_and_shadow(r, now + i * 10**6, now + (i + 1) * 10**6) for i, r in enumerate((same, other))]
        assert all(traces) and shadow._queue.qsize() >= 1
    shadow.join()
    log_correction(traces[1], other["results"][0]["answer"], "viggo")  # production was right, the shadow was not
    records = read_requests_now("m")
    assert [r["shadow"]["version"] for r in records] == ["2", "2"]
    assert records[0]["shadow"]["answer"] == records[0]["answer"]
    assert records[1]["shadow"]["answer"] != records[1]["answer"]
    figures = shadow_figures(records, "viggo")
    assert (figures.answers, figures.agreement, figures.corrected) == (2, 0.5, 1)
    assert (figures.accuracy, figures.production_accuracy, figures.versions) == (0.0, 1.0, {"2": 2})
    report = monitor("m", "1", "viggo", records, [], (0, DAY, 2 * DAY), [], CFG)
    assert report.metrics()["shadow.agreement"] == 0.5 and report.current.shadow == figures
    shadow.close()


def read_requests_now(model: str) -> list[dict]:
    from tuneline.serve.recording import Window, read_requests

    return read_requests(model, Window(0, int(time.time() * 1000) + 1))
