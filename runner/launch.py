"""Run the finetune pipeline on the active (or freshly registered local) stack and collect what it produced."""

from __future__ import annotations

import logging
import tempfile

import yaml
from zenml.client import Client
from zenml.enums import ExecutionStatus

import materializers  # noqa: F401  (register before the run)
from pipelines import finetune
from runner.stack import ensure_tracking_stack
from runner.summary import RunSummary
from tuneline.config import TunelineConfig

log = logging.getLogger(__name__)


def launch(config: TunelineConfig, zenml_config: dict, enable_cache: bool = True) -> RunSummary:
    stack = ensure_tracking_stack()
    zenml_config = dict(zenml_config)
    zenml_config.setdefault("model", {"name": f"tuneline-{config.data.task}"})
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as fh:
        yaml.safe_dump(zenml_config, fh)  # everything but `parameters`, which we pass as validated objects
    options = {"config_path": fh.name}
    if not enable_cache:
        options["enable_cache"] = False
    log.info("running pipeline 'finetune' on stack '%s' (model '%s')", stack, zenml_config["model"]["name"])
    try:
        run = finetune.with_options(**options)(**{name: getattr(config, name) for name in TunelineConfig.model_fields})
    except RuntimeError as err:
        raise PipelineFailed(_failure_message(err)) from None
    return collect(run.id)


class PipelineFailed(RuntimeError):
    """A step failed; the message is the step's own error (file, line, field), not ZenML's wrapper."""


def _failure_message(err: Exception) -> str:
    last = Client().get_pipeline("finetune").last_run
    failed = [s for s in last.steps.values() if s.status == ExecutionStatus.FAILED]
    if not failed:
        return str(err)
    return "\n".join(
        f"step '{s.name}' failed in run {last.name}: {s.exception_info.message if s.exception_info else err}"
        for s in failed
    )


def collect(run_id) -> RunSummary:
    client = Client()
    run = client.get_pipeline_run(run_id)

    def load(step: str, name: str):
        return run.steps[step].outputs[name][0].load()

    decision = load("promote", "promotion_decision")
    base, tuned = load("evaluate_base", "eval_base"), load("evaluate_tuned", "eval_tuned")
    version = client.get_model_version(run.model_version.model.name, run.model_version.number)
    train_meta = run.steps["train_lora"].run_metadata
    tracker = client.active_stack.experiment_tracker
    return RunSummary(
        zenml_run_id=str(run.id),
        zenml_run_name=run.name,
        status=str(run.status.value),
        model_name=version.model.name,
        model_version=version.name,
        model_version_number=version.number,
        stage=version.stage,
        mlflow_run_id=train_meta.get("mlflow_run_id"),
        mlflow_tracking_uri=tracker.get_tracking_uri() if tracker else None,
        base_metrics=base.metrics,
        tuned_metrics=tuned.metrics,
        n_test_examples=tuned.n_examples,
        promoted=decision.promote,
        promotion_reason=decision.reason,
        primary_metric=decision.metric,
    )
