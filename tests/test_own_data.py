"""Issue 13: a new user's own extraction task. `run.py init` proposes how to read their file and writes a config
that runs; a wrong field mapping names the config key and the fields the rows have; nothing from ViGGO leaks into
their data; a model's versions only compete when they learned the same task from the same source; the gate shows
every reason's first row."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from runner.init_config import write_config
from tuneline.config import DataConfig, load_run_config
from tuneline.data.formats import RowError, to_messages
from tuneline.registry.promotion import lineage_conflict
from tuneline.data.proposal import ProposalError, propose
from tuneline.data.sources import load_splits
from tuneline.data.validation import gate_message, prepare

ROOT = Path(__file__).resolve().parent.parent


def bookings(n: int = 40) -> list[dict]:
    days = ["monday", "friday", "sunday"]
    return [
        {
            "id": i,
            "utterance": f"Book a table for {i % 6 + 1} at Luigi's on {days[i % 3]}, please {i}.",
            "annotation": {"intent": "book", "slots": {"people": i % 6 + 1, "day": days[i % 3]}},
        }
        for i in range(n)
    ]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.mark.parametrize(
    "rows, task, expected",
    [
        (bookings(), None, ("fields", "json", "utterance", "annotation")),
        # answers given as JSON text, not objects
        (
            [{"q": f"long question number {i} here", "json": json.dumps({"n": i})} for i in range(20)],
            None,
            ("fields", "json", "q", "json"),
        ),
        (
            [
                {"target": f"I like Game {i}.", "meaning_representation": f"give_opinion(name[Game {i}], rating[good])"}
                for i in range(20)
            ],
            None,
            ("fields", "viggo", "target", "meaning_representation"),
        ),
        (
            [{"sentence": f"what time does shop {i} open", "label": "hours"} for i in range(20)],
            None,
            ("fields", "text", "sentence", "label"),
        ),
        (
            [{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "{}"}]}] * 5,
            "json",
            ("chat", "json", None, None),
        ),
    ],
)
def test_proposal_reads_the_rows(rows, task, expected):
    p = propose(rows, task)
    assert (p.format, p.task, p.input_field, p.output_field) == expected
    assert p.why and p.rows_read == len(rows)


def test_proposal_refuses_a_task_no_field_fits():
    with pytest.raises(ProposalError, match=r"no field reads as task 'json'.*'sentence' \(str\)"):
        propose([{"sentence": "a b", "label": "x"}] * 10, "json")


def test_init_writes_a_config_that_loads_and_reads_every_row(tmp_path, tiny_tokenizer):
    data = write_jsonl(tmp_path / "Table Bookings.jsonl", bookings())
    proposal, out = write_config(data, tmp_path / "bookings.yaml")
    config, zenml_config = load_run_config(out)
    assert zenml_config["model"]["name"] == "tuneline-table-bookings"  # its own lineage, not tuneline-viggo
    assert (config.data.task, config.data.input_field, config.data.output_field) == ("json", "utterance", "annotation")
    assert config.promotion.primary_metric == "exact_match" and config.data.source == str(data)
    assert "Written by `python run.py init" in out.read_text()
    prepared = prepare(load_splits(config.data), config.data, tiny_tokenizer)
    assert prepared.report.reject_fraction == 0.0
    with pytest.raises(FileExistsError):
        write_config(data, out)


@pytest.mark.slow
def test_init_command(tmp_path):
    data = write_jsonl(tmp_path / "bookings.jsonl", bookings())
    out = tmp_path / "mine.yaml"
    proc = subprocess.run(
        [sys.executable, "run.py", "init", "--data", str(data), "--out", str(out)],
        cwd=ROOT,
        env=os.environ.copy(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "task 'json', input 'utterance', answer 'annotation'" in proc.stdout and out.is_file()
    bad = subprocess.run(
        [sys.executable, "run.py", "init", "--data", str(tmp_path / "none.jsonl")],
        cwd=ROOT,
        env=os.environ.copy(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode == 2 and "none.jsonl" in bad.stderr


def test_wrong_mapping_names_the_config_key_and_the_fields_present():
    with pytest.raises(
        RowError,
        match=r"field 'target' is missing; the row has 'id', 'utterance', 'annotation': "
        r"set data.input_field",
    ):
        to_messages(bookings(1)[0], DataConfig(task="json"))
    with pytest.raises(RowError, match=r"field 'meaning_representation' is missing.*set data.output_field"):
        to_messages(bookings(1)[0], DataConfig(task="json", input_field="utterance"))


def test_defaults_carry_nothing_of_viggo():
    messages = to_messages(bookings(1)[0], DataConfig(task="json", input_field="utterance", output_field="annotation"))
    assert [m["role"] for m in messages] == ["user", "assistant"]
    assert "video game" not in json.dumps(messages)


def test_lineage_conflict_names_task_and_source():
    recorded = {"source": "gem/viggo", "task": "viggo", "rows": {}}
    problem = lineage_conflict("model 'm' production version 3", recorded, "./mine.jsonl", "json")
    assert "task 'viggo' (this run: 'json'), source 'gem/viggo' (this run: './mine.jsonl')" in problem
    assert "model: name:" in problem
    assert lineage_conflict("v", recorded, "gem/viggo", "viggo") is None
    assert lineage_conflict("v", {"source": "gem/viggo"}, "gem/viggo", "json") is None  # an older version: no task


def test_gate_shows_the_first_row_of_every_reason(tmp_path, tiny_tokenizer):
    rows = [{"target": "", "meaning_representation": "inform(name[a])"}] * 8  # empty input: a major reason
    rows += [{"target": "Halo is good.", "meaning_representation": "not an mr"}]  # bad_reference: one row, last
    data = write_jsonl(tmp_path / "d.jsonl", rows)
    cfg = DataConfig(source=str(data))
    report_and_rows = prepare(load_splits(cfg), cfg, tiny_tokenizer)
    message = gate_message(report_and_rows.report, report_and_rows.quarantine, examples=3)
    assert "bad_reference" in message.split("\n", 1)[1] and "empty_field" in message.split("\n", 1)[1]


def test_a_file_with_several_references_per_input_is_split_by_input(tmp_path, tiny_tokenizer):
    """A data-to-text corpus: three references per input. Carving by row put copies of one input in train and
    test (28% leakage in the issue); carving by input keeps each input's rows together."""
    rows = [
        {"input": f"name[Place {i}], food[Thai]", "output": f"Place {i} serves Thai food, version {k}."}
        for i in range(60)
        for k in range(3)
    ]
    data = write_jsonl(tmp_path / "d2t.jsonl", rows)
    cfg = DataConfig(source=str(data), task="text", input_field="input", output_field="output")
    splits = load_splits(cfg)
    inputs = {s: {r["input"] for r in rows} for s, rows in splits.items()}
    assert not (inputs["train"] & inputs["test"]) and not (inputs["train"] & inputs["validation"])
    assert sum(len(r) for r in splits.values()) == 180 and all(len(r) % 3 == 0 for r in splits.values())
    prepared = prepare(splits, cfg, tiny_tokenizer)
    assert prepared.report.reason_totals() == {}  # no leakage, no duplicates


