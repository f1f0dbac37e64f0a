"""Each pipeline command runs in a child process that this one supervises, so that Ctrl-C or `kill` always stops
the run, marks it failed in ZenML's store and exits 130.

A run stopped from inside its own process had to be stopped wherever the interrupt landed: inside a store call it
could leave a SQLite transaction open that the next call waited on forever. Here the signal is passed on to the
child, which stops on its own if it can (runner/interrupt.py); a child still going `GRACE_S` seconds later is ended
(SIGTERM, then SIGKILL), which is safe at any moment: SQLite rolls back what a dead process left half-written. Then
this process, whose store connection no interrupt has touched, marks the child's run failed. The child is started
as this process was (same interpreter, flags and command line), so a wrapper such as tests/fault_run.py applies to
it too; it shares this process's group, so that killing the group kills both.
"""

from __future__ import annotations

import importlib
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from runner.interrupt import REPORT_ENV, last_started, mark_failed

GRACE_S = 10.0  # from the signal to ending a child that has not stopped
END_S = 3.0  # from SIGTERM to SIGKILL
POLL_S = 0.1


def in_child() -> bool:
    """Whether this process is the supervised child (it runs the command), not the supervisor."""
    return REPORT_ENV in os.environ


def supervise() -> int:
    """Run this process's command line again in a child and return its exit code; 130 if it was interrupted."""
    received: list[int] = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda signum, frame: received.append(signum))  # acted on by the loop below
    with tempfile.TemporaryDirectory(prefix="tuneline-") as folder:
        report = Path(folder) / "runs"
        report.touch()
        child = subprocess.Popen([sys.executable, *sys.orig_argv[1:]], env=os.environ | {REPORT_ENV: str(report)})
        code, ended = _wait(child, received)
        started = last_started(report)
    if not received and code != 130:
        if code < 0:  # killed by someone else (the OOM killer, say): mark its run, then die as it did
            sig = signal.Signals(-code)
            if said := _outcome(started, f"its process was killed by {sig.name}"):
                print(f"error: the run's process was killed by {sig.name}; {said}", file=sys.stderr, flush=True)
            if sig not in (signal.SIGKILL, signal.SIGSTOP):
                signal.signal(sig, signal.SIG_DFL)
            os.kill(os.getpid(), sig)
        return code
    if ended:
        print(f"tuneline: the run did not stop within {GRACE_S:.0f} s of the signal; ended it", file=sys.stderr)
    said = _outcome(started, "interrupted by the user")
    print(f"error: interrupted; {said}" if said else "error: interrupted before the run started", file=sys.stderr)
    return 130


def _wait(child: subprocess.Popen, received: list[int]) -> tuple[int, bool]:
    """Pass the first signal on to the child and wait for it; end it if it is still going `GRACE_S` later.
    Returns its exit code and whether it had to be ended."""
    signalled_at = None
    while True:
        try:
            return child.wait(timeout=POLL_S), False
        except subprocess.TimeoutExpired:
            pass
        if received and signalled_at is None:
            signalled_at = time.monotonic()
            child.send_signal(received[0])
            # Marking the run needs ZenML (seconds to import): import it while the child stops.
            threading.Thread(target=importlib.import_module, args=("zenml.client",), daemon=True).start()
        elif signalled_at is not None and time.monotonic() - signalled_at > GRACE_S:
            child.terminate()
            try:
                return child.wait(timeout=END_S), True
            except subprocess.TimeoutExpired:
                child.kill()
                return child.wait(), True


def _outcome(started: tuple[str, str] | None, reason: str) -> str | None:
    """Mark the child's run failed (the child is gone, and its store connections with it) and say what became of
    it; None if it started none."""
    if started is None:
        return None
    pipeline_name, token = started
    try:
        marked, finished = mark_failed(token, reason)
    except Exception as err:  # noqa: BLE001  (the store itself may be what failed; the next run's sweep retries)
        from runner.failures import one_line

        return f"could not mark the run of '{pipeline_name}' failed: {one_line(err)}"
    said = ([f"run {', '.join(marked)} stopped and marked failed"] if marked else []) + (
        [f"run {', '.join(finished)} had finished before the interrupt took effect"] if finished else []
    )
    return "; ".join(said) or f"no run of '{pipeline_name}' was recorded"
