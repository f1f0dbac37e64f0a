"""Broken cache entries are recomputed, not reused. ZenML reuses a step's outputs by cache key without looking at
their files; expiring the cache of a step run (ZenML's own `cache_expires_at`) whose outputs were truncated,
deleted or edited in place (see `materializers.integrity`) makes the next run execute that step again."""

from __future__ import annotations

import logging

from zenml.client import Client
from zenml.enums import ExecutionStatus
from zenml.utils.pagination_utils import depaginate_stream
from zenml.utils.time_utils import utc_now

from materializers.integrity import damage

log = logging.getLogger(__name__)


def expire_damaged_cache() -> list[str]:
    """Check the step run ZenML would reuse for each cache key (the newest completed one; when it is damaged,
    the next newest), expire those with a damaged output, and return what was found (also logged)."""
    client = Client()
    settled, found, damaged = set(), [], []
    for step in depaginate_stream(
        client.list_run_steps,
        project=client.active_project.id,
        status=ExecutionStatus.COMPLETED,
        cache_expired=False,
        sort_by="desc:created",
        hydrate=True,
    ):
        if not step.cache_key or step.cache_key in settled:
            continue
        problems = [p for outputs in step.outputs.values() for artifact in outputs if (p := damage(artifact))]
        if not problems:
            settled.add(step.cache_key)
            continue
        damaged.append(step.id)
        found.append(f"step '{step.name}' will run again instead of reusing its cached outputs: {'; '.join(problems)}")
        log.warning(found[-1])
    # Expired only once every page has been read: expiring one mid-stream shifts the pages the filter returns.
    for step_id in damaged:
        client.update_step_run(step_id, cache_expires_at=utc_now())
    return found


if __name__ == "__main__":  # `python -m runner.cache_guard`: check the active store's cache without running anything
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    print(f"{len(expire_damaged_cache())} damaged cache entries expired")
