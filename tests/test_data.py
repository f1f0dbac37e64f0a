import json

import pytest

from tuneline.data.chat_format import FALLBACK_TEMPLATE, ensure_chat_template, render
from tuneline.config import DataConfig
from tuneline.data.formats import RowError, detect_format, to_messages
from tuneline.data.readers import FileError, read_file
from tuneline.data.sources import DataError, load_splits
from tuneline.data.validation import gate_message, prepare

ROW = {"target": "I think Doom is good.", "meaning_representation": "give_opinion(name[Doom], rating[good])"}
PLAIN = DataConfig(system_prompt=None)


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def row(i, **extra):
    return {
        "target": f"Game {i} is fun.",
        "meaning_representation": f"give_opinion(name[Game {i}], rating[good])",
        **extra,
    }


# --- readers ---------------------------------------------------------------------------------------------


def test_jsonl_bad_lines_become_error_rows_with_line_numbers(tmp_path):
    p = tmp_path / "d.jsonl"
    p.write_bytes(
        b"\n".join(
            [
                json.dumps(ROW).encode(),
                b'{"target": "\xff"}',
                b"[1, 2]",
                b"",
                json.dumps(ROW).encode(),
                b'{"target": "cut o',
            ]
        )
    )
    rows = read_file(p)
    assert [(r["_line"], r.get("_error")) for r in rows] == [
        (1, None),
        (2, "encoding"),
        (3, "unparseable"),
        (5, None),
        (6, "unparseable"),
    ]
    assert "truncated last line" in rows[-1]["_detail"] and rows[-1]["_raw"] == '{"target": "cut o'


def test_csv_parquet_json_readers(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    csv_path = tmp_path / "d.csv"
    csv_path.write_bytes(b'target,meaning_representation\n"Hi, there",inform(name[X])\nbad\xff,x\nonly_one\n')
    rows = read_file(csv_path)
    assert rows[0]["target"] == "Hi, there" and rows[0]["_line"] == 2
    assert [r.get("_error") for r in rows] == [None, "encoding", "unparseable"]

    pq.write_table(pa.Table.from_pylist([ROW, ROW]), tmp_path / "d.parquet")
    assert [r["_line"] for r in read_file(tmp_path / "d.parquet")] == [1, 2]

    (tmp_path / "d.json").write_text(json.dumps({"data": [ROW, 3]}))
    rows = read_file(tmp_path / "d.json")
    assert rows[0]["target"] == ROW["target"] and rows[1]["_error"] == "unparseable"
    (tmp_path / "broken.json").write_text('[{"a": 1},\n {"a": ')
    with pytest.raises(FileError, match=r"broken.json:2: not valid JSON"):
        read_file(tmp_path / "broken.json")


def test_missing_path():
    with pytest.raises(DataError, match="no such file or folder"):
        load_splits(DataConfig(source="./does/not/exist.jsonl"))


def test_single_file_splits_are_seeded_and_disjoint(tmp_path):
    p = write_jsonl(tmp_path / "all.jsonl", [row(i) for i in range(100)])
    a, b = load_splits(DataConfig(source=str(p))), load_splits(DataConfig(source=str(p)))
    assert a == b
    lines = {s: {r["_line"] for r in v} for s, v in a.items()}
    assert sum(len(v) for v in lines.values()) == 100
    assert not (lines["train"] & lines["test"]) and not (lines["train"] & lines["validation"])
    c = load_splits(DataConfig(source=str(p), seed=7))
    assert {r["_line"] for r in c["test"]} != lines["test"]


def test_folder_with_split_files_of_any_type(tmp_path):
    write_jsonl(tmp_path / "train.jsonl", [row(i) for i in range(3)])
    (tmp_path / "dev.csv").write_text("target,meaning_representation\nA game.,inform(name[A])\n")
    (tmp_path / "test.json").write_text(json.dumps([row(9)]))
    splits = load_splits(DataConfig(source=str(tmp_path)))
    assert {k: len(v) for k, v in splits.items()} == {"train": 3, "validation": 1, "test": 1}


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


# --- formats ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw, fmt, user, answer",
    [
        ({"messages": [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "A"}]}, "chat", "Q", "A"),
        ({"instruction": "Do it", "input": "ctx", "output": "A"}, "instruction", "Do it\n\nctx", "A"),
        ({"instruction": "Do it", "output": "A"}, "instruction", "Do it", "A"),
        ({"prompt": "Q", "completion": "A"}, "prompt_completion", "Q", "A"),
        (ROW, "fields", ROW["target"], ROW["meaning_representation"]),
    ],
)
def test_each_format_becomes_messages(raw, fmt, user, answer):
    assert detect_format(raw, PLAIN) == fmt
    messages = to_messages(raw, PLAIN)
    assert messages[-2:] == [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]


