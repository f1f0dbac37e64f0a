"""One trial of the recipe search (tuneline/train/search.py): train the recipe for its minutes, then score the
adapter on the validation rows."""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

from tuneline.config import TunelineConfig
from tuneline.data.chat_format import IGNORE
from tuneline.evaluate.teacher_forced import TeacherForced, teacher_forced
from tuneline.train.lora_model import TrainingSetupError
from tuneline.train.search import Recipe, RunTrial, TrialOutcome, apply_recipe, metric_of
from tuneline.train.selection import ANSWER_MARGIN
from tuneline.train.train_job import MetricsHook, TrainJob

log = logging.getLogger(__name__)
WARM_UP_STEPS = 4


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
    """Trials train on `train` as the final training does, as many rows as their minutes allow. Exact match is
    scored by teacher forcing (tuneline/evaluate/teacher_forced.py: one forward pass, not one per token);
    another metric by generating every distinct validation prompt's answer, cut past the longest reference. The
    same pass gives the validation loss that orders challengers of equal score."""
    from tuneline.evaluate.evaluation import evaluate_model, select_test
    from tuneline.train.distributed import train_distributed
    from tuneline.train.training import train_lora

    if not validation:
        raise TrainingSetupError("tuning scores trials on validation rows, and the data has none")
    examples = select_test(validation, config.evaluation.model_copy(update={"max_samples": None}))
    longest = max(sum(t != IGNORE for t in r["labels"]) for r in validation)
    evaluation = config.evaluation.model_copy(update={"max_new_tokens": longest + ANSWER_MARGIN, "constrained": False})
    metric = metric_of(config)
    train_fn = train_distributed if config.training.num_processes > 1 else train_lora
    if train_fn is train_lora:  # processes started per trial are each cold: nothing to warm in this one
        warm_up(config, model_dir, train, work_dir)

    def generated_score(label: str, cfg: TunelineConfig, adapter_dir: Path) -> float:
        return evaluate_model(
            label,
            cfg.data.task,
            model_dir,
            examples,
            evaluation,
            adapter_dir=adapter_dir,
            dtype=cfg.model.dtype,
            device=cfg.model.device,
        ).metrics[metric]

    def run(recipe: Recipe, minutes: float, label: str) -> TrialOutcome:
        cfg = trial_training(config, recipe, minutes)
        with tempfile.TemporaryDirectory(prefix="tuneline-trial-", dir=work_dir) as out:
            result = train_fn(train_job(cfg, model_dir, train, [], Path(out)), on_metrics=on_metrics)
            forced = forced_scores(cfg, model_dir, result.adapter_dir, validation)
            score = forced.exact_match if metric == "exact_match" else generated_score(label, cfg, result.adapter_dir)
        log.info("%s: %s %.3f, validation loss %.4f after %d rows", label, metric, score, forced.loss, result.rows)
        return TrialOutcome(score, result.seconds, result.rows, forced.loss)

    return run


def warm_up(config: TunelineConfig, model_dir: Path, train: list[dict], work_dir: Path | None) -> None:
    """A few steps of the config's recipe before the search starts its clock, like loading the data: a fresh
    process's first steps run slower (allocator, kernel choice), and the first trial, the config's own recipe,
    paid for it: 10 steps in its minute on a 2-core CPU, 15 after a warm-up. Timed as part of that trial, it also
    made every later trial's predicted overhead 35 s longer, and the search stopped a trial early."""
    from tuneline.train.training import train_lora

    steps = {"training.budget_minutes": None, "training.max_steps": WARM_UP_STEPS}
    cfg = apply_recipe(trial_training(config, {}, 1.0), steps)
    log.info("warming up: %d untimed training steps before the search", WARM_UP_STEPS)
    with tempfile.TemporaryDirectory(prefix="tuneline-warm-up-", dir=work_dir) as out:
        train_lora(train_job(cfg, model_dir, train[: WARM_UP_STEPS * cfg.training.batch_size], [], Path(out)))


def train_job(cfg: TunelineConfig, model_dir: Path, train: list[dict], validation: list[dict], out_dir: Path):
    return TrainJob(
        model_dir=model_dir,
        train=train,
        validation=validation,
        output_dir=out_dir,
        model=cfg.model,
        lora=cfg.lora,
        training=cfg.training,
        task=cfg.data.task,
    )


def forced_scores(cfg: TunelineConfig, model_dir: Path, adapter_dir: Path, rows: list[dict]) -> TeacherForced:
    from tuneline.models.modeling import load_merged, placement

    device, dtype = placement(cfg.model.device, cfg.model.dtype)
    model = load_merged(model_dir, adapter_dir, dtype, device).eval()
    return teacher_forced(model, rows, cfg.evaluation.batch_size)
