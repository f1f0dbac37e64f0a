"""ROUGE from `rouge-score` plus field accuracy from the task parser.

Field metrics (micro over the test set):
- exact_match: the prediction parses and has the reference's act and exactly its (slot, value) pairs;
  for the `text` task, the stripped strings are equal.
- act_accuracy: parses and the act matches.
- slot_precision / slot_recall: matched pairs over predicted / reference pairs.
- slot_accuracy: matched pairs over the union of predicted and reference pairs, so both missing and extra
  slots cost; an unparseable prediction contributes every reference pair as missed.
"""

from __future__ import annotations

from tuneline.tasks import PARSERS, Parsed

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL", "rougeLsum")


def rouge(predictions: list[str], references: list[str]) -> dict[str, float]:
    """Mean F-measure per ROUGE type; the same scorer `evaluate`'s rouge metric wraps (hub-free)."""
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(list(ROUGE_TYPES))
    totals = dict.fromkeys(ROUGE_TYPES, 0.0)
    for p, r in zip(predictions, references, strict=True):
        for k, s in scorer.score(r, p).items():
            totals[k] += s.fmeasure
    n = max(1, len(predictions))
    return {k: v / n for k, v in totals.items()}


def compare(task: str, prediction: str, reference: str) -> dict:
    """Per-example field comparison; also what the report shows for each row."""
    parse = PARSERS[task]
    ref = parse(reference)
    if ref is None:
        raise ValueError(f"reference does not parse as task '{task}': {reference!r}")
    pred: Parsed | None = parse(prediction)
    if task == "text":
        exact = prediction.strip() == reference.strip()
        return {"parsed": True, "exact": exact, "act_ok": None, "matched": 0, "n_pred": 0, "n_ref": 0}
    if pred is None:
        return {"parsed": False, "exact": False, "act_ok": False, "matched": 0, "n_pred": 0, "n_ref": len(ref.fields)}
    matched = len(pred.fields & ref.fields)
    return {
        "parsed": True,
        "exact": pred.act == ref.act and pred.fields == ref.fields,
        "act_ok": pred.act == ref.act,
        "matched": matched,
        "n_pred": len(pred.fields),
        "n_ref": len(ref.fields),
    }


def score(task: str, predictions: list[str], references: list[str]) -> tuple[dict[str, float], list[dict]]:
    rows = [compare(task, p, r) for p, r in zip(predictions, references, strict=True)]
    n = max(1, len(rows))
    metrics = rouge(predictions, references)
    metrics["exact_match"] = sum(r["exact"] for r in rows) / n
    if task != "text":
        matched = sum(r["matched"] for r in rows)
        predicted = sum(r["n_pred"] for r in rows)
        reference = sum(r["n_ref"] for r in rows)
        metrics["parse_rate"] = sum(r["parsed"] for r in rows) / n
        metrics["slot_precision"] = matched / predicted if predicted else 0.0
        metrics["slot_recall"] = matched / reference if reference else 0.0
        union = predicted + reference - matched
        metrics["slot_accuracy"] = matched / union if union else 0.0
    if task == "viggo":
        metrics["act_accuracy"] = sum(bool(r["act_ok"]) for r in rows) / n
    return metrics, rows
