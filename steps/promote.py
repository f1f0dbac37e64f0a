import logging
import os
import signal
import time
from pathlib import Path
from typing import Annotated, Optional, Tuple

from zenml import get_step_context, log_metadata, step
from zenml.client import Client
from zenml.models import ModelVersionResponse
from zenml.types import HTMLString

from materializers.integrity import damage
from tuneline import tracking
from tuneline.artifacts import ChatDataset
from tuneline.config import EvaluationConfig, ModelConfig, PromotionConfig
from tuneline.evaluation import EvalResult, evaluate_model, select_test
from tuneline.file_lock import file_lock
from tuneline.grammar import evaluation_grammar
from tuneline.modeling import resolve_base_model
from tuneline.promotion import PromotionDecision, decide, lineage_conflict
from tuneline.report import comparison_html

log = logging.getLogger(__name__)

# Tests only: sleep this many seconds after reading the current production version, so two runs started together
# would both be inside promote at once without the lock (tests/test_promotion_faults.py).
PAUSE_ENV = "TUNELINE_TEST_PAUSE_PROMOTE"
# Tests only: SIGKILL this process right after the stage moves, before the MLflow alias follows, as a killed run
# would be; the next promotion of the model must repair it (tests/test_promotion_faults.py).
KILL_ENV = "TUNELINE_TEST_KILL_AFTER_STAGE"


def _current(model_name: str, stage: str) -> Optional[ModelVersionResponse]:
    try:
        return Client().get_model_version(model_name, stage)
    except KeyError:
        return None


def _production_result(version: ModelVersionResponse, tuned: EvalResult, dataset: ChatDataset,
                       evaluation: EvaluationConfig, model: ModelConfig) -> EvalResult:
    """Its stored predictions when they are intact and cover the same test examples; otherwise score its adapter
    now."""
    stored = version.get_artifact("eval_tuned")
    if stored is not None and (problem := damage(stored)):
        log.warning("scoring production version %s again: %s", version.name, problem)
    elif stored is not None:
        result = stored.load()
        if result.test_set_hash == tuned.test_set_hash:
            return result
    adapter_artifact = version.get_artifact("lora_adapter")
    if problem := damage(adapter_artifact):
        raise RuntimeError(f"cannot compare with production version {version.name}: {problem}; restore its files "
                           "from a backup, or archive that version (`zenml model version update "
                           f"{version.model.name} {version.name} --stage archived`) to compare with the base model")
    adapter = adapter_artifact.load()
    return evaluate_model(
        f"production v{version.name}", tuned.task, resolve_base_model(adapter.base_model),
        select_test(dataset.splits["test"], evaluation), evaluation, adapter_dir=Path(adapter.path), dtype=model.dtype,
        device=model.device, grammar=evaluation_grammar(evaluation.constrained, tuned.task, dataset.splits["train"]),
    )


def _stronger_baseline(base: EvalResult, prompted: Optional[EvalResult], metric: str,
                       evaluation: EvaluationConfig) -> tuple[EvalResult, str]:
    """With nothing in production, fine-tuning must beat both not tuning and simply prompting the same model."""
    if prompted is not None and prompted.metrics.get(metric, 0.0) > base.metrics.get(metric, 0.0):
        return prompted, f"prompted base model ({evaluation.prompted_baseline.shots}-shot)"
    return base, "base model"


def _train_mlflow_run(context) -> Optional[str]:
    """The train step's MLflow run; a cached train step records none itself, its original run does."""
    step = context.pipeline_run.steps["train_lora"]
    run_id = step.run_metadata.get("mlflow_run_id")
    if run_id is None and step.original_step_run_id:
        run_id = Client().get_run_step(step.original_step_run_id).run_metadata.get("mlflow_run_id")
    return run_id


def _promotion_lock(model_name: str) -> Path:
    """Beside the ZenML store, so every run on this machine's store takes the same lock. (With a remote ZenML
    server, runs on several machines would need a lock the server holds; ZenML has none.)"""
    from zenml.utils.io_utils import get_global_config_directory

    return Path(get_global_config_directory()) / f"tuneline-promote-{model_name}.lock"


def _pending(decision: PromotionDecision) -> dict:
    """ZenML merges a dict logged twice under one key, so the later write only overrides these two."""
    return decision.model_dump(mode="json") | {"promote": False, "stage_moved": False}


