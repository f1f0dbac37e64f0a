"""Whether an artifact's files are still as they were saved. ZenML records every artifact's `storage_size` when it
stores it, so an artifact truncated or deleted since shows a different size now: reused as it is, it would fail
much later (a decoding error in a downstream step, or a version without its adapter found only at export).
A size misses an edit in place, so beside it every artifact gets a sha256 of its files (`content_sha256`), recorded
where ZenML records the size; artifacts saved before that have only the size to compare."""

from __future__ import annotations

import functools
import hashlib
import os

from zenml.client import Client
from zenml.materializers.base_materializer import BaseMaterializer

DIGEST = "content_sha256"
DIGEST_MAX_BYTES = 512 * 2**20  # a merged model (GBs) is not read whole at every launch: its size is compared


def _stored_size(store, path: str) -> int:
    """Computed as ZenML computes `storage_size`."""
    if not store.exists(path):
        return 0
    if store.isdir(path):
        return sum(_stored_size(store, os.path.join(path, str(name))) for name in store.listdir(path))
    return store.size(path) or 0


def _digest(store, path: str) -> str:
    """A sha256 over every file's path (relative to `path`) and bytes, in a fixed order."""
    digest = hashlib.sha256()

    def add(current: str, rel: str) -> None:
        if store.isdir(current):
            for name in sorted(str(n) for n in store.listdir(current)):
                add(os.path.join(current, name), f"{rel}/{name}")
            return
        digest.update(rel.encode() + b"\0")
        with store.open(current, "rb") as fh:
            for chunk in iter(functools.partial(fh.read, 2**20), b""):
                digest.update(chunk)
        digest.update(b"\0")

    add(path, "")
    return digest.hexdigest()


def _with_digest(extract):
    """Wraps ZenML's metadata extraction, which runs for every artifact right after it is saved and measures
    `storage_size`, to add the digest of the same files."""

    @functools.wraps(extract)
    def extract_full_metadata(self, data):
        metadata = extract(self, data)
        size = metadata.get("storage_size")
        if size is not None and self.artifact_store.exists(self.uri) and int(size) <= DIGEST_MAX_BYTES:
            metadata[DIGEST] = _digest(self.artifact_store, self.uri)
        return metadata

    return extract_full_metadata


# Installed on import: our materializers import this module, so every process that saves our artifacts has it.
BaseMaterializer.extract_full_metadata = _with_digest(BaseMaterializer.extract_full_metadata)


def _change(store, artifact, recorded_size: int) -> str | None:
    """What differs from the artifact as saved: its size, else (when a digest was recorded) its content."""
    now = _stored_size(store, artifact.uri)
    if now != recorded_size:
        return "deleted" if not store.exists(artifact.uri) else f"{now} bytes now, {recorded_size} when saved"
    recorded_digest = artifact.run_metadata.get(DIGEST)
    if recorded_digest is not None and _digest(store, artifact.uri) != recorded_digest:
        return f"its content changed since it was saved, at the same size of {now} bytes"
    return None


def damage(artifact) -> str | None:
    """None when the artifact version is intact (or cannot be checked); otherwise what is wrong, naming it."""
    recorded = artifact.run_metadata.get("storage_size")
    store = Client().active_stack.artifact_store
    if recorded is None or artifact.artifact_store_id != store.id:
        return None  # saved without metadata, or on another store: nothing to compare with here
    what = _change(store, artifact, int(recorded))
    return what and f"artifact '{artifact.name}' version {artifact.version} at {artifact.uri} is damaged ({what})"


class DamagedArtifact(RuntimeError):
    """An artifact's files changed after it was saved."""


def require_intact(uri: str) -> None:
    """Our materializers call this before reading, so a damaged artifact that was reused anyway (the cache guard
    did not run, or the files changed during the run) fails naming itself and the fix, not with a decoding error
    or a missing file steps later."""
    found = Client().list_artifact_versions(uri=uri, hydrate=True).items
    if found and (problem := damage(found[0])):
        raise DamagedArtifact(
            f"{problem}; the next run recomputes it instead of reusing it "
            "(`python -m runner.cache_guard` expires it now)"
        )
