"""The promote step: wiring between the registry (steps/registry.py), scoring (steps/evaluate.py) and the
decision rule (tuneline/registry/promotion.py)."""

import logging
import time
from typing import Annotated, Optional, Tuple

from zenml import get_step_context, log_metadata, step
from zenml.client import Client
from zenml.models import ModelVersionResponse
from zenml.types import HTMLString

from materializers.integrity import damage
from steps import registry
from steps.evaluate import score
from tuneline.registry import tracking
from tuneline.artifacts import ChatDataset, LoraAdapter
from tuneline.config import DataConfig, EvaluationConfig, ModelConfig, PromotionConfig
from tuneline.evaluate.corrected import CorrectedSlice, compare_slice, slice_examples, slice_html
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
    return score(
        f"production v{version.name}",
        tuned.task,
        select_test(dataset.splits["test"], evaluation),
        dataset.splits["train"],
        model,
        evaluation,
        _production_adapter(version),
    )


def _production_adapter(version: ModelVersionResponse) -> LoraAdapter:
    adapter_artifact = version.get_artifact("lora_adapter")
    if problem := damage(adapter_artifact):
        raise RuntimeError(
            f"cannot compare with production version {version.name}: {problem}; restore its files "
            "from a backup, or archive that version (`zenml model version update "
            f"{version.model.name} {version.name} --stage archived`) to compare with the base model"
        )
    return adapter_artifact.load()


def _corrected_slice(
    context,
    current: Optional[ModelVersionResponse],
    dataset: ChatDataset,
    data: DataConfig,
    model: ModelConfig,
    evaluation: EvaluationConfig,
    promotion: PromotionConfig,
) -> Optional[CorrectedSlice]:
    """Candidate and production on the corrected requests production served (tuneline/evaluate/corrected.py),
    from the stack's MLflow store; None without a version in the stage, a tracker, or a correction."""
    tracker = Client().active_stack.experiment_tracker
    if current is None or tracker is None or not hasattr(tracker, "configure_mlflow"):
        return None
    from tuneline.data.chat_format import ensure_chat_template
    from tuneline.models.modeling import load_tokenizer, resolve_base_model
    from tuneline.serve.recording import Window, read_requests

    tracker.configure_mlflow()
    records = read_requests(current.model.name, Window(0, int(time.time() * 1000) + 1))
    tokenizer = load_tokenizer(resolve_base_model(model.base))
    ensure_chat_template(tokenizer)  # as prepare_dataset renders the rows
    examples = select_test(slice_examples(records, data, tokenizer), evaluation)
    if not examples:
        return None
    train, label = dataset.splits["train"], f"{promotion.target_stage} version {current.name}"
    candidate = context.pipeline_run.steps["train_lora"].outputs["lora_adapter"][0].load()
    cand = score("candidate on corrected requests", data.task, examples, train, model, evaluation, candidate)
    ref = score(
        f"{label} on corrected requests", data.task, examples, train, model, evaluation, _production_adapter(current)
    )
    trained = {r["source"] for r in train}
    return compare_slice(promotion.primary_metric, examples, cand.predictions, ref.predictions, trained, label)


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


def _record(
    decision: PromotionDecision,
    base,
    tuned,
    prompted,
    train_run: Optional[str],
    report: str,
    corrected: Optional[CorrectedSlice] = None,
) -> None:
    """Logged here, not in evaluate: this step never caches, so every model version gets its metrics. Until the
    stage has moved, the recorded decision says so (`registry.pending`)."""
    log_metadata(
        metadata={
            "base": base.metrics,
            "tuned": tuned.metrics,
            "test_set_hash": tuned.test_set_hash,
            **({"prompted": prompted.metrics} if prompted else {}),
            **({"corrected_slice": corrected.model_dump(mode="json")} if corrected else {}),
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
    if corrected:
        figures = {"n": corrected.all.n_examples, "learned": corrected.learned}
        figures |= {k: getattr(corrected.all, k) for k in ("candidate", "reference", "difference")}
        tracking.log_metrics(figures, prefix="promotion.corrected.")
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
    data: Optional[DataConfig] = None,
) -> Tuple[Annotated[PromotionDecision, "promotion_decision"], Annotated[HTMLString, "eval_report"]]:
    """Never cached: whether to promote depends on the registry's state now, not on the inputs alone.

    One promotion of a model at a time, each against the version in the stage when it holds the lock. The
    decision, metrics and MLflow registry entry are written before the stage moves, and the MLflow alias is moved
    to ZenML's stage first thing, so a kill at any point leaves the two agreeing after the next run. With `data`,
    both are also scored on the corrected production requests and that is reported (docs/monitoring.md)."""
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
        corrected = (
            _corrected_slice(context, current, dataset, data, model, evaluation, promotion)
            if data is not None
            else None
        )
        extra = slice_html(corrected) if corrected else ""
        report = comparison_html(base, tuned, decision, prompted=prompted, extra_html=extra)
        _record(decision, base, tuned, prompted, train_run, report, corrected)
        if train_run:
            tracking.mirror_registry(version.name, str(version.number), train_run)
        if decision.promote:
            registry.move_stage(version, stage, decision)
            registry.follow(version.name, stage, version.number)
    return decision, HTMLString(report)
