"""Evaluation throughput: our batched greedy generation against one example at a time, same model, same prompts.

    python benchmarks/eval_throughput.py [--n 200] [--batch-size 16] [--max-new-tokens 80] [--json]
    python benchmarks/eval_throughput.py --device cuda --dtype bfloat16 --batch-size 256 --max-batch-tokens 131072

Each mode runs in its own process so peak memory (max RSS) is its own. Prints examples/s, generated tokens/s,
peak memory and the share of examples whose greedy outputs are identical in both modes.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _prompts(n: int, model_dir) -> list[str]:
    from tuneline.config import DataConfig, EvaluationConfig
    from tuneline.evaluate.evaluation import select_test
    from tuneline.models.modeling import load_tokenizer
    from tuneline.data.sources import load_splits
    from tuneline.data.validation import prepare

    data = DataConfig(max_train_samples=1, max_validation_samples=1)
    prepared = prepare(load_splits(data), data, load_tokenizer(model_dir))
    return [r["prompt"] for r in select_test(prepared.splits["test"], EvaluationConfig(max_samples=n))]


def worker(args) -> None:
    import torch

    from tuneline.generate.generation import generate_greedy
    from tuneline.models.modeling import load_model, load_tokenizer, placement, resolve_base_model

    torch.manual_seed(0)
    model_dir = resolve_base_model(args.model)
    prompts = _prompts(args.n, model_dir)
    device, dtype = placement(args.device, args.dtype)
    tokenizer, model = load_tokenizer(model_dir), load_model(model_dir, dtype, device)
    batch = args.batch_size if args.worker == "batched" else 1
    start = time.monotonic()
    gen = generate_greedy(
        model,
        tokenizer,
        prompts,
        batch,
        args.max_new_tokens,
        max_batch_tokens=args.max_batch_tokens if batch > 1 else None,
    )
    seconds = time.monotonic() - start
    Path(args.out).write_text(
        json.dumps(
            {
                "mode": args.worker,
                "device": device,
                "dtype": dtype,
                "batch_size": batch,
                "examples": len(prompts),
                "seconds": seconds,
                "new_tokens": gen.new_tokens,
                "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                "texts": gen.texts,
            }
        )
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="HuggingFaceTB/SmolLM2-135M-Instruct")
    p.add_argument("--n", type=int, default=200)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--max-new-tokens", type=int, default=80)
    p.add_argument("--max-batch-tokens", type=int, help="token budget per batch (evaluation.max_batch_tokens)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="cpu", help="as model.device")
    p.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), default="float32", help="as model.dtype")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    p.add_argument("--worker", choices=["batched", "sequential"], help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        return worker(args)

    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for mode in ("batched", "sequential"):
            out = Path(tmp) / f"{mode}.json"
            cmd = [
                sys.executable,
                __file__,
                "--worker",
                mode,
                "--out",
                str(out),
                "--model",
                args.model,
                "--n",
                str(args.n),
                "--batch-size",
                str(args.batch_size),
                "--max-new-tokens",
                str(args.max_new_tokens),
                "--device",
                args.device,
                "--dtype",
                args.dtype,
            ]
            cmd += ["--max-batch-tokens", str(args.max_batch_tokens)] if args.max_batch_tokens else []
            subprocess.run(cmd, check=True, env=os.environ.copy())
            results[mode] = json.loads(out.read_text())
    ours, one = results["batched"], results["sequential"]
    same = sum(a == b for a, b in zip(ours["texts"], one["texts"], strict=True)) / len(ours["texts"])
    rows = []
    for r in (ours, one):
        rows.append(
            {
                "mode": "ours (batched, left-padded, KV cache)"
                if r is ours
                else "one at a time (same model, KV cache)",
                "batch": r["batch_size"],
                "examples": r["examples"],
                "seconds": r["seconds"],
                "examples_per_s": r["examples"] / r["seconds"],
                "new_tokens_per_s": r["new_tokens"] / r["seconds"],
                "peak_rss_mb": r["peak_rss_mb"],
            }
        )
    summary = {
        "rows": rows,
        "speedup": one["seconds"] / ours["seconds"],
        "identical_outputs": same,
        "max_new_tokens": args.max_new_tokens,
        "model": args.model,
        "threads": os.cpu_count(),
        "device": ours["device"],
        "dtype": ours["dtype"],
    }
    if args.json:
        print(json.dumps(summary, indent=2))
        return
    print(f"{'mode':<40} {'batch':>5} {'examples':>8} {'seconds':>8} {'ex/s':>7} {'new tok/s':>10} {'peak RSS MB':>12}")
    for r in rows:
        print(
            f"{r['mode']:<40} {r['batch']:>5} {r['examples']:>8} {r['seconds']:>8.1f} {r['examples_per_s']:>7.2f} "
            f"{r['new_tokens_per_s']:>10.1f} {r['peak_rss_mb']:>12.0f}"
        )
    print(
        f"\nspeedup: {summary['speedup']:.2f}x   identical greedy outputs: {same:.1%}   "
        f"({args.model} on {ours['device']} in {ours['dtype']}, max_new_tokens {args.max_new_tokens}, "
        f"{os.cpu_count()} CPU threads)"
    )


if __name__ == "__main__":
    main()
