"""What is in a model's stage, and keeping MLflow's registry in step with it.

ZenML's Model Control Plane holds the truth (which version is in `production`); MLflow's registry mirrors it with
a registry version per ZenML version and an alias on the one in the stage. A promotion killed between the two
leaves them apart, and the next promotion of the model puts them back (`reconcile`).
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Iterator, Optional

from zenml import log_metadata
from zenml.client import Client
from zenml.models import ModelVersionResponse

from tuneline.registry import tracking
from tuneline.file_lock import file_lock
from tuneline.registry.promotion import PromotionDecision, lineage_conflict

log = logging.getLogger(__name__)


def in_stage(model_name: str, stage: str) -> Optional[ModelVersionResponse]:
    try:
        return Client().get_model_version(model_name, stage)
    except KeyError:
        return None


@contextlib.contextmanager
def promotion_lock(model_name: str) -> Iterator[None]:
    """One promotion of a model at a time on this machine's store; beside the store, so every run takes the same
    lock. (With a remote ZenML server, runs on several machines would need a lock the server holds; ZenML has
    none.)"""
    from zenml.utils.io_utils import get_global_config_directory

    with file_lock(Path(get_global_config_directory()) / f"tuneline-promote-{model_name}.lock"):
        yield


def lineage_problem(model_name: str, stage: str, source: str | None, task: str | None) -> str | None:
    """Why a version learned from `source` for `task` cannot compete with the one in `stage`, or None. `run.py`
    asks before training; promote asks again, since a scheduled run never passes through `run.py`."""
    current = in_stage(model_name, stage)
    if current is None:
        return None
    return lineage_conflict(
        f"model '{model_name}' {stage} version {current.name}", current.run_metadata.get("raw_data") or {}, source, task
    )


def pending(decision: PromotionDecision) -> dict:
    """The decision as recorded until the stage has moved. ZenML merges a dict logged twice under one key, so
    the record written with the move (`move_stage`) only overrides these two."""
    return decision.model_dump(mode="json") | {"promote": False, "stage_moved": False}


def move_stage(version, stage: str, decision: PromotionDecision) -> None:
    version.set_stage(stage, force=True)
    log_metadata(metadata={"promotion": decision.model_dump(mode="json") | {"stage_moved": True}}, infer_model=True)


def reconcile(model_name: str, stage: str, current: Optional[ModelVersionResponse]) -> None:
    """Make MLflow's registry and the recorded decision agree with ZenML's stage before deciding: the version in
    the stage gets its registry entry (a version promoted by an older tuneline may lack it) and the alias points
    at it, or nowhere; a version whose promotion was killed after its stage moved gets the decision it was
    promoted by."""
    recorded = current.run_metadata.get("promotion") if current is not None else None
    if isinstance(recorded, dict) and recorded.get("stage_moved") is False:
        log_metadata(
            metadata={"promotion": recorded | {"promote": True, "stage_moved": True}},
            model_name=model_name,
            model_version=str(current.number),
        )
        log.warning(
            "repaired a promotion that was interrupted: version %s's decision now says it was promoted", current.name
        )
    if current is not None and (run_id := current.run_metadata.get("mlflow_run_id")):
        tracking.mirror_registry(model_name, str(current.number), run_id)
    if repaired := tracking.sync_alias(model_name, stage, str(current.number) if current else None):
        log.warning("repaired a promotion that was interrupted: %s", repaired)


def follow(model_name: str, stage: str, version_number: int) -> None:
    """MLflow's alias follows the stage just moved."""
    tracking.sync_alias(model_name, stage, str(version_number))
