"""The hub is always tried first; `HubUnavailable` tells callers to fall back to an offline copy."""

from __future__ import annotations

import logging
import os
from pathlib import Path


_said: set[str] = set()


def say_fallback_once(log: logging.Logger, message: str, *args) -> None:
    """Every step resolves the model and the data again; the offline fallback is news only the first time."""
    if (text := message % args) not in _said:
        _said.add(text)
        log.info(text)


class HubUnavailable(RuntimeError):
    pass


def _refuse_when_offline() -> None:
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        raise HubUnavailable("HF_HUB_OFFLINE=1")


def hub_snapshot(repo_id: str, repo_type: str) -> Path:
    """Download (or reuse the HF cache of) a hub repo; raise HubUnavailable when offline or not reachable."""
    _refuse_when_offline()
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    patterns = ["*.json", "*.safetensors", "*.txt", "*.model", "*.jinja"] if repo_type == "model" else None
    try:
        return Path(snapshot_download(repo_id, repo_type=repo_type, allow_patterns=patterns, etag_timeout=5))
    except (LocalEntryNotFoundError, HfHubHTTPError, OSError) as err:
        raise HubUnavailable(f"{type(err).__name__}: {str(err).splitlines()[0][:200]}") from None


def hub_reachable(repo_id: str, repo_type: str) -> None:
    """Raise HubUnavailable unless the hub answers for this repo; cheap enough to call before a download."""
    _refuse_when_offline()
    from huggingface_hub import HfApi

    try:
        HfApi().repo_info(repo_id, repo_type=repo_type, timeout=10)
    except Exception as err:  # connection, DNS, HTTP: all mean "use the offline copy"
        raise HubUnavailable(f"{type(err).__name__}: {str(err).splitlines()[0][:200]}") from None
