"""A run stopped by Ctrl-C or SIGTERM is marked failed in ZenML's store, so no run stays "running" forever.

The local orchestrator runs steps in this process: Ctrl-C raises KeyboardInterrupt in the step, which ZenML records
as that step failing and lets through, so the whole run stops; the run itself would stay "running" without this.
"""

from __future__ import annotations

import signal
from datetime import datetime, timezone

UNFINISHED = ("initializing", "running", "provisioning")


class Interrupted(RuntimeError):
    """The user stopped the run; the message names the runs marked failed."""


def stop_on_sigterm() -> None:
    """`kill` (SIGTERM) stops a run the way Ctrl-C does, so it is marked failed too."""
    def interrupt(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)


def now() -> datetime:
    """ZenML stores run times as naive UTC."""
    return datetime.now(timezone.utc).replace(tzinfo=None)


def mark_failed(pipeline_name: str, since: datetime) -> list[str]:
    """Mark this pipeline's unfinished runs created since `since` (the one we started) failed; return the names of
    all its runs since then (ZenML has already failed a run whose step took the interrupt)."""
    from zenml.client import Client
    from zenml.enums import ExecutionStatus
    from zenml.models import PipelineRunUpdate, StepRunUpdate

    client = Client()
    marked = []
    for run in client.list_pipeline_runs(pipeline_name=pipeline_name, size=20):
        if run.created < since:
            continue
        marked.append(run.name)
        if run.status.value not in UNFINISHED:
            continue
        for step in run.steps.values():
            if step.status.value in UNFINISHED:
                client.zen_store.update_run_step(step.id, StepRunUpdate(status=ExecutionStatus.FAILED, end_time=now()))
        client.zen_store.update_run(run.id, PipelineRunUpdate(status=ExecutionStatus.FAILED,
                                                              status_reason="interrupted by the user"))
    return marked
