"""The search step of `run.py tune`: the trials run in this step, each an MLflow child run of the step's run."""

from typing import Annotated, Tuple

import mlflow
from zenml import log_metadata, step
from zenml.types import HTMLString

from tuneline.artifacts import ChatDataset
from tuneline.config import TunelineConfig
from tuneline.models.modeling import resolve_base_model
from tuneline.registry import tracking
from tuneline.train.search import Recipe, RunTrial, TrialOutcome, TuningResult, metric_of, tune
from tuneline.train.search_report import trials_html, trials_svg
from tuneline.train.trials import trial_runner


def _as_child_runs(run_trial: RunTrial, metric: str) -> RunTrial:
    """Each trial in a nested run of the step's (the parent), with its recipe, curves and score; without an active
    run (no MLflow tracker in the stack) the trials run unlogged."""

    def run(recipe: Recipe, minutes: float, label: str) -> TrialOutcome:
        if mlflow.active_run() is None:
            return run_trial(recipe, minutes, label)
        with mlflow.start_run(run_name=label.replace(" ", "-"), nested=True):
            tracking.log_params(recipe | {"tuning.minutes": minutes})
            outcome = run_trial(recipe, minutes, label)
            scores = {metric: outcome.score, "train_seconds": outcome.train_seconds, "rows": outcome.rows}
            tracking.log_metrics(
                scores | ({"eval_loss": outcome.loss} if outcome.loss is not None else {}), prefix="trial"
            )
        return outcome

    return run


@step(experiment_tracker=True, enable_cache=False)
def search_recipe(
    dataset: ChatDataset, config: TunelineConfig
) -> Tuple[Annotated[TuningResult, "tuning_result"], Annotated[HTMLString, "tuning_report"]]:
    """Never cached: a search measures this machine's time, and its budget is spent each time it runs."""
    train, validation = dataset.splits["train"], dataset.splits.get("validation", [])
    runner = trial_runner(
        config, resolve_base_model(config.model.base), train, validation, on_metrics=tracking.log_training_curves
    )
    result = tune(config, len(train), _as_child_runs(runner, metric_of(config)))
    tracking.log_sections(tuning=config.tuning)
    tracking.log_params({f"winner.{k}": v for k, v in result.recipe.items()})
    tracking.log_metrics({result.metric: result.best.score, "search_seconds": result.search_seconds}, prefix="tuning")
    report = trials_html(result)
    tracking.log_text(report, "tuning/trials.html")
    tracking.log_text(trials_svg(result), "tuning/trials.svg")
    log_metadata(metadata={"tuning": {"recipe": result.recipe, "score": result.best.score, "why": result.why}})
    return result, HTMLString(report)
