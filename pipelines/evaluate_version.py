"""`run.py --evaluate-only --model-version V`: score an existing model version (or the base model) on today's
test set, without training and without creating a model version."""

from typing import Optional

from zenml import pipeline
from zenml.client import Client

from pipelines.finetune import data_steps
from steps import evaluate, select_examples
from tuneline.config import DataConfig, EvaluationConfig, ModelConfig


@pipeline(name="evaluate_version")
def evaluate_version(
    data: DataConfig, model: ModelConfig, evaluation: EvaluationConfig, label: str, adapter_id: Optional[str] = None
) -> None:
    """`adapter_id`: the version's `lora_adapter` artifact version (resolved by the caller), None for the base."""
    dataset = data_steps(data, model)
    adapter = Client().get_artifact_version(adapter_id) if adapter_id else None
    evaluate.with_options(substitutions={"label": label})(
        select_examples(dataset, evaluation, after="check_data"),
        model,
        evaluation,
        task=data.task,
        label=label,
        adapter=adapter,
        id="evaluate",
    )
