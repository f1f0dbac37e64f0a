import json
from pathlib import Path
from typing import Annotated, Optional

from zenml import log_metadata, step

from steps.caching import CACHE_POLICY

from tuneline.registry import tracking
from tuneline.artifacts import ChatDataset, LoraAdapter
from tuneline.evaluate.baseline import pick_shots
from tuneline.evaluate.calibration import scored, serving_threshold
from tuneline.config import EvaluationConfig, ModelConfig, ServingConfig
from tuneline.evaluate.evaluation import EvalResult, eval_examples, evaluate_model
from tuneline.generate.grammar import evaluation_grammar
from tuneline.models.modeling import resolve_base_model
from tuneline.evaluate.report import calibration_svg, eval_html


@step(cache_policy=CACHE_POLICY)
def select_examples(dataset: ChatDataset, evaluation: EvaluationConfig) -> Annotated[ChatDataset, "eval_examples"]:
    """Evaluation's inputs apart from the dataset, so `evaluate`'s cache key is the rows it reads (their content
    hash), not the whole dataset: changing only the training sample does not re-score the unchanged base."""
    return ChatDataset(splits=eval_examples(dataset.splits, evaluation))


def score(
    label: str,
    task: str,
    test: list[dict],
    train: list[dict],
    model: ModelConfig,
    evaluation: EvaluationConfig,
    adapter: Optional[LoraAdapter] = None,
    shots: Optional[list[dict]] = None,
) -> EvalResult:
    """How every model is scored, here and when promote re-scores production: an adapter on its own base (it fits
    no other), the config's placement, the task's grammar when decoding is constrained (built from `train`)."""
    return evaluate_model(
        label,
        task,
        resolve_base_model(adapter.base_model if adapter else model.base),
        test,
        evaluation,
        adapter_dir=Path(adapter.path) if adapter else None,
        dtype=model.dtype,
        device=model.device,
        grammar=evaluation_grammar(evaluation.constrained, task, train),
        shots=shots,
    )


@step(cache_policy=CACHE_POLICY)
def select_shots(dataset: ChatDataset, evaluation: EvaluationConfig) -> Annotated[ChatDataset, "baseline_shots"]:
    """The prompted baseline's training examples, an artifact of their own so base and tuned evaluations keep
    their cache keys."""
    return ChatDataset(splits={"shots": pick_shots(dataset.splits["train"], evaluation.prompted_baseline)})


@step(experiment_tracker=True, cache_policy=CACHE_POLICY)
def evaluate(
    examples: ChatDataset,
    model: ModelConfig,
    evaluation: EvaluationConfig,
    task: str,
    label: str,
    adapter: Optional[LoraAdapter] = None,
    shots: Optional[ChatDataset] = None,
) -> Annotated[EvalResult, "eval_{label}"]:
    """Run with `substitutions={"label": ...}` so base, prompted and tuned results are separate named artifacts;
    `shots` (from `select_shots`) makes it the prompted baseline."""
    tracking.log_sections(evaluation=evaluation)
    result = score(
        label,
        task,
        examples.splits["test"],
        examples.splits.get("train", []),
        model,
        evaluation,
        adapter,
        shots=shots.splits["shots"] if shots else None,
    )
    tracking.log_params(
        {f"{label}.device": result.device, f"{label}.dtype": result.dtype, f"{label}.constrained": result.constrained}
    )
    tracking.log_metrics(result.metrics, prefix=label)
    tracking.log_metrics(
        {"examples_per_second": result.examples_per_second, "latency_ms_per_example": result.latency_ms_per_example},
        prefix=label,
    )
    tracking.log_text(eval_html(result), f"eval/{label}_report.html")
    tracking.log_text(calibration_svg(result.predictions), f"eval/{label}_calibration.svg")
    tracking.log_text(
        "".join(json.dumps(p, ensure_ascii=False) + "\n" for p in result.predictions),
        f"eval/{label}_predictions.jsonl",
    )
    return result


@step(enable_cache=False)
def confidence_threshold(result: EvalResult, serving: ServingConfig) -> None:
    """Record with the model version the confidence below which its served answers need review, and the exact
    match and coverage that threshold gives on the test set. A step of its own: changing `serving` re-runs only
    this, not the evaluation; never cached, so every new model version gets it."""
    if not scored(result.predictions):
        return
    threshold = serving_threshold(result.predictions, serving.min_confidence, serving.target_precision)
    log_metadata(metadata={"confidence_threshold": threshold}, infer_model=True)
