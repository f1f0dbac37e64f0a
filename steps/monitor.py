"""The monitor step: the production version's recorded requests (MLflow traces) in a window and the one before,
its training rows as the reference, and the report, its figures logged to MLflow."""

import time
from typing import Annotated, Optional, Tuple

from zenml import step

from steps.registry import in_stage
from tuneline.registry import tracking
from tuneline.config import DataConfig, MonitoringConfig
from tuneline.serve.monitoring import MonitorReport, monitor, window_ms
from tuneline.serve.recording import Window, read_requests
from tuneline.evaluate.report import monitor_html


def _training_rows(version) -> list[tuple[str, str]]:
    """(last user turn, answer) of each training row of the version's `chat_dataset`."""
    artifact = version.get_artifact("chat_dataset") if version is not None else None
    if artifact is None:
        return []
    rows = artifact.load().splits.get("train", [])
    return [
        (next(m["content"] for m in reversed(r["messages"]) if m["role"] == "user"), r["messages"][-1]["content"])
        for r in rows
    ]


@step(enable_cache=False, experiment_tracker=True)
def monitor_requests(
    model_name: str, data: DataConfig, monitoring: MonitoringConfig, since: str, end_ms: Optional[int] = None
) -> Tuple[Annotated[MonitorReport, "monitor_report"], Annotated[str, "verdict"]]:
    """Never cached: the traces change while the config does not. `end_ms` (default now) ends the window."""
    end = end_ms or int(time.time() * 1000)
    start = end - window_ms(since)
    previous_start = start - window_ms(since)
    version = in_stage(model_name, "production")
    current, previous = (
        read_requests(model_name, Window(start, end)),
        read_requests(model_name, Window(previous_start, start)),
    )
    report = monitor(
        model_name,
        version.name if version else None,
        data.task,
        current,
        previous,
        (previous_start, start, end),
        _training_rows(version),
        monitoring,
        trained_at_ms=int(version.created.timestamp() * 1000) if version else None,
    )
    tracking.log_metrics(report.metrics(), prefix="monitor")
    tracking.log_text(monitor_html(report), "monitor/report.html")
    return report, report.verdict
