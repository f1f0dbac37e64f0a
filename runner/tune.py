"""`run.py tune`: the tune pipeline searches a recipe within the budget; its winner is written as a run config
(`<config>.tuned.yaml`), and the finetune pipeline trains, evaluates and promotes that config with what is left
of the budget. The written config is what ran: rerunning it with `run.py train` repeats the training."""

from __future__ import annotations

import logging
from datetime import datetime, timezone
from pathlib import Path

import yaml
from zenml.client import Client

from runner import launch
from runner.console import run_config_keys
from runner.paths import shown
from runner.summary import RunSummary
from runner.versions import with_model_name
from tuneline.config import ConfigError, TunelineConfig, apply_overrides, load_run_config, parse_config
from tuneline.train.search import TuningResult, tuned_config_text

log = logging.getLogger(__name__)


def tuned_path(config_path: Path, out: Path | None) -> Path:
    """`--out`, else beside the config: `x.yaml` -> `x.tuned.yaml` (a tuned config tuned again keeps the name)."""
    return out or config_path.with_name(config_path.stem.removesuffix(".tuned") + ".tuned.yaml")


def budgeted(args) -> tuple[TunelineConfig, dict]:
    """The config and its `parameters:` as the command line gives them: the file, `--set`, `--budget-minutes`."""
    overrides = [*args.overrides] + ([f"tuning.budget_minutes={args.budget_minutes}"] if args.budget_minutes else [])
    params = apply_overrides((yaml.safe_load(Path(args.config).read_text()) or {}).get("parameters") or {}, overrides)
    config = parse_config(params, str(args.config))
    if config.tuning.budget_minutes is None:
        raise ConfigError(f"{args.config}: tune needs a budget: --budget-minutes N or tuning.budget_minutes")
    return config, params


def search(config: TunelineConfig, zenml_config: dict, enable_cache: bool) -> TuningResult:
    """The tune pipeline, with no model version of its own: the finetune run that trains the winner makes it."""
    from pipelines.tune import tune

    without_model = {k: v for k, v in zenml_config.items() if k != "model"}
    run = launch._run(tune, without_model, enable_cache, {"config": config})
    return Client().get_pipeline_run(run.id).steps["search_recipe"].outputs["tuning_result"][0].load()


def write_tuned(result: TuningResult, source: Path, zenml_config: dict, params: dict, out: Path) -> Path:
    best = result.best
    header = [
        f"Written by `run.py tune` from {shown(source)} on {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC:",
        f"trial {best.trial} of {len({t.trial for t in result.trials})} scored {result.metric} {best.score:.3f} "
        f"on validation after {best.minutes:g} min of training ({best.rows} rows); {len(result.trials)} trials took "
        f"{result.search_seconds / 60:.1f} of {result.budget_minutes:g} min.",
        *result.why,
        f"Train it again: python run.py train --config {shown(out)}",
    ]
    out.write_text(tuned_config_text(zenml_config | {"parameters": params}, result.recipe, header))
    return out


def render_trials(result: TuningResult) -> str:
    lines = [f"{'trial':>5} {'rung':>4} {'min':>5} {'rows':>6} {result.metric:>12} {'loss':>6} {'seconds':>7}  recipe"]
    for t in result.trials:
        recipe = ", ".join(f"{k.split('.', 1)[1]}={v}" for k, v in t.recipe.items())
        mark = " *" if t is result.best else ""
        loss = "-" if t.loss is None else f"{t.loss:.3f}"
        lines.append(
            f"{t.trial:>5} {t.rung:>4} {t.minutes:>5g} {t.rows:>6} {t.score:>12.3f} {loss:>6} {t.seconds:>7.0f}  "
            f"{recipe}{mark}"
        )
    return "\n".join(lines + [f"  {why}" for why in result.why])


def run(args, zenml_config: dict) -> RunSummary:
    """Search, write the winner, train it: the finetune run's summary."""
    config, params = budgeted(args)
    launch.check_lineage(with_model_name(config, zenml_config)["model"]["name"], config)  # before the search
    result = search(config, zenml_config, enable_cache=not args.no_cache)
    print(render_trials(result))
    out = write_tuned(result, Path(args.config), zenml_config, params, tuned_path(Path(args.config), args.out))
    print(f"tuned config written to {shown(out)}; training the winner")
    tuned, tuned_zenml = load_run_config(out, top_level_keys=run_config_keys())
    return launch.launch(tuned, tuned_zenml, enable_cache=not args.no_cache)
