from pathlib import Path
from typing import Annotated, Optional, Tuple

from zenml import get_step_context, log_metadata, step
from zenml.client import Client
from zenml.models import ModelVersionResponse
from zenml.types import HTMLString

from tuneline import tracking
from tuneline.artifacts import ChatDataset
from tuneline.config import EvaluationConfig, ModelConfig, PromotionConfig
from tuneline.evaluation import EvalResult, evaluate_model, select_test
from tuneline.modeling import resolve_base_model
from tuneline.promotion import PromotionDecision, decide
from tuneline.report import comparison_html


def _current(model_name: str, stage: str) -> Optional[ModelVersionResponse]:
    try:
        return Client().get_model_version(model_name, stage)
    except KeyError:
        return None


def _production_result(version: ModelVersionResponse, tuned: EvalResult, dataset: ChatDataset,
                       evaluation: EvaluationConfig, model: ModelConfig) -> EvalResult:
    """Its stored predictions when they cover the same test examples; otherwise score its adapter now."""
    stored = version.get_artifact("eval_tuned")
    if stored is not None:
        result = stored.load()
        if result.test_set_hash == tuned.test_set_hash:
            return result
    adapter = version.get_artifact("lora_adapter").load()
    return evaluate_model(
        f"production v{version.name}", tuned.task, resolve_base_model(adapter.base_model),
        select_test(dataset.splits["test"], evaluation), evaluation, adapter_dir=Path(adapter.path), dtype=model.dtype,
        device=model.device,
    )


@step(enable_cache=False, experiment_tracker=True)
def promote(
    base: EvalResult, tuned: EvalResult, dataset: ChatDataset, model: ModelConfig, evaluation: EvaluationConfig,
    promotion: PromotionConfig,
) -> Tuple[Annotated[PromotionDecision, "promotion_decision"], Annotated[HTMLString, "eval_report"]]:
    """Never cached: whether to promote depends on the registry's state now, not on the inputs alone."""
    if base.test_set_hash != tuned.test_set_hash:
        raise ValueError("base and tuned models were scored on different test examples")
    tracking.log_sections(promotion=promotion)
    context = get_step_context()
    version = context.model
    current = _current(version.name, promotion.target_stage)
    if current is not None:
        reference = _production_result(current, tuned, dataset, evaluation, model)
        label = f"{promotion.target_stage} version {current.name}"
    else:
        reference, label = base, "base model"
    decision = decide(promotion, tuned.predictions, reference.predictions, label,
                      production_version=current.name if current else None)
    if decision.promote:
        version.set_stage(promotion.target_stage, force=True)
    report = comparison_html(base, tuned, decision)
    # Logged here, not in evaluate: this step never caches, so every model version gets its metrics.
    log_metadata(
        metadata={"base": base.metrics, "tuned": tuned.metrics, "test_set_hash": tuned.test_set_hash,
                  "promotion": decision.model_dump(mode="json")},
        infer_model=True,
    )
    tracking.log_metrics({"promoted": float(decision.promote), "ci_low": decision.ci_low,
                          "ci_high": decision.ci_high, "difference": decision.difference}, prefix="promotion.")
    tracking.log_text(decision.model_dump_json(indent=2), "promotion/decision.json")
    tracking.log_text(report, "eval/comparison_report.html")
    train_run = context.pipeline_run.steps["train_lora"].run_metadata.get("mlflow_run_id")
    if train_run:
        log_metadata(metadata={"mlflow_run_id": train_run}, infer_model=True)
    if train_run:
        tracking.mirror_registry(version.name, str(version.number), train_run,
                                 alias=promotion.target_stage if decision.promote else None)
    return decision, HTMLString(report)
