"""A run stopped by Ctrl-C or SIGTERM stops for sure, is marked failed in ZenML's store, and exits 130.

The local orchestrator runs steps in this process, so the only way to stop a step mid-work is an exception raised
wherever the main thread is, and that is not always heard: Python drops one raised inside a weakref callback or a
`__del__` (the run then finished, exit 0), and ZenML's own step signal handler queries its store from inside the
handler, which can block for good when the signal landed inside a store call. So the first signal starts a
watchdog that raises the interrupt again every half second until the main thread has caught one, and that ends the
process, after marking the run failed from a fresh process, if it is still alive `GRACE_S` seconds later.
"""

from __future__ import annotations

import _thread
import os
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

GRACE_S = 30.0
EVERY_S = 0.5
MARK = ("import sys; from datetime import datetime; from runner.interrupt import mark_failed; "
        "mark_failed(sys.argv[1], datetime.fromisoformat(sys.argv[2]))")

_requested_at: float | None = None
_caught = threading.Event()
_current: tuple[str, datetime] | None = None  # the pipeline run this process started: (pipeline name, start time)


def install() -> None:
    """`kill` (SIGTERM) stops a run the way Ctrl-C does."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _on_signal)


def _on_signal(signum, frame) -> None:
    global _requested_at
    if _requested_at is None:
        _requested_at = time.monotonic()
        threading.Thread(target=_watch, name="tuneline-interrupt", daemon=True).start()
    raise KeyboardInterrupt


def _watch() -> None:
    deadline = _requested_at + GRACE_S
    while time.monotonic() < deadline:
        if _caught.wait(EVERY_S):
            time.sleep(max(0.0, deadline - time.monotonic()))  # caught: the main thread marks and exits
        else:
            _thread.interrupt_main(signal.SIGINT)
    if _current is not None:  # from a fresh process: this one may be stuck inside the store
        try:
            subprocess.run([sys.executable, "-c", MARK, _current[0], _current[1].isoformat()], timeout=GRACE_S,
                           cwd=Path(__file__).resolve().parent.parent, check=False)
        except subprocess.TimeoutExpired:
            pass
    print(f"error: interrupted; the run did not stop within {GRACE_S:.0f} s of the signal, so this process ended it"
          + ("" if _current is None else f" and marked its run of '{_current[0]}' failed"), file=sys.stderr,
          flush=True)
    os._exit(130)


def now() -> datetime:
    """ZenML stores run times as naive UTC."""
    return datetime.now(timezone.utc).replace(tzinfo=None)


def starting(pipeline_name: str) -> None:
    """Called just before a pipeline run starts: the run an interrupt from now on must mark failed."""
    global _current
    _current = (pipeline_name, now())


def check() -> None:
    """Called when a pipeline returned: an interrupt that a step did not hear (see above) still stops the run."""
    if _requested_at is not None:
        raise KeyboardInterrupt


def stopped() -> str:
    """Called where the KeyboardInterrupt is caught: stops the watchdog's repeats, marks the run failed and says
    what became of it."""
    _caught.set()
    marked, finished = mark_failed(*_current) if _current else ([], [])
    said = ([f"run {', '.join(marked)} stopped and marked failed"] if marked else []) + (
        [f"run {', '.join(finished)} had finished before the interrupt took effect"] if finished else [])
    return "interrupted; " + "; ".join(said) if said else "interrupted before the run started"


def mark_failed(pipeline_name: str, since: datetime) -> tuple[list[str], list[str]]:
    """Mark this pipeline's unfinished runs created since `since` (the one we started) failed. Returns the names of
    the runs stopped (ZenML has already failed one whose step took the interrupt) and of those that succeeded."""
    from zenml.client import Client
    from zenml.enums import ExecutionStatus
    from zenml.models import PipelineRunUpdate, StepRunUpdate

    client = Client()
    marked, finished = [], []
    for run in client.list_pipeline_runs(pipeline_name=pipeline_name, size=20):
        if run.created < since:
            continue
        (finished if run.status.is_successful else marked).append(run.name)
        if run.status.is_finished:
            continue
        for step in run.steps.values():
            if not step.status.is_finished:
                client.zen_store.update_run_step(step.id, StepRunUpdate(status=ExecutionStatus.FAILED, end_time=now()))
        client.zen_store.update_run(run.id, PipelineRunUpdate(status=ExecutionStatus.FAILED,
                                                              status_reason="interrupted by the user"))
    return marked, finished
