"""Human review round trip: a sheet of sampled (or least confident) test examples to score by hand, or of the
served requests the model was least sure of to correct by hand, and its validated import.

The sheet (CSV, plus an HTML copy to read) names the model and version on every row, so an imported file says
by itself where its scores belong. Rubric columns take integers 1 to 5. A served request's row has the id
`trace:<trace id>/<text index>` and an empty `reference`, where the reviewer writes the right answer: its import
stores that as the request's correction (tuneline/serve/recording.py), as `POST /feedback` does.
"""

from __future__ import annotations

import csv
import random
from collections.abc import Callable
from dataclasses import dataclass
from html import escape
from pathlib import Path

from tuneline.serve.recording import CorrectionError, check_correction

RUBRIC = ("relevance", "accuracy", "fluency", "format")
COLUMNS = ("id", "model", "version", "input", "reference", "prediction", "confidence", *RUBRIC, "notes")
SERVED = "trace:"  # the id prefix of a served request's row


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


def served_rows(records: list[dict], n: int, model: str) -> list[dict]:
    """The `n` recorded answers (`recording.read_requests` records) the model was least sure of, least sure first,
    among those a person can read (not redacted) and has not corrected yet; `reference` is left for the answer."""
    open_ = [r for r in records if not r["redacted"] and r["correction"] is None]
    picked = sorted(open_, key=lambda r: (r["confidence"] is None, r["confidence"] or 0.0, r["timestamp_ms"]))[:n]
    return [
        _row(f"{SERVED}{r['trace_id']}/{r['index']}", model, r["version"], r["text"], "", r["answer"], r["confidence"])
        for r in picked
    ]


def _rows(predictions: list[dict], picked: list[int], model: str, version: str) -> list[dict]:
    return [
        _row(
            i,
            model,
            version,
            predictions[i]["input"],
            predictions[i]["reference"],
            predictions[i]["prediction"],
            predictions[i].get("confidence"),
        )
        for i in picked
    ]


def _row(id_, model: str, version: str, text: str, reference: str, prediction: str, confidence) -> dict:
    return {
        "id": id_,
        "model": model,
        "version": version,
        "input": text,
        "reference": reference,
        "prediction": prediction,
        "confidence": "" if confidence is None else confidence,
        **dict.fromkeys(RUBRIC, ""),
        "notes": "",
    }


def write_sheet(rows: list[dict], out_dir: Path, stem: str) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    csv_path, html_path = out_dir / f"{stem}.csv", out_dir / f"{stem}.html"
    with csv_path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    head = "".join(f"<th>{c}</th>" for c in COLUMNS)
    body = "".join("<tr>" + "".join(f"<td>{escape(str(r[c]))}</td>" for c in COLUMNS) + "</tr>" for r in rows)
    task = (
        "Where the prediction is wrong, write the right answer in the CSV's <code>reference</code>, as the model "
        "should have written it (a right prediction copied there confirms it); leave it empty to skip the row."
        if rows and str(rows[0]["id"]).startswith(SERVED)
        else f"Score each row 1 (bad) to 5 (good) in the CSV: {', '.join(RUBRIC)}."
    )
    html_path.write_text(
        f"<html><body><h2>Human review</h2><p>{task} Then run "
        f"<code>python run.py review import {csv_path.name}</code>.</p>"
        f"<table border=1 cellpadding=4><tr>{head}</tr>{body}</table></body></html>"
    )
    return csv_path, html_path


def read_scores(path: Path) -> tuple[str, str, dict[str, float], int]:
    """Validate every row; return (model, version, mean score per rubric column, rows)."""
    rows = _read(path, ("model", "version", *RUBRIC))
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


def _read(path: Path, columns: tuple[str, ...]) -> list[dict]:
    if not path.is_file():
        raise ReviewError(f"{path}: file not found")
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in columns if c not in (reader.fieldnames or [])]
        if missing:
            raise ReviewError(f"{path}: missing column(s) {missing}")
        rows = list(reader)
    if not rows:
        raise ReviewError(f"{path}: no rows")
    return rows


def served_model(path: Path) -> str | None:
    """The model a sheet of served requests is for; None for a sheet of test examples."""
    rows = _read(path, ("id", "model"))
    if not any(r["id"].startswith(SERVED) for r in rows):
        return None
    models = {r["model"] for r in rows}
    if len(models) != 1:
        raise ReviewError(f"{path}: rows name several models {sorted(models)}; import one sheet per model")
    return models.pop()


@dataclass(frozen=True)
class SheetCorrection:
    trace_id: str
    index: int
    answer: str
    task: str


def read_corrections(path: Path, task_of: Callable[[str], str]) -> list[SheetCorrection]:
    """Every filled `reference` of a served-requests sheet, each read first by the parser of its version's task
    (`task_of(version)`): one that does not parse refuses the whole sheet, naming its line, id and why, before
    anything is stored."""
    errors, found, tasks = [], [], {}
    for line, row in enumerate(_read(path, ("id", "version", "reference")), start=2):  # line 1 is the header
        answer = (row["reference"] or "").strip()
        if not answer:
            continue
        trace_id, _, index = row["id"].removeprefix(SERVED).rpartition("/")
        if not row["id"].startswith(SERVED) or not trace_id or not index.isdigit():
            errors.append(f"{path}:{line}: id {row['id']!r} is not {SERVED}<trace id>/<text index>")
            continue
        if row["version"] not in tasks:
            tasks[row["version"]] = task_of(row["version"])
        task = tasks[row["version"]]
        try:
            check_correction(answer, task)
        except CorrectionError as err:
            errors.append(f"{path}:{line} (id {row['id']}): {err}")
            continue
        found.append(SheetCorrection(trace_id, int(index), answer, task))
    if errors:
        raise ReviewError("\n".join(errors))
    if not found:
        raise ReviewError(f"{path}: no row has a corrected answer in 'reference'")
    return found
