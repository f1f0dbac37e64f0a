"""Batched greedy generation: left padding so every row's next token sits at the last position, KV cache on.

Prompts that begin alike (the prompted baseline's instruction and examples, a long system prompt) share their common
tokens' keys and values: computed once per call and copied into each batch, so each row runs only its own tail.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from transformers import DynamicCache, LogitsProcessor

from tuneline.generate.confidence import token_spans
from tuneline.generate.continuous import Decoder, Row, repeated


@dataclass
class Generated:
    texts: list[str]
    seconds: float
    new_tokens: int
    spans: list[list[tuple[int, int]]]  # per answer, each generated token's characters in its text
    logprobs: list[list[float]]  # per answer, each generated token's log-probability, then the end token's if any
    shared_tokens: int = 0  # the prompts' common first tokens, run once for all of them

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
            shared_tokens=self.shared_tokens,
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


MIN_SHARED_TOKENS = 32  # a shorter common start saves less than copying its cache into every batch costs


def shared_prefix(ids: list[list[int]]) -> int:
    """How many first tokens all prompts share and can run once: each prompt keeps at least one token of its own
    (its last, whose logits pick the first answer token); 0 when one prompt alone or under `MIN_SHARED_TOKENS`."""
    if len(ids) < 2:
        return 0
    n = min(len(os.path.commonprefix(ids)), min(map(len, ids)) - 1)
    return n if n >= MIN_SHARED_TOKENS else 0


def _prefix_cache(model, prefix: list[int]) -> DynamicCache:
    cache = DynamicCache(config=model.config)
    model(input_ids=torch.tensor([prefix], device=model.device), past_key_values=cache, use_cache=True)
    return cache


def _batch_inputs(rows: list[list[int]], shared: int, pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The shared tokens, then each row's own tail left-padded to the longest: padding sits between the two, where
    the attention mask hides it and position ids (counted over the mask) carry on from the shared part."""
    width = max(len(r) for r in rows) - shared
    ids = [r[:shared] + [pad_id] * (width - len(r) + shared) + r[shared:] for r in rows]
    mask = [[1] * shared + [0] * (width - len(r) + shared) + [1] * (len(r) - shared) for r in rows]
    return torch.tensor(ids), torch.tensor(mask)


def _continuous(model, all_ids: list[list[int]], eos: int, pad: int, width: int, max_new_tokens: int, prefix, report):
    """Every prompt through one `Decoder`: at most `width` rows decode at once, a row leaves the step it ends and
    waiting prompts take its place, so no step runs for a finished row and the batch stays wide. Newcomers join
    when a quarter of the places are free (or all that wait fit), shortest prompts first: one prefill for
    several rows, padded little."""
    decoder = Decoder(model, eos, pad, max_new_tokens)
    waiting = sorted(range(len(all_ids)), key=lambda i: len(all_ids[i]))
    rows: list[Row] = []
    while waiting or len(decoder):
        free = width - len(decoder)
        if waiting and free >= min(len(waiting), max(1, width // 4)):
            joining, waiting = waiting[:free], waiting[free:]
            rows += decoder.add([all_ids[i] for i in joining], joining, prefix=prefix)
        if len(decoder):
            rows += decoder.step()
        report(len(rows))
    return rows


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
    share_prefix: bool = True,
    continuous: bool = True,
) -> Generated:
    """At most `batch_size` prompts decode at once (and, with `max_batch_tokens`, at most that many tokens counted
    as rows x (longest prompt + max_new_tokens)), in a continuous batch (`_continuous`), or with `continuous`
    off in fixed batches through Hugging Face's `generate`, as before: the same answers, each batch as slow as its
    longest. `constraint` makes a fresh logits processor for each fixed batch (tuneline/generate/grammar.py).
    With `confidence`, each answer comes with its tokens' log-probabilities and characters, for
    `tuneline.generate.confidence.answer_confidence`; without, only texts (checkpoint selection needs no more).
    `share_prefix` runs the prompts' common first tokens once (see the module's docstring); the answers are the
    same without it, only slower."""
    start = time.monotonic()
    all_ids = tokenizer(prompts, add_special_tokens=False)["input_ids"]
    lengths = [len(ids) for ids in all_ids]
    eos = tokenizer.eos_token_id
    pad_id = eos if tokenizer.pad_token_id is None else tokenizer.pad_token_id
    model.eval()
    shared = shared_prefix(all_ids) if share_prefix else 0
    prefix = _prefix_cache(model, all_ids[0][:shared]) if shared else None
    texts: list[str] = [""] * len(prompts)
    spans: list[list[tuple[int, int]]] = [[] for _ in prompts]
    logprobs: list[list[float]] = [[] for _ in prompts]
    reported = 0

    def report(done: int) -> None:
        """At each fifth of the prompts, and at the end: continuous decoding ends rows a few at a time."""
        nonlocal reported
        if progress and (done == len(prompts) or done - reported >= max(1, len(prompts) // 5)):
            reported = done
            progress(done, len(prompts), time.monotonic() - start)

    def answer(i: int, ids: list[int], lps: list[float] | None) -> int:
        """Prompt i's answer from its generated tokens (the end token excluded) and their log-probabilities (the end
        token's too, if it ended)."""
        if lps is not None:
            texts[i], spans[i] = token_spans(tokenizer, ids)
            logprobs[i] = lps
        else:
            texts[i] = tokenizer.decode(ids, skip_special_tokens=True).strip()
        return len(ids)

    new_tokens = 0
    if continuous and constraint is None:
        width = batch_size
        if max_batch_tokens is not None:
            width = max(1, min(width, max_batch_tokens // (max(lengths) + max_new_tokens)))
        for row in _continuous(model, all_ids, eos, pad_id, width, max_new_tokens, prefix, report):
            new_tokens += answer(row.key, row.ids, row.logprobs if confidence else None)
        return Generated(texts, time.monotonic() - start, new_tokens, spans, logprobs, shared_tokens=shared)
    done = 0
    for idx in length_batches(lengths, batch_size, max_new_tokens, max_batch_tokens):
        input_ids, attention_mask = _batch_inputs([all_ids[i] for i in idx], shared, pad_id)
        cache = repeated(prefix, len(idx)) if prefix is not None else None
        recorder = _Logprobs() if confidence else None
        processors = [constraint()] if constraint else []
        out = model.generate(
            input_ids=input_ids.to(model.device),
            attention_mask=attention_mask.to(model.device),
            past_key_values=cache,
            do_sample=False,
            max_new_tokens=max_new_tokens,
            eos_token_id=eos,
            pad_token_id=pad_id,
            use_cache=True,
            logits_processor=[recorder.before, *processors, recorder.after] if recorder else processors,
        )
        gen = out[:, input_ids.shape[1] :].tolist()  # one copy off the GPU per batch
        rows = recorder.rows() if recorder else None
        for k, (ids, i) in enumerate(zip(gen, idx)):
            ended = eos in ids
            if ended:
                ids = ids[: ids.index(eos)]
            new_tokens += answer(i, ids, rows[k][: len(ids) + ended] if recorder else None)
        done += len(idx)
        report(done)
    return Generated(texts, time.monotonic() - start, new_tokens, spans, logprobs, shared_tokens=shared)
