"""Dynamic batching across requests: each request thread queues its checked texts and waits; one thread generates
what is queued together, so concurrent one-text clients share a generation as one client's batch of texts does.

A batch starts with the oldest queued request and takes the others that decode under the same grammar while they
fit the token budget, for up to `wait_s` after it starts (requests queued during a generation are there at once).
Greedy answers do not depend on the batch (left padding), so a request gets what it would get alone.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tuneline.serve.serving import Extractor

log = logging.getLogger(__name__)


@dataclass
class _Request:
    texts: list[str]
    counts: list[int]  # each text's tokens
    grammar: str | None
    tokens: int  # what it takes of the budget: its texts' tokens plus max_new_tokens each
    done: Future = field(default_factory=Future)


class Batcher:
    """`current()` is the extractor that generates the next batch (a followed stage swaps it between batches).
    `max_tokens` None: no budget; a request over it on its own is a batch of one (so 1 turns batching off)."""

    def __init__(self, current: Callable[[], Extractor], wait_s: float, max_tokens: int | None):
        self.current, self.wait_s, self.max_tokens = current, wait_s, max_tokens
        self._queue: deque[_Request] = deque()
        self._changed = threading.Condition()
        self._closed = False
        threading.Thread(target=self._run, name="tuneline-batcher", daemon=True).start()

    def extract(self, texts: list[str], grammar: str | None = None) -> dict:
        """`Extractor.extract`'s answer, generated with whatever else is queued. Raises RequestError (in the
        caller's thread, before queueing) for texts or a grammar the extractor refuses."""
        extractor = self.current()
        counts = extractor.check(texts)
        extractor.constraint(grammar)  # a schema that does not compile is the caller's error, not the batch's
        request = _Request(texts, counts, grammar, sum(counts) + len(texts) * extractor.evaluation.max_new_tokens)
        with self._changed:
            if self._closed:
                raise RuntimeError("the server is shutting down")
            self._queue.append(request)
            self._changed.notify_all()
        generated_by, gen = request.done.result()
        return generated_by.answer(texts, counts, gen)

    def close(self) -> None:
        with self._changed:
            self._closed = True
            self._changed.notify_all()

    def _run(self) -> None:
        while (batch := self._collect()) is not None:
            extractor = self.current()
            try:
                gen = extractor.generate([t for r in batch for t in r.texts], batch[0].grammar)
            except Exception as err:  # noqa: BLE001 (each waiting caller gets the error; the next batch goes on)
                log.exception("generating a batch of %d requests failed", len(batch))
                for r in batch:
                    r.done.set_exception(err)
                continue
            start = 0
            for r in batch:
                r.done.set_result((extractor, gen.part(start, start + len(r.texts))))
                start += len(r.texts)

    def _collect(self) -> list[_Request] | None:
        """The next batch, once one request is queued; None when closed (queued callers then fail)."""
        with self._changed:
            while not self._queue and not self._closed:
                self._changed.wait()
            if self._closed:
                for r in self._queue:
                    r.done.set_exception(RuntimeError("the server is shutting down"))
                return None
            batch = [self._queue.popleft()]
            tokens, deadline = batch[0].tokens, time.monotonic() + self.wait_s
            while True:
                for r in list(self._queue):
                    if r.grammar == batch[0].grammar and self._fits(tokens + r.tokens):
                        self._queue.remove(r)
                        batch.append(r)
                        tokens += r.tokens
                left = deadline - time.monotonic()
                if left <= 0 or not self._fits(tokens + 1):
                    return batch
                self._changed.wait(left)

    def _fits(self, tokens: int) -> bool:
        return self.max_tokens is None or tokens <= self.max_tokens
