"""Is the confidence worth trusting? Calibration of confidences (tuneline/generate/confidence.py) against correctness.

- ECE: over equal-width confidence bins, the example-weighted mean |accuracy - mean confidence|; 0 when a
  confidence of 0.8 means right 80% of the time.
- AUROC: the chance that a random right answer is more confident than a random wrong one (ties count half);
  what decides whether a threshold can separate them, however miscalibrated the numbers are.
- Coverage curve: accept only answers with confidence >= t: the share accepted (coverage) and their accuracy.

Answer level: confidence vs exact match. Field level: every predicted field (and viggo's act) vs being right.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tuneline.generate.confidence import ANSWER_MEASURE

COVERAGES = (0.25, 0.5, 0.75)  # reported as calibration.exact_at_coverage_<c>


@dataclass(frozen=True)
class Threshold:
    """Accept an answer when its confidence >= threshold: the accepted answers' precision and coverage."""

    threshold: float
    precision: float
    coverage: float


def _arrays(confidence, correct) -> tuple[np.ndarray, np.ndarray]:
    return np.asarray(confidence, dtype=float), np.asarray(correct, dtype=bool)


def reliability(confidence, correct, bins: int = 10) -> list[tuple[float, float, int, float, float]]:
    """Per non-empty bin: (low, high, count, mean confidence, accuracy); the last bin includes 1.0."""
    conf, ok = _arrays(confidence, correct)
    which = np.minimum((conf * bins).astype(int), bins - 1)
    return [
        (b / bins, (b + 1) / bins, int(m.sum()), float(conf[m].mean()), float(ok[m].mean()))
        for b in range(bins)
        if (m := which == b).any()
    ]


def ece(confidence, correct, bins: int = 10) -> float:
    rows = reliability(confidence, correct, bins)
    total = sum(n for _, _, n, _, _ in rows)
    return sum(n * abs(acc - conf) for _, _, n, conf, acc in rows) / total if total else 0.0


def auroc(confidence, correct) -> float | None:
    """Mann-Whitney U with average ranks; None when all are right or all wrong (nothing to separate)."""
    conf, ok = _arrays(confidence, correct)
    n_right, n_wrong = int(ok.sum()), int((~ok).sum())
    if not n_right or not n_wrong:
        return None
    order = np.argsort(conf, kind="mergesort")
    ranks = np.empty(len(conf))
    ranks[order] = np.arange(1, len(conf) + 1)
    for value in np.unique(conf):  # ties share their mean rank
        tied = conf == value
        ranks[tied] = ranks[tied].mean()
    return float((ranks[ok].sum() - n_right * (n_right + 1) / 2) / (n_right * n_wrong))


def coverage_curve(confidence, correct) -> list[Threshold]:
    """One point per distinct confidence t, highest first: accepting confidence >= t."""
    conf, ok = _arrays(confidence, correct)
    points = []
    for t in np.unique(conf)[::-1]:
        accepted = conf >= t
        points.append(Threshold(float(t), float(ok[accepted].mean()), float(accepted.mean())))
    return points


def accuracy_at_coverage(confidence, correct, coverage: float) -> float:
    """Accuracy of the most confident `coverage` share of answers (at least one)."""
    conf, ok = _arrays(confidence, correct)
    k = max(1, round(coverage * len(conf)))
    return float(ok[np.argsort(-conf, kind="mergesort")[:k]].mean())


def pick_threshold(confidence, correct, target_precision: float) -> Threshold | None:
    """The lowest threshold (the most answers accepted) at which the accepted answers reach `target_precision`;
    None when none does, not even the most confident alone: then no answer can be trusted unreviewed."""
    reached = [p for p in coverage_curve(confidence, correct) if p.precision >= target_precision]
    return min(reached, key=lambda p: p.threshold) if reached else None


def at_threshold(confidence, correct, threshold: float) -> Threshold:
    """What a fixed threshold accepts (precision 0 when it accepts nothing)."""
    conf, ok = _arrays(confidence, correct)
    accepted = conf >= threshold
    return Threshold(threshold, float(ok[accepted].mean()) if accepted.any() else 0.0, float(accepted.mean()))


def field_pairs(predictions: list[dict]) -> tuple[list[float], list[bool]]:
    """(confidence, right) for every field and act the predictions wrote."""
    conf, ok = [], []
    for p in predictions:
        if "act_confidence" in p:
            conf.append(p["act_confidence"])
            ok.append(bool(p["act_ok"]))
        for name, c in p.get("field_confidence", {}).items():
            conf.append(c)
            ok.append(p["fields"].get(name) == "tp")
    return conf, ok


def scored(predictions: list[dict]) -> bool:
    """Evaluations made before confidences were recorded have none."""
    return bool(predictions) and all("confidence" in p for p in predictions)


def calibration_metrics(predictions: list[dict]) -> dict[str, float]:
    """The `calibration.*` metrics of an evaluation's predictions (empty if they carry no confidences)."""
    if not scored(predictions):
        return {}
    conf, ok = [p["confidence"] for p in predictions], [bool(p["exact"]) for p in predictions]
    out = {
        "calibration.ece": ece(conf, ok),
        "calibration.auroc": auroc(conf, ok),
        "calibration.mean_confidence": float(np.mean(conf)),
    }
    out |= {f"calibration.exact_at_coverage_{c}": accuracy_at_coverage(conf, ok, c) for c in COVERAGES}
    field_conf, field_ok = field_pairs(predictions)
    if field_conf:
        out |= {
            "calibration.field_ece": ece(field_conf, field_ok),
            "calibration.field_auroc": auroc(field_conf, field_ok),
        }
    return {k: v for k, v in out.items() if v is not None}


def serving_threshold(predictions: list[dict], min_confidence: float | str, target_precision: float) -> dict:
    """What `serving.min_confidence` means for this model, measured on its test predictions: the threshold
    (picked when 'auto'; None when no threshold reaches the target, so every answer needs review) with the
    exact match and coverage of the answers it accepts. Recorded with the model version for serving to read."""
    conf, ok = [p["confidence"] for p in predictions], [bool(p["exact"]) for p in predictions]
    found = (
        pick_threshold(conf, ok, target_precision)
        if min_confidence == "auto"
        else at_threshold(conf, ok, float(min_confidence))
    )
    return {
        "min_confidence": None if found is None else found.threshold,
        "precision": None if found is None else found.precision,
        "coverage": 0.0 if found is None else found.coverage,
        "target_precision": target_precision,
        "setting": min_confidence,
        "n_examples": len(predictions),
        "measure": ANSWER_MEASURE,
    }
