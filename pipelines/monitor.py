"""`run.py monitor`: one step that reads the served model's recorded requests and judges them."""

from typing import Optional

from zenml import pipeline

from steps.monitor import monitor_requests
from tuneline.config import DataConfig, MonitoringConfig


@pipeline(name="monitor", enable_cache=False)
def monitor(
    model_name: str, data: DataConfig, monitoring: MonitoringConfig, since: str, end_ms: Optional[int] = None
) -> None:
    monitor_requests(model_name, data, monitoring, since, end_ms)
