"""What a training budget buys: recipes side by side, each trained and scored on the same test examples.

    python benchmarks/quality_budget.py [--config configs/finetune.yaml] [--base] [--grammar] [--json]
        [--recipe NAME KEY=VALUE ...] [--recipe NAME KEY=VALUE ...]

A recipe is the config plus `--set`-style overrides (`--recipe short-prompt data.system_prompt=''`); with no
`--recipe`, the config itself is the one recipe ("config"). Each recipe runs the pipeline's own core functions in
order (load and prepare the data, train, generate and score), without ZenML or MLflow, so the stage times are the
work itself. Every recipe must score the same test examples (user input and reference; their hash is printed),
else the table refuses.

Columns: training minutes, steps, tokens trained (prompt and answer, every epoch), training tokens/s, exact match
with its 95% bootstrap interval (the noise of the test sample), slot accuracy, act accuracy (viggo), parse rate,
the seconds spent preparing data and generating, and exact match minus the first row's with its paired bootstrap
interval. `--base` scores the untuned base model first; `--grammar` scores every model a second time with
decoding constrained by the task's grammar (`evaluation.constrained`), in rows of its own.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import random
import shlex
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tuneline.config import TunelineConfig, apply_overrides, load_run_config, parse_config  # noqa: E402


def bootstrap_interval(values: list[float], samples: int = 2000, seed: int = 0) -> tuple[float, float]:
    """95% percentile interval of the mean over resampled test examples."""
    rng = random.Random(seed)
    n = len(values)
    means = sorted(sum(values[rng.randrange(n)] for _ in range(n)) / n for _ in range(samples))
    return means[int(0.025 * samples)], means[int(0.975 * samples) - 1]


def _prepared(cfg: TunelineConfig):
    from tuneline.data.chat_format import ensure_chat_template
    from tuneline.models.modeling import load_tokenizer, resolve_base_model
    from tuneline.data.sources import load_splits
    from tuneline.data.validation import prepare

    model_dir = resolve_base_model(cfg.model.base)
    tokenizer = load_tokenizer(model_dir)
    fallback = ensure_chat_template(tokenizer)
    return model_dir, prepare(load_splits(cfg.data), cfg.data, tokenizer, template_fallback=fallback).splits


def examples_hash(test: list[dict]) -> str:
    """The test examples themselves (user input, reference), not their rendering: recipes may change the prompt."""
    from tuneline.data.formats import user_input

    payload = json.dumps([[user_input(r["messages"]), r["messages"][-1]["content"]] for r in test])
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def _scored(
    label: str, cfg: TunelineConfig, model_dir: Path, test: list[dict], adapter_dir: Path | None, grammar: str | None
) -> dict:
    from tuneline.evaluate.evaluation import evaluate_model

    result = evaluate_model(
        label,
        cfg.data.task,
        model_dir,
        test,
        cfg.evaluation,
        adapter_dir=adapter_dir,
        dtype=cfg.model.dtype,
        device=cfg.model.device,
        grammar=grammar,
    )
    exact = [float(p["exact"]) for p in result.predictions]
    low, high = bootstrap_interval(exact)
    return {
        "metrics": result.metrics,
        "exact_low": low,
        "exact_high": high,
        "test_hash": examples_hash(test),
        "eval_seconds": result.seconds,
        "device": result.device,
        "n_test": result.n_examples,
        "predictions": result.predictions,
    }


def run_recipe(name: str, cfg: TunelineConfig, base: bool, also_constrained: bool) -> list[dict]:
    from tuneline.evaluate.evaluation import select_test
    from tuneline.generate.grammar import evaluation_grammar, task_grammar
    from tuneline.train.train_job import TrainJob
    from tuneline.train.training import train_lora

    start = time.monotonic()
    model_dir, splits = _prepared(cfg)
    prepare_seconds = time.monotonic() - start
    test = select_test(splits["test"], cfg.evaluation)
    grammars = [evaluation_grammar(cfg.evaluation.constrained, cfg.data.task, splits["train"])]
    if also_constrained and grammars[0] is None and (extra := task_grammar(cfg.data.task, splits["train"])):
        grammars.append(extra)

    def scored(label: str, adapter_dir: Path | None) -> list[tuple[str, dict]]:
        return [(" +grammar" if g else "", _scored(label, cfg, model_dir, test, adapter_dir, g)) for g in grammars]

    rows = []
    if base:
        rows += [
            {"recipe": f"base (untuned){suffix}", "prepare_seconds": prepare_seconds, **s}
            for suffix, s in scored("base", None)
        ]
    with tempfile.TemporaryDirectory(prefix="tuneline-budget-") as work:
        job = TrainJob(
            model_dir=model_dir,
            train=splits["train"],
            validation=splits.get("validation", []),
            output_dir=Path(work),
            model=cfg.model,
            lora=cfg.lora,
            training=cfg.training,
        )
        result = train_lora(job)
        tuned = scored("tuned", result.adapter_dir)
    trained = {
        "prepare_seconds": prepare_seconds,
        "train_seconds": result.seconds,
        "steps": result.steps,
        "train_rows": len(splits["train"]),
        "tokens": result.tokens,
        "tokens_per_second": result.tokens_per_second,
        "eval_loss": result.eval_loss,
    }
    return rows + [{"recipe": name + suffix, **trained, **s} for suffix, s in tuned]


def table(rows: list[dict]) -> str:
    head = (
        f"{'recipe':<22} {'train min':>9} {'steps':>5} {'tokens':>8} {'tok/s':>7} {'exact (95% CI)':>20} "
        f"{'slot':>6} {'act':>6} {'parse':>6} {'prep s':>6} {'eval s':>6}  exact vs 1st (paired 95% CI)"
    )
    lines = [head]
    for r in rows:
        diff = versus_first(r, rows[0])
        m = r["metrics"]
        exact = f"{m['exact_match']:.3f} ({r['exact_low']:.3f}-{r['exact_high']:.3f})"
        train = (
            f"{r['train_seconds'] / 60:>9.1f} {r['steps']:>5} {r['tokens'] / 1000:>7.0f}k "
            f"{r['tokens_per_second']:>7.0f}"
            if "train_seconds" in r
            else f"{'-':>9} {'-':>5} {'-':>8} {'-':>7}"
        )
        lines.append(
            f"{r['recipe']:<22} {train} {exact:>20} {m.get('slot_accuracy', 0):>6.3f} "
            f"{m.get('act_accuracy', 0):>6.3f} {m.get('parse_rate', 0):>6.3f} {r['prepare_seconds']:>6.0f} "
            f"{r['eval_seconds']:>6.0f}  {diff}"
        )
    return "\n".join(lines)


def versus_first(row: dict, first: dict) -> str:
    """Exact match minus the first row's, with the paired bootstrap interval promotion uses: both scored the same
    examples, so this is the noise of the difference, narrower than the two intervals side by side."""
    if row is first:
        return "-"
    from tuneline.registry.promotion import paired_bootstrap

    point, low, high = paired_bootstrap("exact_match", row["predictions"], first["predictions"], 2000, 0)
    return f"{point:+.3f} ({low:+.3f} to {high:+.3f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(ROOT / "configs" / "finetune.yaml"))
    parser.add_argument(
        "--recipe",
        nargs="+",
        action="append",
        metavar=("NAME", "KEY=VALUE"),
        help="a recipe: a name, then overrides of the config (repeatable)",
    )
    parser.add_argument("--base", action="store_true", help="also score the untuned base model")
    parser.add_argument(
        "--grammar",
        action="store_true",
        help="also score every model with decoding constrained by the task's grammar (+grammar rows)",
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stderr)

    config, _ = load_run_config(args.config)
    params = config.model_dump()
    recipes = args.recipe or [["config"]]
    rows: list[dict] = []
    for i, (name, *overrides) in enumerate(recipes):
        cfg = parse_config(apply_overrides(params, overrides), f"--recipe {name}")
        print(f"# {name}: {shlex.join(overrides) or '(the config as is)'}", file=sys.stderr, flush=True)
        rows += run_recipe(name, cfg, base=args.base and i == 0, also_constrained=args.grammar)
        if len({r["test_hash"] for r in rows}) > 1:
            raise SystemExit(f"recipe {name} scored other test examples than the first; the table would mislead")
        print(table(rows), file=sys.stderr, flush=True)  # so far, in case a later recipe fails
    if args.json:
        print(json.dumps([{k: v for k, v in r.items() if k != "predictions"} for r in rows], indent=1, default=str))
        return
    r0 = rows[0]
    print(table(rows))
    print(f"\n{r0['n_test']} test examples (hash {r0['test_hash']}), generated on {r0['device']}; config {args.config}")


if __name__ == "__main__":
    main()