def test_declared_format_and_field_mapping():
    cfg = DataConfig(format="fields", input_field="q", output_field="a", system_prompt="S")
    assert to_messages({"q": "x", "a": "y", "prompt": "ignored", "completion": "ignored"}, cfg) == [
        {"role": "system", "content": "S"},
        {"role": "user", "content": "x"},
        {"role": "assistant", "content": "y"},
    ]


@pytest.mark.parametrize(
    "raw, reason",
    [
        ({"target": "x"}, "missing_field"),
        ({"target": "  ", "meaning_representation": "y"}, "empty_field"),
        ({"target": 3, "meaning_representation": "y"}, "invalid_field"),
        ({"messages": [{"role": "robot", "content": "x"}, {"role": "assistant", "content": "y"}]}, "invalid_role"),
        ({"messages": [{"role": "user", "content": "x"}]}, "invalid_role"),
        ({"messages": []}, "invalid_field"),
    ],
)
def test_bad_rows_name_their_reason(raw, reason):
    with pytest.raises(RowError) as err:
        to_messages(raw, PLAIN)
    assert err.value.reason == reason


def test_multi_turn_trains_on_every_assistant_turn(tiny_tokenizer):
    from tuneline.data.chat_format import IGNORE, tokenize_segments

    messages = [
        {"role": "system", "content": "S"},
        {"role": "user", "content": "Q1"},
        {"role": "assistant", "content": "A1"},
        {"role": "user", "content": "Q2"},
        {"role": "assistant", "content": "A2"},
    ]
    rendered = render(tiny_tokenizer, messages)
    trained = [s["text"] for s in rendered["segments"] if s["train"]]
    assert trained == ["A1<|im_end|>", "A2<|im_end|>"]
    assert "".join(s["text"] for s in rendered["segments"]) + "\n" == tiny_tokenizer.apply_chat_template(
        messages, tokenize=False
    )
    assert rendered["prompt"].endswith("Q2<|im_end|>\n<|im_start|>assistant\n")
    ex = tokenize_segments(tiny_tokenizer, rendered["segments"], 512)
    targets = [t for t in ex["labels"] if t != IGNORE]
    assert targets.count(tiny_tokenizer.eos_token_id) == 2  # both answers end in a learned EOS (pad == eos here)


def test_tokenizer_without_template_gets_fallback(tiny_model_dir):
    from tuneline.models.modeling import load_tokenizer

    tok = load_tokenizer(tiny_model_dir)
    tok.chat_template = None
    assert ensure_chat_template(tok) and tok.chat_template == FALLBACK_TEMPLATE
    assert not ensure_chat_template(tok)
    assert (
        render(tok, to_messages(ROW, PLAIN))["prompt"]
        == f"<|im_start|>user\n{ROW['target']}<|im_end|>\n<|im_start|>assistant\n"
    )


# --- validation and quarantine ---------------------------------------------------------------------------


def messy_splits(tmp_path):
    """A file with one of every problem, and exact expected counts."""
    train = tmp_path / "train.jsonl"
    lines = [json.dumps(row(i)) for i in range(20)]  # 20 good rows
    lines += [json.dumps(row(3))]  # duplicate of line 4
    lines += [json.dumps({"target": "no answer"})]  # missing_field
    lines += [json.dumps({"target": "", "meaning_representation": "x"})]  # empty_field
    lines += [
        json.dumps({"messages": [{"role": "bot", "content": "x"}, {"role": "assistant", "content": "y"}]})
    ]  # invalid_role
    lines += [json.dumps(row(100, target="word " * 300))]  # too_long
    lines += [json.dumps(row(50, target="  THE  test   input "))]  # leakage (matches test row below)
    lines += ["{not json"]  # unparseable
    data = "\n".join(lines).encode() + b'\n{"target": "\xff\xfe"}\n' + b'{"target": "trunc'  # encoding, truncated
    train.write_bytes(data)
    write_jsonl(tmp_path / "validation.jsonl", [row(i) for i in range(30, 33)])
    write_jsonl(tmp_path / "test.jsonl", [row(60, target="the test input"), row(61), row(61)])  # + duplicate in test
    return load_splits(DataConfig(source=str(tmp_path)))


