"""The file channel between the step process and rank 0: records in, metrics and checkpoints out.

The step process writes the job (`job.json`, `train.jsonl`, `validation.jsonl`) and reads `events.jsonl` as it
grows; rank 0 appends an event per logged metric and per checkpoint, and after a checkpoint waits for the step
process to acknowledge (`pushed/<name>`) that its copy is done, so the Trainer cannot rotate it away first.
Whole files are written to a temporary name and renamed: a reader never sees half of one.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

POLL_SECONDS = 0.2


def write_jsonl(path: Path, records: list[dict]) -> None:
    with path.open("w") as fh:
        for record in records:
            fh.write(json.dumps(record) + "\n")


def read_jsonl(path: Path) -> list[dict]:
    with path.open() as fh:
        return [json.loads(line) for line in fh if line.strip()]


def write_json(path: Path, value) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(value, indent=1, default=str))
    tmp.replace(path)  # readers never see half a file


class EventReader:
    """New complete lines of `events.jsonl` since the last call."""

    def __init__(self, path: Path):
        self.path, self.offset = path, 0

    def new(self) -> list[dict]:
        if not self.path.exists():
            return []
        with self.path.open("rb") as fh:
            fh.seek(self.offset)
            data = fh.read()
        complete = data[: data.rfind(b"\n") + 1]
        self.offset += len(complete)
        return [json.loads(line) for line in complete.splitlines() if line.strip()]


def acknowledge(job: Path, checkpoint: Path) -> None:
    (job / "pushed" / checkpoint.name).touch()


class EventWriter:
    """Rank 0's side of the event file: metrics as they are logged, checkpoints acknowledged by the step process."""

    def __init__(self, job: Path, parent_pid: int):
        self.path, self.job, self.parent_pid = job / "events.jsonl", job, parent_pid

    def _emit(self, event: dict) -> None:
        with self.path.open("a") as fh:
            fh.write(json.dumps(event) + "\n")

    def metrics(self, step: int, values: dict[str, float]) -> None:
        self._emit({"step": step, "metrics": values})

    def checkpoint(self, path: Path) -> None:
        self._emit({"checkpoint": str(path)})
        ack = self.job / "pushed" / path.name
        while not ack.exists():  # the Trainer may delete this checkpoint later on; wait until it is copied
            try:
                os.kill(self.parent_pid, 0)
            except ProcessLookupError:
                raise RuntimeError(f"the launching process {self.parent_pid} is gone; stopping") from None
            time.sleep(POLL_SECONDS)
