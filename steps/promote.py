from typing import Annotated, Optional

from zenml import get_step_context, log_metadata, step
from zenml.client import Client
from zenml.models import ModelVersionResponse

from tuneline import tracking
from tuneline.config import PromotionConfig
from tuneline.evaluation import EvalResult
from tuneline.promotion import PromotionDecision, decide


def _current(model_name: str, stage: str) -> Optional[ModelVersionResponse]:
    try:
        return Client().get_model_version(model_name, stage)
    except KeyError:
        return None


@step(enable_cache=False, experiment_tracker=True)
def promote(
    base: EvalResult, tuned: EvalResult, promotion: PromotionConfig
) -> Annotated[PromotionDecision, "promotion_decision"]:
    """Never cached: whether to promote depends on the registry's state now, not on the inputs alone."""
    if base.test_set_hash != tuned.test_set_hash:
        raise ValueError("base and tuned models were scored on different test examples")
    tracking.log_sections(promotion=promotion)
    model = get_step_context().model
    current = _current(model.name, promotion.target_stage)
    production_metrics = None
    if current is not None:
        meta = current.run_metadata
        if meta.get("test_set_hash") == tuned.test_set_hash and isinstance(meta.get("tuned"), dict):
            production_metrics = meta["tuned"]
    decision = decide(
        promotion.primary_metric,
        tuned.metrics,
        base.metrics,
        production=production_metrics,
        production_version=current.name if current else None,
        production_comparable=current is None or production_metrics is not None,
    )
    if decision.promote:
        model.set_stage(promotion.target_stage, force=True)
    decision = decision.model_copy(update={"stage": promotion.target_stage if decision.promote else None})
    # Logged here, not in evaluate: this step never caches, so every model version gets its metrics.
    log_metadata(
        metadata={
            "base": base.metrics,
            "tuned": tuned.metrics,
            "test_set_hash": tuned.test_set_hash,
            "promotion": decision.model_dump(),
        },
        infer_model=True,
    )
    tracking.log_metrics({"promoted": float(decision.promote)}, prefix="promotion.")
    tracking.log_text(decision.model_dump_json(indent=2), "promotion/decision.json")
    return decision
