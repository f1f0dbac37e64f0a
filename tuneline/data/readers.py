"""Read rows from .jsonl, .json, .csv and .parquet files without ever dropping one.

A line that cannot be read becomes an error row `{"_error": reason, "_detail": ..., "_raw": text}` so the
validation step can quarantine it with its file and line; every row carries `_file` and `_line`.

Text files are UTF-8 with or without a byte-order mark (Excel's "CSV UTF-8" writes one), or UTF-16/UTF-32 with
theirs. A file that cannot be decoded as a whole (UTF-16 without a BOM, a broken UTF-16 file) becomes one
`encoding` row for the file, never one `unparseable` row per line.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
from pathlib import Path

SUFFIXES = (".jsonl", ".json", ".csv", ".parquet")
ERROR, DETAIL, RAW = "_error", "_detail", "_raw"


class FileError(ValueError):
    """A whole file is unusable (e.g. a .json document that does not parse); names the file and position."""


class _Undecodable(ValueError):
    """The file's text encoding cannot be read; becomes the file's single `encoding` row."""


# UTF-32 first: its little-endian mark starts with UTF-16's.
_WIDE_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)


def _error_row(path: Path, line: int, reason: str, detail: str, raw: str) -> dict:
    return {ERROR: reason, DETAIL: detail, RAW: raw, "_file": str(path), "_line": line}


def read_file(path: Path) -> list[dict]:
    readers = {".jsonl": _read_jsonl, ".json": _read_json, ".csv": _read_csv, ".parquet": _read_parquet}
    reader = readers.get(path.suffix.lower())
    if reader is None:
        raise FileError(f"{path}: unsupported file type '{path.suffix}' (use one of {', '.join(SUFFIXES)})")
    try:
        return reader(path)
    except _Undecodable as err:
        return [_error_row(path, 1, "encoding", f"whole file refused: {err}", "")]


def _utf8_bytes(path: Path) -> bytes:
    """The file's bytes as UTF-8 without a BOM; bytes that are not UTF-8 stay as they are, for the caller to place."""
    data = path.read_bytes()
    if data.startswith(codecs.BOM_UTF8):
        return data[len(codecs.BOM_UTF8) :]
    for bom, codec in _WIDE_BOMS:
        if data.startswith(bom):
            try:
                return data.decode(codec).encode("utf-8")
            except UnicodeError as err:
                raise _Undecodable(
                    f"starts with a {codec.upper()} byte-order mark but is not {codec.upper()} "
                    f"({err.reason} at byte {getattr(err, 'start', '?')})"
                ) from None
    if _looks_wide(data):
        raise _Undecodable(
            "has NUL bytes: UTF-16 or UTF-32 without a byte-order mark? Save it as UTF-8, or with its BOM"
        )
    return data


def _looks_wide(data: bytes) -> bool:
    """UTF-16/32 without a BOM: NUL bytes in text that is not UTF-8, or in a quarter of one byte position (ASCII
    text). A UTF-8 file with a stray NUL is read line by line instead of being refused whole."""
    if b"\x00" not in data:
        return False
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return True
    return any(data[parity::2].count(0) * 4 >= len(data[parity::2]) for parity in (0, 1))


def _read_jsonl(path: Path) -> list[dict]:
    rows = []
    data = _utf8_bytes(path)
    lines = data.split(b"\n")
    for lineno, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as err:
            rows.append(
                _error_row(
                    path,
                    lineno,
                    "encoding",
                    f"not UTF-8 ({err.reason} at byte {err.start})",
                    raw.decode("utf-8", "replace"),
                )
            )
            continue
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as err:
            last = lineno == len(lines) and not data.endswith(b"\n")
            detail = f"not valid JSON: {err.msg} (column {err.colno})" + ("; truncated last line" if last else "")
            rows.append(_error_row(path, lineno, "unparseable", detail, text))
            continue
        if not isinstance(obj, dict):
            rows.append(
                _error_row(path, lineno, "unparseable", f"expected a JSON object, got {type(obj).__name__}", text)
            )
            continue
        rows.append({**obj, "_file": str(path), "_line": lineno})
    return rows


def _read_json(path: Path) -> list[dict]:
    """A JSON array of objects (or {"data": [...]}); `_line` is the record's position, counted from 1."""
    try:
        doc = json.loads(_utf8_bytes(path).decode("utf-8"))
    except UnicodeDecodeError as err:
        raise _Undecodable(f"not UTF-8 at byte {err.start}; the whole document is unreadable") from None
    except json.JSONDecodeError as err:
        raise FileError(f"{path}:{err.lineno}: not valid JSON: {err.msg} (column {err.colno})") from None
    if isinstance(doc, dict) and isinstance(doc.get("data"), list):
        doc = doc["data"]
    if not isinstance(doc, list):
        raise FileError(f'{path}: expected a JSON array of objects (or {{"data": [...]}})')
    return [
        {**item, "_file": str(path), "_line": i}
        if isinstance(item, dict)
        else _error_row(path, i, "unparseable", f"record is a {type(item).__name__}, not an object", json.dumps(item))
        for i, item in enumerate(doc, start=1)
    ]


def _read_csv(path: Path) -> list[dict]:
    """`_line` is the line where the record ends; bytes that are not UTF-8 make that row an `encoding` error."""
    rows = []
    with io.StringIO(_utf8_bytes(path).decode("utf-8", "surrogateescape"), newline="") as fh:
        reader = csv.DictReader(fh)
        for record in reader:
            line = reader.line_num
            raw = ",".join("" if v is None else str(v) for v in record.values())
            if None in record or None in record.values():
                rows.append(_error_row(path, line, "unparseable", "wrong number of columns", _printable(raw)))
            elif any(_has_surrogates(v) for v in record.values()):
                rows.append(_error_row(path, line, "encoding", "not UTF-8", _printable(raw)))
            else:
                rows.append({**record, "_file": str(path), "_line": line})
    return rows


def _has_surrogates(value) -> bool:
    return isinstance(value, str) and any("\udc80" <= c <= "\udcff" for c in value)


def _printable(text: str) -> str:
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _read_parquet(path: Path) -> list[dict]:
    import pyarrow.parquet as pq

    return [{**row, "_file": str(path), "_line": i} for i, row in enumerate(pq.read_table(path).to_pylist(), start=1)]
