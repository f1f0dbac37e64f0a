"""`run.py tune`'s search (tuneline/train/search.py): seeded draws, successive halving, the budget, the winner and
the config it writes; unit tests on scripted trials, and one search on the tiny model."""

from pathlib import Path

import pytest
import yaml

from tuneline.config import ConfigError, load_run_config, parse_config
from tuneline.train.search import (
    Rung,
    TrialOutcome,
    draw,
    final_training,
    halving,
    schedule,
    tune,
    tuned_config_text,
)

ROOT = Path(__file__).resolve().parent.parent


class Clock:
    """Time that passes only when a scripted trial says so."""

    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def scripted(clock: Clock, overhead: float = 2.0, overrun: float = 1.0):
    """A trial scoring higher the closer its learning rate is to 2e-3 (more minutes: a little higher), taking its
    minutes (times `overrun`) plus `overhead` of clock time."""
    calls = []

    def run(recipe, minutes, label):
        train = minutes * 60 * overrun
        clock.now += overhead + train
        calls.append((recipe, minutes))
        score = 1.0 - abs(recipe["training.learning_rate"] - 2e-3) * 100 + minutes * 1e-6
        return TrialOutcome(score, train, rows=int(minutes * 100))

    run.calls = calls
    return run


def _config(**tuning):
    return parse_config({"tuning": {"budget_minutes": 10, **tuning}})


def test_draw_starts_with_the_configs_recipe_then_a_seeded_distinct_draw_of_the_space():
    config = _config(trials=6, seed=3)
    first = draw(config)
    assert first == draw(config) and first != draw(_config(trials=6, seed=4))
    assert len({repr(sorted(r.items())) for r in first}) == 6
    own = {
        "training.learning_rate": config.training.learning_rate,
        "training.batch_size": config.training.batch_size,
        "lora.r": config.lora.r,
        "lora.target_modules": config.lora.target_modules,
        "lora.last_layers": config.lora.last_layers,
        "training.loraplus_lr_ratio": config.training.loraplus_lr_ratio,
        "lora.alpha": config.lora.alpha,
    }
    assert first[0] == own and own not in first[1:]  # what the user has competes, once
    space = config.tuning.space
    for r in first[1:]:
        assert r["training.learning_rate"] in space.learning_rate and r["lora.target_modules"] in space.target_modules
        assert r["training.batch_size"] in space.batch_size
        assert r["lora.alpha"] == 2 * r["lora.r"]  # the config's alpha / r (32 / 16)
        assert r["lora.last_layers"] is None and r["training.loraplus_lr_ratio"] is None  # empty: the config's
    small = _config(trials=50, space={"learning_rate": [1e-3], "batch_size": [], "r": [4, 8], "target_modules": []})
    assert len(draw(small)) == 3  # the config's (r 16) and the whole space when it is smaller than asked for
    plus = draw(_config(trials=50, space={**small.tuning.space.model_dump(), "r": [], "loraplus_lr_ratio": [16]}))
    assert [r["training.loraplus_lr_ratio"] for r in plus] == [None, 16]


def test_schedule_halves_the_trials_and_multiplies_the_minutes():
    assert schedule(8, 2, 0.5) == [Rung(8, 0.5), Rung(4, 1.0), Rung(2, 2.0)]
    assert schedule(9, 3, 1.0) == [Rung(9, 1.0), Rung(3, 3.0)]
    assert schedule(6, 2, 0.5) == [Rung(6, 0.5), Rung(3, 1.0)]
    assert schedule(3, 3, 0.2) == [Rung(3, 0.2)]


def test_halving_keeps_the_best_of_each_rung():
    clock = Clock()
    config = _config(trials=8)
    recipes = draw(config)
    run = scripted(clock)
    trials, stopped = halving(recipes, schedule(8, 2, 0.5), run, deadline_s=1e9, clock=clock)
    assert stopped is None and [t.rung for t in trials] == [0] * 8 + [1] * 4 + [2] * 2
    for k in (1, 2):
        before = sorted((t for t in trials if t.rung == k - 1), key=lambda t: -t.score)
        kept = {t.trial for t in trials if t.rung == k}
        assert kept == {t.trial for t in before[: len(kept)]}  # the best of the rung before, no other
    assert [minutes for _, minutes in run.calls] == [0.5] * 8 + [1.0] * 4 + [2.0] * 2
    assert [t.rows for t in trials] == [50] * 8 + [100] * 4 + [200] * 2  # what each trial reported
    distance = [abs(r["training.learning_rate"] - 2e-3) for r in recipes]
    result = tune(_config(trials=8), 1000, scripted(Clock()), clock=Clock())
    assert abs(result.best.recipe["training.learning_rate"] - 2e-3) == min(distance)
    assert result.best.rung == 2 and result.best.score == max(t.score for t in result.trials if t.rung == 2)


