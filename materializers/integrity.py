"""Whether an artifact's files are still as they were saved. ZenML records every artifact's `storage_size` when it
stores it, so an artifact truncated or deleted since shows a different size now: reused as it is, it would fail
much later (a decoding error in a downstream step, or a version without its adapter found only at export)."""

from __future__ import annotations

import os

from zenml.client import Client


def _stored_size(store, path: str) -> int:
    """Computed as ZenML computes `storage_size`."""
    if not store.exists(path):
        return 0
    if store.isdir(path):
        return sum(_stored_size(store, os.path.join(path, str(name))) for name in store.listdir(path))
    return store.size(path) or 0


def damage(artifact) -> str | None:
    """None when the artifact version is intact (or cannot be checked); otherwise what is wrong, naming it."""
    recorded = artifact.run_metadata.get("storage_size")
    store = Client().active_stack.artifact_store
    if recorded is None or artifact.artifact_store_id != store.id:
        return None  # saved without metadata, or on another store: nothing to compare with here
    now = _stored_size(store, artifact.uri)
    if now == int(recorded):
        return None
    what = "deleted" if not store.exists(artifact.uri) else f"{now} bytes now, {int(recorded)} when saved"
    return f"artifact '{artifact.name}' version {artifact.version} at {artifact.uri} is damaged ({what})"


class DamagedArtifact(RuntimeError):
    """An artifact's files changed after it was saved."""


def require_intact(uri: str) -> None:
    """Our materializers call this before reading, so a damaged artifact that was reused anyway (the cache guard
    did not run, or the files changed during the run) fails naming itself and the fix, not with a decoding error
    or a missing file steps later."""
    found = Client().list_artifact_versions(uri=uri, hydrate=True).items
    if found and (problem := damage(found[0])):
        raise DamagedArtifact(f"{problem}; the next run recomputes it instead of reusing it "
                              "(`python -m runner.cache_guard` expires it now)")
