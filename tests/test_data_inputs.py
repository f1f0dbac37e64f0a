"""Issue 14, data half: nothing a user gives is lost (given splits, structured answers, BOMs), nothing fails late
(bad references are quarantined before training)."""

import codecs
import json

import pytest

from tuneline.data.chat_format import tokenize_segments
from tuneline.config import DataConfig
from tuneline.data.formats import RowError, to_messages
from tuneline.data.readers import read_file
from tuneline.data.sources import load_splits
from tuneline.data.validation import prepare


def row(i, **extra):
    return {
        "target": f"Game {i} is fun.",
        "meaning_representation": f"give_opinion(name[Game {i}], rating[good])",
        **extra,
    }


def jsonl(rows) -> str:
    return "".join(json.dumps(r) + "\n" for r in rows)


def placed(rows, file="f"):
    return [{**r, "_file": file, "_line": i} for i, r in enumerate(rows, start=1)]


# --- 1. splits a user gives are used as given --------------------------------------------------------------


def test_given_test_file_is_used_as_given_and_only_validation_is_carved(tmp_path, tiny_tokenizer):
    (tmp_path / "train.jsonl").write_text(jsonl([row(i) for i in range(40)] + [row(99, target="Held out one.")]))
    (tmp_path / "test.jsonl").write_text(jsonl([row(100, target="held OUT one."), row(101)]))
    raw = load_splits(DataConfig(source=str(tmp_path)))
    assert [(r["_file"], r["_line"]) for r in raw["test"]] == [
        (str(tmp_path / "test.jsonl"), 1),
        (str(tmp_path / "test.jsonl"), 2),
    ]
    assert len(raw["validation"]) == 2 and len(raw["train"]) == 39
    assert {r["_file"] for r in raw["validation"] + raw["train"]} == {str(tmp_path / "train.jsonl")}
    assert not {r["_line"] for r in raw["validation"]} & {r["_line"] for r in raw["train"]}

    prepared = prepare(
        raw, DataConfig(source=str(tmp_path), system_prompt=None, max_reject_fraction=1.0), tiny_tokenizer
    )
    report = prepared.report
    assert report.made == ["validation"]
    assert report.origins() == "splits given: train, test; made from train (seeded): validation"
    assert report.splits["test"].accepted == 2
    # The user's own test file makes leakage from their train file visible.
    assert any(r["target"] == "Held out one." for r in raw["train"])  # not carved away (seeded)
    assert [q["line"] for q in prepared.quarantine if q["reason"] == "leakage"] == [41]


def test_given_validation_file_is_kept_and_test_is_carved(tmp_path):
    (tmp_path / "train.jsonl").write_text(jsonl([row(i) for i in range(30)]))
    (tmp_path / "valid.jsonl").write_text(jsonl([row(50)]))
    raw = load_splits(DataConfig(source=str(tmp_path)))
    assert [r["target"] for r in raw["validation"]] == ["Game 50 is fun."]
    assert len(raw["test"]) == 3 and len(raw["train"]) == 27


# --- 2. bad references fail in prepare, not after training --------------------------------------------------


@pytest.mark.parametrize(
    "task, good, bad",
    [
        ("json", '{"city": "Paris"}', ['{"city": "Par', "not json at all", "42"]),
        ("viggo", "inform(name[X])", ["inform(name[X]", "just words"]),
    ],
)
def test_reference_that_does_not_parse_is_quarantined_with_its_reason(task, good, bad, tiny_tokenizer):
    cfg = DataConfig(task=task, input_field="q", output_field="a", system_prompt=None, max_reject_fraction=1.0)
    rows = [{"q": "question 0", "a": good}] + [{"q": f"question {i}", "a": a} for i, a in enumerate(bad, start=1)]
    prepared = prepare({"train": placed(rows), "test": placed([{"q": "other", "a": good}], "t")}, cfg, tiny_tokenizer)
    assert prepared.report.reasons["train"] == {"bad_reference": len(bad)}
    assert prepared.report.splits["train"].accepted == 1
    details = [q["detail"] for q in prepared.quarantine]
    assert all(d.startswith("field 'a' does not parse as") and f"(task '{task}')" in d for d in details)
    if task == "json":
        assert "not valid JSON" in details[0] and "it is a JSON int" in details[2]


def test_chat_reference_is_its_last_assistant_turn(tiny_tokenizer):
    def chat(answer):
        return {"messages": [{"role": "user", "content": answer}, {"role": "assistant", "content": answer}]}

    prepared = prepare(
        {"train": placed([chat("{oops"), chat("{}")]), "test": placed([chat('{"a": 1}')], "t")},
        DataConfig(task="json", system_prompt=None, max_reject_fraction=1.0),
        tiny_tokenizer,
    )
    assert [q["reason"] for q in prepared.quarantine] == ["bad_reference"]
    assert "field 'messages[-1].content'" in prepared.quarantine[0]["detail"]


