"""Human review round trip: a sheet of sampled (or least confident) test examples to score by hand, and its
validated import.

The sheet (CSV, plus an HTML copy to read) names the model and version on every row, so an imported file says
by itself where its scores belong. Rubric columns take integers 1 to 5.
"""

from __future__ import annotations

import csv
import random
from html import escape
from pathlib import Path

RUBRIC = ("relevance", "accuracy", "fluency", "format")
COLUMNS = ("id", "model", "version", "input", "reference", "prediction", "confidence", *RUBRIC, "notes")


class ReviewError(ValueError):
    """A sheet that cannot be imported; the message names the file, row and column."""


def sample_rows(predictions: list[dict], n: int, seed: int, model: str, version: str) -> list[dict]:
    picked = sorted(random.Random(seed).sample(range(len(predictions)), min(n, len(predictions))))
    return _rows(predictions, picked, model, version)


def least_confident_rows(predictions: list[dict], n: int, model: str, version: str) -> list[dict]:
    """The `n` answers the model was least sure of, least sure first: where a reviewer's time finds most errors."""
    if not predictions or any("confidence" not in p for p in predictions):
        raise ReviewError(f"model '{model}' version {version} was evaluated before answers carried a confidence")
    picked = sorted(range(len(predictions)), key=lambda i: predictions[i]["confidence"])[:n]
    return _rows(predictions, picked, model, version)


def _rows(predictions: list[dict], picked: list[int], model: str, version: str) -> list[dict]:
    return [
        {
            "id": i,
            "model": model,
            "version": version,
            "input": predictions[i]["input"],
            "reference": predictions[i]["reference"],
            "prediction": predictions[i]["prediction"],
            "confidence": predictions[i].get("confidence", ""),
            **dict.fromkeys(RUBRIC, ""),
            "notes": "",
        }
        for i in picked
    ]


def write_sheet(rows: list[dict], out_dir: Path, stem: str) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    csv_path, html_path = out_dir / f"{stem}.csv", out_dir / f"{stem}.html"
    with csv_path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    head = "".join(f"<th>{c}</th>" for c in COLUMNS)
    body = "".join("<tr>" + "".join(f"<td>{escape(str(r[c]))}</td>" for c in COLUMNS) + "</tr>" for r in rows)
    html_path.write_text(
        "<html><body><h2>Human review</h2><p>Score each row 1 (bad) to 5 (good) in the CSV: "
        f"{', '.join(RUBRIC)}. Then run <code>python run.py review import {csv_path.name}</code>.</p>"
        f"<table border=1 cellpadding=4><tr>{head}</tr>{body}</table></body></html>"
    )
    return csv_path, html_path


def read_scores(path: Path) -> tuple[str, str, dict[str, float], int]:
    """Validate every row; return (model, version, mean score per rubric column, rows)."""
    if not path.is_file():
        raise ReviewError(f"{path}: file not found")
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in ("model", "version", *RUBRIC) if c not in (reader.fieldnames or [])]
        if missing:
            raise ReviewError(f"{path}: missing column(s) {missing}")
        rows = list(reader)
    if not rows:
        raise ReviewError(f"{path}: no rows")
    targets = {(r["model"], r["version"]) for r in rows}
    if len(targets) != 1:
        raise ReviewError(f"{path}: rows name several model versions {sorted(targets)}; import one sheet per version")
    errors, totals = [], dict.fromkeys(RUBRIC, 0)
    for line, row in enumerate(rows, start=2):  # line 1 is the header
        for col in RUBRIC:
            value = (row[col] or "").strip()
            if not value:
                errors.append(f"{path}:{line} (id {row.get('id')}): '{col}' is empty")
            elif not value.isdigit() or not 1 <= int(value) <= 5:
                errors.append(f"{path}:{line} (id {row.get('id')}): '{col}' must be an integer 1-5, got {value!r}")
            else:
                totals[col] += int(value)
    if errors:
        raise ReviewError("\n".join(errors))
    model, version = targets.pop()
    return model, version, {c: totals[c] / len(rows) for c in RUBRIC}, len(rows)
