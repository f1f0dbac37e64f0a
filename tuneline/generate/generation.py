"""Batched greedy generation: left padding so every row's next token sits at the last position, KV cache on."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from transformers import LogitsProcessor

from tuneline.generate.confidence import token_spans


@dataclass
class Generated:
    texts: list[str]
    seconds: float
    new_tokens: int
    spans: list[list[tuple[int, int]]]  # per answer, each generated token's characters in its text
    logprobs: list[list[float]]  # per answer, each generated token's log-probability, then the end token's if any

    def part(self, start: int, stop: int) -> "Generated":
        """Answers `start:stop`, for one of the requests generated together (tuneline/serve/batcher.py); `seconds` is
        their share of the batch's time."""
        spans = self.spans[start:stop]
        return Generated(
            texts=self.texts[start:stop],
            seconds=self.seconds * (stop - start) / len(self.texts),
            new_tokens=sum(map(len, spans)),
            spans=spans,
            logprobs=self.logprobs[start:stop],
        )


class _Logprobs:
    """Log-probability of each token greedy decoding picks, under the model's own distribution: taken before our
    logits processors (a grammar's mask, a test's forced token), which would give a token they force probability
    1 and hide the doubt. `before` runs first and keeps only the current step's log-softmax; `after` runs last,
    where greedy's argmax is the token it picks, and keeps one number per row, so memory stays far below
    `output_scores` (rows x vocabulary per step)."""

    def __init__(self):
        self.steps: list[torch.Tensor] = []
        self._current: torch.Tensor | None = None
        self.before, self.after = _Call(self._keep), _Call(self._pick)

    def _keep(self, scores: torch.Tensor) -> None:
        self._current = torch.log_softmax(scores.float(), dim=-1)

    def _pick(self, scores: torch.Tensor) -> None:
        self.steps.append(self._current.gather(1, scores.argmax(dim=-1, keepdim=True)).squeeze(1))

    def rows(self) -> list[list[float]]:
        return torch.stack(self.steps, dim=1).tolist()


class _Call(LogitsProcessor):
    def __init__(self, fn):
        self.fn = fn

    def __call__(self, input_ids, scores):
        self.fn(scores)
        return scores


def length_batches(
    lengths: list[int], batch_size: int, max_new_tokens: int, max_batch_tokens: int | None = None
) -> list[list[int]]:
    """Indices grouped shortest first, so each batch pads little. A batch holds at most `batch_size` prompts and,
    with `max_batch_tokens`, at most that many tokens counted as rows x (longest prompt + max_new_tokens): what
    its KV cache and logits grow to. A prompt over the budget on its own still gets a batch of one."""
    batches: list[list[int]] = []
    for i in sorted(range(len(lengths)), key=lambda i: lengths[i]):
        batch = batches[-1] if batches else None
        fits = (
            batch is not None
            and len(batch) < batch_size
            and (max_batch_tokens is None or (len(batch) + 1) * (lengths[i] + max_new_tokens) <= max_batch_tokens)
        )
        if fits:
            batch.append(i)
        else:
            batches.append([i])
    return batches


@torch.inference_mode()
def generate_greedy(
    model,
    tokenizer,
    prompts: list[str],
    batch_size: int,
    max_new_tokens: int,
    progress=None,
    max_batch_tokens: int | None = None,
    constraint: Callable[[], object] | None = None,
    confidence: bool = True,
) -> Generated:
    """`constraint` makes a fresh logits processor for each batch (tuneline/generate/grammar.py). With `confidence`,
    each answer comes with its tokens' log-probabilities and characters, for
    `tuneline.generate.confidence.answer_confidence`; without, only texts (checkpoint selection needs no more)."""
    tokenizer.padding_side = "left"
    lengths = [len(ids) for ids in tokenizer(prompts, add_special_tokens=False)["input_ids"]]
    texts: list[str] = [""] * len(prompts)
    spans: list[list[tuple[int, int]]] = [[] for _ in prompts]
    logprobs: list[list[float]] = [[] for _ in prompts]
    new_tokens = done = 0
    start = time.monotonic()
    model.eval()
    for idx in length_batches(lengths, batch_size, max_new_tokens, max_batch_tokens):
        enc = tokenizer([prompts[i] for i in idx], return_tensors="pt", padding=True, add_special_tokens=False)
        enc = enc.to(model.device)
        recorder = _Logprobs() if confidence else None
        processors = [constraint()] if constraint else []
        out = model.generate(
            **enc,
            do_sample=False,
            max_new_tokens=max_new_tokens,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
            use_cache=True,
            logits_processor=[recorder.before, *processors, recorder.after] if recorder else processors,
        )
        gen = out[:, enc["input_ids"].shape[1] :].tolist()  # one copy off the GPU per batch
        rows = recorder.rows() if recorder else None
        for k, (ids, i) in enumerate(zip(gen, idx)):
            ended = tokenizer.eos_token_id in ids
            if ended:
                ids = ids[: ids.index(tokenizer.eos_token_id)]
            new_tokens += len(ids)
            if recorder:
                texts[i], spans[i] = token_spans(tokenizer, ids)
                logprobs[i] = rows[k][: len(ids) + ended]
            else:
                texts[i] = tokenizer.decode(ids, skip_special_tokens=True).strip()
        done += len(idx)
        if progress:
            progress(done, len(prompts), time.monotonic() - start)
    return Generated(
        texts=texts, seconds=time.monotonic() - start, new_tokens=new_tokens, spans=spans, logprobs=logprobs
    )
