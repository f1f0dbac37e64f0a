"""Monitor, record and correct for real: monitor pipelines on the session's ZenML store, and a deployment of the
smoke model on loopback. Run alone, it comes after the pipeline tests, whose first run must be the store's first
use; under xdist it runs with the other deployment files on a store of their own (tests/conftest.py)."""

import time
from pathlib import Path

import pytest

from tests.test_monitoring import ACTS, DAY, record
from tests.test_serve_deployment import _cli, deploy, trained  # noqa: F401 (fixture: the smoke model, trained once)
from tuneline.config import DataConfig


@pytest.mark.slow  # a real pipeline or deployment
def test_monitor_pipeline_says_drift_naming_the_act_and_logs_its_figures(tmp_path, monkeypatch):
    import mlflow
    from mlflow.tracking import MlflowClient
    from zenml.client import Client

    from runner.first_use import set_up
    from runner.monitor import launch_monitor, retrain
    from tuneline.config import parse_config
    from tuneline.registry.tracking import metric_key

    monkeypatch.chdir(tmp_path)
    set_up()
    uri = Client().active_stack.experiment_tracker.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    end = int(time.time() * 1000)
    for i in range(40):
        record("monitored", [f"Game {i} is fun."], [ACTS[i % 4]], end - 2 * DAY + i * 60_000)
        record("monitored", [f"Game {i} is great."], ["request" if i % 8 else "inform"], end - DAY + i * 60_000)
    config = parse_config({"monitoring": {"min_requests": 30, "retrain": True}})
    report = launch_monitor(config, {"model": {"name": "monitored"}}, since="1d", end_ms=end)
    assert (report.verdict, report.current.answers, report.previous.answers) == ("drift", 40, 40)
    assert report.reasons[0].startswith("act: PSI") and "previous window" in report.reasons[0]
    assert retrain(config, {"model": {"name": "monitored"}}, report) is None  # no corrections to learn from
    run = MlflowClient(uri).search_runs([MlflowClient(uri).get_experiment_by_name("monitor").experiment_id])[0]
    assert run.data.metrics[metric_key("monitor", "verdict_code")] == 1.0
    assert run.data.metrics[metric_key("monitor", "answers")] == 40.0


@pytest.mark.slow  # a real pipeline or deployment
def test_corrections_reach_the_next_finetune_runs_raw_data_with_their_lineage(tmp_path, monkeypatch):
    import mlflow
    from zenml import Model, pipeline
    from zenml.client import Client

    from runner.first_use import set_up
    from steps import load_data
    from tuneline.data.feedback import FEEDBACK
    from tuneline.serve.recording import log_correction

    @pipeline(model=Model(name="learned"))
    def load_only(data: DataConfig) -> None:
        load_data(data)

    monkeypatch.chdir(tmp_path)
    set_up()
    mlflow.set_tracking_uri(Client().active_stack.experiment_tracker.get_tracking_uri())
    trace = record("learned", ["Doom is a great shooter."], ["inform"], int(time.time() * 1000) - 1000)
    log_correction(trace, "give_opinion(name[Doom], rating[excellent])", "viggo")
    run = load_only(DataConfig(source="synthetic:viggo"))
    step = Client().get_pipeline_run(run.id).steps["load_data"]
    raw = step.outputs["raw_data"][0]
    rows = raw.load().splits[FEEDBACK]
    assert [(r["messages"][-2]["content"], r["messages"][-1]["content"]) for r in rows] == [
        ("Doom is a great shooter.", "give_opinion(name[Doom], rating[excellent])")
    ]
    lineage = step.run_metadata["raw_data"]["feedback"]
    assert (lineage["experiment"], lineage["rows"], lineage["corrections"]) == ("learned-requests", 1, 1)
    assert step.run_metadata["raw_data"]["rows"][FEEDBACK] == 1


@pytest.mark.slow  # a real pipeline or deployment
def test_monitor_is_registered_on_a_schedule_like_finetune(monkeypatch):
    """Only the orchestrator's capability is mocked, as in test_remote.py's finetune schedule test."""
    from zenml.client import Client
    from zenml.orchestrators.local.local_orchestrator import LocalOrchestrator, LocalOrchestratorConfig

    from runner.first_use import set_up
    from runner.monitor import schedule
    from runner.schedule import describe
    from tuneline.config import parse_config

    set_up()
    submitted = []
    monkeypatch.setattr(LocalOrchestratorConfig, "is_schedulable", property(lambda self: True))
    monkeypatch.setattr(LocalOrchestrator, "submit_pipeline", lambda self, snapshot, **kw: submitted.append(snapshot))
    registered = schedule(parse_config({}), {"model": {"name": "watched"}}, "0 * * * *", since="1h")
    assert registered.name.startswith("watched-monitor-") and registered.cron_expression == "0 * * * *"
    assert Client().get_pipeline(registered.pipeline_id).name == "monitor"
    assert [s.schedule.id for s in submitted] == [registered.id]
    assert "the monitor pipeline runs at cron '0 * * * *'" in describe(registered, "monitor")
    Client().delete_schedule(registered.id)


