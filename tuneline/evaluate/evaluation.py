"""Score one model (base, or base + adapter) on the test records."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

from pydantic import BaseModel

from tuneline.evaluate.baseline import few_shot_messages, instruction_for
from tuneline.evaluate.calibration import calibration_metrics
from tuneline.data.chat_format import generation_prompt
from tuneline.generate.confidence import answer_confidence
from tuneline.config import EvaluationConfig, JsonMatch
from tuneline.generate.generation import generate_greedy
from tuneline.generate.grammar import processor_factory
from tuneline.evaluate.metrics import score

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


def hash_examples(records: list[dict], grammar: str | None = None, match: JsonMatch | None = None) -> str:
    """Identifies the exact examples scored, the grammar decoding followed (if any) and how json values compare
    (task json), so metrics are only ever compared on the same set, measured the same way."""
    examples = [[r["prompt"], r.get("references") or r["messages"][-1]["content"]] for r in records]
    extra = ([grammar] if grammar is not None else []) + ([match.model_dump()] if match is not None else [])
    payload = json.dumps([examples, *extra] if extra else examples, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def select_test(records: list[dict], cfg: EvaluationConfig) -> list[dict]:
    """Evenly spaced over the test split: test files group rows by MR (ViGGO: 3 utterances each), so the first N
    rows would cover a third as many distinct targets. Rows with the same prompt (several references for one
    input, as data-to-text corpora have) are one example, with all their answers as `references`."""
    groups: dict[str, list[dict]] = {}
    for r in records:
        groups.setdefault(r["prompt"], []).append(r)
    examples = [
        g[0] if len(g) == 1 else {**g[0], "references": [x["messages"][-1]["content"] for x in g]}
        for g in groups.values()
    ]
    n = len(examples) if cfg.max_samples is None else min(cfg.max_samples, len(examples))
    return [examples[i * len(examples) // n] for i in range(n)]


def eval_examples(splits: dict[str, list[dict]], cfg: EvaluationConfig) -> dict[str, list[dict]]:
    """All that scoring a model reads from the dataset: the selected test rows, and the train rows only when
    decoding is constrained (the grammar is built from their answers). A new training sample leaves this
    unchanged, so the base model's scores come from the cache."""
    return {"test": select_test(splits["test"], cfg)} | ({"train": splits["train"]} if cfg.constrained else {})


def evaluate_model(
    label: str,
    task: str,
    model_dir: Path,
    records: list[dict],
    cfg: EvaluationConfig,
    adapter_dir: Path | None = None,
    dtype: str = "float32",
    device: str = "auto",
    grammar: str | None = None,
    shots: list[dict] | None = None,
) -> EvalResult:
    """`device` and `dtype` are the config's `model.device` and `model.dtype`; `placement` decides what they mean
    on this machine. `grammar` constrains decoding (tuneline/generate/grammar.py). With `shots`, each input is asked
    with the prompted baseline's instruction and these training examples before it (tuneline/evaluate/baseline.py)."""
    from tuneline.models.modeling import load_merged, load_model, load_tokenizer, placement

    device, dtype = placement(device, dtype)
    log.info("evaluate %s: generating on %s in %s", label, device, dtype)
    tokenizer = load_tokenizer(model_dir)
    model = (
        load_model(model_dir, dtype, device)
        if adapter_dir is None
        else load_merged(model_dir, adapter_dir, dtype, device)
    )

    def progress(done: int, total: int, seconds: float) -> None:
        log.info(
            "evaluate %s: %d/%d examples, %.0fs elapsed, eta %.0fs",
            label,
            done,
            total,
            seconds,
            seconds / done * (total - done),
        )

    if shots is None:
        prompts = [r["prompt"] for r in records]
    else:
        instruction = instruction_for(task, cfg.prompted_baseline)
        prompts = [generation_prompt(tokenizer, few_shot_messages(r, shots, instruction)) for r in records]
    references = [r.get("references") or [r["messages"][-1]["content"]] for r in records]
    constraint = processor_factory(grammar, tokenizer, model.config.vocab_size) if grammar else None
    gen = generate_greedy(
        model,
        tokenizer,
        prompts,
        cfg.batch_size,
        cfg.max_new_tokens,
        progress,
        max_batch_tokens=cfg.max_batch_tokens,
        constraint=constraint,
    )
    if gen.shared_tokens:
        log.info("evaluate %s: the first %d tokens of every prompt ran once, for all of them", label, gen.shared_tokens)
    metrics, rows = score(task, gen.texts, references, cfg.json_match)
    confidences = [
        answer_confidence(task, text, spans, lps, cfg.json_match)
        for text, spans, lps in zip(gen.texts, gen.spans, gen.logprobs)
    ]
    predictions = [
        {"input": r["messages"][-2]["content"], "reference": refs[row.pop("best", 0)], "prediction": pred, **row}
        | conf.as_row()
        | ({"references": refs} if len(refs) > 1 else {})
        for r, refs, pred, row, conf in zip(records, references, gen.texts, rows, confidences)
    ]
    metrics |= calibration_metrics(predictions)
    return EvalResult(
        label=label,
        task=task,
        metrics=metrics,
        n_examples=len(records),
        test_set_hash=hash_examples(records, grammar, cfg.json_match if task == "json" else None),
        seconds=gen.seconds,
        examples_per_second=len(records) / gen.seconds if gen.seconds else 0.0,
        latency_ms_per_example=1000 * gen.seconds / max(1, len(records)),
        predictions=predictions,
        device=device,
        dtype=dtype,
        constrained=grammar is not None,
    )
