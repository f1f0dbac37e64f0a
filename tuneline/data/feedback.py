"""Corrected requests as training rows: the `feedback` split the finetune data steps read beside the source's.

Each correction a person stored on a recorded request (tuneline/serve/recording.py) becomes one row in the config's
row format, with the request's text as the input and the correction as the answer, and `_file`/`_line` naming
the trace and the text's place in it. Validation screens these rows like any other (leakage against the test
split included) and then adds them to train; a redacted request kept no text to learn from and is skipped.
"""

from __future__ import annotations

import time

from tuneline.config import DataConfig
from tuneline.serve.recording import Window, read_requests, requests_experiment

FEEDBACK = "feedback"
TRACE_FILE = "mlflow-trace:"


def as_row(text: str, answer: str, cfg: DataConfig) -> dict:
    """A row that renders to the conversation the server prompted with (tuneline/serve/serving.py `prompt`)."""
    if cfg.format == "fields":
        return {cfg.input_field: text, cfg.output_field: answer}
    if cfg.format == "prompt_completion":
        return {"prompt": text, "completion": answer}
    if cfg.format == "instruction":
        return {"instruction": text, "output": answer}
    system = [] if cfg.system_prompt is None else [{"role": "system", "content": cfg.system_prompt}]
    return {"messages": system + [{"role": "user", "content": text}, {"role": "assistant", "content": answer}]}


def correction_rows(records: list[dict], cfg: DataConfig) -> list[dict]:
    """The corrected, unredacted records as rows, oldest request first."""
    return [
        {
            **as_row(r["text"], r["correction"]["value"], cfg),
            "_file": f"{TRACE_FILE}{r['trace_id']}",
            "_line": r["index"] + 1,
        }
        for r in records
        if r["correction"] and not r["redacted"] and isinstance(r["correction"]["value"], str)
    ]


def load_feedback(model_name: str, cfg: DataConfig) -> tuple[list[dict], dict]:
    """Every correction of the model's recorded requests as rows, and their lineage for the `raw_data` metadata."""
    records = read_requests(model_name, Window(0, int(time.time() * 1000) + 1))
    rows = correction_rows(records, cfg)
    corrected = [r for r in records if r["correction"]]
    lineage = {
        "experiment": requests_experiment(model_name),
        "rows": len(rows),
        "corrections": len(corrected),
        "redacted_skipped": sum(r["redacted"] for r in corrected),
        "latest_correction_ms": max((r["correction"]["time_ms"] or 0 for r in corrected), default=None),
    }
    return rows, lineage
