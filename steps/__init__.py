"""Thin ZenML steps: typed, named artifacts in and out; the work happens in the `tuneline` package."""

import materializers  # noqa: F401  (registers our materializers before any step runs)
from steps import quiet
from steps.data import check_data, load_data, prepare_dataset
from steps.evaluate import confidence_threshold, evaluate, select_examples, select_shots
from steps.export import export_model
from steps.monitor import monitor_requests
from steps.promote import promote
from steps.serve import extract_texts
from steps.train import train_lora

quiet.install()

__all__ = [
    "load_data",
    "prepare_dataset",
    "check_data",
    "train_lora",
    "select_examples",
    "select_shots",
    "evaluate",
    "confidence_threshold",
    "export_model",
    "promote",
    "extract_texts",
    "monitor_requests",
]
