"""`training.select_by: primary_metric`: keep the checkpoint whose greedy answers score best on validation.

Validation loss keeps falling while answers stop improving (ViGGO: eval loss 0.05 at exact match 0.63), so each
evaluation also generates the validation rows' answers and scores them with the task's primary metric; the
Trainer's `metric_for_best_model` then picks the checkpoint and EarlyStoppingCallback stops on it.
"""

from __future__ import annotations

from typing import Callable

from tuneline.data.chat_format import IGNORE
from tuneline.config import EvaluationConfig
from tuneline.evaluate.metrics import score

PRIMARY_METRIC = {"json": "exact_match", "viggo": "exact_match", "text": "rougeL"}
GENERATION_BATCH = 16
ANSWER_MARGIN = 8  # tokens past the longest validation answer before generation is cut


def primary_score(task: str, texts: list[str], references: list[list[str]]) -> float:
    return score(task, texts, references)[0][PRIMARY_METRIC[task]]


def validation_scorer(task: str, tokenizer, records: list[dict]) -> Callable[[object], dict[str, float]]:
    """A function of the model in training: `{primary metric: value}` over the validation rows (one example per
    distinct prompt, all its answers as references), answers no longer than the longest reference needs."""
    from tuneline.evaluate.evaluation import select_test
    from tuneline.generate.generation import generate_greedy

    examples = select_test(records, EvaluationConfig(max_samples=None))
    prompts = [r["prompt"] for r in examples]
    references = [r.get("references") or [r["messages"][-1]["content"]] for r in examples]
    max_new = max(sum(t != IGNORE for t in r["labels"]) for r in records) + ANSWER_MARGIN

    def scorer(model) -> dict[str, float]:
        texts = generate_greedy(model, tokenizer, prompts, GENERATION_BATCH, max_new, confidence=False).texts
        return {PRIMARY_METRIC[task]: primary_score(task, texts, references)}

    return scorer