# --- 3. structured answers for json tasks -------------------------------------------------------------------


def test_json_task_takes_objects_and_lists_as_canonical_json():
    cfg = DataConfig(task="json", input_field="input", output_field="output", system_prompt=None)
    messages = to_messages({"input": "Paris is in France.", "output": {"country": "France", "city": "Paris"}}, cfg)
    assert messages[-1] == {"role": "assistant", "content": '{"city": "Paris", "country": "France"}'}
    assert to_messages({"input": "x", "output": [{"b": 1, "a": "é"}]}, cfg)[-1]["content"] == '[{"a": "é", "b": 1}]'
    chat = {"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": {"k": 1}}]}
    assert to_messages(chat, cfg)[-1]["content"] == '{"k": 1}'
    with pytest.raises(RowError) as err:  # other tasks still want text
        to_messages({"input": "x", "output": {"k": 1}}, cfg.model_copy(update={"task": "viggo"}))
    assert err.value.reason == "invalid_field"


def test_json_object_answers_are_accepted_by_prepare(tiny_tokenizer):
    cfg = DataConfig(task="json", input_field="input", output_field="output", system_prompt=None)
    rows = [{"input": f"City {i}.", "output": {"city": f"C{i}"}} for i in range(3)]
    rows.append({"input": "Two cities.", "output": [{"city": "A"}, {"city": "B"}]})
    test = [{"input": "Town.", "output": {"city": "T", "country": "X"}}]
    prepared = prepare({"train": placed(rows), "test": placed(test, "t")}, cfg, tiny_tokenizer)
    assert not prepared.quarantine and prepared.report.splits["train"].accepted == 4
    assert prepared.splits["test"][0]["messages"][-1]["content"] == '{"city": "T", "country": "X"}'
    assert prepared.report.field_coverage["output"] == 1.0


# --- 6. byte-order marks and UTF-16 -------------------------------------------------------------------------


def test_utf8_bom_csv_jsonl_json_read_like_plain_utf8(tmp_path):
    (tmp_path / "x.csv").write_bytes(codecs.BOM_UTF8 + b"target,meaning_representation\r\nA game.,inform(name[A])\r\n")
    rows = read_file(tmp_path / "x.csv")
    assert rows == [
        {"target": "A game.", "meaning_representation": "inform(name[A])", "_file": str(tmp_path / "x.csv"), "_line": 2}
    ]
    (tmp_path / "x.jsonl").write_bytes(codecs.BOM_UTF8 + jsonl([row(1), row(2)]).encode())
    assert [r.get("_error") for r in read_file(tmp_path / "x.jsonl")] == [None, None]
    (tmp_path / "x.json").write_bytes(codecs.BOM_UTF8 + json.dumps([row(1)]).encode())
    assert read_file(tmp_path / "x.json")[0]["target"] == "Game 1 is fun."


@pytest.mark.parametrize("codec", ["utf-16", "utf-16-be", "utf-32"])
def test_utf16_and_utf32_with_bom_are_read(tmp_path, codec):
    bom = {"utf-16-be": codecs.BOM_UTF16_BE}.get(codec, b"")  # "utf-16"/"utf-32" write their own BOM
    (tmp_path / "x.jsonl").write_bytes(bom + jsonl([row(1), row(2, target="Ça va?")]).encode(codec))
    assert [r["target"] for r in read_file(tmp_path / "x.jsonl")] == ["Game 1 is fun.", "Ça va?"]
    (tmp_path / "x.csv").write_bytes(bom + "target,meaning_representation\nÉté,inform(name[É])\n".encode(codec))
    assert read_file(tmp_path / "x.csv")[0]["target"] == "Été"


@pytest.mark.parametrize(
    "suffix, data",
    [
        (".jsonl", jsonl([row(1), row(2), row(3)]).encode("utf-16-le")),  # no BOM
        (".csv", "target,meaning_representation\nA,b\nC,d\n".encode("utf-16-le")),
        (".json", json.dumps([row(1)]).encode("utf-16-le")),
        (".jsonl", codecs.BOM_UTF16_LE + b'{"a"\x00\x00\xdc'),  # a BOM, then not UTF-16
    ],
    ids=["jsonl-utf16-no-bom", "csv-utf16-no-bom", "json-utf16-no-bom", "jsonl-broken-utf16"],
)
def test_undecodable_file_is_refused_once_with_an_encoding_row(tmp_path, suffix, data):
    path = tmp_path / f"x{suffix}"
    path.write_bytes(data)
    rows = read_file(path)
    assert len(rows) == 1 and rows[0]["_error"] == "encoding" and rows[0]["_file"] == str(path)
    assert rows[0]["_detail"].startswith("whole file refused")