def data_to_text(keys: tuple[str, str]) -> list[dict]:
    return [
        {keys[0]: f"name[Place {i}], food[Thai]", keys[1]: f"Place {i} serves Thai food."}
        if keys[0] == "mr"
        else {keys[0]: f"Place {i} serves Thai food.", keys[1]: f"name[Place {i}], food[Thai]"}
        for i in range(20)
    ]


@pytest.mark.parametrize("keys", [("mr", "ref"), ("ref", "mr")])
def test_two_plain_text_fields_are_a_guess_init_asks_about(keys):
    """Issue 27: the key order decided the direction, so one order trained the reverse task with exit 0."""
    rows = data_to_text(keys)
    with pytest.raises(ProposalError, match=r"is a guess: .*One row: .*Thai.*--input FIELD --answer FIELD"):
        propose(rows)
    p = propose(rows, input_field="mr", answer_field="ref")
    assert (p.task, p.input_field, p.output_field) == ("text", "mr", "ref")
    assert p.example == ("name[Place 0], food[Thai]", "Place 0 serves Thai food.")
    assert p.why == ["'ref': the answer (--answer), task 'text'", "'mr': the input (--input)"]


def test_reasons_are_true():
    """The only other field is not called the longest one."""
    rows = [{"text": f"a long sentence about shop {i} and its hours", "label": "hours", "note": "x"} for i in range(20)]
    assert propose(rows).why[-1] == "'text' is text, with an input-like name: the input"
    rows = [{"body": f"a long sentence about shop {i}", "label": "hours"} for i in range(20)]
    assert propose(rows).why[-1] == "'body' is text, the only other text field: the input"


@pytest.mark.slow
def test_init_reads_paths_from_where_they_were_typed(tmp_path):
    """scripts/in-venv changes to the repository root; a relative --data is still the user's."""
    (tmp_path / "data").mkdir()
    write_jsonl(tmp_path / "data" / "bookings.jsonl", bookings())
    run = [str(ROOT / "scripts" / "in-venv"), "python", "run.py", "init"]
    ok = subprocess.run(
        [*run, "--data", "data/bookings.jsonl", "--out", "mine.yaml"],
        cwd=tmp_path,
        env=os.environ.copy(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert ok.returncode == 0, ok.stderr
    assert "wrote mine.yaml" in ok.stdout and (tmp_path / "mine.yaml").is_file()
    assert re.search(r"one row as it will be learned: \"Book a table for 1 .*\" -> '\{\"intent", ok.stdout), ok.stdout
    config, _ = load_run_config(tmp_path / "mine.yaml")
    assert Path(config.data.source).resolve() == (tmp_path / "data" / "bookings.jsonl").resolve()
    missing = subprocess.run(
        [*run, "--data", "data/e2e.jsonl"],
        cwd=tmp_path,
        env=os.environ.copy(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert missing.returncode == 2
    assert f"no such file or folder: {tmp_path / 'data' / 'e2e.jsonl'}" in missing.stderr, missing.stderr


def test_empty_json_answers_have_no_fields():
    """Issue 27: `{}` was scored as a made-up field named `value`."""
    from tuneline.evaluate.metrics import score

    _, rows = score("json", ["{}", '{"a": 1}', "{}", "[]"], ["{}", "{}", '{"a": 1}', "[]"])
    assert [r["exact"] for r in rows] == [True, False, False, True]
    assert all("value" not in r["fields"] and "[]" not in r["fields"] for r in rows)
    assert rows[1]["fields"] == {"a": "extra"} and rows[2]["fields"] == {"a": "missing"}
