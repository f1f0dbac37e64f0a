"""The finetune pipeline: wiring only. Each section of the tuneline config is one pipeline parameter, so a
step's cache key holds only the sections it reads (changing `evaluation` never retrains)."""

from zenml import pipeline

from steps import evaluate, load_data, prepare_dataset, promote, train_lora
from tuneline.config import DataConfig, EvaluationConfig, LoraConfig, ModelConfig, PromotionConfig, TrainingConfig


@pipeline(name="finetune")
def finetune(
    data: DataConfig,
    model: ModelConfig,
    lora: LoraConfig,
    training: TrainingConfig,
    evaluation: EvaluationConfig,
    promotion: PromotionConfig,
) -> None:
    raw = load_data(data)
    dataset = prepare_dataset(raw, data, model)
    adapter = train_lora(dataset, data, model, lora, training)
    base_eval = evaluate.with_options(substitutions={"label": "base"})(
        dataset, model, evaluation, task=data.task, label="base", id="evaluate_base"
    )
    tuned_eval = evaluate.with_options(substitutions={"label": "tuned"})(
        dataset, model, evaluation, task=data.task, label="tuned", adapter=adapter, id="evaluate_tuned"
    )
    promote(base_eval, tuned_eval, promotion)