def _served_traces(experiment: str) -> list:
    import mlflow
    from zenml.client import Client

    mlflow.set_tracking_uri(Client().active_stack.experiment_tracker.get_tracking_uri())
    found = mlflow.get_experiment_by_name(experiment)
    return mlflow.search_traces(locations=[found.experiment_id], return_type="list") if found else []


@pytest.mark.slow  # a real pipeline or deployment
def test_each_request_is_a_trace_and_feedback_is_parser_checked(trained):
    from tests.test_serve_deployment import _cli, call, deploy, texts

    url = deploy("--model-version", str(trained["model_version"]))
    try:
        replies = [call(url, texts([f"I think Game {i} is a good game."])) for i in range(3)]
        assert all(status == 200 for status, _ in replies), replies
        ids = [out["outputs"]["extractions"]["trace_id"] for _, out in replies]
        deadline = time.time() + 30
        # The server exports its traces in the background, spans first and the trace's tags after them; earlier
        # tests' requests may already be there.
        while True:
            traces = _served_traces("tuneline-smoke-requests")
            tagged = {t.info.trace_id for t in traces if "tuneline.version" in t.info.tags}
            if set(ids) <= tagged or time.time() > deadline:
                break
            time.sleep(1)
        assert tagged >= set(ids)
        trace = next(t for t in traces if t.info.trace_id == ids[0])
        assert trace.info.tags["tuneline.version"] == str(trained["model_version"])
        [result] = next(s for s in trace.data.spans if s.parent_id is None).outputs["results"]
        assert 0 <= result["confidence"] <= 1 and "needs_review" in result
        status, reply = call(url, {"trace_id": ids[0], "answer": "not an MR"}, path="/feedback")
        assert status == 422 and "does not parse as a meaning representation" in reply["detail"], reply
        assert call(url, {"trace_id": "tr-0", "answer": "inform(name[X])"}, path="/feedback")[0] == 404
        status, reply = call(
            url, {"trace_id": ids[0], "answer": "give_opinion(name[Game 0], rating[good])"}, path="/feedback"
        )
        assert status == 200 and reply["assessment_id"], reply
    finally:
        _cli("serve", "--config", "configs/smoke.yaml", "--stop")


@pytest.mark.slow  # a real pipeline or deployment
def test_a_redacted_deployment_stores_no_request_text(trained):
    from zenml.client import Client

    from tests.test_serve_deployment import _cli, call, deploy, texts

    url = deploy("--model-version", str(trained["model_version"]), "--set", "serving.record=redacted")
    try:
        status, out = call(url, texts(["Zyxwvut Quokkaland is a poor game."]))
        assert status == 200, out
        trace_id = out["outputs"]["extractions"]["trace_id"]
        status, reply = call(
            url, {"trace_id": trace_id, "answer": "give_opinion(name[Zyxwvut], rating[poor])"}, path="/feedback"
        )
        assert status == 200, reply
    finally:
        _cli("serve", "--config", "configs/smoke.yaml", "--stop")
    import mlflow

    uri = Client().active_stack.experiment_tracker.get_tracking_uri()
    store = Path(uri.removeprefix("sqlite:///")).parent
    assert any(t.info.trace_id == trace_id for t in _served_traces("tuneline-smoke-requests"))
    location = mlflow.get_experiment_by_name("tuneline-smoke-requests").artifact_location
    assert location.startswith(f"file:{store}"), location  # the trace files too, not the server's ./mlruns
    files = [p for p in store.rglob("*") if p.is_file()]
    assert files and not [p for p in files if b"Zyxwvut" in p.read_bytes() or b"Quokkaland" in p.read_bytes()]


@pytest.mark.slow  # a real pipeline or deployment
def test_a_shadow_deployment_records_the_candidates_answer_on_the_requests_trace(trained):
    """Production and shadow are the same version, so the shadow's answer (recorded after the response, by its own
    copy of the model, unbatched) must equal the one the request got."""
    from tests.test_serve_deployment import _cli, call, deploy, served_record, texts

    version = str(trained["model_version"])
    url = deploy("--model-version", version, "--shadow", version)
    try:
        since_ms = int(time.time() * 1000) - 1000
        status, out = call(url, texts(["I think Game 7 is a good game."]))
        assert status == 200, out
        answered = out["outputs"]["extractions"]
        # The shadow answers after production's trace is exported.
        record = served_record(trained["model_name"], answered["trace_id"], since_ms, lambda r: r["shadow"])
        assert record, "the request was never recorded"
        assert record["version"] == record["shadow"]["version"] == version, record
        assert record["shadow"]["answer"] == record["answer"] == answered["results"][0]["answer"]
        assert record["shadow"]["confidence"] == pytest.approx(answered["results"][0]["confidence"])
    finally:
        _cli("serve", "--config", "configs/smoke.yaml", "--stop")
