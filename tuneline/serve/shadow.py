"""Shadow serving: a candidate version answers what production answered, off the request path, and its answers are
recorded on the same traces (`recording.log_shadow`), where the monitor compares the two.

Production's answer is recorded and returned first; the request's texts then wait in a bounded queue for one worker
thread, which has the candidate answer them. When the candidate falls behind, requests go unshadowed (counted and
logged) instead of piling up, so shadowing never slows or grows the service.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable

from tuneline.serve.recording import log_shadow

log = logging.getLogger(__name__)


class Shadow:
    def __init__(self, extractor, mode: str, max_pending: int = 256):
        """`extractor`: the candidate's `Extractor`; `mode`: serving.record, so its answers are kept as production's."""
        self.extractor, self.mode = extractor, mode
        self.skipped = 0
        self._queue: queue.Queue = queue.Queue(max_pending)
        self._thread = threading.Thread(target=self._loop, name="tuneline-shadow", daemon=True)
        self._thread.start()

    def wrap(self, record: Callable[[dict, int, int], str | None]) -> Callable[[dict, int, int], str | None]:
        """The server's recorder, which also queues each recorded request for the candidate."""

        def record_and_shadow(response: dict, start_ns: int, end_ns: int) -> str | None:
            trace_id = record(response, start_ns, end_ns)
            if trace_id is not None:
                self.submit(trace_id, [r["text"] for r in response["results"]])
            return trace_id

        return record_and_shadow

    def submit(self, trace_id: str, texts: list[str]) -> None:
        try:
            self._queue.put_nowait((trace_id, texts))
        except queue.Full:
            self.skipped += 1
            if self.skipped == 1 or self.skipped % 100 == 0:
                log.warning("shadow %s is behind: %d requests left unshadowed", self.extractor.label, self.skipped)

    def _loop(self) -> None:
        while (item := self._queue.get()) is not None:
            trace_id, texts = item
            try:
                log_shadow(trace_id, self.extractor.extract(texts), self.mode)
            except Exception:  # the candidate or the store failed: production is unaffected, and says so in the log
                log.exception("shadow %s could not answer request %s", self.extractor.label, trace_id)
            finally:
                self._queue.task_done()

    def join(self) -> None:
        """Wait until every queued request is answered and recorded."""
        self._queue.join()

    def close(self) -> None:
        """Stop after the queued requests (the thread is a daemon: a server that exits does not wait for it)."""
        threading.Thread(target=self._queue.put, args=(None,), daemon=True).start()
