"""MLflow logging that is a no-op without an active run, so core code runs the same inside and outside ZenML."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tuneline.train.train_job import TrainResult


# The experiment's kind in MLflow 3: model training (runs and their charts), not a GenAI app (a traces dashboard,
# runs as "Evaluation runs"). The value is the one MLflow's UI writes when a user picks "Machine learning".
EXPERIMENT_KIND_TAG, EXPERIMENT_KIND = "mlflow.experimentKind", "custom_model_development"
_marked: set[tuple[str, str]] = set()


def _run():
    """The active MLflow run or None; its experiment is marked as model training on first use."""
    import mlflow

    run = mlflow.active_run()
    if run is not None:
        _mark_experiment_kind(run.info.experiment_id)
    return run


def _mark_experiment_kind(experiment_id: str) -> None:
    """Tag the experiment as model training, once per store and experiment: UIs that read the tag then open it with
    runs and charts. MLflow 3.17's own UI decides by its sidebar switch instead (kept in the browser, GenAI unless
    changed) or the address: `<server>/#/experiments/<id>/runs?workflowType=machine_learning`."""
    import mlflow
    from mlflow.tracking import MlflowClient

    key = (mlflow.get_tracking_uri(), experiment_id)
    if key in _marked:
        return
    client = MlflowClient()
    if client.get_experiment(experiment_id).tags.get(EXPERIMENT_KIND_TAG) != EXPERIMENT_KIND:
        client.set_experiment_tag(experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
    _marked.add(key)


def log_params(params: dict[str, Any]) -> None:
    if _run():
        import mlflow

        mlflow.log_params({k: json.dumps(v) if isinstance(v, (list, dict)) else v for k, v in params.items()})


def log_sections(**sections) -> None:
    """Each step logs the config sections it received; together the steps log the whole flattened config."""
    from tuneline.config import as_params

    for name, section in sections.items():
        log_params({f"{name}.{k}": v for k, v in as_params(section).items()})


# MLflow's chart view puts a run's charts in sections named by what comes before a key's last '/', the sections in
# alphabetical order and keys without a '/' last, under "Model metrics" (mlflow/server/js, RunsChartsCardConfig
# .getBaseChartAndSectionConfigs and .extractChartSectionName). Numbering the sections puts the training curves
# first and the tuned model's scores before the baselines', not `base` (all zeros on a new task) before all else.
SECTION_ORDER = ("train", "throughput", "tuned", "base", "prompted", "promotion", "data")


def metric_key(section: str, name: str) -> str:
    """`<n>_<section>/<name>`, n the section's place in SECTION_ORDER; other sections (`v3`, a version scored on
    its own) are `<section>/<name>`, after the numbered ones."""
    section = section.rstrip("./")
    if section in SECTION_ORDER:
        section = f"{SECTION_ORDER.index(section) + 1}_{section}"
    return f"{section}/{name}" if section else name


def log_metrics(metrics: dict[str, float], step: int | None = None, prefix: str = "") -> None:
    """`prefix` names the section (`train` or `train.`), see `metric_key`. Without a step MLflow logs step 0."""
    if metrics and _run():
        import mlflow

        mlflow.log_metrics({metric_key(prefix, k): float(v) for k, v in metrics.items()}, step=step)


def log_training_curves(step: int, values: dict[str, float]) -> None:
    """The training's `on_metrics` hook: what the Trainer logs per step (loss, eval_loss, learning_rate, ...)."""
    log_metrics(values, step=step, prefix="train")


def log_training_result(result: TrainResult) -> None:
    """The run's totals and rates, once, without a step (MLflow draws them as bars, to compare runs). None has a
    curve's name: that would add a point at step 0 to the curve (the last `eval_loss` is the curve's last point)."""
    totals = {"mean_loss": result.train_loss, "resumed_from_step": result.resumed_from_step}
    log_metrics({k: v for k, v in totals.items() if v is not None}, prefix="train")
    log_metrics(
        {
            "rows_per_second": result.rows_per_second,
            "tokens_per_second": result.tokens_per_second,
            "steps_per_second": result.steps_per_second,
            "seconds": result.seconds,
            "rows": result.rows,
            "tokens": result.tokens,
            "steps": result.steps,
        },
        prefix="throughput",
    )


def log_dir(path: Path | str, artifact_path: str) -> None:
    if _run():
        import mlflow

        mlflow.log_artifacts(str(path), artifact_path=artifact_path)


def log_text(text: str, artifact_file: str) -> None:
    if _run():
        import mlflow

        mlflow.log_text(text, artifact_file)


def log_loss_curve(history: list[dict], artifact_file: str = "training/loss_curve.png") -> None:
    """A picture of the loss per logging step, next to the per-step `1_train/loss` metric."""
    if not _run() or not history:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import mlflow

    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot([h["step"] for h in history], [h["loss"] for h in history], marker=".")
    ax.set(xlabel="step", ylabel="train loss (answer tokens)", title="LoRA training loss")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / Path(artifact_file).name
        fig.savefig(out, dpi=100)
        mlflow.log_artifact(str(out), artifact_path=str(Path(artifact_file).parent))
    plt.close(fig)


def _registry_version(client, model_name: str, zenml_version: str):
    """Filtered by the tag we wrote (a number) and then by name in Python: MLflow's filter language has no escape
    for quotes, so a user's model name never goes into a filter string."""
    found = client.search_model_versions(f"tags.zenml_version = '{int(zenml_version)}'")
    return next((v for v in found if v.name == model_name), None)


def sync_alias(model_name: str, alias: str, zenml_version: str | None) -> str | None:
    """Point `alias` at the registry version of ZenML's `zenml_version`, or remove it when no version holds the
    stage (the stage ZenML holds is the truth): a promotion killed between moving the stage and the alias, or a
    stage changed by hand, leaves them apart. Returns what was repaired."""
    if not _run():
        return None
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    try:
        now = client.get_model_version_by_alias(model_name, alias)
    except MlflowException:
        now = None
    if zenml_version is None:
        if now is None:
            return None
        client.delete_registered_model_alias(model_name, alias)
        return f"MLflow alias '{alias}' removed from registry version {now.version}: no ZenML version is in '{alias}'"
    target = _registry_version(client, model_name, zenml_version)
    if target is None or (now is not None and now.version == target.version):
        return None
    client.set_registered_model_alias(model_name, alias, target.version)
    return f"MLflow alias '{alias}' moved to registry version {target.version} (ZenML version {zenml_version})"


def mirror_registry(model_name: str, zenml_version: str, run_id: str) -> None:
    """Register the adapter as a version in MLflow's model registry (once); `sync_alias` then points the stage's
    alias at it when it is promoted, so MLflow users see the same production version as ZenML's Model Control
    Plane."""
    if not _run():
        return
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    try:
        client.create_registered_model(model_name)
    except MlflowException:
        pass  # already registered
    if _registry_version(client, model_name, zenml_version) is None:
        client.create_model_version(
            model_name, source=f"runs:/{run_id}/adapter", run_id=run_id, tags={"zenml_version": zenml_version}
        )
