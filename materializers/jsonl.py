"""JSONL read/write through the artifact store, shared by the materializers that store rows."""

import json


def write_jsonl(store, path: str, rows: list[dict]) -> None:
    with store.open(path, "w") as f:
        f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)


def read_jsonl(store, path: str) -> list[dict]:
    with store.open(path, "r") as f:
        return [json.loads(line) for line in f if line.strip()]


def write_html(store, path: str, html: str) -> None:
    with store.open(path, "w") as f:
        f.write(html)
