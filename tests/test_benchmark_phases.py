"""The benchmarks' peak memory per phase: what one phase allocates is not charged to the next."""

import time

import pytest
import torch

from benchmarks import phase_memory
from benchmarks.phase_memory import GIB, PhaseMemory

BIG = 512 * 2**20


def _hold(nbytes: int, seconds: float = 0.05) -> None:
    """Allocate and touch `nbytes` (resident, not just reserved), hold them a moment, free them."""
    block = torch.ones(nbytes, dtype=torch.uint8)
    time.sleep(seconds)
    del block


@pytest.fixture(params=["hwm", "hwm, reset ignored", "sampled"])
def memory(request, monkeypatch, tmp_path):
    if request.param == "hwm, reset ignored":  # a sandbox that takes the write and keeps the peak (CI's did)
        monkeypatch.setattr(phase_memory, "CLEAR_REFS", str(tmp_path / "clear_refs"))
    return PhaseMemory("cpu", method=request.param.split(",")[0])


def test_a_phase_peak_holds_its_own_allocation_only(memory):
    _hold(2 * BIG)  # an earlier peak above every phase's, as an earlier test leaves in its worker
    with memory.phase("load"):
        _hold(BIG)
    with memory.phase("training"):
        pass
    with memory.phase("evaluation"):
        _hold(BIG // 2)
    peaks = {name: peak * GIB for name, peak in memory.peaks.items()}
    print({name: f"{peak / 2**20:.0f} MiB" for name, peak in peaks.items()})

    assert peaks["load"] - peaks["training"] > 0.9 * BIG  # load's block is gone from training's peak
    assert 0.4 * BIG < peaks["evaluation"] - peaks["training"] < 0.6 * BIG  # and from evaluation's


def test_on_cuda_the_allocator_peak_is_reset_per_phase(monkeypatch):
    """The allocator's counters, faked: no GPU here."""
    allocator = {"now": 100, "peak": 100}

    def allocate(n):
        allocator["now"] += n
        allocator["peak"] = max(allocator["peak"], allocator["now"])
        allocator["now"] -= n

    monkeypatch.setattr(torch.cuda, "synchronize", lambda: None)
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda: allocator.update(peak=allocator["now"]))
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda: allocator["peak"])
    memory = PhaseMemory("cuda")
    with memory.phase("training"):
        allocate(GIB)
    with memory.phase("evaluation"):
        allocate(10)
    assert memory.peaks == {"training": (100 + GIB) / GIB, "evaluation": 110 / GIB}
