"""Which answer confidence separates right from wrong answers best: candidates compared on validation, then on test.

    scripts/in-venv python benchmarks/confidence_ranking.py --model merged/ [--validation 300] [--test 150]

`--model` is a merged model folder (`run.py export --model-version production --out merged/`). Greedy answers are
generated once per split, with their token log-probabilities; each candidate turns them into one number per answer:

- `min token`: the least likely token of the whole answer
- `mean token`: the geometric mean of the tokens' probabilities, the end of the answer included
- `mean x min token`: the geometric mean of those two
- `product of units`: act x each field x the end of the answer, each unit its least likely token (evidence adds up:
  two doubtful fields are worse than one)
- `min over fields`: the least sure field or act, the tokens between fields left out
- `mean over units`: the mean of the act's and the fields' confidences

For each: AUROC against exact match, and the coverage at the lowest threshold whose accepted answers reach
`--precision` exact match (how `serving.min_confidence: auto` picks it). Choose on validation, read on test.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _candidates(conf, logprobs: list[float]) -> dict[str, float]:
    units = ([conf.act] if conf.act is not None else []) + list(conf.fields.values())
    end = math.exp(logprobs[-1]) if logprobs else 1.0
    mean = math.exp(sum(logprobs) / len(logprobs)) if logprobs else 0.0
    least = math.exp(min(logprobs)) if logprobs else 0.0
    return {
        "min token": least,
        "mean token": mean,
        "mean x min token": math.sqrt(mean * least),
        "mean over units": sum(units) / len(units) if units else 0.0,
        "product of units": math.prod(units) * end if units else 0.0,
        "min over fields": min(units) if units else 0.0,
    }


def _split(model, tokenizer, records: list[dict], task: str, batch_size: int, max_new: int):
    from tuneline.evaluate.metrics import score
    from tuneline.generate.confidence import answer_confidence
    from tuneline.generate.generation import generate_greedy

    gen = generate_greedy(model, tokenizer, [r["prompt"] for r in records], batch_size, max_new)
    references = [r.get("references") or [r["messages"][-1]["content"]] for r in records]
    _, rows = score(task, gen.texts, references)
    scores = [
        _candidates(answer_confidence(task, text, spans, lps), lps)
        for text, spans, lps in zip(gen.texts, gen.spans, gen.logprobs)
    ]
    return scores, [bool(row["exact"]) for row in rows]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, type=Path, help="a merged model folder")
    p.add_argument("--config", type=Path, default=ROOT / "configs/finetune.yaml", help="whose data section")
    p.add_argument("--validation", type=int, default=300, help="validation examples")
    p.add_argument("--test", type=int, default=150, help="test examples, spread as evaluation.max_samples spreads")
    p.add_argument("--precision", type=float, default=0.95, help="as serving.target_precision")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--max-new-tokens", type=int, default=80)
    args = p.parse_args()

    from tuneline.config import EvaluationConfig, load_run_config
    from tuneline.data.sources import load_splits
    from tuneline.data.validation import prepare
    from tuneline.evaluate.calibration import auroc, pick_threshold
    from tuneline.evaluate.evaluation import select_test
    from tuneline.models.modeling import load_model, load_tokenizer

    data = load_run_config(args.config)[0].data.model_copy(
        update={"max_train_samples": 1, "max_validation_samples": args.validation}
    )
    tokenizer = load_tokenizer(args.model)
    splits = prepare(load_splits(data), data, tokenizer).splits
    model = load_model(args.model)
    chosen = {
        "validation": splits["validation"][: args.validation],
        "test": select_test(splits["test"], EvaluationConfig(max_samples=args.test)),
    }
    print(f"{'candidate':<18} {'split':<10} {'n':>4} {'exact':>6} {'AUROC':>6} {'threshold':>9} {'coverage':>8}")
    for name, records in chosen.items():
        scores, correct = _split(model, tokenizer, records, data.task, args.batch_size, args.max_new_tokens)
        for candidate in scores[0]:
            values = [s[candidate] for s in scores]
            picked = pick_threshold(values, correct, args.precision)
            print(
                f"{candidate:<18} {name:<10} {len(values):>4} {sum(correct) / len(correct):>6.3f} "
                f"{auroc(values, correct) or float('nan'):>6.3f} "
                f"{picked.threshold if picked else float('nan'):>9.3f} {picked.coverage if picked else 0.0:>8.3f}"
            )
    print(f"\n{args.model}, greedy, coverage at accepted exact match >= {args.precision}")


if __name__ == "__main__":
    main()
