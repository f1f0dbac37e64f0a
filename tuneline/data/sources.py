"""Load raw rows per split from a hub id, a local file or folder of split files, the offline mirror, or synthetic data.

Each row carries `_file` and `_line` so every later error can name where the row came from; rows that could
not be read arrive as error rows (see `readers`) and are quarantined by `validation`, never dropped here.
"""

from __future__ import annotations

import logging
import os
import random
from collections.abc import Callable
from pathlib import Path

from tuneline.config import DataConfig
from tuneline.data.readers import SUFFIXES, FileError, read_file

log = logging.getLogger(__name__)

SPLITS = ("train", "validation", "test")
CARVED = "_carved"
SYNTHETIC_PREFIX = "synthetic:"


class DataError(ValueError):
    """Bad input data; the message names the file, line and field."""


def mirror_root() -> Path | None:
    value = os.environ.get("TUNELINE_MIRROR")
    return Path(value) if value else None


def _input_key(cfg: DataConfig) -> Callable[[dict], object]:
    """A row's user input (as the leakage check reads it); a row that cannot be read is its own group."""
    from tuneline.data.formats import RowError, to_messages, user_input

    def key(row: dict) -> object:
        try:
            return user_input(to_messages(row, cfg))
        except (RowError, KeyError, TypeError, AttributeError):
            return id(row)

    return key


def _complete(
    splits: dict[str, list[dict]], seed: int, key: Callable[[dict], object] | None = None
) -> dict[str, list[dict]]:
    """Splits the source gives are used as given; a missing test (10%) or validation (5%) split is carved from
    train by a seeded shuffle, so its rows are fixed across runs. Rows with the same input (`key`: several
    references for one input, as data-to-text corpora have) move together, so an input is never in two splits.
    Carved rows carry `_carved`, so the data report can say which splits were made."""
    missing = [s for s in ("test", "validation") if s not in splits]
    if not missing or not splits.get("train"):
        return splits
    rows = splits["train"]
    groups: dict[object, list[int]] = {}
    for i, row in enumerate(rows):
        groups.setdefault(key(row) if key else i, []).append(i)
    order = list(groups.values())
    random.Random(seed).shuffle(order)
    sizes = {"test": max(1, len(rows) // 10), "validation": max(1, len(rows) // 20)}
    out = dict(splits)
    for split in missing:
        picked: list[int] = []
        while order and len(picked) < sizes[split]:
            picked += order.pop(0)
        out[split] = [{**rows[i], CARVED: True} for i in sorted(picked)]  # file order inside a split
    out["train"] = [rows[i] for i in sorted(i for group in order for i in group)]
    log.info("source gives %s; carved %s from train", sorted(splits), missing)
    return {s: out[s] for s in SPLITS}


SPLIT_ALIASES = {"train": ("train",), "validation": ("validation", "valid", "val", "dev"), "test": ("test",)}


def _split_files(folder: Path) -> dict[str, Path]:
    found = {}
    for split, stems in SPLIT_ALIASES.items():
        matches = [folder / f"{stem}{suffix}" for stem in stems for suffix in SUFFIXES]
        matches = [m for m in matches if m.is_file()]
        if len(matches) > 1:
            raise DataError(f"{folder}: several files for split '{split}': {[m.name for m in matches]}")
        if matches:
            found[split] = matches[0]
    return found


def _read(path: Path) -> list[dict]:
    try:
        return read_file(path)
    except FileError as err:
        raise DataError(str(err)) from None


def _from_folder(folder: Path) -> dict[str, list[dict]]:
    found = _split_files(folder)
    if "train" not in found:
        raise DataError(
            f"{folder}: no train file (expected train.*, validation.*, test.* with suffix {'/'.join(SUFFIXES)})"
        )
    return {s: _read(found[s]) for s in SPLITS if s in found}


def _from_hub(dataset_id: str) -> dict[str, list[dict]]:
    from datasets import load_dataset

    loaded = load_dataset(dataset_id)
    out = {}
    for split in SPLITS:
        if split in loaded:
            out[split] = [
                {**row, "_file": f"hub:{dataset_id}/{split}", "_line": i + 1} for i, row in enumerate(loaded[split])
            ]
    return out


def load_splits(cfg: DataConfig) -> dict[str, list[dict]]:
    source = cfg.source
    if source.startswith(SYNTHETIC_PREFIX):
        from tuneline.data.synthetic import synthetic_viggo

        data = synthetic_viggo(seed=cfg.seed)
        return {
            s: [{**r, "_file": f"{source}/{s}", "_line": i + 1} for i, r in enumerate(rows)] for s, rows in data.items()
        }
    path = Path(source).expanduser()
    if path.is_file():
        return _complete({"train": _read(path)}, cfg.seed, _input_key(cfg))
    if path.is_dir():
        return _complete(_from_folder(path), cfg.seed, _input_key(cfg))
    if looks_like_path(source):
        raise DataError(f"data.source: no such file or folder: {path}")
    return _complete(_from_hub_or_mirror(source), cfg.seed, _input_key(cfg))


def made_splits(splits: dict[str, list[dict]]) -> list[str]:
    """The splits carved from train rather than given by the source."""
    return [s for s, rows in splits.items() if rows and all(r.get(CARVED) for r in rows)]


def looks_like_path(source: str) -> bool:
    return source.startswith((".", "/", "~")) or Path(source).suffix in SUFFIXES


def _from_hub_or_mirror(dataset_id: str) -> dict[str, list[dict]]:
    from tuneline.models.hub import HubUnavailable, hub_reachable, say_fallback_once

    try:
        hub_reachable(dataset_id, repo_type="dataset")
        return _from_hub(dataset_id)
    except HubUnavailable as err:
        mirror = mirror_root()
        if mirror is None:
            raise DataError(
                f"data.source '{dataset_id}': the hub cannot be reached ({err}) and TUNELINE_MIRROR is not set"
            ) from None
        folder = mirror / "datasets" / dataset_id
        if not folder.is_dir():
            raise DataError(f"data.source '{dataset_id}': hub unreachable and no mirror copy at {folder}") from None
        say_fallback_once(log, "hub unreachable (%s); reading %s", err, folder)
        return _from_folder(folder)
