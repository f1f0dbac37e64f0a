"""Dynamic batching across requests: each request thread queues its checked texts and waits; one thread generates
what is queued together, so concurrent one-text clients share a generation as one client's batch of texts does.

Requests decode continuously (tuneline/generate/continuous.py): a queued request joins the rows being decoded at
the next step, while the rows stay within `evaluation.batch_size` and the token budget, and each of its texts
leaves the batch the step its answer ends; nobody waits for another request's longest answer. When nothing is
decoding, the first request waits up to `wait_s` for company. A request under a grammar (a JSON schema) or with
more texts than a batch holds is generated as before, in the evaluator's batches, with the queued requests under
the same grammar, once the decoding rows have ended. Greedy answers do not depend on the batch (left padding,
positions per row), so a request gets what it would get alone.
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


@dataclass(eq=False)
class _Request:
    texts: list[str]
    counts: list[int]  # each text's tokens
    grammar: str | None
    tokens: int  # what it takes of the budget: its texts' tokens plus max_new_tokens each
    continuous: bool  # decoded with the rows in flight (no grammar, and no more texts than a batch holds)
    done: Future = field(default_factory=Future)
    rows: dict = field(default_factory=dict)  # text index -> its ended Row
    started: float = 0.0


class Batcher:
    """`current()` is the extractor that generates the next batch (a followed stage swaps it once the rows in
    flight have ended). `max_tokens` None: no budget; a request over it on its own is decoded alone (so 1 turns
    batching off)."""

    def __init__(self, current: Callable[[], Extractor], wait_s: float, max_tokens: int | None):
        self.current, self.wait_s, self.max_tokens = current, wait_s, max_tokens
        self._queue: deque[_Request] = deque()
        self._changed = threading.Condition()
        self._closed = False
        self._decoder, self._extractor = None, None  # the rows in flight, and whose model decodes them
        self._active: list[_Request] = []
        self._static_only = False  # set when the model's cache cannot be decoded continuously
        threading.Thread(target=self._run, name="tuneline-batcher", daemon=True).start()

    def extract(self, texts: list[str], grammar: str | None = None) -> dict:
        """`Extractor.extract`'s answer, generated with whatever else is queued. Raises RequestError (in the
        caller's thread, before queueing) for texts or a grammar the extractor refuses."""
        extractor = self.current()
        counts = extractor.check(texts)
        extractor.constraint(grammar)  # a schema that does not compile is the caller's error, not the batch's
        request = _Request(
            texts,
            counts,
            grammar,
            sum(counts) + len(texts) * extractor.evaluation.max_new_tokens,
            grammar is None and len(texts) <= extractor.evaluation.batch_size,
        )
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
            try:
                if batch and not batch[0].continuous:
                    self._generate(batch)
                    continue
                if batch:
                    self._join(batch)
                if self._decoder is not None:
                    with self._extractor.lock:
                        ended = self._decoder.step()
                    self._finish(ended)
            except Exception as err:  # noqa: BLE001 (each waiting caller gets the error; the next batch goes on)
                failed = [r for r in {*batch, *self._active} if not r.done.done()]
                log.exception("generating for %d requests failed", len(failed))
                for r in failed:
                    r.done.set_exception(err)
                self._decoder, self._active = None, []
        for r in self._active:
            r.done.set_exception(RuntimeError("the server is shutting down"))

    def _generate(self, batch: list[_Request]) -> None:
        """Requests under one grammar, or too many texts for a batch: the evaluator's batches."""
        extractor = self.current()
        gen = extractor.generate([t for r in batch for t in r.texts], batch[0].grammar)
        start = 0
        for r in batch:
            r.done.set_result((extractor, gen.part(start, start + len(r.texts))))
            start += len(r.texts)

    def _join(self, batch: list[_Request]) -> None:
        if self._decoder is None:
            if self._static_only:
                return self._generate(batch)
            self._extractor = self.current()
            self._decoder = self._extractor.decoder()
        now = time.monotonic()
        for r in batch:
            r.started = now
        keys = [(r, i) for r in batch for i in range(len(r.texts))]
        try:
            with self._extractor.lock:
                ended = self._decoder.add(self._extractor.encode([t for r in batch for t in r.texts]), keys)
        except NotImplementedError as err:  # the first prefill shows the model's cache cannot be stacked
            log.warning("%s: generating in the evaluator's batches instead", err)
            self._static_only, self._decoder = True, None
            return self._generate(batch)
        self._active += batch
        self._finish(ended)

    def _finish(self, ended) -> None:
        """Answer the requests whose last text has ended; forget the decoder once no row is left."""
        for row in ended:
            request, i = row.key
            request.rows[i] = row
            if len(request.rows) == len(request.texts):
                rows = [request.rows[k] for k in range(len(request.texts))]
                with self._extractor.lock:  # decoding the answers uses the generating tokenizer
                    gen = self._extractor.generated(rows, time.monotonic() - request.started)
                request.done.set_result((self._extractor, gen))
                self._active.remove(request)
        if self._decoder is not None and not len(self._decoder):
            self._decoder = None

    def _collect(self) -> list[_Request] | None:
        """The requests to start now: [] when rows are decoding and nobody can join them; None when closed
        (queued callers then fail)."""
        with self._changed:
            idle = self._decoder is None
            while idle and not self._queue and not self._closed:
                self._changed.wait()
            if self._closed:
                for r in self._queue:
                    r.done.set_exception(RuntimeError("the server is shutting down"))
                return None
            if idle and not self._queue[0].continuous:
                return self._static_batch()
            if not idle and (self.current() is not self._extractor or not all(r.continuous for r in self._queue)):
                return []  # a new model, or a request under a grammar, waits for the rows in flight to end
            cap = (self._extractor or self.current()).evaluation.batch_size
            rows = sum(len(r.texts) for r in self._active)

            def joins(r: _Request, batch: list[_Request], tokens: int) -> bool:
                if not r.continuous:
                    return False
                if idle and not batch:  # the first request always starts, however large
                    return True
                return rows + sum(len(b.texts) for b in batch) + len(r.texts) <= cap and self._fits(tokens + r.tokens)

            wait = self.wait_s if idle else 0.0
            return self._gather(joins, [], sum(r.tokens for r in self._active), time.monotonic() + wait)

    def _static_batch(self) -> list[_Request]:
        """The oldest request and those under its grammar that fit the budget, within `wait_s` of it."""
        first = self._queue.popleft()

        def joins(r: _Request, batch: list[_Request], tokens: int) -> bool:
            return not r.continuous and r.grammar == first.grammar and self._fits(tokens + r.tokens)

        return self._gather(joins, [first], first.tokens, time.monotonic() + self.wait_s)

    def _gather(self, joins, batch: list[_Request], tokens: int, deadline: float) -> list[_Request]:
        """`batch` and the queued requests `joins(request, batch, tokens)` takes, until `deadline` or the token
        budget is full; `tokens` counts what the batch (and the rows in flight) already take. Under the lock."""
        while True:
            for r in list(self._queue):
                if joins(r, batch, tokens):
                    self._queue.remove(r)
                    batch.append(r)
                    tokens += r.tokens
            left = deadline - time.monotonic()
            if left <= 0 or not self._fits(tokens + 1):
                return batch
            self._changed.wait(left)

    def _fits(self, tokens: int) -> bool:
        return self.max_tokens is None or tokens <= self.max_tokens
