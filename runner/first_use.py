"""First-use set-up (ZenML store, local stack, MLflow store): serialized, and safe to kill at any moment.

Two first runs at once race to create the same SQLite files, and a run killed while a store creates its tables
leaves a half-made database that every later run trips on. So all of it runs under one file lock in ZenML's config
folder, and each SQLite store is built (or upgraded) under a temporary name and renamed into place: its real path
holds a complete store or nothing. A half-made store left by an older tuneline is moved aside, with a message.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import sqlite3
import time
from pathlib import Path
from typing import Callable

from tuneline.file_lock import file_lock

log = logging.getLogger(__name__)

LOCK_FILE = "tuneline-first-use.lock"


class FirstUseError(RuntimeError):
    """A store that cannot be made ready without losing what it holds; the message names the file."""


def _tables(path: Path) -> set[str]:
    with contextlib.closing(sqlite3.connect(path)) as db:
        return {name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def _has_rows(path: Path, table: str) -> bool:
    if table not in _tables(path):
        return False
    with contextlib.closing(sqlite3.connect(path)) as db:
        return db.execute(f"SELECT count(*) FROM {table}").fetchone()[0] > 0


def _clear_unfinished(path: Path) -> None:
    """Both stores stamp alembic_version when they create their tables: tables without a stamp are a killed creation.
    A file without tables holds nothing; it goes, so the store is still built under its temporary name."""
    if not path.exists():
        return
    if not _tables(path):
        path.unlink()
    elif not _has_rows(path, "alembic_version"):
        _move_aside(path)


def _move_aside(path: Path) -> None:
    aside = path.with_name(f"{path.name}.half-made-{time.strftime('%Y%m%d-%H%M%S')}")
    path.rename(aside)
    log.warning("%s was left half-made by an interrupted first run; moved it to %s and created a new one", path, aside)


def _replace_atomically(path: Path, build: Callable[[Path], None], start_from_current: bool = False) -> None:
    """Build the store at a temporary path beside `path` (from a copy of it when upgrading), then rename it over."""
    for stale in path.parent.glob(f"{path.name}.*.partial"):  # from a killed run; we hold the lock
        stale.unlink()
    tmp = path.with_name(f"{path.name}.{os.getpid()}.partial")
    if start_from_current:
        shutil.copy2(path, tmp)
    build(tmp)
    os.replace(tmp, path)


def _sqlite_path(url: str) -> Path | None:
    return Path(url.removeprefix("sqlite:///")) if url.startswith("sqlite:///") else None


def _ensure_zenml_store() -> None:
    from zenml.config.global_config import GlobalConfiguration
    from zenml.zen_stores.base_zen_store import BaseZenStore

    config = GlobalConfiguration().store_configuration
    path = _sqlite_path(config.url)
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    _clear_unfinished(path)
    if path.exists():
        return  # ZenML upgrades its own store, with a backup, when it opens it (under our lock)

    def build(tmp: Path) -> None:
        store = BaseZenStore.create_store(config.model_copy(update={"url": f"sqlite:///{tmp}"}))
        store.engine.dispose()

    _replace_atomically(path, build)


def _ensure_mlflow_store(tracking_uri: str) -> None:
    import sqlalchemy
    from mlflow.store.db import utils as db
    from mlflow.store.tracking.dbmodels.initial_models import Base as InitialBase

    path = _sqlite_path(tracking_uri)
    if path is None:
        return
    _clear_unfinished(path)
    head = db._get_latest_schema_revision()

    def migrate(tmp: Path) -> None:
        engine = sqlalchemy.create_engine(f"sqlite:///{tmp}")
        if not _tables(tmp):
            InitialBase.metadata.create_all(engine)
        db._upgrade_db(engine)
        engine.dispose()

    if path.exists() and db._get_schema_version(sqlalchemy.create_engine(f"sqlite:///{path}")) != head:
        log.info("upgrading the MLflow store %s to schema %s", path, head)
        try:
            _replace_atomically(path, migrate, start_from_current=True)
        except Exception as err:  # a migration an older tuneline was killed in: repair it only when nothing is lost
            if _has_rows(path, "runs"):
                raise FirstUseError(
                    f"{path}: the MLflow store cannot be upgraded ({err}); it holds runs, so it "
                    f"was left as it is: back it up, then run `mlflow db upgrade sqlite:///{path}`"
                )
            _move_aside(path)
    if not path.exists():
        _replace_atomically(path, migrate)


def set_up() -> str:
    """Make the ZenML store, a stack that tracks experiments, and its MLflow store ready; returns the stack name."""
    from zenml.client import Client
    from zenml.utils.io_utils import get_global_config_directory

    from runner.stack import ensure_tracking_stack

    with file_lock(Path(get_global_config_directory()) / LOCK_FILE):
        _ensure_zenml_store()
        stack = ensure_tracking_stack()
        tracker = Client().active_stack.experiment_tracker
        if tracker is not None and hasattr(tracker, "get_tracking_uri"):
            _ensure_mlflow_store(tracker.get_tracking_uri())
    return stack
