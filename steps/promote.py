"""The promote step: wiring between the registry (steps/registry.py), scoring (steps/evaluate.py) and the
decision rule (tuneline/registry/promotion.py)."""

import logging
from typing import Annotated, Optional, Tuple

from zenml import get_step_context, log_metadata, step
from zenml.client import Client
from zenml.models import ModelVersionResponse
from zenml.types import HTMLString

from materializers.integrity import damage
from steps import registry
from steps.evaluate import score
from tuneline.registry import tracking
from tuneline.artifacts import ChatDataset
from tuneline.config import EvaluationConfig, ModelConfig, PromotionConfig
from tuneline.evaluate.evaluation import EvalResult, select_test
from tuneline.registry.promotion import PromotionDecision, decide
from tuneline.evaluate.report import comparison_html

log = logging.getLogger(__name__)


def _production_result(
    version: ModelVersionResponse,
    tuned: EvalResult,
    dataset: ChatDataset,
    evaluation: EvaluationConfig,
    model: ModelConfig,
) -> EvalResult:
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
        raise RuntimeError(
            f"cannot compare with production version {version.name}: {problem}; restore its files "
            "from a backup, or archive that version (`zenml model version update "
            f"{version.model.name} {version.name} --stage archived`) to compare with the base model"
        )
    return score(
        f"production v{version.name}",
        tuned.task,
        select_test(dataset.splits["test"], evaluation),
        dataset.splits["train"],
        model,
        evaluation,
        adapter_artifact.load(),
    )


def _stronger_baseline(
    base: EvalResult, prompted: Optional[EvalResult], metric: str, evaluation: EvaluationConfig
) -> tuple[EvalResult, str]:
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


def _reference(version, current, tuned, base, prompted, dataset, model, evaluation, promotion):
    """What the candidate must beat: the version in the stage (same lineage only), else the stronger baseline."""
    if current is None:
        return _stronger_baseline(base, prompted, promotion.primary_metric, evaluation)
    mine = Client().get_model_version(version.name, version.number).run_metadata.get("raw_data") or {}
    if problem := registry.lineage_problem(version.name, promotion.target_stage, mine.get("source"), mine.get("task")):
        raise ValueError(problem)
    return (
        _production_result(current, tuned, dataset, evaluation, model),
        f"{promotion.target_stage} version {current.name}",
    )


def _record(decision: PromotionDecision, base, tuned, prompted, train_run: Optional[str], report: str) -> None:
    """Logged here, not in evaluate: this step never caches, so every model version gets its metrics. Until the
    stage has moved, the recorded decision says so (`registry.pending`)."""
    log_metadata(
        metadata={
            "base": base.metrics,
            "tuned": tuned.metrics,
            "test_set_hash": tuned.test_set_hash,
            **({"prompted": prompted.metrics} if prompted else {}),
            "promotion": registry.pending(decision) if decision.promote else decision.model_dump(mode="json"),
            **({"mlflow_run_id": train_run} if train_run else {}),
        },
        infer_model=True,
    )
    tracking.log_metrics(
        {
            "promoted": float(decision.promote),
            "ci_low": decision.ci_low,
            "ci_high": decision.ci_high,
            "difference": decision.difference,
        },
        prefix="promotion.",
    )
    tracking.log_text(decision.model_dump_json(indent=2), "promotion/decision.json")
    tracking.log_text(report, "eval/comparison_report.html")


@step(enable_cache=False, experiment_tracker=True)
def promote(
    base: EvalResult,
    tuned: EvalResult,
    dataset: ChatDataset,
    model: ModelConfig,
    evaluation: EvaluationConfig,
    promotion: PromotionConfig,
    prompted: Optional[EvalResult] = None,
) -> Tuple[Annotated[PromotionDecision, "promotion_decision"], Annotated[HTMLString, "eval_report"]]:
    """Never cached: whether to promote depends on the registry's state now, not on the inputs alone.

    One promotion of a model at a time, each against the version in the stage when it holds the lock. The
    decision, metrics and MLflow registry entry are written before the stage moves, and the MLflow alias is moved
    to ZenML's stage first thing, so a kill at any point leaves the two agreeing after the next run."""
    if any(r.test_set_hash != tuned.test_set_hash for r in (base, prompted) if r is not None):
        raise ValueError("base and tuned models were scored on different test examples")
    tracking.log_sections(promotion=promotion)
    context = get_step_context()
    version, stage = context.model, promotion.target_stage
    train_run = _train_mlflow_run(context)
    with registry.promotion_lock(version.name):
        current = registry.in_stage(version.name, stage)
        registry.reconcile(version.name, stage, current)
        reference, label = _reference(version, current, tuned, base, prompted, dataset, model, evaluation, promotion)
        decision = decide(
            promotion,
            tuned.predictions,
            reference.predictions,
            label,
            production_version=current.name if current else None,
        )
        report = comparison_html(base, tuned, decision, prompted=prompted)
        _record(decision, base, tuned, prompted, train_run, report)
        if train_run:
            tracking.mirror_registry(version.name, str(version.number), train_run)
        if decision.promote:
            registry.move_stage(version, stage, decision)
            registry.follow(version.name, stage, version.number)
    return decision, HTMLString(report)
