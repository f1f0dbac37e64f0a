"""MLflow logging that is a no-op without an active run, so core code runs the same inside and outside ZenML."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any


def _run():
    import mlflow

    return mlflow.active_run()


def log_params(params: dict[str, Any]) -> None:
    if _run():
        import mlflow

        mlflow.log_params({k: json.dumps(v) if isinstance(v, (list, dict)) else v for k, v in params.items()})


def log_sections(**sections) -> None:
    """Each step logs the config sections it received; together the steps log the whole flattened config."""
    from tuneline.config import flatten

    for name, section in sections.items():
        log_params({f"{name}.{k}": v for k, v in flatten(section).items()})


def log_metrics(metrics: dict[str, float], step: int | None = None, prefix: str = "") -> None:
    if _run():
        import mlflow

        mlflow.log_metrics({f"{prefix}{k}": float(v) for k, v in metrics.items()}, step=step)


def log_dir(path: Path | str, artifact_path: str) -> None:
    if _run():
        import mlflow

        mlflow.log_artifacts(str(path), artifact_path=artifact_path)


def log_text(text: str, artifact_file: str) -> None:
    if _run():
        import mlflow

        mlflow.log_text(text, artifact_file)


def log_loss_curve(history: list[dict], artifact_file: str = "training/loss_curve.png") -> None:
    """A picture of the loss per logging step, next to the per-step `train.loss` metric."""
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
        client.create_model_version(model_name, source=f"runs:/{run_id}/adapter", run_id=run_id,
                                    tags={"zenml_version": zenml_version})