def test_equal_scores_keep_the_configs_recipe_and_a_better_score_displaces_it():
    def run(recipe, minutes, label):  # every trial scores 0, as short trials on a hard task do
        return TrialOutcome(0.0, minutes * 60, 10, loss=abs(recipe["training.learning_rate"] - 5e-3))

    result = tune(_config(trials=4, budget_minutes=600), 1000, run)
    first = [t for t in result.trials if t.rung == 0]
    kept = [t.trial for t in result.trials if t.rung == 1]
    challengers = sorted((t for t in first if t.trial != 0), key=lambda t: t.loss)
    assert kept == [0, challengers[0].trial]  # the config's own, then the challenger of lowest validation loss
    assert result.best.trial == 0 and result.best.loss > challengers[0].loss  # a lower loss is no reason to switch

    space = {"learning_rate": [5e-3], "batch_size": [], "r": [8, 32], "target_modules": []}

    def rank_32_scores(recipe, minutes, label):
        return TrialOutcome(0.1 if recipe["lora.r"] == 32 else 0.0, minutes * 60, 10, loss=1.0)

    better = tune(_config(trials=4, budget_minutes=600, space=space), 1000, rank_32_scores)
    assert better.best.trial != 0 and better.best.recipe["lora.r"] == 32


def test_the_search_stops_before_a_trial_that_would_overrun_its_share():
    clock = Clock()
    config = _config(trials=8, budget_minutes=4, search_share=0.5, min_minutes=0.1)  # 120 s for the search
    run = scripted(clock, overrun=1.2)  # rung 0: 2 s + 7.2 s a trial, rung 1: 2 + 14.4, rung 2: 2 + 28.8
    result = tune(config, 1000, run, clock=clock)
    assert result.search_seconds <= 120.0 and len(result.trials) < 14
    assert result.why[0].startswith("the search stopped before trial")
    assert result.best.rung == max(t.rung for t in result.trials)
    left = 240.0 - result.search_seconds
    minutes = result.recipe["training.budget_minutes"]
    assert minutes * 60 <= left + 0.6 and minutes * 60 >= left - 0.6  # the rest, rounded to 0.01 min
    assert f"{minutes:.2f} min left" in result.why[-1]


def test_the_winner_trains_for_what_is_left_of_the_budget():
    clock = Clock()
    result = tune(_config(trials=4, budget_minutes=60, min_minutes=0.4), 1000, scripted(clock), clock=clock)
    spent = 4 * (2 + 24) + 2 * (2 + 48)  # two rungs: 0.4 min then 0.8 min, 2 s overhead each
    assert result.search_seconds == spent and result.recipe["training.budget_minutes"] == round(60 - spent / 60, 2)
    assert "100 rows/min" in result.why[-1]  # the winner's own rate in its trial
    length, why = final_training(result.best, 1000, remaining_s=1.0)
    assert length["training.budget_minutes"] == 0.1  # nothing left: a few steps


def test_the_written_config_reproduces_the_recipe(tmp_path):
    raw = yaml.safe_load((ROOT / "configs" / "smoke.yaml").read_text())
    params = raw.pop("parameters")
    config = parse_config(params)
    result = tune(
        parse_config(params | {"tuning": {"budget_minutes": 600, "trials": 4}}), 500, scripted(Clock()), clock=Clock()
    )
    out = tmp_path / "smoke.tuned.yaml"
    out.write_text(tuned_config_text(raw | {"parameters": params}, result.recipe, ["from a test", "second line"]))
    assert out.read_text().startswith("# from a test\n# second line\n")
    tuned, zenml = load_run_config(out)
    assert zenml["model"]["name"] == "tuneline-smoke" and tuned.data == config.data  # the rest as it was
    for key, value in result.recipe.items():
        section, name = key.split(".")
        assert getattr(getattr(tuned, section), name) == value, key
    assert tuned.training.max_steps is None  # smoke's max_steps would have overridden the budget


def test_tuning_config_checks():
    with pytest.raises(ConfigError, match="tuning.metric: 'act_accuracy' is not a metric of task 'text'"):
        parse_config({"data": {"task": "text"}, "tuning": {"metric": "act_accuracy"}})
    with pytest.raises(ConfigError, match="r 0"):
        parse_config({"tuning": {"space": {"r": [0, 8]}}})
    with pytest.raises(ValueError, match="needs a budget"):
        tune(parse_config({}), 100, scripted(Clock()), clock=Clock())


