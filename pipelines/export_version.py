"""`run.py --export --model-version V`: merge a version's adapter into its base model and store the plain HF
folder as the `merged_model` artifact."""

from zenml import pipeline
from zenml.client import Client

from steps import export_model
from tuneline.config import ModelConfig


@pipeline(name="export_version")
def export_version(model: ModelConfig, adapter_id: str, source: str) -> None:
    export_model(Client().get_artifact_version(adapter_id), model, source)
