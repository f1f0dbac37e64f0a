"""HTML that people read in the ZenML dashboard and MLflow: evaluation results and dataset previews."""

from __future__ import annotations

from html import escape

from tuneline.evaluate.calibration import coverage_curve, field_pairs, reliability, scored
from tuneline.evaluate.evaluation import EvalResult
from tuneline.evaluate.metrics import field_table, invented_fields, taxonomy

_STYLE = (
    "<style>body{font-family:sans-serif;font-size:14px}table{border-collapse:collapse;margin:8px 0}"
    "td,th{border:1px solid #ccc;padding:4px 8px;text-align:left;vertical-align:top}"
    ".ok{background:#e6f4ea}.bad{background:#fce8e6}</style>"
)


def _table(header: list[str], rows: list[list]) -> str:
    head = "".join(f"<th>{escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _field_rows(result: EvalResult) -> list[list]:
    return [
        [escape(f), int(v["support"]), f"{v['precision']:.3f}", f"{v['recall']:.3f}", f"{v['f1']:.3f}"]
        for f, v in field_table(result.predictions).items()
        if v["support"]
    ]


def _invented(result: EvalResult) -> str:
    invented = invented_fields(result.predictions)
    if not invented:
        return ""
    listed = ", ".join(f"{escape(f)} ({n})" for f, n in sorted(invented.items(), key=lambda kv: -kv[1]))
    return f"<p>Fields only the {escape(result.label)} model wrote (no reference has them), with counts: {listed}</p>"


def calibration_svg(predictions: list[dict], size: int = 220) -> str:
    """Reliability diagram (answers blue, fields orange; on the diagonal is calibrated) and exact match vs
    coverage (accepting the most confident answers first), as inline SVG so the ZenML dashboard shows it."""
    answers = ([p["confidence"] for p in predictions], [p["exact"] for p in predictions])
    pad, gap = 30, 50

    def panel(x0: int, title: str, xlabel: str, body: str) -> str:
        frame = (
            f'<rect x="{x0}" y="10" width="{size}" height="{size}" fill="none" stroke="#999"/>'
            f'<text x="{x0}" y="{size + 26}" font-size="11">0</text>'
            f'<text x="{x0 + size - 6}" y="{size + 26}" font-size="11">1</text>'
            f'<text x="{x0 + size / 2 - 40}" y="{size + 26}" font-size="11">{xlabel}</text>'
            f'<text x="{x0}" y="8" font-size="11">{title}</text>'
        )
        return frame + body

    def at(x0: int, fx: float, fy: float) -> tuple[float, float]:
        return x0 + fx * size, 10 + (1 - fy) * size

    def xy(x0: int, fx: float, fy: float) -> str:
        return "{:.1f},{:.1f}".format(*at(x0, fx, fy))

    def dots(x0: int, rows, color: str, what: str) -> str:
        return "".join(
            '<circle cx="{:.1f}" cy="{:.1f}"'.format(*at(x0, conf, acc))
            + f' r="{2 + min(6, n**0.5):.1f}" fill="{color}" fill-opacity="0.7"><title>{what} '
            f"{lo:.1f}-{hi:.1f}: {n}, confidence {conf:.2f}, right {acc:.2f}</title></circle>"
            for lo, hi, n, conf, acc in rows
        )

    diagonal = f'<polyline points="{xy(pad, 0, 0)} {xy(pad, 1, 1)}" stroke="#ccc" fill="none"/>'
    reliable = (
        diagonal
        + dots(pad, reliability(*answers), "#1a73e8", "answers")
        + dots(pad, reliability(*field_pairs(predictions)), "#e8710a", "fields")
    )
    x1 = pad + size + gap
    curve = " ".join(xy(x1, t.coverage, t.precision) for t in reversed(coverage_curve(*answers)))
    coverage = f'<polyline points="{curve}" stroke="#1a73e8" fill="none"/>'
    return (
        f'<svg width="{x1 + size + 10}" height="{size + 32}" font-family="sans-serif">'
        f"{panel(pad, 'right vs confidence', 'confidence', reliable)}"
        f"{panel(x1, 'exact match vs coverage', 'coverage', coverage)}</svg>"
    )


def _calibration(result: EvalResult) -> str:
    if not scored(result.predictions):
        return ""
    return (
        f"<h3>Confidence</h3><p>Confidence is the probability the model gave the least likely token of the "
        f"answer (of a field: of its tokens). Left: how often answers (blue) and fields (orange) at each "
        f"confidence are right; right: exact match of the answers kept when only the most confident are "
        f"accepted.</p>{calibration_svg(result.predictions)}"
    )


def eval_html(result: EvalResult, max_rows: int = 50) -> str:
    headline = {k: v for k, v in sorted(result.metrics.items()) if not k.startswith("f1.")}
    metrics = _table(["metric", "value"], [[escape(k), f"{v:.4f}"] for k, v in headline.items()])
    rows = []
    for p in result.predictions[:max_rows]:
        css = "ok" if p["exact"] else "bad"
        rows.append(
            [
                escape(p["input"]),
                escape(p["reference"]),
                f'<span class="{css}">{escape(p["prediction"])}</span>',
                f"{p['confidence']:.2f}" if "confidence" in p else "",
                escape(", ".join(p["errors"])),
            ]
        )
    return (
        f"<html><head>{_STYLE}</head><body><h2>Evaluation: {escape(result.label)} model</h2>"
        f"<p>{result.n_examples} test examples (set {result.test_set_hash}), task {escape(result.task)}, "
        f"{'decoded under the task grammar, ' if result.constrained else ''}"
        f"{result.examples_per_second:.2f} examples/s, {result.latency_ms_per_example:.0f} ms per example</p>{metrics}"
        f"<h3>Per field</h3>{_table(['field', 'support', 'precision', 'recall', 'f1'], _field_rows(result))}"
        f"{_invented(result)}{_calibration(result)}"
        f"<h3>Errors</h3>{_table(['kind', 'count'], [[k, v] for k, v in taxonomy(result.predictions).items()])}"
        f"<h3>Predictions (first {min(max_rows, len(result.predictions))}; green = exact match)</h3>"
        f"{_table(['input', 'reference', 'prediction', 'confidence', 'errors'], rows)}</body></html>"
    )


def comparison_html(
    base: EvalResult,
    tuned: EvalResult,
    decision,
    worst: int = 20,
    prompted: EvalResult | None = None,
    extra_html: str = "",
) -> str:
    """Base (and prompted base) vs tuned on the same examples, the promotion decision, `extra_html` (the corrected
    slice, tuneline/evaluate/corrected.py), and the tuned model's worst examples."""
    names = [k for k in sorted(tuned.metrics) if not k.startswith("f1.")]
    extra = [prompted] if prompted else []
    headline = _table(
        ["metric", "base", *(["prompted base"] if prompted else []), "tuned", "tuned - base"],
        [
            [
                escape(k),
                f"{base.metrics.get(k, 0):.4f}",
                *[f"{e.metrics.get(k, 0):.4f}" for e in extra],
                f"{tuned.metrics[k]:.4f}",
                f"{tuned.metrics[k] - base.metrics.get(k, 0):+.4f}",
            ]
            for k in names
        ],
    )
    bt, tt = field_table(base.predictions), field_table(tuned.predictions)
    fields = _table(
        ["field", "support", "base f1", "tuned f1", "tuned precision", "tuned recall"],
        [
            [
                escape(f),
                int(v["support"]),
                f"{bt.get(f, {}).get('f1', 0):.3f}",
                f"{v['f1']:.3f}",
                f"{v['precision']:.3f}",
                f"{v['recall']:.3f}",
            ]
            for f, v in tt.items()
            if v["support"]
        ],
    )
    tb, tx = taxonomy(base.predictions), taxonomy(tuned.predictions)
    errors = _table(["kind", "base", "tuned"], [[k, tb[k], tx[k]] for k in tx])
    order = sorted(
        range(len(tuned.predictions)),
        key=lambda i: (tuned.predictions[i]["exact"], tuned.predictions[i].get("rougeL", 0)),
    )
    side = [
        [
            escape(tuned.predictions[i]["input"]),
            escape(tuned.predictions[i]["reference"]),
            escape(base.predictions[i]["prediction"]),
            *[escape(e.predictions[i]["prediction"]) for e in extra],
            f'<span class="bad">{escape(tuned.predictions[i]["prediction"])}</span>',
            escape(", ".join(tuned.predictions[i]["errors"])),
        ]
        for i in order[:worst]
    ]
    guards = _table(
        ["guarded metric", "support", "reference", "candidate", "drop", "ok"],
        [
            [
                escape(k),
                "" if g.support is None else g.support,
                f"{g.reference:.3f}",
                f"{g.candidate:.3f}",
                f"{g.drop:+.3f}",
                "yes" if g.ok else "NO",
            ]
            for k, g in decision.guards.items()
        ],
    )
    verdict = "PROMOTED" if decision.promote else "not promoted"
    return (
        f"<html><head>{_STYLE}</head><body><h2>Base vs tuned: {verdict}</h2>"
        f"<p>{escape(decision.reason)}</p><p>{tuned.n_examples} test examples (set {tuned.test_set_hash}); "
        f"compared with {escape(decision.reference)}: {escape(decision.metric)} difference {decision.difference:+.4f}, "
        f"95% CI [{decision.ci_low:+.4f}, {decision.ci_high:+.4f}]</p>{headline}{extra_html}<h3>Per field</h3>{fields}"
        f"{_invented(tuned)}<h3>Error taxonomy</h3>{errors}<h3>Guards</h3>{guards}"
        f"<h3>Worst {len(side)} tuned examples</h3>"
        f"{_table(['input', 'reference', 'base', *(['prompted base'] if prompted else []), 'tuned', 'errors'], side)}"
        "</body></html>"
    )


def dataset_html(splits: dict[str, list[dict]], preview: int = 5) -> str:
    counts = _table(["split", "rows"], [[escape(k), len(v)] for k, v in splits.items()])
    parts = [f"<html><head>{_STYLE}</head><body><h2>Dataset</h2>{counts}"]
    for name, rows in splits.items():
        shown = [[escape(str(r.get("source", ""))), f"<pre>{escape(_preview_text(r))}</pre>"] for r in rows[:preview]]
        parts.append(f"<h3>{escape(name)} (first {len(shown)})</h3>{_table(['source', 'row'], shown)}")
    return "".join(parts) + "</body></html>"


def _preview_text(row: dict) -> str:
    if "messages" in row:
        return "\n".join(f"{m['role']}: {m['content']}" for m in row["messages"])
    return "\n".join(f"{k}: {v}" for k, v in row.items() if not k.startswith("_"))


def _bars_svg(histogram: list[tuple[int, int, int]], limit: int, width: int = 520, height: int = 140) -> str:
    """Token-length histogram as inline SVG (no plotting library, renders anywhere HTML does)."""
    if not histogram:
        return "<p>no accepted rows</p>"
    top = max(c for _, _, c in histogram) or 1
    bar = width / len(histogram)
    rects = "".join(
        f'<rect x="{i * bar:.1f}" y="{height - c / top * height:.1f}" width="{bar - 1:.1f}" '
        f'height="{c / top * height:.1f}" fill="{"#d93025" if hi > limit else "#1a73e8"}">'
        f"<title>{lo}-{hi} tokens: {c} rows</title></rect>"
        for i, (lo, hi, c) in enumerate(histogram)
    )
    lo, hi = histogram[0][0], histogram[-1][1]
    return (
        f'<svg width="{width}" height="{height + 16}">{rects}<text x="0" y="{height + 14}" font-size="11">{lo}'
        f'</text><text x="{width - 30}" y="{height + 14}" font-size="11">{hi}</text></svg>'
    )


def data_report_html(report) -> str:
    verdict = "passed" if report.passed else "FAILED"
    splits = _table(
        ["split", "input", "accepted", "quarantined", "truncated", "used"],
        [[escape(s), c.input, c.accepted, c.quarantined, c.truncated, c.used] for s, c in report.splits.items()],
    )
    reasons = _table(
        ["split", "reason", "rows"],
        [[escape(s), escape(r), n] for s, rs in report.reasons.items() for r, n in rs.items()] or [["-", "none", 0]],
    )
    coverage = _table(["field", "rows with it"], [[escape(k), f"{v:.1%}"] for k, v in report.field_coverage.items()])
    stats = ", ".join(f"{k} {v:.0f}" for k, v in report.token_lengths.items())
    fallback = (
        "<p>The base model has no chat template: the ChatML fallback was used.</p>"
        if report.chat_template_fallback
        else ""
    )
    return (
        f"<html><head>{_STYLE}</head><body><h2>Data report: {verdict}</h2>"
        f"<p>{report.reject_fraction:.2%} of input rows quarantined (limit {report.max_reject_fraction:.2%}). "
        f"Formats: {escape(str(report.formats))}</p>{fallback}<p>{escape(report.origins())}</p>{splits}"
        f"<h3>Quarantined by reason</h3>{reasons}"
        f"<h3>Token lengths (accepted rows; red: over max_seq_len {report.max_seq_len})</h3><p>{stats}</p>"
        f"{_bars_svg(report.histogram, report.max_seq_len)}<h3>Field coverage</h3>{coverage}</body></html>"
    )


def quarantine_html(rows: list[dict], preview: int = 100) -> str:
    shown = [
        [
            escape(f"{r['file']}:{r['line']}"),
            escape(r["split"]),
            escape(r["reason"]),
            escape(r["detail"]),
            f"<pre>{escape(str(r['raw'])[:500])}</pre>",
        ]
        for r in rows[:preview]
    ]
    return (
        f"<html><head>{_STYLE}</head><body><h2>Quarantine: {len(rows)} rows</h2>"
        f"{_table(['where', 'split', 'reason', 'detail', 'raw row'], shown)}</body></html>"
    )


def monitor_html(report) -> str:
    """A `MonitorReport`: the verdict and its reasons, this window beside the previous one, and each distribution's
    PSI against the training data and the previous window."""
    from datetime import datetime, timezone

    def when(ms: int) -> str:
        return f"{datetime.fromtimestamp(ms / 1000, timezone.utc):%Y-%m-%d %H:%M} UTC"

    def num(v, fmt: str = "{:.3f}") -> str:
        return "" if v is None else fmt.format(v)

    now, before = report.current, report.previous
    keys = [
        ("answers", "{}"),
        ("requests", "{}"),
        ("parse_rate", "{:.3f}"),
        ("review_share", "{:.3f}"),
        ("latency_p50_ms", "{:.0f}"),
        ("latency_p95_ms", "{:.0f}"),
        ("corrected", "{}"),
        ("accuracy", "{:.3f}"),
    ]
    figures = _table(
        ["figure", "this window", "previous window"],
        [[k, num(getattr(now, k), f), num(getattr(before, k), f)] for k, f in keys],
    )
    limit = report.thresholds["max_psi"]
    names = sorted(set(report.drift_training) | set(report.drift_previous))
    drift = _table(
        ["distribution", "PSI vs training", "PSI vs previous window"],
        [
            [
                escape(k),
                *[
                    f'<span class="{"bad" if d.get(k, 0) > limit else "ok"}">{num(d.get(k))}</span>'
                    for d in (report.drift_training, report.drift_previous)
                ],
            ]
            for k in names
        ],
    )
    acts = sorted(set(report.training.acts) | set(now.profile.acts))

    def share(profile, act: str) -> str:
        return f"{profile.acts.get(act, 0) / profile.n:.1%}" if profile.n else ""

    act_rows = [[escape(a), share(report.training, a), share(before.profile, a), share(now.profile, a)] for a in acts]
    css = "ok" if report.verdict == "ok" else "bad"
    reasons = "".join(f"<li>{escape(r)}</li>" for r in report.reasons) or "<li>every figure within its limit</li>"
    versions = ", ".join(f"version {escape(v)}: {n}" for v, n in now.versions.items()) or "none"
    return (
        f"<html><head>{_STYLE}</head><body><h2>Monitor: {escape(report.model_name)} "
        f'<span class="{css}">{report.verdict.upper()}</span></h2><ul>{reasons}</ul>'
        f"<p>Window {when(now.start_ms)} to {when(now.end_ms)} (previous from {when(before.start_ms)}); production "
        f"version {escape(str(report.production_version))}; answers by version: {versions}; "
        f"{report.new_corrections} corrections made since it was trained.</p>{figures}"
        f"<h3>Drift (population stability index; red above monitoring.max_psi {limit})</h3>{drift}"
        f"<h3>Acts (share of parsed answers)</h3>"
        f"{_table(['act', 'training', 'previous window', 'this window'], act_rows)}</body></html>"
    )
