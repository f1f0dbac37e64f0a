"""Metrics from per-example rows: ROUGE (rouge-score) plus field metrics from the task parser.

Every metric is a ratio of sums over examples, `sum(num) / sum(den)`, so the reported value and a paired
bootstrap over examples (promotion) come from the same arrays:

- rouge1/2/L/Lsum, exact_match, act_accuracy, parse_rate: per-example values averaged (den = 1).
- slot_precision = tp / (tp + fp), slot_recall = tp / (tp + fn), micro_f1 = 2tp / (2tp + fp + fn),
  slot_accuracy = tp / (tp + fp + fn): micro over all (slot, value) pairs.
- f1.<field>: the same F1 for one field the references have; macro_f1 is their mean (reported, not
  bootstrapped). Fields only predictions have are `invented_fields`, reported apart.

A prediction that does not parse counts as wrong: all its reference fields are missed (fn).
Error taxonomy per example: unparseable (of which duplicate_key: a JSON answer naming a key twice), wrong_act;
per field: missing (in reference only), extra (in prediction only), wrong_value (in both, values differ; counts
as one fp and one fn).
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from tuneline.config import JsonMatch
from tuneline.tasks import PARSERS, ROUGE_TYPES, DuplicateKey, json_value, metric_list, parse_json

MEAN_METRICS = {"exact_match": "exact", "act_accuracy": "act_ok", "parse_rate": "parsed"} | {r: r for r in ROUGE_TYPES}
ERROR_KINDS = ("unparseable", "duplicate_key", "wrong_act", "missing", "extra", "wrong_value")


def _rouge(predictions: list[str], references: list[str]) -> list[dict[str, float]]:
    """Per-example F-measure; the scorer `evaluate`'s rouge metric wraps, used directly so no hub is needed."""
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(list(ROUGE_TYPES))
    return [
        {k: s.fmeasure for k, s in scorer.score(r, p).items()} for p, r in zip(predictions, references, strict=True)
    ]


def compare(task: str, prediction: str, reference: str, match: JsonMatch = JsonMatch()) -> dict:
    """One example: parse both, classify each field, and say what went wrong. `match`: how json values compare."""
    parse = (lambda text: parse_json(text, match)) if task == "json" else PARSERS[task]
    ref = parse(reference)
    if ref is None:
        raise ValueError(f"reference does not parse as task '{task}': {reference!r}")
    if task == "text":
        return {
            "parsed": True,
            "exact": prediction.strip() == reference.strip(),
            "act_ok": True,
            "fields": {},
            "errors": [],
        }
    pred = parse(prediction)
    if pred is None:
        fields = {name: "missing" for name, _ in ref.fields}
        errors = ["unparseable"] + (["duplicate_key"] if task == "json" and _duplicate_key(prediction) else [])
        return {"parsed": False, "exact": False, "act_ok": False, "fields": fields, "errors": errors}
    ref_map, pred_map = dict(ref.fields), dict(pred.fields)
    fields = {}
    for name in sorted(set(ref_map) | set(pred_map)):
        if name not in pred_map:
            fields[name] = "missing"
        elif name not in ref_map:
            fields[name] = "extra"
        else:
            fields[name] = "tp" if ref_map[name] == pred_map[name] else "wrong_value"
    errors = (["wrong_act"] if pred.act != ref.act else []) + sorted({o for o in fields.values() if o != "tp"})
    return {
        "parsed": True,
        "exact": pred.act == ref.act and pred.fields == ref.fields,
        "act_ok": pred.act == ref.act,
        "fields": fields,
        "errors": errors,
    }


def _duplicate_key(text: str) -> bool:
    try:
        json_value(text)
    except DuplicateKey:
        return True
    except ValueError:
        return False
    return False


def field_counts(fields: dict[str, str], only: str | None = None) -> tuple[int, int, int]:
    """(tp, fp, fn) of one example, over all fields or just `only`."""
    tp = fp = fn = 0
    for name, outcome in fields.items():
        if only is not None and name != only:
            continue
        tp += outcome == "tp"
        fp += outcome in ("extra", "wrong_value")
        fn += outcome in ("missing", "wrong_value")
    return tp, fp, fn


