"""A run stopped by Ctrl-C or SIGTERM stops for sure, is marked failed in ZenML's store, and exits 130.

The local orchestrator runs steps in this process, so the only way to stop a step mid-work is an exception raised
wherever the main thread is, and that goes wrong in two places. Raised inside a database call, it can leave a
SQLite write transaction open that the next store call (ZenML recording the failed step) then waits on forever;
so the interrupt is held back while the main thread is inside SQLAlchemy or ZenML's store, and raised again half
a second later. Raised inside a weakref callback (SQLAlchemy's, during a step), Python drops it and the run goes
on to finish with exit 0; so a watchdog raises it again every half second until the main thread has caught one.
A process still alive `GRACE_S` seconds after the signal is ended, and a helper process marks its run failed once
it is gone (its store connections gone with it).
"""

from __future__ import annotations

import _thread
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

GRACE_S = 30.0
EVERY_S = 0.5
# Where an exception would leave the store's connection mid-transaction: wait for the main thread to leave.
HOLD_BACK_IN = (f"{os.sep}sqlalchemy{os.sep}", f"{os.sep}zen_stores{os.sep}", f"{os.sep}sqlite3{os.sep}")
# Run by the helper: wait for the ended process (argv[1]) to be gone (a minute at most: a parent that never reaps
# it leaves a zombie, whose connections are closed all the same), then mark its run failed.
MARK = """
import os, sys, time
for _ in range(300):
    try:
        os.kill(int(sys.argv[1]), 0)
    except ProcessLookupError:
        break
    time.sleep(0.2)
from runner.interrupt import mark_failed
mark_failed(sys.argv[2])
"""

_requested_at: float | None = None
_caught = threading.Event()
_current: tuple[str, str] | None = None  # the pipeline run this process started: (pipeline name, its token)


def install() -> None:
    """`kill` (SIGTERM) stops a run the way Ctrl-C does."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _on_signal)


def _on_signal(signum, frame) -> None:
    global _requested_at
    if _requested_at is None:
        _requested_at = time.monotonic()
        threading.Thread(target=_watch, name="tuneline-interrupt", daemon=True).start()
    if not _in_store(frame):
        raise KeyboardInterrupt


def _in_store(frame) -> bool:
    while frame is not None:
        if any(part in frame.f_code.co_filename for part in HOLD_BACK_IN):
            return True
        frame = frame.f_back
    return False


def _watch() -> None:
    deadline = _requested_at + GRACE_S
    while time.monotonic() < deadline:
        if _caught.wait(EVERY_S):
            time.sleep(max(0.0, deadline - time.monotonic()))  # caught: the main thread marks and exits
        else:
            _thread.interrupt_main(signal.SIGINT)
    said = f"error: interrupted; the run did not stop within {GRACE_S:.0f} s of the signal, so this process ended it"
    if _current is not None:
        helper = subprocess.Popen(
            [sys.executable, "-c", MARK, str(os.getpid()), _current[1]],
            cwd=Path(__file__).resolve().parent.parent,
            start_new_session=True,
        )
        said += f"; process {helper.pid} marks its run of '{_current[0]}' failed once it is gone"
    print(said, file=sys.stderr, flush=True)
    os._exit(130)


def now() -> datetime:
    """ZenML stores run times as naive UTC."""
    return datetime.now(timezone.utc).replace(tzinfo=None)


def starting(pipeline_name: str, run_name: str | None = None) -> str:
    """Called just before a pipeline run starts: returns its run-name template (the user's, or ZenML's default)
    with a token unique to this run appended. The run holding that token is what an interrupt from now on marks
    failed, and nothing else: other runs of the pipeline on the same store go on."""
    global _current
    token = uuid.uuid4().hex[:12]
    _current = (pipeline_name, token)
    return f"{run_name or pipeline_name + '-{date}-{time}'}-{token}"


def token() -> str | None:
    """The token of the run this process started last, if any."""
    return _current[1] if _current else None


def check() -> None:
    """Called when a pipeline returned or failed: after a signal, that is the interrupt taking effect (or a step
    that did not hear it, see above, finishing), and the run stops as interrupted."""
    if _requested_at is not None:
        raise KeyboardInterrupt


def stopped() -> str:
    """Called where the KeyboardInterrupt is caught: stops the watchdog's repeats, marks the run failed and says
    what became of it."""
    _caught.set()
    marked, finished = mark_failed(_current[1]) if _current else ([], [])
    said = ([f"run {', '.join(marked)} stopped and marked failed"] if marked else []) + (
        [f"run {', '.join(finished)} had finished before the interrupt took effect"] if finished else []
    )
    return "interrupted; " + "; ".join(said) if said else "interrupted before the run started"


def mark_failed(token: str, reason: str = "interrupted by the user") -> tuple[list[str], list[str]]:
    """Mark the run whose name holds `token`, if it exists and is unfinished, failed with its unfinished steps.
    Returns the
    names of the runs stopped (ZenML has already failed one whose step took the interrupt) and of those that
    succeeded."""
    from zenml.client import Client
    from zenml.enums import ExecutionStatus
    from zenml.models import PipelineRunUpdate, StepRunUpdate

    client = Client()
    marked, finished = [], []
    for run in client.list_pipeline_runs(name=f"contains:{token}", size=5):
        (finished if run.status.is_successful else marked).append(run.name)
        if run.status.is_finished:
            continue
        for step in run.steps.values():
            if not step.status.is_finished:
                client.zen_store.update_run_step(step.id, StepRunUpdate(status=ExecutionStatus.FAILED, end_time=now()))
        client.zen_store.update_run(run.id, PipelineRunUpdate(status=ExecutionStatus.FAILED, status_reason=reason))
    return marked, finished