def test_every_rejection_reason_counted_exactly_and_nothing_lost(tmp_path, tiny_tokenizer):
    raw = messy_splits(tmp_path)
    cfg = DataConfig(source=str(tmp_path), system_prompt=None, max_seq_len=128, max_reject_fraction=0.5)
    prepared = prepare(raw, cfg, tiny_tokenizer)
    report = prepared.report
    assert report.reasons["train"] == {
        "duplicate": 1,
        "missing_field": 1,
        "empty_field": 1,
        "invalid_role": 1,
        "too_long": 1,
        "leakage": 1,
        "unparseable": 2,
        "encoding": 1,
    }
    assert report.reasons["test"] == {"duplicate": 1}
    assert report.splits["train"].input == 29 and report.splits["train"].accepted == 20
    for counts in report.splits.values():
        assert counts.accepted + counts.quarantined == counts.input
    assert len(prepared.quarantine) == sum(c.quarantined for c in report.splits.values()) == 10
    q = {(r["reason"], r["line"]) for r in prepared.quarantine if r["split"] == "train"}
    assert ("duplicate", 21) in q and ("leakage", 26) in q and ("unparseable", 29) in q and ("encoding", 28) in q
    leak = next(r for r in prepared.quarantine if r["reason"] == "leakage")
    assert leak["raw"]["target"] == "  THE  test   input " and leak["file"].endswith("train.jsonl")
    assert report.reject_fraction == pytest.approx(10 / 35) and report.passed
    assert report.field_coverage["target"] == pytest.approx(30 / 32)  # 32 readable: one empty, one chat row
    assert report.histogram and report.formats == {"fields": 20 + 3 + 2}


def test_overlong_rows_can_be_truncated_and_counted(tmp_path, tiny_tokenizer):
    raw = {
        "train": [{**row(1, target="word " * 300), "_file": "f", "_line": 1}, {**row(2), "_file": "f", "_line": 2}],
        "test": [{**row(3), "_file": "t", "_line": 1}],
    }
    prepared = prepare(raw, DataConfig(system_prompt=None, max_seq_len=64, overlong="truncate"), tiny_tokenizer)
    assert prepared.report.splits["train"].truncated == 1 and prepared.report.splits["train"].accepted == 2
    assert not prepared.quarantine


def test_gate_fails_over_threshold_with_file_and_line(tmp_path, tiny_tokenizer):
    raw = messy_splits(tmp_path)
    prepared = prepare(raw, DataConfig(source=str(tmp_path), system_prompt=None, max_seq_len=128), tiny_tokenizer)
    assert not prepared.report.passed
    message = gate_message(prepared.report, prepared.quarantine)
    assert "28.6% of input rows were quarantined, above data.max_reject_fraction 5.0%" in message
    shown = message.splitlines()[1:]
    for reason in prepared.report.reason_totals():  # each reason's first row, with its file and line
        assert any(
            line.startswith(f"  {tmp_path}/") and ".jsonl:" in line and f": {reason}: " in line for line in shown
        ), reason


def test_caps_sample_after_validation(tiny_tokenizer):
    raw = load_splits(DataConfig(source="synthetic:viggo"))
    prepared = prepare(raw, DataConfig(source="synthetic:viggo", max_train_samples=10), tiny_tokenizer)
    assert prepared.report.splits["train"].used == 10 and prepared.report.splits["train"].accepted == 96
    rec = prepared.splits["train"][0]
    # No system turn by default: nothing task-specific is added to a user's rows.
    assert rec["source"].startswith("synthetic:viggo/train:") and [m["role"] for m in rec["messages"]] == [
        "user",
        "assistant",
    ]


