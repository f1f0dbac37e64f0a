"""The child's side of an interrupt (runner/supervise.py runs each pipeline command in a child process): which run
it stops, and how that run is marked failed.

The first SIGINT or SIGTERM raises KeyboardInterrupt, which unwinds the run; later ones are the run already
stopping (a Ctrl-C reaches the child from the terminal and again from its supervisor), except that a SIGTERM after
the first signal is the supervisor ending a child that did not stop in time, and ends it at once. Python drops an
exception raised in a weakref callback or `__del__` (SQLAlchemy's run during steps) and reports it to
`sys.unraisablehook`: an interrupt dropped there ends the child at once, as the supervisor would.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

# Set in the child by its supervisor: the file the child names each run it starts in, one `pipeline token` a line.
REPORT_ENV = "TUNELINE_SUPERVISOR_REPORT"

_requested = False  # a signal came: whatever the run ends with, it ends as interrupted
_current: tuple[str, str] | None = None  # the pipeline run this process started: (pipeline name, its token)


def install() -> None:
    """Stop on the first SIGINT or SIGTERM, and die with the supervising process (nobody would stop this one)."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _on_signal)
    sys.unraisablehook = _on_unraisable
    threading.Thread(target=_watch_parent, args=(os.getppid(),), name="tuneline-parent", daemon=True).start()


def _on_signal(signum, frame) -> None:
    global _requested
    if _requested:
        if signum == signal.SIGTERM:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.raise_signal(signal.SIGTERM)
        return
    _requested = True
    raise KeyboardInterrupt


def _on_unraisable(info) -> None:
    if _requested and issubclass(info.exc_type, KeyboardInterrupt):
        exit_now()
    sys.__unraisablehook__(info)


def _watch_parent(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(0.5)
    os.kill(os.getpid(), signal.SIGKILL)  # the run is left for the next run's sweep (runner/orphans.py)


def requested() -> bool:
    """Whether a signal came, so that the run, however it ended, ends as interrupted."""
    return _requested


def check() -> None:
    """Called when a pipeline returned or failed: after a signal, that is the interrupt taking effect (or a step
    that did not hear it finishing), and the run stops as interrupted."""
    if _requested:
        raise KeyboardInterrupt


def exit_now() -> None:
    """How an interrupted child ends: at once, with 130. Its supervisor marks the run; finalizing an interpreter
    that has loaded torch, pandas and ZenML takes seconds (many on a busy machine) that would use up the grace."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(130)


def now() -> datetime:
    """ZenML stores run times as naive UTC."""
    return datetime.now(timezone.utc).replace(tzinfo=None)


def starting(pipeline_name: str, run_name: str | None = None) -> str:
    """Called just before a pipeline run starts: returns its run-name template (the user's, or ZenML's default)
    with a token unique to this run appended, and tells the supervisor. The run holding that token is what an
    interrupt from now on marks failed, and nothing else: other runs of the pipeline on the same store go on."""
    global _current
    token = uuid.uuid4().hex[:12]
    _current = (pipeline_name, token)
    if report := os.environ.get(REPORT_ENV):
        with open(report, "a") as fh:
            fh.write(f"{pipeline_name} {token}\n")
    return f"{run_name or pipeline_name + '-{date}-{time}'}-{token}"


def token() -> str | None:
    """The token of the run this process started last, if any."""
    return _current[1] if _current else None


def last_started(report: Path) -> tuple[str, str] | None:
    """The (pipeline name, token) of the run a child named last in `report`, if it started one."""
    lines = report.read_text().split()
    return (lines[-2], lines[-1]) if lines else None


def mark_failed(token: str, reason: str = "interrupted by the user") -> tuple[list[str], list[str]]:
    """Mark the run whose name holds `token`, if it exists and is unfinished, failed with its unfinished steps.
    Returns the names of the runs stopped (ZenML has already failed one whose step took the interrupt) and of
    those that succeeded."""
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
