"""Batched greedy generation: left padding so every row's next token sits at the last position, KV cache on."""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch


@dataclass
class Generated:
    texts: list[str]
    seconds: float
    new_tokens: int


@torch.inference_mode()
def generate_greedy(model, tokenizer, prompts: list[str], batch_size: int, max_new_tokens: int, progress=None) -> Generated:
    tokenizer.padding_side = "left"
    # Sort by length so each batch pads little; results go back in input order.
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    texts: list[str] = [""] * len(prompts)
    new_tokens = 0
    start = time.monotonic()
    model.eval()
    for b in range(0, len(order), batch_size):
        idx = order[b : b + batch_size]
        enc = tokenizer([prompts[i] for i in idx], return_tensors="pt", padding=True, add_special_tokens=False)
        enc = enc.to(model.device)
        out = model.generate(
            **enc,
            do_sample=False,
            max_new_tokens=max_new_tokens,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
            use_cache=True,
        )
        gen = out[:, enc["input_ids"].shape[1] :]
        for row, i in enumerate(idx):
            ids = gen[row].tolist()
            if tokenizer.eos_token_id in ids:
                ids = ids[: ids.index(tokenizer.eos_token_id)]
            new_tokens += len(ids)
            texts[i] = tokenizer.decode(ids, skip_special_tokens=True).strip()
        if progress:
            progress(min(b + batch_size, len(order)), len(order), time.monotonic() - start)
    return Generated(texts=texts, seconds=time.monotonic() - start, new_tokens=new_tokens)
