"""Pipelines: wiring only. Each section of the tuneline config is one pipeline parameter, so a step's cache
key holds only the sections it reads (changing `evaluation` never retrains)."""

from zenml import pipeline

from steps import (
    check_data,
    confidence_threshold,
    evaluate,
    load_data,
    prepare_dataset,
    promote,
    select_examples,
    select_shots,
    train_lora,
)
from tuneline.config import (
    DataConfig,
    EvaluationConfig,
    LoraConfig,
    ModelConfig,
    PromotionConfig,
    ServingConfig,
    TrainingConfig,
)


def data_steps(data: DataConfig, model: ModelConfig):
    raw = load_data(data)
    dataset, quarantine, report = prepare_dataset(raw, data, model)
    check_data(report, quarantine)
    return dataset


@pipeline(name="prepare_data")
def prepare_data(data: DataConfig, model: ModelConfig) -> None:
    """`run.py --prepare-only`: the same data steps (and cache entries) as `finetune`, nothing else."""
    data_steps(data, model)


@pipeline(name="finetune")
def finetune(
    data: DataConfig,
    model: ModelConfig,
    lora: LoraConfig,
    training: TrainingConfig,
    evaluation: EvaluationConfig,
    promotion: PromotionConfig,
    serving: ServingConfig,
    resume: bool = False,
) -> None:
    """`serving` is read only for the confidence threshold recorded with the version."""
    dataset = data_steps(data, model)
    adapter = train_lora(dataset, data, model, lora, training, resume=resume, after="check_data")
    examples = select_examples(dataset, evaluation, after="check_data")
    base_eval = evaluate.with_options(substitutions={"label": "base"})(
        examples, model, evaluation, task=data.task, label="base", id="evaluate_base"
    )
    tuned_eval = evaluate.with_options(substitutions={"label": "tuned"})(
        examples, model, evaluation, task=data.task, label="tuned", adapter=adapter, id="evaluate_tuned"
    )
    prompted_eval = None
    if evaluation.prompted_baseline.enabled:
        shots = select_shots(dataset, evaluation, after="check_data")
        prompted_eval = evaluate.with_options(substitutions={"label": "prompted"})(
            examples, model, evaluation, task=data.task, label="prompted", shots=shots, id="evaluate_prompted"
        )
    confidence_threshold(tuned_eval, serving)
    promote(base_eval, tuned_eval, dataset, model, evaluation, promotion, prompted=prompted_eval, data=data)
