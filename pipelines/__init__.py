from pipelines.evaluate_version import evaluate_version
from pipelines.export_version import export_version
from pipelines.extract import extract
from pipelines.finetune import finetune, prepare_data
from pipelines.monitor import monitor

__all__ = ["evaluate_version", "export_version", "extract", "finetune", "monitor", "prepare_data"]
