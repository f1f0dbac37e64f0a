"""Batched greedy generation: left padding so every row's next token sits at the last position, KV cache on."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch


@dataclass
class Generated:
    texts: list[str]
    seconds: float
    new_tokens: int


def length_batches(lengths: list[int], batch_size: int, max_new_tokens: int,
                   max_batch_tokens: int | None = None) -> list[list[int]]:
    """Indices grouped shortest first, so each batch pads little. A batch holds at most `batch_size` prompts and,
    with `max_batch_tokens`, at most that many tokens counted as rows x (longest prompt + max_new_tokens): what
    its KV cache and logits grow to. A prompt over the budget on its own still gets a batch of one."""
    batches: list[list[int]] = []
    for i in sorted(range(len(lengths)), key=lambda i: lengths[i]):
        batch = batches[-1] if batches else None
        fits = batch is not None and len(batch) < batch_size and (
            max_batch_tokens is None or (len(batch) + 1) * (lengths[i] + max_new_tokens) <= max_batch_tokens
        )
        if fits:
            batch.append(i)
        else:
            batches.append([i])
    return batches


@torch.inference_mode()
def generate_greedy(model, tokenizer, prompts: list[str], batch_size: int, max_new_tokens: int, progress=None,
                    max_batch_tokens: int | None = None, constraint: Callable[[], object] | None = None) -> Generated:
    """`constraint` makes a fresh logits processor for each batch (tuneline/grammar.py)."""
    tokenizer.padding_side = "left"
    lengths = [len(ids) for ids in tokenizer(prompts, add_special_tokens=False)["input_ids"]]
    texts: list[str] = [""] * len(prompts)
    new_tokens = done = 0
    start = time.monotonic()
    model.eval()
    for idx in length_batches(lengths, batch_size, max_new_tokens, max_batch_tokens):
        enc = tokenizer([prompts[i] for i in idx], return_tensors="pt", padding=True, add_special_tokens=False)
        enc = enc.to(model.device)
        out = model.generate(
            **enc,
            do_sample=False,
            max_new_tokens=max_new_tokens,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
            use_cache=True,
            logits_processor=[constraint()] if constraint else None,
        )
        gen = out[:, enc["input_ids"].shape[1] :].tolist()  # one copy off the GPU per batch
        for ids, i in zip(gen, idx):
            if tokenizer.eos_token_id in ids:
                ids = ids[: ids.index(tokenizer.eos_token_id)]
            new_tokens += len(ids)
            texts[i] = tokenizer.decode(ids, skip_special_tokens=True).strip()
        done += len(idx)
        if progress:
            progress(done, len(prompts), time.monotonic() - start)
    return Generated(texts=texts, seconds=time.monotonic() - start, new_tokens=new_tokens)
