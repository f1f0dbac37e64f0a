"""`run.py tune`: which recipe (learning rate, batch size, LoRA rank, adapted modules) to train, found within a budget.

The config's own recipe, then a seeded draw from `tuning.space`; successive halving over training minutes: every
trial of a rung trains for the same minutes and is scored on the same validation rows, and the best 1/eta go on
with eta times the minutes. Minutes, not rows, because the winner is trained for a time budget: a recipe that is
slower per row must earn its place per minute (ranking at equal rows favoured the slowest recipe per row, three
epochs at rank 32). The search stops early rather than start a trial its measured predecessors say would end past
its share of the budget; the winner trains for what is left. Pure functions over a `run_trial` callable
(tuneline/train/trials.py trains and scores one), so the schedule, the budget and the choice are unit-tested
without a model.
"""

from __future__ import annotations

import copy
import itertools
import math
import random
import time
from dataclasses import dataclass
from typing import Any, Callable, NamedTuple

import yaml
from pydantic import BaseModel

from tuneline.config import TunelineConfig, parse_config
from tuneline.train.selection import PRIMARY_METRIC

Recipe = dict[str, Any]  # dotted config keys (`training.learning_rate`) and their values


class TrialOutcome(NamedTuple):
    score: float
    train_seconds: float  # in the Trainer's loop; the rest of the trial (loading, scoring) is its overhead
    rows: int  # training rows seen in its minutes
    loss: float | None = None  # validation loss: orders challengers of equal score (short trials often all score 0)


RunTrial = Callable[[Recipe, float, str], TrialOutcome]  # recipe, training minutes, label -> outcome


@dataclass(frozen=True)
class Rung:
    trials: int
    minutes: float  # each trial's training


class Trial(BaseModel):
    trial: int  # the recipe's place in the draw (0: the config's own)
    rung: int
    minutes: float
    rows: int
    recipe: Recipe
    score: float
    loss: float | None = None
    seconds: float
    train_seconds: float
    ended_s: float  # since the search started

    @property
    def label(self) -> str:
        return f"trial {self.trial} rung {self.rung}"


class TuningResult(BaseModel):
    metric: str
    budget_minutes: float
    search_seconds: float
    rungs: list[tuple[int, float]]  # (trials, training minutes of each) planned per rung
    trials: list[Trial]
    winner: int  # index into `trials`
    recipe: Recipe  # the winner's recipe and how long it trains: what the written config sets
    why: list[str]  # the search's stop, if any, and the final training's plan

    @property
    def best(self) -> Trial:
        return self.trials[self.winner]


def metric_of(config: TunelineConfig) -> str:
    return config.tuning.metric or PRIMARY_METRIC[config.data.task]


def _dimensions(config: TunelineConfig) -> dict[str, list]:
    """Each searched key, the config's own value first, then the space's others."""
    space, lora, training = config.tuning.space, config.lora, config.training
    values = {
        "training.learning_rate": (training.learning_rate, space.learning_rate),
        "training.batch_size": (training.batch_size, space.batch_size),
        "lora.r": (lora.r, space.r),
        "lora.target_modules": (lora.target_modules, space.target_modules),
        "lora.last_layers": (lora.last_layers, space.last_layers),
        "training.loraplus_lr_ratio": (training.loraplus_lr_ratio, space.loraplus_lr_ratio),
    }
    return {key: [own, *(v for v in others if v != own)] for key, (own, others) in values.items()}


def draw(config: TunelineConfig) -> list[Recipe]:
    """The config's own recipe, then `tuning.trials` - 1 other distinct recipes of the space (all of them when it
    has fewer) in a seeded order: the search can keep what the user has, and only a better recipe displaces it.
    lora.alpha follows r at the config's alpha / r, so a larger rank is not also a larger step."""
    dims = _dimensions(config)
    own, *others = [dict(zip(dims, values)) for values in itertools.product(*dims.values())]
    picked = random.Random(config.tuning.seed).sample(others, min(config.tuning.trials - 1, len(others)))
    scale = config.lora.alpha / config.lora.r
    return [r | {"lora.alpha": max(1, round(r["lora.r"] * scale))} for r in [own, *picked]]


