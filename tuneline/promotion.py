"""The promotion rule, as a pure function so every branch is unit-tested without a model registry."""

from __future__ import annotations

from pydantic import BaseModel


class PromotionDecision(BaseModel):
    promote: bool
    reason: str
    metric: str
    candidate: float
    base: float
    production: float | None = None
    production_version: str | None = None
    stage: str | None = None  # the stage the candidate holds after this decision


def decide(
    metric: str,
    candidate: dict[str, float],
    base: dict[str, float],
    production: dict[str, float] | None = None,
    production_version: str | None = None,
    production_comparable: bool = True,
) -> PromotionDecision:
    """Promote when there is no production version and the candidate beats its base model, or when it beats
    the production version on the same test set. Ties never promote, so re-running a config changes nothing.
    A production version scored on other examples cannot be beaten by comparison, so it stays."""
    cand, base_score = candidate[metric], base[metric]
    common = dict(metric=metric, candidate=cand, base=base_score, production_version=production_version)
    if production_version is not None and not production_comparable:
        return PromotionDecision(
            promote=False, **common,
            reason=f"production version {production_version} was scored on a different test set; not comparable",
        )
    if production is None:
        promote = cand > base_score
        verdict = "beats" if promote else "does not beat"
        return PromotionDecision(
            promote=promote, **common,
            reason=f"no production version; {metric} {cand:.4f} {verdict} base {base_score:.4f}",
        )
    prod = production[metric]
    promote = cand > prod
    verdict = "beats" if promote else "does not beat"
    return PromotionDecision(
        promote=promote, production=prod, **common,
        reason=f"{metric} {cand:.4f} {verdict} production version {production_version} ({prod:.4f})",
    )
