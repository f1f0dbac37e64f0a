"""Rows -> chat messages -> (prompt, completion) strings rendered with the base model's chat template.

Training and generation both start from the same rendered `prompt`, so what the model learns to continue is
exactly what it is asked to continue at evaluation time.
"""

from __future__ import annotations

import random

from tuneline.config import DataConfig
from tuneline.sources import DataError


def to_messages(row: dict, cfg: DataConfig) -> list[dict[str, str]]:
    where = f"{row.get('_file', '<row>')}:{row.get('_line', '?')}"
    for field in (cfg.input_field, cfg.output_field):
        value = row.get(field)
        if not isinstance(value, str) or not value.strip():
            problem = "missing" if field not in row else "empty or not a string"
            raise DataError(f"{where}: field '{field}' is {problem}")
    messages = [{"role": "system", "content": cfg.system_prompt}] if cfg.system_prompt else []
    return messages + [
        {"role": "user", "content": row[cfg.input_field].strip()},
        {"role": "assistant", "content": row[cfg.output_field].strip()},
    ]


def render(tokenizer, messages: list[dict[str, str]]) -> dict[str, str]:
    """Split the templated conversation into the prompt and the answer the model must produce, EOS included."""
    if not tokenizer.chat_template:
        raise ValueError("the base model's tokenizer has no chat template; use an instruct/chat model")
    full = tokenizer.apply_chat_template(messages, tokenize=False)
    prompt = tokenizer.apply_chat_template(messages[:-1], tokenize=False, add_generation_prompt=True)
    if not full.startswith(prompt):
        raise ValueError("chat template renders the prompt differently with and without the answer")
    completion = full[len(prompt) :]
    eos = tokenizer.eos_token
    # Templates append separators after EOS (ChatML adds "\n"); the model must learn to stop at EOS itself.
    if eos in completion:
        completion = completion[: completion.rindex(eos) + len(eos)]
    else:
        completion += eos
    return {"prompt": prompt, "completion": completion}


def _sample(rows: list, cap: int | None, seed: int) -> list:
    if cap is None or cap >= len(rows):
        return rows
    picked = sorted(random.Random(seed).sample(range(len(rows)), cap))
    return [rows[i] for i in picked]


def prepare_splits(raw: dict[str, list[dict]], cfg: DataConfig, tokenizer) -> dict[str, list[dict]]:
    caps = {"train": cfg.max_train_samples, "validation": cfg.max_validation_samples, "test": cfg.max_test_samples}
    out: dict[str, list[dict]] = {}
    for split, rows in raw.items():
        records = []
        for row in _sample(rows, caps.get(split), cfg.seed):
            messages = to_messages(row, cfg)
            records.append({"messages": messages, **render(tokenizer, messages), "source": f"{row['_file']}:{row['_line']}"})
        out[split] = records
    missing = [s for s in ("train", "test") if not out.get(s)]
    if missing:
        raise DataError(f"data.source '{cfg.source}': split(s) {missing} are empty")
    return out
