"""`run.py review export|import`: the review sheet for a model version, and its scores back into ZenML and MLflow."""

from __future__ import annotations

from pathlib import Path

from zenml import log_metadata
from zenml.client import Client

from tuneline.evaluate.review import ReviewError, least_confident_rows, read_scores, sample_rows, write_sheet


def _version(model_name: str, version: str):
    try:
        return Client().get_model_version(model_name, version)
    except KeyError:
        raise ReviewError(f"model '{model_name}' has no version '{version}'") from None


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
