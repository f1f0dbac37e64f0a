"""The promotion rule, as pure functions over per-example rows, so every branch is unit-tested without a registry.

The candidate and the reference (the version now in the target stage, or the base model when there is none)
are scored on the same examples. A paired bootstrap resamples examples, recomputes both on each resample and
gives a 95% interval for the difference in the primary metric. The candidate is promoted only when the
interval's lower bound is above `min_gain` and no guarded metric drops by more than `tolerance`. A tie
therefore never promotes, and neither does a gain too noisy to tell from zero.
"""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel

from tuneline.config import PromotionConfig
from tuneline.evaluate.metrics import field_support, metric_value, ratio_arrays


class Guard(BaseModel):
    candidate: float
    reference: float
    drop: float
    ok: bool
    support: int | None = None  # for f1.<field>: how often the references hold the field


class PromotionDecision(BaseModel):
    promote: bool
    reason: str
    reasons: list[str]
    metric: str
    reference: str  # what the candidate was compared with
    candidate: float
    reference_score: float
    difference: float
    ci_low: float
    ci_high: float
    min_gain: float
    guards: dict[str, Guard]
    n_examples: int
    production_version: str | None = None
    stage: str | None = None  # the candidate's stage after this decision


def lineage_conflict(reference: str, recorded: dict, source: str | None, task: str | None) -> str | None:
    """Why the version `reference` (e.g. "model 'x' production version 3"), whose data is `recorded` (its
    `raw_data` metadata: source, task), cannot be compared with a version of this run's source and task; None if
    it can. Scores on different tasks or test sets say nothing about which model is better."""
    differs = [
        f"{key} '{recorded[key]}' (this run: '{mine}')"
        for key, mine in (("task", task), ("source", source))
        if recorded.get(key) is not None and mine is not None and recorded[key] != mine
    ]
    if not differs:
        return None
    return (
        f"{reference} learned {', '.join(differs)}; versions of one model are compared with each other at "
        "promotion, so give this data a model of its own: `model: name: <new name>` in the config (a new "
        "name starts a new lineage)"
    )


def paired_bootstrap(metric: str, candidate: list[dict], reference: list[dict], samples: int, seed: int):
    """(difference, low, high): the point difference and the 2.5/97.5 percentiles over paired resamples."""
    if len(candidate) != len(reference):
        raise ValueError("paired bootstrap needs the same examples for both models")
    cn, cd = ratio_arrays(metric, candidate)
    rn, rd = ratio_arrays(metric, reference)
    idx = np.random.default_rng(seed).integers(0, len(candidate), size=(samples, len(candidate)))

    def ratio(num, den):
        n, d = num[idx].sum(axis=1), den[idx].sum(axis=1)
        return np.divide(n, d, out=np.zeros_like(n), where=d > 0)

    diffs = ratio(cn, cd) - ratio(rn, rd)
    point = metric_value(metric, candidate) - metric_value(metric, reference)
    low, high = np.percentile(diffs, [2.5, 97.5])
    return point, float(low), float(high)


def _guarded(names: list[str], support: dict[str, int], min_support: int) -> list[str]:
    """`f1.*` is every field the references hold at least `min_support` times: with fewer, one flipped example
    is a large swing (3 examples: 0.33), and a field only a model invented has none."""
    out = []
    for name in names:
        out += [f"f1.{f}" for f, n in support.items() if n >= min_support] if name == "f1.*" else [name]
    return sorted(set(out))


def decide(
    cfg: PromotionConfig,
    candidate: list[dict],
    reference: list[dict],
    reference_label: str,
    production_version: str | None = None,
) -> PromotionDecision:
    metric = cfg.primary_metric
    diff, low, high = paired_bootstrap(metric, candidate, reference, cfg.bootstrap_samples, cfg.seed)
    cand_score, ref_score = metric_value(metric, candidate), metric_value(metric, reference)
    reasons = []
    gain_ok = low > cfg.min_gain
    reasons.append(
        f"{metric}: {cand_score:.4f} vs {reference_label} {ref_score:.4f}, difference {diff:+.4f}, "
        f"95% CI [{low:+.4f}, {high:+.4f}] {'>' if gain_ok else 'not >'} min_gain {cfg.min_gain:+.4f}"
    )
    guards = {}
    support = field_support(candidate)  # the references are the same for both models
    for name in _guarded(cfg.guarded_metrics, support, cfg.min_support):
        c, r = metric_value(name, candidate), metric_value(name, reference)
        n = support.get(name[3:]) if name.startswith("f1.") else None
        guards[name] = Guard(candidate=c, reference=r, drop=r - c, ok=r - c <= cfg.tolerance, support=n)
        if not guards[name].ok:
            on = f" (support {n})" if n is not None else ""
            reasons.append(f"guard {name}{on} drops {r - c:.4f} ({r:.4f} -> {c:.4f}) > tolerance {cfg.tolerance:.4f}")
    promote = gain_ok and all(g.ok for g in guards.values())
    if guards and all(g.ok for g in guards.values()):
        reasons.append(f"all {len(guards)} guarded metrics within tolerance {cfg.tolerance:.4f}")
    verdict = "promote" if promote else "keep"
    return PromotionDecision(
        promote=promote,
        reason=f"{verdict}: " + "; ".join(reasons),
        reasons=reasons,
        metric=metric,
        reference=reference_label,
        candidate=cand_score,
        reference_score=ref_score,
        difference=diff,
        ci_low=low,
        ci_high=high,
        min_gain=cfg.min_gain,
        guards=guards,
        n_examples=len(candidate),
        production_version=production_version,
        stage=cfg.target_stage if promote else None,
    )