def _repair_registry(model_name: str, stage: str, current: Optional[ModelVersionResponse]) -> None:
    """Make MLflow's registry agree with ZenML's stage before deciding: the version in the stage gets its registry
    entry (a version promoted by an older tuneline may lack it) and the alias points at it, or nowhere; a version
    whose promotion was killed after its stage moved gets the decision it was promoted by."""
    recorded = current.run_metadata.get("promotion") if current is not None else None
    if isinstance(recorded, dict) and recorded.get("stage_moved") is False:
        log_metadata(metadata={"promotion": recorded | {"promote": True, "stage_moved": True}},
                     model_name=model_name, model_version=str(current.number))
        log.warning("repaired a promotion that was interrupted: version %s's decision now says it was promoted",
                    current.name)
    if current is not None and (run_id := current.run_metadata.get("mlflow_run_id")):
        tracking.mirror_registry(model_name, str(current.number), run_id)
    if repaired := tracking.sync_alias(model_name, stage, str(current.number) if current else None):
        log.warning("repaired a promotion that was interrupted: %s", repaired)


def _check_lineage(version, current: ModelVersionResponse, stage: str) -> None:
    """`run.py` refuses such a run before training; a scheduled run skips `run.py`, so promote checks again."""
    mine = Client().get_model_version(version.name, version.number).run_metadata.get("raw_data") or {}
    if problem := lineage_conflict(f"model '{version.name}' {stage} version {current.name}",
                                   current.run_metadata.get("raw_data") or {}, mine.get("source"), mine.get("task")):
        raise ValueError(problem)


@step(enable_cache=False, experiment_tracker=True)
def promote(
    base: EvalResult, tuned: EvalResult, dataset: ChatDataset, model: ModelConfig, evaluation: EvaluationConfig,
    promotion: PromotionConfig, prompted: Optional[EvalResult] = None,
) -> Tuple[Annotated[PromotionDecision, "promotion_decision"], Annotated[HTMLString, "eval_report"]]:
    """Never cached: whether to promote depends on the registry's state now, not on the inputs alone.

    One promotion of a model at a time, each against the version in the stage when it holds the lock. The
    decision, metrics and MLflow registry entry are written before the stage moves, and the MLflow alias is moved
    to ZenML's stage first thing, so a kill at any point leaves the two agreeing after the next run."""
    if any(r.test_set_hash != tuned.test_set_hash for r in (base, prompted) if r is not None):
        raise ValueError("base and tuned models were scored on different test examples")
    tracking.log_sections(promotion=promotion)
    context = get_step_context()
    version = context.model
    train_run = _train_mlflow_run(context)
    with file_lock(_promotion_lock(version.name)):
        current = _current(version.name, promotion.target_stage)
        time.sleep(float(os.environ.get(PAUSE_ENV, 0)))
        _repair_registry(version.name, promotion.target_stage, current)
        if current is not None:
            _check_lineage(version, current, promotion.target_stage)
            reference = _production_result(current, tuned, dataset, evaluation, model)
            label = f"{promotion.target_stage} version {current.name}"
        else:
            reference, label = _stronger_baseline(base, prompted, promotion.primary_metric, evaluation)
        decision = decide(promotion, tuned.predictions, reference.predictions, label,
                          production_version=current.name if current else None)
        report = comparison_html(base, tuned, decision, prompted=prompted)
        # Logged here, not in evaluate: this step never caches, so every model version gets its metrics.
        # Until the stage has moved, the recorded decision says so: a kill in between leaves no version whose
        # metadata claims a promotion that never happened (the next promotion completes the record).
        log_metadata(
            metadata={"base": base.metrics, "tuned": tuned.metrics, "test_set_hash": tuned.test_set_hash,
                      **({"prompted": prompted.metrics} if prompted else {}),
                      "promotion": _pending(decision) if decision.promote else decision.model_dump(mode="json"),
                      **({"mlflow_run_id": train_run} if train_run else {})},
            infer_model=True,
        )
        tracking.log_metrics({"promoted": float(decision.promote), "ci_low": decision.ci_low,
                              "ci_high": decision.ci_high, "difference": decision.difference}, prefix="promotion.")
        tracking.log_text(decision.model_dump_json(indent=2), "promotion/decision.json")
        tracking.log_text(report, "eval/comparison_report.html")
        if train_run:
            tracking.mirror_registry(version.name, str(version.number), train_run)
        if decision.promote:
            version.set_stage(promotion.target_stage, force=True)
            log_metadata(metadata={"promotion": decision.model_dump(mode="json") | {"stage_moved": True}},
                         infer_model=True)
            if os.environ.get(KILL_ENV):
                os.kill(os.getpid(), signal.SIGKILL)
            tracking.sync_alias(version.name, promotion.target_stage, str(version.number))
    return decision, HTMLString(report)
