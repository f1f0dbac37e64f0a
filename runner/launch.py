"""Run a pipeline on the active (or freshly registered local) stack and collect what it produced."""

from __future__ import annotations

import logging
import tempfile

import yaml
from zenml.client import Client
from zenml.config.schedule import Schedule
from zenml.enums import ExecutionStatus

import materializers  # noqa: F401  (register before the run)
from pipelines import evaluate_version, export_version, finetune, prepare_data
from runner import interrupt, orphans
from runner.cache_guard import expire_damaged_cache
from runner.failures import cause_in_text, root_cause
from runner.first_use import set_up
from runner.summary import RunSummary
from runner.versions import adapter_of, model_name_of, with_model_name
from steps.registry import lineage_problem
from tuneline.config import ModelConfig, TunelineConfig
from tuneline.evaluate.evaluation import EvalResult
from tuneline.models.modeling import DeviceError, pick_device
from tuneline.data.validation import DataReport

log = logging.getLogger(__name__)


class PipelineFailed(RuntimeError):
    """A step failed; the message is the step's own error (file, line, field), not ZenML's wrapper."""


class RefusedAtStart(ValueError):
    """What would fail a step later, found before the first step runs (exit 2, not a training lost)."""


class LineageConflict(RefusedAtStart):
    """The config would add a version to a model whose versions learned another task or data source."""


def _check_placement(model: ModelConfig | None) -> None:
    """Steps run in this process unless a step operator or a remote orchestrator takes them elsewhere: then
    `model.device` must be satisfiable here, or the first generating step would fail after training."""
    stack = Client().active_stack
    if model is None or stack.orchestrator.flavor != "local" or stack.step_operator is not None:
        return
    try:
        pick_device(model.device)
    except DeviceError as err:
        raise RefusedAtStart(str(err)) from None


def _run(pipeline, zenml_config: dict, enable_cache: bool, params: dict, schedule: Schedule | None = None):
    stack = set_up()
    local = Client().active_stack.orchestrator.flavor == "local"
    if not schedule:
        _check_placement(params.get("model"))
    if local:
        orphans.sweep()  # runs left `running` by a killed process would stay so forever
    if enable_cache:
        expire_damaged_cache()  # a reused output whose files were damaged would fail late, or worse, load wrong
    log.info("running pipeline '%s' on stack '%s'", pipeline.name, stack)
    with tempfile.NamedTemporaryFile("w", suffix=".yaml") as fh:
        yaml.safe_dump(zenml_config, fh)  # everything but `parameters`, which we pass as validated objects
        fh.flush()
        options = {"config_path": fh.name} | ({} if enable_cache else {"enable_cache": False})
        token = None
        if schedule:
            options["schedule"] = schedule
        else:
            options["run_name"] = interrupt.starting(pipeline.name, zenml_config.get("run_name"))
            token = interrupt.token()
            if local:
                orphans.hold(token)
        try:
            result = pipeline.with_options(**options)(**params)
        except RuntimeError as err:
            interrupt.check()  # a step that took the signal in ZenML's own handler fails with ZenML's exception
            raise PipelineFailed(_failure_message(pipeline.name, token, err)) from None
        finally:
            orphans.release(token)  # interrupted, the run is marked failed by the supervising process
        interrupt.check()
        return result


def _failure_message(pipeline_name: str, token: str | None, err: Exception) -> str:
    """This process's run's failed steps (another run of the pipeline may have started since)."""
    try:
        client = Client()
        mine = client.list_pipeline_runs(name=f"contains:{token}", size=1).items if token else []
        last = mine[0] if mine else client.get_pipeline(pipeline_name).last_run
    except Exception:  # the store itself may be what failed (full, read-only): say the root cause
        return root_cause(err) or str(err)
    failed = [s for s in last.steps.values() if s.status == ExecutionStatus.FAILED]
    if not failed:
        return root_cause(err) or str(err)
    return "\n".join(f"step '{s.name}' failed in run {last.name}: {_step_error(s, err)}" for s in failed)


def _step_error(step, err: Exception) -> str:
    message = step.exception_info.message if step.exception_info else ""
    return cause_in_text(message) or message or root_cause(err) or str(err)


def check_lineage(model_name: str, config: TunelineConfig) -> None:
    """Before any training is paid for: promotion compares a new version with the one in the target stage, so
    both must have learned the same task from the same source."""
    set_up()
    if problem := lineage_problem(model_name, config.promotion.target_stage, config.data.source, config.data.task):
        raise LineageConflict(problem)


def finetune_params(config: TunelineConfig) -> dict:
    """The finetune pipeline's parameters: one per config section, so each step's cache key holds only the
    sections it reads (`monitoring` is the monitor pipeline's, `tuning` the tune pipeline's)."""
    return {name: getattr(config, name) for name in TunelineConfig.model_fields if name not in ("monitoring", "tuning")}


