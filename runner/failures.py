"""The one line a user reads when a run fails for a reason outside tuneline: the root cause, last.

A full disk or a read-only store surfaces as whatever library touched it first (SQLAlchemy's autoflush notice,
ZenML's "failure in step(s)"), with the cause several exceptions down the chain.
"""

from __future__ import annotations

import errno
import sqlite3

_SAID = {
    errno.ENOSPC: "the disk is full",
    errno.EDQUOT: "the disk quota is used up",
    errno.EROFS: "the file system is read-only",
    errno.EACCES: "permission denied",
}
# What SQLite says for the same causes (its errors carry no errno).
_SQLITE_SAID = {"database or disk is full": errno.ENOSPC, "readonly database": errno.EROFS}


def chain(err: BaseException) -> list[BaseException]:
    """`err` and the exceptions it was raised from or while handling, outermost first."""
    seen: list[BaseException] = []
    while err is not None and err not in seen:
        seen.append(err)
        err = err.__cause__ or err.__context__
    return seen


def _errno_of(err: BaseException) -> int | None:
    if isinstance(err, OSError) and err.errno in _SAID:
        return err.errno
    if isinstance(err, sqlite3.Error) or type(err).__module__.startswith("sqlalchemy"):
        text = str(getattr(err, "orig", None) or err)
        return next((code for said, code in _SQLITE_SAID.items() if said in text), None)
    return None


def root_cause(err: BaseException) -> str | None:
    """'the disk is full (No space left on device: /path)' when the chain holds a cause of that kind, else None."""
    for link in reversed(chain(err)):
        if (code := _errno_of(link)) is not None:
            if isinstance(link, OSError):
                detail = f"{link.strerror}: {link.filename}" if link.filename else link.strerror
            else:
                detail = _first_line(link)
            return f"{_SAID[code]} ({detail})"
    return None


def _first_line(err: BaseException) -> str:
    text = str(getattr(err, "orig", None) or err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def one_line(err: BaseException) -> str:
    """The message for an unexpected failure: its root cause when one is known, else the innermost error."""
    if cause := root_cause(err):
        return cause
    inner = chain(err)[-1]
    return f"{type(inner).__name__}: {_first_line(inner)}"


def cause_in_text(text: str) -> str | None:
    """The same for a failure known only by its message (a step's stored exception)."""
    said = {**{"No space left on device": errno.ENOSPC, "Read-only file system": errno.EROFS}, **_SQLITE_SAID}
    return next((f"{_SAID[code]} ({phrase})" for phrase, code in said.items() if phrase in text), None)