@pytest.mark.slow
def test_a_search_on_the_tiny_model_picks_its_best_trial_and_writes_it(
    tiny_model_dir, tiny_tokenizer, tmp_path, caplog
):
    import logging

    from tuneline.data.sources import load_splits
    from tuneline.data.validation import prepare
    from tuneline.train.trials import trial_runner

    params = {
        "data": {"source": "synthetic:viggo", "system_prompt": "Give the meaning representation."},
        "model": {"base": "tiny-random"},
        "lora": {"r": 4, "alpha": 8, "dropout": 0.0},
        "training": {"batch_size": 8, "threads": 1},
        "evaluation": {"batch_size": 8},
        "tuning": {
            "budget_minutes": 5,
            "trials": 4,
            "min_minutes": 0.05,
            "metric": "rougeL",  # a toy model writes no exact answer, but some closer than others
            "space": {"learning_rate": [1e-4, 1e-2], "batch_size": [4, 8], "r": [4], "target_modules": []},
        },
    }
    config = parse_config(params)
    splits = prepare(load_splits(config.data), config.data, tiny_tokenizer).splits
    with caplog.at_level(logging.INFO, logger="tuneline.train.trials"):
        run = trial_runner(config, tiny_model_dir, splits["train"], splits["validation"][:8], tmp_path)
        result = tune(config, len(splits["train"]), run)
    messages = [r.message for r in caplog.records if r.name == "tuneline.train.trials"]
    assert messages.count("warming up: 4 untimed training steps before the search") == 1
    assert messages.index("warming up: 4 untimed training steps before the search") == 0  # before any trial
    assert [(t.rung, t.minutes) for t in result.trials] == [(0, 0.05)] * 4 + [(1, 0.1)] * 2
    assert len({t.trial for t in result.trials}) == 4 and all(0.0 <= t.score <= 1.0 for t in result.trials)
    assert all(t.rows > 0 and t.loss is not None for t in result.trials)
    for t in result.trials:  # each trained for its minutes, give or take the budget's measuring steps
        assert t.train_seconds <= t.minutes * 60 * 1.5 + 5
    last = [t for t in result.trials if t.rung == 1]
    assert result.best in last and result.best.score == max(t.score for t in last)
    assert result.search_seconds <= 0.5 * 5 * 60
    out = tmp_path / "tuned.yaml"
    out.write_text(tuned_config_text({"parameters": params}, result.recipe, ["test"]))
    tuned, _ = load_run_config(out)
    best = result.best.recipe
    assert (tuned.training.learning_rate, tuned.training.batch_size) == (
        best["training.learning_rate"],
        best["training.batch_size"],
    )
    assert tuned.training.budget_minutes == result.recipe["training.budget_minutes"]
    assert (tuned.lora.r, tuned.lora.alpha, tuned.lora.target_modules) == (4, 8, config.lora.target_modules)
    assert result.why  # the final training's plan is said


@pytest.mark.slow
def test_run_py_tune_searches_logs_each_trial_writes_the_winner_and_trains_it(tmp_path):
    """`run.py tune` end to end on the smoke config: the tune pipeline's search step with its report, one MLflow
    child run per trial under the step's run, the written config, and the finetune run that trains it."""
    import json
    import os
    import subprocess
    import sys

    from mlflow.tracking import MlflowClient
    from zenml.client import Client

    out, summary = tmp_path / "smoke.tuned.yaml", tmp_path / "summary.json"
    settings = ["tuning.trials=4", "tuning.min_minutes=0.05", "tuning.search_share=0.8", "tuning.metric=rougeL"]
    proc = subprocess.run(
        [sys.executable, "run.py", "tune", "--config", "configs/smoke.yaml", "--budget-minutes", "1.5"]
        + [arg for s in settings for arg in ("--set", s)]
        + ["--out", str(out), "--summary-json", str(summary)],
        cwd=ROOT,
        env=os.environ.copy(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    run = Client().get_pipeline(name_id_or_prefix="tune").last_run
    step = run.steps["search_recipe"]
    result = step.outputs["tuning_result"][0].load()
    assert "<svg" in step.outputs["tuning_report"][0].load()
    assert result.trials[0].recipe["training.learning_rate"] == 0.01  # the smoke config's own recipe runs first

    tuned, _ = load_run_config(out)
    assert out.read_text().startswith("# Written by `run.py tune`")
    assert (
        tuned.training.budget_minutes == result.recipe["training.budget_minutes"] and tuned.training.max_steps is None
    )
    assert tuned.training.learning_rate == result.best.recipe["training.learning_rate"]

    done = json.loads(summary.read_text())  # the finetune run of the written config
    client = MlflowClient(tracking_uri=done["mlflow_tracking_uri"])
    trained = client.get_run(done["mlflow_run_id"])
    assert float(trained.data.params["training.budget_minutes"]) == tuned.training.budget_minutes
    (parent,) = client.search_runs(  # the search step's run: it holds the winner
        [e.experiment_id for e in client.search_experiments()],
        "params.`winner.training.learning_rate` LIKE '%'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    assert float(parent.data.params["winner.training.learning_rate"]) == tuned.training.learning_rate
    children = client.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert len(children) == len(result.trials)
    for child in children:
        assert "tuning.minutes" in child.data.params and "trial/rougeL" in child.data.metrics
        assert "trial/eval_loss" in child.data.metrics and child.data.metrics["trial/rows"] > 0
    assert {a.path for a in client.list_artifacts(parent.info.run_id, "tuning")} >= {
        "tuning/trials.html",
        "tuning/trials.svg",
    }
