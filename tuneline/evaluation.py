"""Score one model (base, or base + adapter) on the test records."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

from pydantic import BaseModel

from tuneline.config import EvaluationConfig
from tuneline.generation import generate_greedy
from tuneline.grammar import processor_factory
from tuneline.metrics import score

log = logging.getLogger(__name__)


class EvalResult(BaseModel):
    label: str
    task: str
    metrics: dict[str, float]
    n_examples: int
    test_set_hash: str
    seconds: float
    examples_per_second: float
    latency_ms_per_example: float  # batched generation time divided by examples
    device: str = "cpu"  # where it generated, and in which dtype
    dtype: str = "float32"
    constrained: bool = False  # decoded under the task's grammar: not comparable with unconstrained scores
    predictions: list[dict]  # input, reference, prediction and the per-example row from metrics.compare


def hash_examples(records: list[dict], grammar: str | None = None) -> str:
    """Identifies the exact examples scored, and the grammar decoding followed (if any), so metrics are only ever
    compared on the same set, measured the same way."""
    examples = [[r["prompt"], r["messages"][-1]["content"]] for r in records]
    payload = json.dumps(examples if grammar is None else [examples, grammar], sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def select_test(records: list[dict], cfg: EvaluationConfig) -> list[dict]:
    """Evenly spaced over the test split: test files group rows by MR (ViGGO: 3 utterances each), so the first N
    rows would cover a third as many distinct targets."""
    n = len(records) if cfg.max_samples is None else min(cfg.max_samples, len(records))
    return [records[i * len(records) // n] for i in range(n)]


def eval_examples(splits: dict[str, list[dict]], cfg: EvaluationConfig) -> dict[str, list[dict]]:
    """All that scoring a model reads from the dataset: the selected test rows, and the train rows only when
    decoding is constrained (the grammar is built from their answers). A new training sample leaves this
    unchanged, so the base model's scores come from the cache."""
    return {"test": select_test(splits["test"], cfg)} | ({"train": splits["train"]} if cfg.constrained else {})


def evaluate_model(
    label: str, task: str, model_dir: Path, records: list[dict], cfg: EvaluationConfig,
    adapter_dir: Path | None = None, dtype: str = "float32", device: str = "auto", grammar: str | None = None,
) -> EvalResult:
    """`device` and `dtype` are the config's `model.device` and `model.dtype`; `placement` decides what they mean
    on this machine. `grammar` constrains decoding (tuneline/grammar.py)."""
    from tuneline.modeling import load_merged, load_model, load_tokenizer, placement

    device, dtype = placement(device, dtype)
    log.info("evaluate %s: generating on %s in %s", label, device, dtype)
    tokenizer = load_tokenizer(model_dir)
    model = (load_model(model_dir, dtype, device) if adapter_dir is None
             else load_merged(model_dir, adapter_dir, dtype, device))

    def progress(done: int, total: int, seconds: float) -> None:
        log.info("evaluate %s: %d/%d examples, %.0fs elapsed, eta %.0fs", label, done, total, seconds,
                 seconds / done * (total - done))

    prompts = [r["prompt"] for r in records]
    references = [r["messages"][-1]["content"] for r in records]
    constraint = processor_factory(grammar, tokenizer, model.config.vocab_size) if grammar else None
    gen = generate_greedy(model, tokenizer, prompts, cfg.batch_size, cfg.max_new_tokens, progress,
                          max_batch_tokens=cfg.max_batch_tokens, constraint=constraint)
    metrics, rows = score(task, gen.texts, references)
    predictions = [
        {"input": r["messages"][-2]["content"], "reference": ref, "prediction": pred, **row}
        for r, ref, pred, row in zip(records, references, gen.texts, rows)
    ]
    return EvalResult(
        label=label,
        task=task,
        metrics=metrics,
        n_examples=len(records),
        test_set_hash=hash_examples(records, grammar),
        seconds=gen.seconds,
        examples_per_second=len(records) / gen.seconds if gen.seconds else 0.0,
        latency_ms_per_example=1000 * gen.seconds / max(1, len(records)),
        predictions=predictions,
        device=device,
        dtype=dtype,
        constrained=grammar is not None,
    )
