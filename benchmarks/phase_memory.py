"""Peak memory per phase of a benchmark run (load, training, evaluation), the peak reset between phases, so each
phase is charged only for what it held itself.

On CUDA it is the allocator's peak, reset by `torch.cuda.reset_peak_memory_stats`. On CPU it is the process's
peak resident set: `ru_maxrss` never resets, so Linux's own peak (`VmHWM`) is reset through
`/proc/self/clear_refs`, which is exact. Where that file cannot be written, or a sandbox accepts the write and
leaves the peak where it was (seen on CI: three phases with the same peak to the byte), a thread samples the
resident set every `interval` seconds instead (a peak shorter than that can be missed). Linux only on CPU.
"""

from __future__ import annotations

import os
import re
import threading
from contextlib import contextmanager

GIB = 2**30


def _rss() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _hwm() -> int:
    with open("/proc/self/status") as fh:
        return int(re.search(r"VmHWM:\s+(\d+) kB", fh.read()).group(1)) * 1024


CLEAR_REFS = "/proc/self/clear_refs"
RESET_SLACK = 32 * 2**20  # the resident set may move between the reset and the reads that check it


def _reset_hwm() -> bool:
    """Reset the peak resident set to the current one; False where the kernel or sandbox does not, checked by
    reading the peak back: a write that is accepted but ignored counts as not allowed."""
    try:
        with open(CLEAR_REFS, "w") as fh:
            fh.write("5")
    except OSError:
        return False
    return _hwm() <= _rss() + RESET_SLACK


class _Sampler(threading.Thread):
    def __init__(self, interval: float):
        super().__init__(daemon=True)
        self.interval, self.peak, self.done = interval, _rss(), threading.Event()

    def run(self) -> None:
        while not self.done.wait(self.interval):
            self.peak = max(self.peak, _rss())

    def stop(self) -> int:
        self.done.set()
        self.join()
        return max(self.peak, _rss())


class PhaseMemory:
    """`with memory.phase("training"): ...` records that phase's peak in `peaks` (GiB).

    `method`: "cuda", "hwm" (reset peak RSS; sampled in a phase where the reset does not take) or "sampled" (RSS
    sampled in a thread); default: "cuda" on that device, else "hwm" where it can be reset, else "sampled"."""

    def __init__(self, device: str = "cpu", method: str | None = None, interval: float = 0.002):
        self.method = method or ("cuda" if device == "cuda" else "hwm" if _reset_hwm() else "sampled")
        self.interval = interval
        self.peaks: dict[str, float] = {}

    @contextmanager
    def phase(self, name: str):
        if self.method == "cuda":
            import torch

            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        sampled = self.method == "sampled" or (self.method == "hwm" and not _reset_hwm())
        sampler = _Sampler(self.interval) if sampled else None
        if sampler:
            sampler.start()
        try:
            yield
        finally:
            if self.method == "cuda":
                torch.cuda.synchronize()
                peak = torch.cuda.max_memory_allocated()
            else:
                peak = sampler.stop() if sampler else _hwm()
            self.peaks[name] = peak / GIB
