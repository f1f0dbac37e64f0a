"""Evaluation throughput: our batched greedy generation against one example at a time, same model, same prompts.

    python benchmarks/eval_throughput.py [--n 200] [--batch-size 16] [--max-new-tokens 80] [--json]
    python benchmarks/eval_throughput.py --modes batched,no-confidence     # what confidence costs an evaluation
    python benchmarks/eval_throughput.py --device cuda --dtype bfloat16 --batch-size 256 --max-batch-tokens 131072
    python benchmarks/eval_throughput.py --prompted --modes batched,no-shared-prefix --n 64   # the prompted baseline
    python benchmarks/eval_throughput.py --adapter DIR --modes batched,fixed-batches --n 150 --batch-size 32

Modes: `batched` is the evaluator (batched greedy generation, token log-probs recorded, each answer's confidence
computed); `no-confidence` the same without log-probs or confidences; `no-shared-prefix` the same, but each prompt
run whole, with the tokens all prompts share run again in each (how it generated before); `fixed-batches` the same
on fixed batches through Hugging Face's `generate`, each as long as its longest answer (how it generated before
continuous batching); `sequential` one example at a time. `--prompted` asks as the prompted baseline does: its
instruction and shots before each input. `--adapter` scores a tuned model (a LoRA adapter directory, merged): its
answers end at different lengths, where the base model's mostly run to `--max-new-tokens`. Each mode
runs in its own process so peak memory (max RSS) is its own. Prints examples/s, generated tokens/s, peak memory,
time relative to the first mode, and the share of examples whose greedy outputs are identical to the first mode's.
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


def _prompts(n: int, model_dir, prompted: bool) -> list[str]:
    """The default config's test prompts, or with `prompted` those the prompted baseline asks (its shots drawn from
    the training rows as the pipeline draws them)."""
    from tuneline.config import DataConfig, EvaluationConfig
    from tuneline.data.chat_format import generation_prompt
    from tuneline.data.sources import load_splits
    from tuneline.data.validation import prepare
    from tuneline.evaluate.baseline import few_shot_messages, instruction_for, pick_shots
    from tuneline.evaluate.evaluation import select_test
    from tuneline.models.modeling import load_tokenizer

    tokenizer = load_tokenizer(model_dir)
    data, evaluation = DataConfig(max_validation_samples=1), EvaluationConfig(max_samples=n)
    prepared = prepare(load_splits(data), data, tokenizer)
    records = select_test(prepared.splits["test"], evaluation)
    if not prompted:
        return [r["prompt"] for r in records]
    shots = pick_shots(prepared.splits["train"], evaluation.prompted_baseline)
    instruction = instruction_for(data.task, evaluation.prompted_baseline)
    return [generation_prompt(tokenizer, few_shot_messages(r, shots, instruction)) for r in records]


MODES = {
    "batched": "ours (batched, KV cache, confidence)",
    "no-confidence": "ours without log-probs or confidence",
    "no-shared-prefix": "ours, shared first tokens run per prompt",
    "fixed-batches": "ours on fixed batches (HF generate)",
    "sequential": "one at a time (same model, KV cache)",
}


def worker(args) -> None:
    import torch

    from tuneline.generate.confidence import answer_confidence
    from tuneline.generate.generation import generate_greedy
    from tuneline.models.modeling import load_merged, load_model, load_tokenizer, placement, resolve_base_model

    torch.manual_seed(0)
    model_dir = resolve_base_model(args.model)
    prompts = _prompts(args.n, model_dir, args.prompted)
    device, dtype = placement(args.device, args.dtype)
    tokenizer = load_tokenizer(model_dir)
    if args.adapter:
        model = load_merged(model_dir, Path(args.adapter), dtype, device)
    else:
        model = load_model(model_dir, dtype, device)
    batch = 1 if args.worker == "sequential" else args.batch_size
    confidence = args.worker != "no-confidence"
    start = time.monotonic()
    gen = generate_greedy(
        model,
        tokenizer,
        prompts,
        batch,
        args.max_new_tokens,
        max_batch_tokens=args.max_batch_tokens if batch > 1 else None,
        confidence=confidence,
        share_prefix=args.worker != "no-shared-prefix",
        continuous=args.worker != "fixed-batches",
    )
    if confidence:  # as the evaluator does for every answer
        for text, spans, lps in zip(gen.texts, gen.spans, gen.logprobs):
            answer_confidence(args.task, text, spans, lps)
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
                "shared_tokens": gen.shared_tokens,
                "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                "texts": gen.texts,
            }
        )
    )


def _run_mode(mode: str, args, out: Path) -> dict:
    cmd = [sys.executable, __file__, "--worker", mode, "--out", str(out), "--model", args.model, "--n", str(args.n)]
    cmd += ["--batch-size", str(args.batch_size), "--max-new-tokens", str(args.max_new_tokens)]
    cmd += ["--device", args.device, "--dtype", args.dtype, "--task", args.task]
    cmd += ["--max-batch-tokens", str(args.max_batch_tokens)] if args.max_batch_tokens else []
    cmd += ["--prompted"] if args.prompted else []
    cmd += ["--adapter", args.adapter] if args.adapter else []
    subprocess.run(cmd, check=True, env=os.environ.copy())
    return json.loads(out.read_text())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="HuggingFaceTB/SmolLM2-135M-Instruct")
    p.add_argument("--n", type=int, default=200)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--max-new-tokens", type=int, default=80)
    p.add_argument("--max-batch-tokens", type=int, help="token budget per batch (evaluation.max_batch_tokens)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="cpu", help="as model.device")
    p.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), default="float32", help="as model.dtype")
    p.add_argument("--task", default="viggo", help="whose fields the confidences are computed for")
    p.add_argument("--prompted", action="store_true", help="the prompted baseline's prompts (instruction and shots)")
    p.add_argument("--adapter", help="a LoRA adapter directory: score the tuned model, merged")
    p.add_argument("--modes", default="batched,sequential", help=f"comma-separated, from {', '.join(MODES)}")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    p.add_argument("--worker", choices=list(MODES), help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        return worker(args)
    modes = args.modes.split(",")
    if unknown := set(modes) - set(MODES):
        p.error(f"--modes: unknown {sorted(unknown)}; choose from {list(MODES)}")

    with tempfile.TemporaryDirectory() as tmp:
        results = [_run_mode(mode, args, Path(tmp) / f"{mode}.json") for mode in modes]
    first = results[0]
    rows = [
        {
            "mode": MODES[r["mode"]],
            "batch": r["batch_size"],
            "examples": r["examples"],
            "seconds": r["seconds"],
            "examples_per_s": r["examples"] / r["seconds"],
            "new_tokens_per_s": r["new_tokens"] / r["seconds"],
            "shared_tokens": r["shared_tokens"],
            "peak_rss_mb": r["peak_rss_mb"],
            "time_vs_first": r["seconds"] / first["seconds"],
            "identical_to_first": sum(a == b for a, b in zip(first["texts"], r["texts"], strict=True))
            / len(first["texts"]),
        }
        for r in results
    ]
    summary = {
        "rows": rows,
        "max_new_tokens": args.max_new_tokens,
        "model": args.model,
        "threads": os.cpu_count(),
        "device": first["device"],
        "dtype": first["dtype"],
    }
    if args.json:
        print(json.dumps(summary, indent=2))
        return
    print(
        f"{'mode':<40} {'batch':>5} {'examples':>8} {'seconds':>8} {'ex/s':>7} {'new tok/s':>10} {'shared':>6} "
        f"{'peak RSS MB':>12} {'time vs 1st':>11} {'same text':>9}"
    )
    for r in rows:
        print(
            f"{r['mode']:<40} {r['batch']:>5} {r['examples']:>8} {r['seconds']:>8.1f} {r['examples_per_s']:>7.2f} "
            f"{r['new_tokens_per_s']:>10.1f} {r['shared_tokens']:>6} {r['peak_rss_mb']:>12.0f} "
            f"{r['time_vs_first']:>10.2f}x {r['identical_to_first']:>9.1%}"
        )
    tuned = f", tuned ({args.adapter})" if args.adapter else ""
    print(
        f"\n{args.model} on {first['device']} in {first['dtype']}, max_new_tokens {args.max_new_tokens}, "
        f"{os.cpu_count()} CPU threads; {'prompted baseline' if args.prompted else 'plain'} prompts{tuned}; "
        "shared: tokens every prompt begins with, run once"
    )


if __name__ == "__main__":
    main()
