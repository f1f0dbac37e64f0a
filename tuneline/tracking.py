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
