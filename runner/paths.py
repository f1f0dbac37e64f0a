"""Paths on the command line mean what they meant where the user typed them.

`scripts/in-venv` changes to the repository root before running, and passes the folder the command was typed in
as TUNELINE_CWD; without it (plain `python run.py`), that folder is the current one.
"""

from __future__ import annotations

import os
from pathlib import Path


def typed_in() -> Path:
    return Path(os.environ.get("TUNELINE_CWD") or Path.cwd())


def from_user(text: str) -> Path:
    """An argparse `type`: a relative path taken from the folder the command was typed in (kept as typed when
    that is the current folder, so messages show it as typed)."""
    path = Path(text).expanduser()
    base = typed_in()
    return path if path.is_absolute() or base.resolve() == Path.cwd().resolve() else base / path


def shown(path: Path) -> Path:
    """As the user would type it: relative when under the folder they typed the command in."""
    base = typed_in().resolve()
    return Path(os.path.relpath(path.resolve(), base)) if path.resolve().is_relative_to(base) else path
