"""Training checkpoints kept in the active artifact store, so they outlive the process (or pod) that wrote them.

The Trainer writes checkpoints to a local folder; each one is copied to
`<artifact store>/tuneline-checkpoints/<key>/checkpoint-N` with a `COMPLETE` marker written last, so a copy cut
short by a kill is never resumed from. The key is a hash of everything that shapes training, so `--resume`
only ever continues a run of the same data and config.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

from zenml.client import Client
from zenml.io import fileio
from zenml.utils.io_utils import copy_dir

MARKER = "COMPLETE"
KEEP = 2


def training_key(*parts) -> str:
    """A stable hash of JSON-able parts (records, config dumps)."""
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def _step_of(name: str) -> int:
    match = re.fullmatch(r"checkpoint-(\d+)", name)
    return int(match.group(1)) if match else -1


class CheckpointMirror:
    def __init__(self, key: str, root: str | None = None):
        root = root or Client().active_stack.artifact_store.path
        self.remote = os.path.join(root, "tuneline-checkpoints", key)

    def complete(self) -> list[str]:
        """Remote checkpoint folders whose copy finished, oldest first."""
        if not fileio.isdir(self.remote):
            return []
        names = [str(n) for n in fileio.listdir(self.remote) if _step_of(str(n)) >= 0]
        done = [n for n in names if fileio.exists(os.path.join(self.remote, n, MARKER))]
        return sorted(done, key=_step_of)

    def push(self, local: Path) -> None:
        """Copy one local checkpoint folder up, then drop all but the newest KEEP complete ones."""
        target = os.path.join(self.remote, local.name)
        if fileio.exists(target):
            fileio.rmtree(target)
        copy_dir(str(local), target, overwrite=True)
        with fileio.open(os.path.join(target, MARKER), "w") as fh:
            fh.write("ok")
        for old in self.complete()[:-KEEP]:
            fileio.rmtree(os.path.join(self.remote, old))

    def pull_latest(self, local_dir: Path) -> Path | None:
        """Download the newest complete checkpoint into `local_dir`; None when there is none."""
        done = self.complete()
        if not done:
            return None
        target = local_dir / done[-1]
        copy_dir(os.path.join(self.remote, done[-1]), str(target), overwrite=True)
        return target

    def clear(self) -> None:
        """After a finished training the adapter is the artifact; its checkpoints are no longer needed."""
        if fileio.exists(self.remote):
            fileio.rmtree(self.remote)
