"""The run's outcome: a table for people, one JSON object for machines."""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel


class RunSummary(BaseModel):
    zenml_run_id: str
    zenml_run_name: str
    status: str
    model_name: str
    model_version: str
    model_version_number: int
    stage: str | None
    mlflow_run_id: str | None
    mlflow_tracking_uri: str | None
    base_metrics: dict[str, float]
    tuned_metrics: dict[str, float]
    prompted_metrics: dict[str, float] | None = None  # the base model with an instruction and a few examples
    n_test_examples: int
    promoted: bool
    promotion_reason: str
    primary_metric: str
    data: dict[str, dict[str, int]]  # split -> input / accepted / quarantined / truncated / used
    quarantined: dict[str, int]  # reason -> rows


def render_table(s: RunSummary) -> str:
    # The primary metric first, then quality, then calibration (how far the confidences can be trusted).
    names = sorted(
        (k for k in s.tuned_metrics if not k.startswith("f1.")),
        key=lambda k: (k != s.primary_metric, k.startswith("calibration."), k),
    )
    columns = {"base": s.base_metrics} | ({"prompted": s.prompted_metrics} if s.prompted_metrics else {})
    columns["tuned"] = s.tuned_metrics
    width = max(map(len, names), default=6) + 1
    lines = [f"{'metric':<{width}}" + "".join(f" {c:>9}" for c in columns) + f" {'tuned-best':>10}"]
    lines.append("-" * len(lines[0]))
    for k in names:
        values = [m.get(k, float("nan")) for m in columns.values()]
        best = max((v for v in values[:-1] if v == v), default=float("nan"))
        mark = "  <- primary" if k == s.primary_metric else ""
        lines.append(f"{k:<{width}}" + "".join(f" {v:>9.4f}" for v in values) + f" {values[-1] - best:>+10.4f}{mark}")
    used = ", ".join(f"{split} {c['used']}" for split, c in s.data.items())
    lines += [
        "",
        f"data: {used} rows used; quarantined: {s.quarantined or 'none'}",
        f"test examples scored: {s.n_test_examples} (distinct inputs; evaluation.max_samples caps them)",
        f"model: {s.model_name} version {s.model_version} -> stage: {s.stage or 'none'}",
        f"promotion: {'PROMOTED' if s.promoted else 'not promoted'} ({s.promotion_reason})",
        f"zenml run: {s.zenml_run_name} ({s.zenml_run_id})",
        f"mlflow run: {s.mlflow_run_id} at {s.mlflow_tracking_uri}",
    ]
    return "\n".join(lines)


def write_json(s: RunSummary, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(s.model_dump(), indent=2) + "\n")


def render_data_report(report) -> str:
    lines = [f"{'split':<12} {'input':>7} {'accepted':>9} {'quarantined':>12} {'truncated':>10} {'used':>7}", "-" * 62]
    for split, c in report.splits.items():
        lines.append(f"{split:<12} {c.input:>7} {c.accepted:>9} {c.quarantined:>12} {c.truncated:>10} {c.used:>7}")
    if report.distinct_inputs:
        lines.append(
            "distinct inputs among rows used: " + ", ".join(f"{s} {n}" for s, n in report.distinct_inputs.items())
        )
    if report.conflicts:
        lines.append(f"inputs with different answers: {report.conflicts} (first: rows {report.conflict_example})")
    lines += [report.origins(), ""]
    for split, reasons in report.reasons.items():
        for reason, n in reasons.items():
            lines.append(f"quarantined {split:<10} {reason:<18} {n:>6}")
    stats = ", ".join(f"{k} {v:.0f}" for k, v in report.token_lengths.items())
    lines += [
        f"formats: {report.formats}",
        f"tokens per row: {stats} (max_seq_len {report.max_seq_len})",
        f"quarantined share: {report.reject_fraction:.2%} (limit {report.max_reject_fraction:.2%}) -> "
        + ("passed" if report.passed else "FAILED"),
    ]
    return "\n".join(lines)


def render_eval(result) -> str:
    lines = [f"{result.label} model on {result.n_examples} test examples (set {result.test_set_hash}):"]
    lines += [f"  {k:<16} {v:.4f}" for k, v in sorted(result.metrics.items()) if not k.startswith("f1.")]
    return "\n".join(lines)
