"""One trial of the recipe search (tuneline/train/search.py): train the recipe for its minutes, then generate the
validation rows' answers with the adapter and score them, as evaluation scores the test rows."""

from __future__ import annotations

import tempfile
from pathlib import Path

from tuneline.config import EvaluationConfig, TunelineConfig
from tuneline.data.chat_format import IGNORE
from tuneline.train.lora_model import TrainingSetupError
from tuneline.train.search import Recipe, RunTrial, TrialOutcome, apply_recipe, metric_of
from tuneline.train.selection import ANSWER_MARGIN
from tuneline.train.train_job import MetricsHook, TrainJob


def trial_training(config: TunelineConfig, recipe: Recipe, minutes: float) -> TunelineConfig:
    """The recipe for `minutes`, without what only the final training does: no evaluations during it or
    checkpoints (a trial is scored once, at its end)."""
    return apply_recipe(
        config,
        recipe
        | {
            "training.max_steps": None,
            "training.budget_minutes": minutes,
            "training.eval_steps": None,
            "training.early_stopping_patience": None,
            "training.select_by": "eval_loss",
            "training.save_steps": None,
        },
    )


def trial_runner(
    config: TunelineConfig,
    model_dir: Path,
    train: list[dict],
    validation: list[dict],
    work_dir: Path | None = None,
    on_metrics: MetricsHook | None = None,
) -> RunTrial:
    """Trials train on `train` as the final training does, as many rows as their minutes allow, and are scored on every
    distinct validation prompt, answers cut past the longest reference; their validation loss breaks ties."""
    from tuneline.evaluate.evaluation import select_test
    from tuneline.train.distributed import train_distributed
    from tuneline.train.training import train_lora

    if not validation:
        raise TrainingSetupError("tuning scores trials on validation rows, and the data has none")
    examples = select_test(validation, config.evaluation.model_copy(update={"max_samples": None}))
    longest = max(sum(t != IGNORE for t in r["labels"]) for r in validation)
    evaluation = config.evaluation.model_copy(update={"max_new_tokens": longest + ANSWER_MARGIN, "constrained": False})
    metric = metric_of(config)
    train_fn = train_distributed if config.training.num_processes > 1 else train_lora

    def run(recipe: Recipe, minutes: float, label: str) -> TrialOutcome:
        cfg = trial_training(config, recipe, minutes)
        with tempfile.TemporaryDirectory(prefix="tuneline-trial-", dir=work_dir) as out:
            result, scored = train_and_score(
                label, cfg, model_dir, train, validation, examples, evaluation, Path(out), train_fn, on_metrics
            )
        return TrialOutcome(scored.metrics[metric], result.seconds, result.rows, result.eval_loss)

    return run


def train_and_score(
    label: str,
    cfg: TunelineConfig,
    model_dir: Path,
    train: list[dict],
    validation: list[dict],
    examples: list[dict],
    evaluation: EvaluationConfig,
    out_dir: Path,
    train_fn=None,
    on_metrics: MetricsHook | None = None,
):
    """(TrainResult, EvalResult): `cfg`'s recipe trained on `train`, then its adapter scored on `examples` as
    evaluation scores the test rows. `train_fn` defaults to training in this process."""
    from tuneline.evaluate.evaluation import evaluate_model
    from tuneline.train.training import train_lora

    job = TrainJob(
        model_dir=model_dir,
        train=train,
        validation=validation,
        output_dir=out_dir,
        model=cfg.model,
        lora=cfg.lora,
        training=cfg.training,
        task=cfg.data.task,
    )
    result = (train_fn or train_lora)(job, on_metrics=on_metrics)
    scored = evaluate_model(
        label,
        cfg.data.task,
        model_dir,
        examples,
        evaluation,
        adapter_dir=result.adapter_dir,
        dtype=cfg.model.dtype,
        device=cfg.model.device,
    )
    return result, scored
