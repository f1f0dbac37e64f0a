"""Materializers for the artifacts ZenML cannot store well by itself. Importing registers them."""

from materializers.chat_dataset import ChatDatasetMaterializer
from materializers.eval_result import EvalResultMaterializer
from materializers.lora_adapter import LoraAdapterMaterializer

__all__ = ["ChatDatasetMaterializer", "EvalResultMaterializer", "LoraAdapterMaterializer"]
