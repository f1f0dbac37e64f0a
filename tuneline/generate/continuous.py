"""Greedy decoding of a batch whose rows come and go (continuous batching): a row leaves the batch the step it
ends, and new prompts join at the next step, so concurrent requests never wait for a batch's longest answer and
no step is spent on finished rows.

Rows share one KV cache, left-padded to a common length: the newcomers are prefilled together, their cache padded
on the left to the batch's length (or the batch's to theirs) and stacked under it, and the attention mask hides
the padding. Each row's positions count its own tokens only, as `generate_greedy`'s left padding does, so a row's
answer is the one it would get alone. The log-probability of each picked token is taken from the model's own
distribution, as `tuneline.generate.generation` records it for confidences. Models whose cache is not a plain
per-layer key/value store (sliding windows, state-space layers) are not supported: `supported` says which.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from transformers import DynamicCache


@dataclass
class Row:
    key: object  # the caller's handle, returned with the row when it ends
    ids: list[int] = field(default_factory=list)  # generated tokens, the end token excluded
    logprobs: list[float] = field(default_factory=list)  # each generated token's, then the end token's if any
    ended: bool = False  # by the end token (else by max_new_tokens)


def repeated(prefix: DynamicCache, rows: int) -> DynamicCache:
    """The shared prefix's cache copied for `rows` prompts, leaving `prefix` as it is for the next batch."""
    cache = copy.deepcopy(prefix)
    cache.batch_repeat_interleave(rows)
    return cache


def supported(cache) -> bool:
    layers = getattr(cache, "layers", None)
    return bool(layers) and all(type(layer).__name__ == "DynamicLayer" for layer in layers)


class Decoder:
    """`add` prefills prompts into the batch; `step` decodes one token for every row and returns the rows that
    ended. Not thread-safe: one thread drives it (tuneline/serve/batcher.py)."""

    def __init__(self, model, eos_token_id: int, pad_token_id: int, max_new_tokens: int):
        self.model, self.eos, self.pad, self.max_new_tokens = model, eos_token_id, pad_token_id, max_new_tokens
        self.rows: list[Row] = []
        self._cache = None
        self._mask: torch.Tensor | None = None  # [rows, cached tokens]: 1 for a token, 0 for padding
        self._next: torch.Tensor | None = None  # [rows, 1]: each row's last picked token, not yet in the cache

    def __len__(self) -> int:
        return len(self.rows)

    @torch.inference_mode()
    def add(self, prompts: list[list[int]], keys: list, prefix: DynamicCache | None = None) -> list[Row]:
        """Prefill `prompts` (token ids) and pick their first tokens; returns the rows that already ended. With
        `prefix`, the cache of the first tokens every prompt shares: only each prompt's tail runs, left-padded
        after the shared part, as `tuneline.generate.generation` pads its batches."""
        device = self.model.device
        shared = prefix.get_seq_length() if prefix is not None else 0
        tails = [p[shared:] for p in prompts]
        width = max(map(len, tails))
        ids = torch.tensor([[self.pad] * (width - len(t)) + t for t in tails], device=device)
        mask = torch.tensor([[1] * shared + [0] * (width - len(t)) + [1] * len(t) for t in tails], device=device)
        out = self.model(
            input_ids=ids,
            attention_mask=mask,
            position_ids=(mask.cumsum(-1) - 1).clamp(min=0)[:, shared:],
            past_key_values=repeated(prefix, len(prompts)) if prefix is not None else None,
            use_cache=True,
            logits_to_keep=1,
        )
        if not supported(out.past_key_values):
            raise NotImplementedError(f"{type(self.model).__name__}'s cache cannot be batched continuously")
        rows = [Row(key) for key in keys]
        if self._cache is None:
            self._cache, self._mask, self.rows = out.past_key_values, mask, rows
        else:
            self._stack(out.past_key_values, mask)
            self.rows += rows
        picked = self._pick(out.logits[:, -1], rows)
        self._next = picked if self._next is None else torch.cat([self._next, picked])
        return self._drop_ended()

    @torch.inference_mode()
    def step(self) -> list[Row]:
        """One token for every row; returns the rows that ended with it."""
        mask = torch.cat([self._mask, self._mask.new_ones(len(self.rows), 1)], dim=1)
        out = self.model(
            input_ids=self._next,
            attention_mask=mask,
            position_ids=self._mask.sum(-1, keepdim=True),
            past_key_values=self._cache,
            use_cache=True,
        )
        self._cache, self._mask = out.past_key_values, mask
        self._next = self._pick(out.logits[:, -1], self.rows)
        return self._drop_ended()

    def _pick(self, logits: torch.Tensor, rows: list[Row]) -> torch.Tensor:
        logprobs = torch.log_softmax(logits.float(), dim=-1)
        tokens = logprobs.argmax(dim=-1)
        picked = logprobs.gather(1, tokens[:, None]).squeeze(1)
        for row, token, logprob in zip(rows, tokens.tolist(), picked.tolist()):
            row.logprobs.append(logprob)
            if token == self.eos:
                row.ended = True
            else:
                row.ids.append(token)
        return tokens[:, None]

    def _stack(self, cache, mask: torch.Tensor) -> None:
        """The newcomers' cache and mask under the batch's, both left-padded to the longer."""
        width = max(self._mask.shape[1], mask.shape[1])
        self._mask = torch.cat(
            [F.pad(self._mask, (width - self._mask.shape[1], 0)), F.pad(mask, (width - mask.shape[1], 0))]
        )
        for old, new in zip(self._cache.layers, cache.layers):
            for name in ("keys", "values"):
                a, b = getattr(old, name), getattr(new, name)
                pad = lambda t: F.pad(t, (0, 0, width - t.shape[2], 0))  # noqa: E731 ([rows, heads, tokens, dim])
                setattr(old, name, torch.cat([pad(a), pad(b)]))

    def _drop_ended(self) -> list[Row]:
        """Take the ended rows out of the batch, and the padding columns no remaining row needs."""
        done = [i for i, r in enumerate(self.rows) if r.ended or len(r.logprobs) >= self.max_new_tokens]
        if not done:
            return []
        ended = [self.rows[i] for i in done]
        keep = sorted(set(range(len(self.rows))) - set(done))
        self.rows = [self.rows[i] for i in keep]
        if not keep:
            self._cache = self._mask = self._next = None
            return ended
        index = torch.tensor(keep, device=self._mask.device)
        self._mask, self._next = self._mask[index], self._next[index]
        lead = int((self._mask.sum(0) == 0).cumprod(0).sum())  # leading columns that are padding in every row
        self._mask = self._mask[:, lead:]
        for layer in self._cache.layers:
            layer.keys, layer.values = layer.keys[index, :, lead:], layer.values[index, :, lead:]
        return ended
