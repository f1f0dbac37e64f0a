"""`run.py monitor`: run the monitor pipeline on the active stack, and retrain when its verdict and the corrections
say so (monitoring.retrain)."""

from __future__ import annotations

import logging

from datetime import datetime, timezone

from zenml.client import Client
from zenml.config.schedule import Schedule

from pipelines import monitor
from runner.launch import _run, launch
from runner.summary import RunSummary
from runner.versions import model_name_of
from tuneline.config import TunelineConfig
from tuneline.serve.monitoring import MonitorReport, should_retrain

log = logging.getLogger(__name__)


def _params(config: TunelineConfig, zenml_config: dict, since: str | None, end_ms: int | None) -> dict:
    return {
        "model_name": model_name_of(config, zenml_config),
        "data": config.data,
        "monitoring": config.monitoring,
        "since": since or config.monitoring.window,
        "end_ms": end_ms,
    }


def _without_model(zenml_config: dict) -> dict:
    return {k: v for k, v in zenml_config.items() if k != "model"}  # monitoring makes no model version


def launch_monitor(
    config: TunelineConfig, zenml_config: dict, since: str | None = None, end_ms: int | None = None
) -> MonitorReport:
    """The report over the window `since` (default monitoring.window) ending at `end_ms` (default now)."""
    run = _run(monitor, _without_model(zenml_config), False, _params(config, zenml_config, since, end_ms))
    return Client().get_pipeline_run(run.id).steps["monitor_requests"].outputs["monitor_report"][0].load()


def schedule(config: TunelineConfig, zenml_config: dict, cron: str, since: str | None = None):
    """Register the monitor pipeline on `cron` on the active stack (checked as finetune's schedule is); each run
    judges the window ending when it runs. Retraining is `run.py monitor`'s, not a scheduled run's."""
    from runner.first_use import set_up
    from runner.schedule import check_stack

    set_up()
    check_stack()
    name = f"{model_name_of(config, zenml_config)}-monitor-{datetime.now(timezone.utc):%Y%m%d-%H%M%S}"
    _run(
        monitor,
        _without_model(zenml_config),
        False,
        _params(config, zenml_config, since, None),
        Schedule(name=name, cron_expression=cron),
    )
    return Client().get_schedule(name)


def retrain(config: TunelineConfig, zenml_config: dict, report: MonitorReport) -> RunSummary | None:
    """The finetune pipeline, on the same stack and config, when `should_retrain` says why; else None."""
    why = should_retrain(report, config.monitoring)
    if why is None:
        return None
    log.info("retraining: %s", why)
    return launch(config, zenml_config)
