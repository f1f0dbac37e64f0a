"""Runs whose process died (SIGKILL, power loss) are marked failed by the next run on the same store.

A process running a pipeline on the local orchestrator holds an exclusive lock on a file named after its run's
token (runner/interrupt.py) beside ZenML's store. The kernel drops the lock when the process dies, however it dies,
so a lock file that can be taken belongs to a run nobody is running any more. Runs on a remote orchestrator go on
without the process that submitted them, so they hold no lock and are never swept.
"""

from __future__ import annotations

import fcntl
import logging
import os
from pathlib import Path
from typing import IO

from runner.interrupt import mark_failed

log = logging.getLogger(__name__)

_held: dict[str, IO] = {}


def _folder() -> Path:
    from zenml.utils.io_utils import get_global_config_directory

    return Path(get_global_config_directory()) / "tuneline-runs"


def hold(token: str) -> None:
    """Lock this run's file for as long as this process lives. The file is locked under a temporary name and then
    renamed, so a sweep never sees it unlocked."""
    folder = _folder()
    folder.mkdir(parents=True, exist_ok=True)
    partial = folder / f".{token}.{os.getpid()}"
    fh = open(partial, "w")
    fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    fh.write(str(os.getpid()))
    fh.flush()
    partial.rename(folder / f"{token}.lock")
    _held[token] = fh


def release(token: str | None) -> None:
    """The run ended in this process (finished, failed or interrupted and marked): nothing to sweep."""
    if (fh := _held.pop(token, None)) is not None:
        (_folder() / f"{token}.lock").unlink(missing_ok=True)
        fh.close()


def sweep() -> list[str]:
    """Mark failed the unfinished runs of processes that are gone; returns their names (also logged)."""
    folder = _folder()
    swept: list[str] = []
    for path in sorted(folder.glob("*.lock")) if folder.is_dir() else []:
        with open(path, "a") as fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # its process is alive
            marked, _ = mark_failed(path.stem, reason="its process ended before the run finished")
            path.unlink(missing_ok=True)
        for name in marked:
            log.warning("run %s was left running by a process that is gone; marked it failed", name)
        swept += marked
    return swept