def schedule(trials: int, eta: int, min_minutes: float) -> list[Rung]:
    """Successive halving: rung k has trials // eta**k trials (at least 2: one left is the winner), each training
    for min_minutes * eta**k."""
    rungs, k = [], 0
    while (n := trials // eta**k) >= 2 or k == 0:
        rungs.append(Rung(max(n, 1), min_minutes * eta**k))
        k += 1
    return rungs


def _ranked(trials: list[Trial]) -> list[Trial]:
    """Best score first. At equal scores the config's own recipe (trial 0) first: only a better score on the task's
    metric displaces what the user has. Validation loss does not: on ViGGO a recipe whose loss after 2 minutes was
    a quarter lower (learning rate 5e-3, batch 4) reached exact match 0.21 after 10, the config's 0.70 after 20.
    Then the lower loss, which only orders challengers, then draw order."""
    return sorted(trials, key=lambda t: (-t.score, t.trial != 0, math.inf if t.loss is None else t.loss, t.trial))


def predict_seconds(done: list[Trial], minutes: float) -> float | None:
    """A trial's seconds from those measured so far: its minutes, stretched by the largest overrun of a trial's
    budget, plus the largest overhead (loading, scoring), so the prediction errs long. None before the first."""
    if not done:
        return None
    overhead = max(t.seconds - t.train_seconds for t in done)
    stretch = max(1.0, *(t.train_seconds / (t.minutes * 60) for t in done))
    return overhead + stretch * minutes * 60


def halving(
    recipes: list[Recipe],
    rungs: list[Rung],
    run_trial: RunTrial,
    deadline_s: float,
    clock: Callable[[], float] = time.monotonic,
) -> tuple[list[Trial], str | None]:
    """Run the rungs in order, each on the best of the one before; returns the trials and why the search stopped
    before its end (None when it did not). The first trial always runs: nothing predicts it."""
    start, done = clock(), []
    alive = list(range(len(recipes)))
    for k, rung in enumerate(rungs):
        scored = []
        for i in alive[: rung.trials]:
            need = predict_seconds(done, rung.minutes)
            if need is not None and clock() - start + need > deadline_s:
                left = deadline_s - (clock() - start)
                return done, (
                    f"the search stopped before trial {i} of rung {k} ({rung.minutes:g} min): it would take about "
                    f"{need:.0f}s and {max(0.0, left):.0f}s of the search's {deadline_s:.0f}s were left"
                )
            t0 = clock()
            outcome = run_trial(recipes[i], rung.minutes, f"trial {i} rung {k}")
            now = clock()
            trial = Trial(
                trial=i,
                rung=k,
                minutes=rung.minutes,
                rows=outcome.rows,
                recipe=recipes[i],
                score=outcome.score,
                loss=outcome.loss,
                seconds=now - t0,
                train_seconds=outcome.train_seconds,
                ended_s=now - start,
            )
            done.append(trial)
            scored.append(trial)
        alive = [t.trial for t in _ranked(scored)]
    return done, None


def winner(trials: list[Trial]) -> int:
    """The best trial of the highest rung reached (a rung cut short by the budget holds the best-ranked)."""
    top = max(t.rung for t in trials)
    best = _ranked([t for t in trials if t.rung == top])[0]
    return trials.index(best)


def final_training(best: Trial, n_rows: int, remaining_s: float) -> tuple[Recipe, str]:
    """The winner trains for what is left of the budget (`training.budget_minutes` plans its rows and epochs on
    the machine that runs it)."""
    minutes = max(remaining_s, 6.0) / 60  # a search past its share still leaves the winner a few steps
    rate = best.rows / best.train_seconds * 60 if best.train_seconds else 0.0
    return {"training.budget_minutes": round(minutes, 2), "training.max_steps": None}, (
        f"the winner trains for the {minutes:.2f} min left of the budget: about {rate * minutes:.0f} rows at the "
        f"{rate:.0f} rows/min of its trial, over the {n_rows} training rows"
    )


def tune(
    config: TunelineConfig, n_rows: int, run_trial: RunTrial, clock: Callable[[], float] = time.monotonic
) -> TuningResult:
    """The whole search and the winner's recipe; `config.tuning.budget_minutes` must be set."""
    cfg = config.tuning
    if cfg.budget_minutes is None:
        raise ValueError("tuning needs a budget: tuning.budget_minutes in the config or --budget-minutes")
    budget_s = cfg.budget_minutes * 60
    recipes = draw(config)
    rungs = schedule(len(recipes), cfg.eta, cfg.min_minutes)
    start = clock()
    trials, stopped = halving(recipes, rungs, run_trial, cfg.search_share * budget_s, clock)
    spent = clock() - start
    best = trials[winner(trials)]
    length, plan = final_training(best, n_rows, budget_s - spent)
    return TuningResult(
        metric=metric_of(config),
        budget_minutes=cfg.budget_minutes,
        search_seconds=spent,
        rungs=[(r.trials, r.minutes) for r in rungs],
        trials=trials,
        winner=trials.index(best),
        recipe=best.recipe | length,
        why=[w for w in (stopped, plan) if w],
    )


def with_values(params: dict, values: Recipe) -> dict:
    """`params` (a config's `parameters:`) with each dotted key set."""
    out = copy.deepcopy(params)
    for key, value in values.items():
        *parents, leaf = key.split(".")
        node = out
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return out


def apply_recipe(config: TunelineConfig, recipe: Recipe) -> TunelineConfig:
    return parse_config(with_values(config.model_dump(), recipe), "the tuned recipe")


def tuned_config_text(raw: dict, recipe: Recipe, header: list[str]) -> str:
    """A run config: `raw` (ZenML keys and `parameters:`, the command line's overrides applied) with the recipe
    set, after a comment saying where it came from."""
    out = dict(raw) | {"parameters": with_values(raw.get("parameters") or {}, recipe)}
    comment = "".join(f"# {line}\n" for line in header)
    return comment + yaml.safe_dump(out, sort_keys=False, default_flow_style=None, width=110)
