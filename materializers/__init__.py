"""Materializers for the artifacts ZenML cannot store well by itself. Importing registers them."""

from materializers.chat_dataset import ChatDatasetMaterializer
from materializers.data_report import DataReportMaterializer
from materializers.eval_result import EvalResultMaterializer
from materializers.model_folder import ModelFolderMaterializer
from materializers.monitor_report import MonitorReportMaterializer
from materializers.quarantine import QuarantineMaterializer

__all__ = [
    "ChatDatasetMaterializer",
    "DataReportMaterializer",
    "EvalResultMaterializer",
    "ModelFolderMaterializer",
    "MonitorReportMaterializer",
    "QuarantineMaterializer",
]
