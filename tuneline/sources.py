"""Load raw rows per split from a hub id, a local file or folder of split files, the offline mirror, or synthetic data.

Each row carries `_file` and `_line` so every later error can name where the row came from; rows that could
not be read arrive as error rows (see `readers`) and are quarantined by `validation`, never dropped here.
"""

from __future__ import annotations

import logging
import os
import random
from pathlib import Path

from tuneline.config import DataConfig
from tuneline.readers import SUFFIXES, FileError, read_file

log = logging.getLogger(__name__)

SPLITS = ("train", "validation", "test")
SYNTHETIC_PREFIX = "synthetic:"


class DataError(ValueError):
    """Bad input data; the message names the file, line and field."""


def mirror_root() -> Path | None:
    value = os.environ.get("TUNELINE_MIRROR")
    return Path(value) if value else None


def _split_one(rows: list[dict], seed: int) -> dict[str, list[dict]]:
    """Seeded 85/5/10 split for sources that come as one file, so test rows are fixed across runs."""
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    n_test, n_val = max(1, len(rows) // 10), max(1, len(rows) // 20)

    def pick(idx: list[int]) -> list[dict]:
        return [rows[i] for i in sorted(idx)]  # file order inside a split

    return {
        "test": pick(order[:n_test]),
        "validation": pick(order[n_test : n_test + n_val]),
        "train": pick(order[n_test + n_val :]),
    }


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


def _from_folder(folder: Path, seed: int) -> dict[str, list[dict]]:
    found = _split_files(folder)
    if "train" not in found:
        raise DataError(f"{folder}: no train file (expected train.*, validation.*, test.* with suffix {'/'.join(SUFFIXES)})")
    splits = {s: _read(p) for s, p in found.items()}
    if set(found) != set(SPLITS):
        log.info("%s has %s only; making seeded splits from train", folder, sorted(found))
        splits = _split_one(splits["train"], seed)
    return splits


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
        from tuneline.synthetic import synthetic_viggo

        data = synthetic_viggo(seed=cfg.seed)
        return {
            s: [{**r, "_file": f"{source}/{s}", "_line": i + 1} for i, r in enumerate(rows)]
            for s, rows in data.items()
        }
    path = Path(source).expanduser()
    if path.is_file():
        return _split_one(_read(path), cfg.seed)
    if path.is_dir():
        return _from_folder(path, cfg.seed)
    if looks_like_path(source):
        raise DataError(f"data.source: no such file or folder: {path}")
    return _from_hub_or_mirror(source, cfg.seed)


def looks_like_path(source: str) -> bool:
    return source.startswith((".", "/", "~")) or Path(source).suffix in SUFFIXES


def _from_hub_or_mirror(dataset_id: str, seed: int) -> dict[str, list[dict]]:
    from tuneline.hub import HubUnavailable, hub_reachable

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
        log.info("hub unreachable (%s); reading %s", err, folder)
        return _from_folder(folder, seed)