def ratio_arrays(metric: str, rows: list[dict]) -> tuple[np.ndarray, np.ndarray]:
    """Per-example numerator and denominator of a metric; the metric is their sums' ratio."""
    if metric in MEAN_METRICS:
        key = MEAN_METRICS[metric]
        return np.array([float(r[key]) for r in rows]), np.ones(len(rows))
    field = metric.split(".", 1)[1] if metric.startswith("f1.") else None
    tp, fp, fn = (np.array(c, dtype=float) for c in zip(*[field_counts(r["fields"], field) for r in rows]))
    if metric in ("micro_f1", "slot_f1") or field:
        return 2 * tp, 2 * tp + fp + fn
    return {
        "slot_precision": (tp, tp + fp),
        "slot_recall": (tp, tp + fn),
        "slot_accuracy": (tp, tp + fp + fn),
    }[metric]


def metric_value(metric: str, rows: list[dict]) -> float:
    num, den = ratio_arrays(metric, rows)
    return float(num.sum() / den.sum()) if den.sum() else 0.0


def field_names(rows: list[dict]) -> list[str]:
    return sorted({name for r in rows for name in r["fields"]})


def field_support(rows: list[dict]) -> dict[str, int]:
    """Per field: how often the references hold it (tp + fn); 0 for a field only predictions have."""
    support = dict.fromkeys(field_names(rows), 0)
    for r in rows:
        for name, outcome in r["fields"].items():
            support[name] += outcome in ("tp", "missing", "wrong_value")
    return support


def invented_fields(rows: list[dict]) -> dict[str, int]:
    """Fields the model wrote that no reference has, with how often: reported apart, not scored as fields (an F1
    of 0 for a key nobody asked for would only drag macro_f1 and trip guards)."""
    support = field_support(rows)
    counts = Counter(name for r in rows for name, outcome in r["fields"].items() if outcome == "extra")
    return {name: counts[name] for name, n in support.items() if n == 0}


def aggregate(task: str, rows: list[dict]) -> dict[str, float]:
    metrics = {name: metric_value(name, rows) for name in metric_list(task) if name != "macro_f1"}
    if task != "text":
        per_field = {f"f1.{f}": metric_value(f"f1.{f}", rows) for f, n in field_support(rows).items() if n}
        metrics["macro_f1"] = sum(per_field.values()) / len(per_field) if per_field else 0.0
        metrics |= per_field
    return metrics


def field_table(rows: list[dict]) -> dict[str, dict[str, float]]:
    """Per field: support (reference count), tp, fp, fn, precision, recall, f1."""
    table = {}
    for name in field_names(rows):
        tp, fp, fn = (sum(c) for c in zip(*[field_counts(r["fields"], name) for r in rows]))
        table[name] = {
            "support": tp + fn,
            "tp": tp,
            "fp": fp,
            "fn": fn,
            "precision": tp / (tp + fp) if tp + fp else 0.0,
            "recall": tp / (tp + fn) if tp + fn else 0.0,
            "f1": 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0,
        }
    return table


def taxonomy(rows: list[dict]) -> dict[str, int]:
    """unparseable and wrong_act count examples; missing, extra and wrong_value count fields."""
    counts = Counter({kind: 0 for kind in ERROR_KINDS})
    for r in rows:
        counts["unparseable"] += "unparseable" in r["errors"]
        counts["duplicate_key"] += "duplicate_key" in r["errors"]
        counts["wrong_act"] += "wrong_act" in r["errors"]
        if r["parsed"]:
            counts.update(o for o in r["fields"].values() if o != "tp")
    return dict(counts)


def _closest(task: str, prediction: str, references: list[str], rouge: list[dict], match: JsonMatch) -> dict:
    """Scored against each reference: the closest one's comparison (exact first, then matched fields, then
    ROUGE-L), with `best`, its index, when there are several; ROUGE is the best over all references, as
    multi-reference ROUGE is."""
    rows = [compare(task, prediction, ref, match) | scores for ref, scores in zip(references, rouge, strict=True)]
    if len(rows) == 1:
        return rows[0]
    best = max(
        range(len(rows)), key=lambda i: (rows[i]["exact"], field_counts(rows[i]["fields"])[0], rows[i]["rougeL"])
    )
    return rows[best] | {k: max(r[k] for r in rows) for k in ROUGE_TYPES} | {"best": best}


def score(
    task: str, predictions: list[str], references: list[str | list[str]], match: JsonMatch = JsonMatch()
) -> tuple[dict[str, float], list[dict]]:
    """One row per prediction; a prediction may have several references (an input with several answers)."""
    refs = [r if isinstance(r, list) else [r] for r in references]
    flat = _rouge([p for p, rs in zip(predictions, refs, strict=True) for _ in rs], [r for rs in refs for r in rs])
    rows, start = [], 0
    for p, rs in zip(predictions, refs):
        rows.append(_closest(task, p, rs, flat[start : start + len(rs)], match))
        start += len(rs)
    return aggregate(task, rows), rows
