"""HTML that people read in the ZenML dashboard and MLflow: evaluation results and dataset previews."""

from __future__ import annotations

from html import escape

from tuneline.evaluation import EvalResult

_STYLE = (
    "<style>body{font-family:sans-serif;font-size:14px}table{border-collapse:collapse;margin:8px 0}"
    "td,th{border:1px solid #ccc;padding:4px 8px;text-align:left;vertical-align:top}"
    ".ok{background:#e6f4ea}.bad{background:#fce8e6}</style>"
)


def _table(header: list[str], rows: list[list]) -> str:
    head = "".join(f"<th>{escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def eval_html(result: EvalResult, max_rows: int = 50) -> str:
    metrics = _table(["metric", "value"], [[escape(k), f"{v:.4f}"] for k, v in sorted(result.metrics.items())])
    rows = []
    for p in result.predictions[:max_rows]:
        css = "ok" if p["exact"] else "bad"
        rows.append([escape(p["input"]), escape(p["reference"]), f'<span class="{css}">{escape(p["prediction"])}</span>'])
    return (
        f"<html><head>{_STYLE}</head><body><h2>Evaluation: {escape(result.label)} model</h2>"
        f"<p>{result.n_examples} test examples (set {result.test_set_hash}), task {escape(result.task)}, "
        f"{result.examples_per_second:.2f} examples/s</p>{metrics}"
        f"<h3>Predictions (first {min(max_rows, len(result.predictions))}; green = exact match)</h3>"
        f"{_table(['input', 'reference', 'prediction'], rows)}</body></html>"
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
