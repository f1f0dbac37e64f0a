"""Is the search worth its minutes? `tune` against the config's own recipe, each given the same N minutes.

    python benchmarks/tune_vs_default.py [--config configs/finetune.yaml] [--minutes 20] [--json]

`tuned`: the recipe search (tuneline/train/search.py) with a budget of N minutes, then its winner trained on all
rows within what the search left. `default`: the config's recipe trained for N minutes (`training.budget_minutes`).
Both run the pipeline's core functions without ZenML or MLflow, and are scored on the same test examples; the
table gives each one's exact match with its 95% bootstrap interval and the paired bootstrap interval of the
difference (the promotion rule's, tuneline/registry/promotion.py).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.quality_budget import _prepared, bootstrap_interval  # noqa: E402
from tuneline.config import TunelineConfig, load_run_config  # noqa: E402
from tuneline.train.search import apply_recipe  # noqa: E402
from tuneline.train.trials import train_job  # noqa: E402


def _train_and_score(label: str, cfg: TunelineConfig, model_dir: Path, splits: dict, test: list[dict]):
    """The pipeline's training on all rows, then its evaluation of the test examples."""
    from tuneline.evaluate.evaluation import evaluate_model
    from tuneline.train.training import train_lora

    with tempfile.TemporaryDirectory(prefix=f"tuneline-{label}-") as work:
        trained = train_lora(train_job(cfg, model_dir, splits["train"], splits.get("validation", []), Path(work)))
        scored = evaluate_model(
            label,
            cfg.data.task,
            model_dir,
            test,
            cfg.evaluation,
            adapter_dir=trained.adapter_dir,
            dtype=cfg.model.dtype,
            device=cfg.model.device,
        )
    return trained, scored


def tuned(cfg: TunelineConfig, model_dir: Path, splits: dict, test: list[dict]) -> dict:
    from tuneline.train.search import tune
    from tuneline.train.trials import trial_runner

    search = tune(cfg, len(splits["train"]), trial_runner(cfg, model_dir, splits["train"], splits["validation"]))
    trained, result = _train_and_score("tuned", apply_recipe(cfg, search.recipe), model_dir, splits, test)
    return {
        "trained": trained,
        "result": result,
        "minutes": (search.search_seconds + trained.seconds) / 60,
        "recipe": ", ".join(f"{k.split('.', 1)[1]}={v}" for k, v in search.recipe.items() if v is not None),
        "trials": len(search.trials),
    }


def default(cfg: TunelineConfig, minutes: float, model_dir: Path, splits: dict, test: list[dict]) -> dict:
    fixed = apply_recipe(cfg, {"training.budget_minutes": minutes, "training.max_steps": None})
    trained, result = _train_and_score("default", fixed, model_dir, splits, test)
    return {
        "trained": trained,
        "result": result,
        "minutes": trained.seconds / 60,
        "recipe": "the config's",
        "trials": 0,
    }


def table(rows: dict[str, dict], diff: tuple[float, float, float]) -> str:
    lines = [f"{'recipe':<8} {'minutes':>7} {'trials':>6} {'exact (95% CI)':>22}  what trained"]
    for name, r in rows.items():
        exact = [float(p["exact"]) for p in r["result"].predictions]
        low, high = bootstrap_interval(exact)
        score = f"{r['result'].metrics['exact_match']:.3f} ({low:.3f}-{high:.3f})"
        lines.append(f"{name:<8} {r['minutes']:>7.1f} {r['trials']:>6} {score:>22}  {r['recipe']}")
    point, low, high = diff
    lines.append(f"tuned - default: {point:+.3f} (95% paired bootstrap CI {low:+.3f} to {high:+.3f})")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(ROOT / "configs" / "finetune.yaml"))
    parser.add_argument("--minutes", type=float, default=20.0, help="each side's budget")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stderr)
    from tuneline.evaluate.evaluation import select_test
    from tuneline.registry.promotion import paired_bootstrap

    config, _ = load_run_config(args.config, [f"tuning.budget_minutes={args.minutes}"])
    model_dir, splits = _prepared(config)
    test = select_test(splits["test"], config.evaluation)
    rows = {
        "tuned": tuned(config, model_dir, splits, test),
        "default": default(config, args.minutes, model_dir, splits, test),
    }
    preds = [rows[name]["result"].predictions for name in ("tuned", "default")]
    diff = paired_bootstrap("exact_match", *preds, config.promotion.bootstrap_samples, config.promotion.seed)
    if args.json:
        out = {name: {"exact_match": r["result"].metrics["exact_match"]} | r for name, r in rows.items()}
        for r in out.values():
            r.pop("trained"), r.pop("result")
        print(json.dumps(out | {"difference": diff}, indent=1))
        return
    print(table(rows, diff))
    device = rows["tuned"]["result"].device
    print(f"\n{len(test)} test examples on {device}; config {args.config}, {args.minutes:g} min each")


if __name__ == "__main__":
    main()