def launch(
    config: TunelineConfig,
    zenml_config: dict,
    enable_cache: bool = True,
    resume: bool = False,
    schedule: Schedule | None = None,
) -> RunSummary | None:
    """Run the finetune pipeline now and collect its summary; with `schedule`, only register it (None)."""
    zenml_config = with_model_name(config, zenml_config)
    check_lineage(zenml_config["model"]["name"], config)
    params = finetune_params(config) | {"resume": resume}
    run = _run(finetune, zenml_config, enable_cache, params, schedule)
    return None if schedule else collect(run.id)


def launch_prepare(
    config: TunelineConfig, zenml_config: dict, enable_cache: bool = True
) -> tuple[DataReport, str | None, str]:
    """Only the data steps; no model version is created. Returns the report, the gate's message if it failed, and
    where the quarantined rows are."""
    zenml_config = {k: v for k, v in zenml_config.items() if k != "model"}
    error, started = None, None
    try:
        started = _run(prepare_data, zenml_config, enable_cache, {"data": config.data, "model": config.model})
    except PipelineFailed as err:
        error = str(err)
    # This run, not the pipeline's last one: another run of it may have started since.
    client = Client()
    run = client.get_pipeline_run(started.id) if started else client.get_pipeline(prepare_data.name).last_run
    step = run.steps.get("prepare_dataset")
    if step is None or step.status not in (ExecutionStatus.COMPLETED, ExecutionStatus.CACHED):
        raise PipelineFailed(error or "prepare_dataset did not run")
    quarantine = step.outputs["quarantine"][0]
    where = f"artifact 'quarantine' version {quarantine.version} at {quarantine.uri}"
    return step.outputs["data_report"][0].load(), error, where


def launch_evaluate(config: TunelineConfig, zenml_config: dict, version: str, enable_cache: bool = True) -> EvalResult:
    """Score model version `version` (number, name, stage, or 'base') of the config's model on today's test set."""
    model_name = model_name_of(config, zenml_config)
    zenml_config = {k: v for k, v in zenml_config.items() if k != "model"}
    label, adapter_id = "base", None
    if version != "base":
        name, adapter_id = adapter_of(model_name, version)
        label = f"v{name}"
    params = {
        "data": config.data,
        "model": config.model,
        "evaluation": config.evaluation,
        "label": label,
        "adapter_id": adapter_id,
    }
    run = _run(evaluate_version, zenml_config, enable_cache, params)
    step = Client().get_pipeline_run(run.id).steps["evaluate"]
    return next(iter(step.outputs.values()))[0].load()


def launch_export(config: TunelineConfig, zenml_config: dict, version: str, enable_cache: bool = True):
    """Merge version `version`'s adapter into its base model; returns the `merged_model` artifact version."""
    model_name = model_name_of(config, zenml_config)
    name, adapter_id = adapter_of(model_name, version)
    zenml_config = {k: v for k, v in zenml_config.items() if k != "model"}
    params = {"model": config.model, "adapter_id": adapter_id, "source": f"{model_name} version {name}"}
    run = _run(export_version, zenml_config, enable_cache, params)
    return Client().get_pipeline_run(run.id).steps["export_model"].outputs["merged_model"][0]


def collect(run_id) -> RunSummary:
    client = Client()
    run = client.get_pipeline_run(run_id)

    def load(step: str, name: str):
        return run.steps[step].outputs[name][0].load()

    decision = load("promote", "promotion_decision")
    base, tuned = load("evaluate_base", "eval_base"), load("evaluate_tuned", "eval_tuned")
    prompted = load("evaluate_prompted", "eval_prompted") if "evaluate_prompted" in run.steps else None
    report = load("prepare_dataset", "data_report")
    version = client.get_model_version(run.model_version.model.name, run.model_version.number)
    tracker = client.active_stack.experiment_tracker
    return RunSummary(
        zenml_run_id=str(run.id),
        zenml_run_name=run.name,
        status=str(run.status.value),
        model_name=version.model.name,
        model_version=version.name,
        model_version_number=version.number,
        stage=version.stage,
        mlflow_run_id=version.run_metadata.get("mlflow_run_id"),  # promote finds it, also for a cached train step
        mlflow_tracking_uri=tracker.get_tracking_uri() if tracker else None,
        base_metrics=base.metrics,
        tuned_metrics=tuned.metrics,
        prompted_metrics=prompted.metrics if prompted else None,
        n_test_examples=tuned.n_examples,
        promoted=decision.promote,
        promotion_reason=decision.reason,
        primary_metric=decision.metric,
        data={split: counts.model_dump() for split, counts in report.splits.items()},
        quarantined=report.reason_totals(),
    )
