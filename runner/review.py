"""`run.py review export|import`: the review sheet for a model version (its test examples, or with `--from-serving`
the requests it served), and its scores or corrections back into ZenML and MLflow."""

from __future__ import annotations

import time
from pathlib import Path

from zenml import log_metadata
from zenml.client import Client

from tuneline.evaluate.review import (
    SERVED,
    ReviewError,
    least_confident_rows,
    read_corrections,
    read_scores,
    sample_rows,
    served_model,
    served_rows,
    write_sheet,
)


def _version(model_name: str, version: str):
    try:
        return Client().get_model_version(model_name, version)
    except KeyError:
        raise ReviewError(f"model '{model_name}' has no version '{version}'") from None


def _requests_store() -> None:
    """MLflow pointed at the stack's tracking store, where the deployment records its requests."""
    tracker = Client().active_stack.experiment_tracker
    if tracker is None or not hasattr(tracker, "configure_mlflow"):
        raise ReviewError("the active stack has no MLflow experiment tracker: no served request is recorded")
    tracker.configure_mlflow()


def export(
    model_name: str, version: str, n: int, seed: int, out_dir: Path, lowest_confidence: int | None = None
) -> tuple[Path, Path]:
    """`n` sampled test examples, or with `lowest_confidence` that many of the least confident ones."""
    mv = _version(model_name, version)
    artifact = mv.get_artifact("eval_tuned")
    if artifact is None:
        raise ReviewError(f"model '{model_name}' version {mv.name} has no 'eval_tuned' predictions to review")
    predictions = artifact.load().predictions
    if lowest_confidence is not None:
        rows = least_confident_rows(predictions, lowest_confidence, model_name, mv.name)
        return write_sheet(rows, out_dir, f"review-{model_name}-v{mv.name}-least-confident")
    rows = sample_rows(predictions, n, seed, model_name, mv.name)
    return write_sheet(rows, out_dir, f"review-{model_name}-v{mv.name}")


def export_served(model_name: str, version: str, n: int, since: str, out_dir: Path) -> tuple[Path, Path]:
    """The `n` requests the version answered in the last `since` that it was least sure of and nobody corrected."""
    from tuneline.serve.monitoring import window_ms
    from tuneline.serve.recording import Window, read_requests

    mv = _version(model_name, version)
    _requests_store()
    end = int(time.time() * 1000) + 1
    records = [r for r in read_requests(model_name, Window(end - window_ms(since), end)) if r["version"] == mv.name]
    rows = served_rows(records, n, model_name)
    if not rows:
        raise ReviewError(
            f"model '{model_name}' version {mv.name} answered no request in the last {since} (monitoring.window) "
            "that is recorded in full and not corrected yet"
        )
    return write_sheet(rows, out_dir, f"review-{model_name}-v{mv.name}-served")


def import_sheet(path: Path) -> str:
    """A sheet's scores, or a served-requests sheet's corrections; returns what was imported, in one line."""
    model_name = served_model(path)
    if model_name is None:
        model_name, version, means, n = import_scores(path)
        scores = ", ".join(f"{k} {v:.2f}" for k, v in means.items())
        return f"imported {n} reviewed rows for {model_name} version {version}: {scores}"
    n = import_corrections(path, model_name)
    return (
        f"stored {n} corrections on {model_name}'s recorded requests (MLflow experiment {model_name}-requests); "
        "the next finetune run learns from them"
    )


def import_corrections(path: Path, model_name: str) -> int:
    """Each correction on its request's trace through `recording.log_correction`, as `POST /feedback` stores
    them; a version's task is the one its data was read as (its `raw_data` metadata)."""
    from tuneline.serve.recording import CorrectionError, log_correction

    def task_of(version: str) -> str:
        task = (_version(model_name, version).run_metadata.get("raw_data") or {}).get("task")
        if task is None:
            raise ReviewError(f"model '{model_name}' version {version} recorded no task (its raw_data metadata)")
        return task

    corrections = read_corrections(path, task_of)
    _requests_store()
    for done, c in enumerate(corrections):
        try:
            log_correction(c.trace_id, c.answer, c.task, c.index, source=f"review:{path.name}")
        except CorrectionError as err:  # the trace is gone, or has no such text
            raise ReviewError(f"{path}: {SERVED}{c.trace_id}/{c.index}: {err} ({done} rows before it stored)") from None
    return len(corrections)


def import_scores(path: Path) -> tuple[str, str, dict[str, float], int]:
    model_name, version, means, n = read_scores(path)
    mv = _version(model_name, version)
    log_metadata(metadata={"human_review": {**means, "rows": n}}, model_version_id=mv.id)
    run_id = mv.run_metadata.get("mlflow_run_id")
    tracker = Client().active_stack.experiment_tracker
    if run_id and tracker:
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri=tracker.get_tracking_uri())
        for key, value in means.items():
            client.log_metric(run_id, f"review.{key}", value)
        client.log_metric(run_id, "review.rows", n)
    return model_name, mv.name, means, n
