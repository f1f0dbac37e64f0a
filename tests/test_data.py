import json

import pytest

from tuneline.chat_format import prepare_splits, render, to_messages
from tuneline.config import DataConfig
from tuneline.sources import DataError, load_splits, read_jsonl

ROW = {"target": "I think Doom is good.", "meaning_representation": "give_opinion(name[Doom], rating[good])"}


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_malformed_line_is_named(tmp_path):
    p = tmp_path / "train.jsonl"
    p.write_text(json.dumps(ROW) + "\n" + '{"target": "x", \n')
    with pytest.raises(DataError, match=rf"{p}:2: not valid JSON"):
        read_jsonl(p)


def test_non_utf8_line_is_named(tmp_path):
    p = tmp_path / "train.jsonl"
    p.write_bytes(json.dumps(ROW).encode() + b"\n" + b'{"target": "\xff"}\n')
    with pytest.raises(DataError, match=rf"{p}:2: not UTF-8"):
        read_jsonl(p)


def test_missing_field_is_named(tmp_path):
    p = write_jsonl(tmp_path / "d.jsonl", [ROW, {"target": "no answer"}])
    rows = read_jsonl(p)
    with pytest.raises(DataError, match=rf"{p}:2: field 'meaning_representation' is missing"):
        to_messages(rows[1], DataConfig())


def test_missing_path():
    with pytest.raises(DataError, match="no such file or folder"):
        load_splits(DataConfig(source="./does/not/exist.jsonl"))


def test_single_file_splits_are_seeded_and_disjoint(tmp_path):
    rows = [{"target": f"t{i}", "meaning_representation": f"inform(name[g{i}])"} for i in range(100)]
    p = write_jsonl(tmp_path / "all.jsonl", rows)
    a, b = load_splits(DataConfig(source=str(p))), load_splits(DataConfig(source=str(p)))
    assert a == b
    lines = {s: {r["_line"] for r in v} for s, v in a.items()}
    assert sum(len(v) for v in lines.values()) == 100
    assert not (lines["train"] & lines["test"]) and not (lines["train"] & lines["validation"])
    c = load_splits(DataConfig(source=str(p), seed=7))
    assert {r["_line"] for r in c["test"]} != lines["test"]


def test_folder_with_splits(tmp_path):
    for split in ("train", "validation", "test"):
        write_jsonl(tmp_path / f"{split}.jsonl", [ROW] * 3)
    splits = load_splits(DataConfig(source=str(tmp_path)))
    assert {k: len(v) for k, v in splits.items()} == {"train": 3, "validation": 3, "test": 3}


def test_hub_id_falls_back_to_mirror(tmp_path, monkeypatch):
    folder = tmp_path / "datasets" / "org" / "name"
    folder.mkdir(parents=True)
    for split in ("train", "validation", "test"):
        write_jsonl(folder / f"{split}.jsonl", [ROW])
    monkeypatch.setenv("TUNELINE_MIRROR", str(tmp_path))
    splits = load_splits(DataConfig(source="org/name"))
    assert splits["test"][0]["_file"] == str(folder / "test.jsonl")
    monkeypatch.delenv("TUNELINE_MIRROR")
    with pytest.raises(DataError, match="TUNELINE_MIRROR is not set"):
        load_splits(DataConfig(source="org/name"))


def test_render_puts_eos_at_end_of_completion(tiny_tokenizer):
    parts = render(tiny_tokenizer, to_messages({**ROW, "_file": "f", "_line": 1}, DataConfig()))
    assert parts["prompt"].endswith("<|im_start|>assistant\n")
    assert parts["completion"] == ROW["meaning_representation"] + "<|im_end|>"


def test_prepare_caps_and_keeps_source(tiny_tokenizer):
    raw = load_splits(DataConfig(source="synthetic:viggo"))
    out = prepare_splits(raw, DataConfig(source="synthetic:viggo", max_train_samples=10), tiny_tokenizer)
    assert len(out["train"]) == 10 and out["train"][0]["source"].startswith("synthetic:viggo/train:")
    assert [m["role"] for m in out["test"][0]["messages"]] == ["system", "user", "assistant"]


def test_eval_selection_spreads_over_test_split():
    from tuneline.config import EvaluationConfig
    from tuneline.evaluation import select_test

    records = list(range(30))
    assert select_test(records, EvaluationConfig(max_samples=3)) == [0, 10, 20]
    assert select_test(records, EvaluationConfig(max_samples=None)) == records
    assert select_test(records[:2], EvaluationConfig(max_samples=5)) == [0, 1]