def test_eval_selection_spreads_over_test_split():
    from tuneline.config import EvaluationConfig
    from tuneline.evaluate.evaluation import select_test

    records = [{"prompt": f"p{i}", "messages": [{"role": "assistant", "content": f"a{i}"}]} for i in range(30)]
    assert select_test(records, EvaluationConfig(max_samples=3)) == [records[0], records[10], records[20]]
    assert select_test(records, EvaluationConfig(max_samples=None)) == records
    assert select_test(records[:2], EvaluationConfig(max_samples=5)) == records[:2]
    # one input with several answers is one example holding all of them
    repeated = records[:2] + [{**records[1], "messages": [{"role": "assistant", "content": "other"}]}]
    assert select_test(repeated, EvaluationConfig(max_samples=None))[1]["references"] == ["a1", "other"]


def test_duplicates_across_splits_leave_test_intact(tiny_tokenizer):
    raw = {
        "train": [
            {**row(1), "_file": "tr", "_line": 1},
            {**row(2), "_file": "tr", "_line": 2},
            {**row(4), "_file": "tr", "_line": 3},
        ],
        "validation": [{**row(2), "_file": "va", "_line": 1}],
        "test": [{**row(1), "_file": "te", "_line": 1}, {**row(3), "_file": "te", "_line": 2}],
    }
    prepared = prepare(raw, DataConfig(system_prompt=None, max_reject_fraction=1.0), tiny_tokenizer)
    assert prepared.report.reasons == {"train": {"duplicate": 2}, "validation": {}, "test": {}}
    assert [r["source"] for r in prepared.splits["test"]] == ["te:1", "te:2"]
    assert list(prepared.splits) == ["train", "validation", "test"]


def test_leaked_test_input_carved_into_validation_is_quarantined(tmp_path, tiny_tokenizer):
    write_jsonl(tmp_path / "train.jsonl", [row(i) for i in range(40)])
    write_jsonl(tmp_path / "test.jsonl", [row(99)])
    carved = load_splits(DataConfig(source=str(tmp_path)))["validation"]  # carving reads train and the seed only
    leaked = [{"target": r["target"], "meaning_representation": "inform(name[Other])"} for r in carved]
    write_jsonl(tmp_path / "test.jsonl", [row(99), *leaked])
    cfg = DataConfig(source=str(tmp_path), system_prompt=None, max_reject_fraction=1.0)
    prepared = prepare(load_splits(cfg), cfg, tiny_tokenizer)
    report = prepared.report
    assert report.made == ["validation"] and report.reasons["validation"] == {"leakage": len(carved)}
    assert [(q["split"], q["reason"], q["line"]) for q in prepared.quarantine] == [
        ("validation", "leakage", r["_line"]) for r in carved
    ]
    for counts in report.splits.values():
        assert counts.accepted + counts.quarantined == counts.input
    assert report.splits["validation"].input == len(carved) == report.splits["validation"].quarantined


@pytest.mark.parametrize("mode", ["report", "quarantine"])
def test_one_input_with_contradictory_answers_is_reported_or_quarantined(tmp_path, tiny_tokenizer, mode):
    """Issue 27: ten rows of one corpus gave one input two answers and passed unreported."""
    rows = [{"target": f"Game {i} is fun.", "meaning_representation": f"inform(name[Game {i}])"} for i in range(30)]
    rows += [{"target": "Game 3 is fun.", "meaning_representation": "give_opinion(name[Game 3])"}]
    path = tmp_path / "d.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = DataConfig(source=str(path), conflicts=mode, max_reject_fraction=1.0)
    prepared = prepare(load_splits(cfg), cfg, tiny_tokenizer)
    report = prepared.report
    assert report.conflicts == 1 and report.conflict_example.count(f"{path.name}:") == 2
    conflict_rows = [q for q in prepared.quarantine if q["reason"] == "conflict"]
    assert len(conflict_rows) == (2 if mode == "quarantine" else 0)
    for split, c in report.splits.items():
        assert c.accepted + c.quarantined == c.input
    used = sum(len(r) for r in prepared.splits.values())
    assert sum(report.distinct_inputs.values()) == used - (mode == "report")  # the two rows share one input