def test_utf8_file_with_a_stray_nul_is_read_line_by_line(tmp_path):
    (tmp_path / "x.jsonl").write_bytes(b'{"a": "1"}\n{"a": "2\x00"}\n{"a": "3"}\n')
    rows = read_file(tmp_path / "x.jsonl")
    assert [(r["_line"], r.get("_error")) for r in rows] == [(1, None), (2, "unparseable"), (3, None)]
    (tmp_path / "x.csv").write_bytes(b"a,b\n1,2\n3\x00,4\n")
    assert [r["a"] for r in read_file(tmp_path / "x.csv")] == ["1", "3\x00"]


# --- all of it at once, and the ids training reads ----------------------------------------------------------


def problem_folder(tmp_path):
    """train.jsonl (UTF-8 BOM) with one row of every problem, validation.csv saved by Excel (UTF-8 BOM, CRLF),
    test.jsonl in UTF-16 with its BOM; returns the expected reasons per split."""
    train = [json.dumps(row(i)) for i in range(20)]
    train += [json.dumps(row(3))]  # duplicate
    train += [json.dumps({"target": "no answer"})]  # missing_field
    train += [json.dumps({"target": "", "meaning_representation": "x(a[b])"})]  # empty_field
    train += [json.dumps({"target": 5, "meaning_representation": "x(a[b])"})]  # invalid_field
    train += [json.dumps({"messages": [{"role": "bot", "content": "x"}, {"role": "assistant", "content": "y"}]})]
    train += [json.dumps(row(100, target="word " * 300))]  # too_long
    train += [json.dumps(row(50, target="  THE  test   input "))]  # leakage
    train += [json.dumps(row(51, meaning_representation="inform(name[X]"))]  # bad_reference
    train += ["{not json"]  # unparseable
    data = codecs.BOM_UTF8 + "\n".join(train).encode() + b'\n{"target": "\xff\xfe"}\n'  # encoding
    (tmp_path / "train.jsonl").write_bytes(data)
    (tmp_path / "validation.csv").write_bytes(
        codecs.BOM_UTF8 + b"target,meaning_representation\r\nA game.,inform(name[A])\r\nB game.,inform(name[B]\r\n"
    )
    test = [row(60, target="the test input"), row(61), row(61)]  # + duplicate in test
    (tmp_path / "test.jsonl").write_bytes(jsonl(test).encode("utf-16"))
    return {
        "train": {
            "duplicate": 1,
            "missing_field": 1,
            "empty_field": 1,
            "invalid_field": 1,
            "invalid_role": 1,
            "too_long": 1,
            "leakage": 1,
            "bad_reference": 1,
            "unparseable": 1,
            "encoding": 1,
        },
        "validation": {"bad_reference": 1},
        "test": {"duplicate": 1},
    }


def test_folder_with_every_problem_quarantines_each_under_its_reason(tmp_path, tiny_tokenizer):
    expected = problem_folder(tmp_path)
    cfg = DataConfig(source=str(tmp_path), system_prompt=None, max_seq_len=128, max_reject_fraction=1.0)
    prepared = prepare(load_splits(cfg), cfg, tiny_tokenizer)
    report = prepared.report
    assert report.reasons == expected
    assert report.made == [] and report.splits["test"].input == 3
    assert {k: (c.input, c.accepted) for k, c in report.splits.items()} == {
        "train": (30, 20),
        "validation": (2, 1),
        "test": (3, 2),
    }
    for c in report.splits.values():
        assert c.accepted + c.quarantined == c.input
    assert report.field_coverage["target"] > 0.9 and "\ufefftarget" not in report.field_coverage
    stored = stored_and_loaded(prepared.splits)
    for split, records in prepared.splits.items():
        for rec, back in zip(records, stored[split], strict=True):
            ids = tokenize_segments(tiny_tokenizer, rec["segments"], cfg.max_seq_len)
            assert (rec["input_ids"], rec["labels"]) == (ids["input_ids"], ids["labels"]) and rec["input_ids"]
            assert (back["input_ids"], back["labels"]) == (ids["input_ids"], ids["labels"])


def stored_and_loaded(splits):
    """Through the ChatDataset materializer and the local artifact store, as the pipeline hands them to training."""
    from zenml.client import Client

    from materializers.chat_dataset import ChatDatasetMaterializer
    from tuneline.artifacts import ChatDataset

    store = Client().active_stack.artifact_store
    uri = f"{store.path}/test-chat-dataset"
    store.makedirs(uri)
    materializer = ChatDatasetMaterializer(uri, artifact_store=store)
    materializer.save(ChatDataset(splits=splits))
    return materializer.load(ChatDataset).splits
