import csv

import pytest

from tests.test_monitoring import store  # noqa: F401 (fixture: a fresh MLflow store)

from tuneline.evaluate.review import RUBRIC, ReviewError, read_scores, sample_rows, write_sheet

PREDS = [{"input": f"in {i}", "reference": f"ref {i}", "prediction": f"pred {i}"} for i in range(30)]


def scored(tmp_path, edit=None):
    csv_path, html_path = write_sheet(sample_rows(PREDS, 5, 0, "m", "3"), tmp_path, "sheet")
    with csv_path.open() as fh:
        rows = list(csv.DictReader(fh))
    for i, row in enumerate(rows):
        for j, col in enumerate(RUBRIC):
            row[col] = str(1 + (i + j) % 5)
    if edit:
        edit(rows)
    with csv_path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return csv_path, html_path


def test_export_samples_and_round_trips(tmp_path):
    rows = sample_rows(PREDS, 5, 0, "m", "3")
    assert len(rows) == 5 and rows == sample_rows(PREDS, 5, 0, "m", "3")
    assert all(r[c] == "" for r in rows for c in RUBRIC)
    csv_path, html_path = scored(tmp_path)
    assert "pred" in html_path.read_text()
    model, version, means, n = read_scores(csv_path)
    assert (model, version, n) == ("m", "3", 5)
    # relevance scores are 1..5 over the five rows, so their mean is 3
    assert means["relevance"] == pytest.approx(3.0) and set(means) == set(RUBRIC)


def test_out_of_range_and_missing_scores_name_the_row(tmp_path):
    def edit(rows):
        rows[1]["accuracy"] = "7"
        rows[3]["fluency"] = ""

    csv_path, _ = scored(tmp_path, edit)
    with pytest.raises(ReviewError) as err:
        read_scores(csv_path)
    assert f"{csv_path}:3 (id " in str(err.value) and "'accuracy' must be an integer 1-5, got '7'" in str(err.value)
    assert f"{csv_path}:5 (id " in str(err.value) and "'fluency' is empty" in str(err.value)


def test_sheet_for_several_versions_is_refused(tmp_path):
    csv_path, _ = scored(tmp_path, lambda rows: rows[0].update(version="4"))
    with pytest.raises(ReviewError, match="several model versions"):
        read_scores(csv_path)


def test_lowest_confidence_export_picks_the_least_confident_first(tmp_path):
    from run import parse_review_args
    from tuneline.evaluate.review import least_confident_rows

    preds = [p | {"confidence": c} for p, c in zip(PREDS, [0.5, 0.1, 0.9, 0.05, 0.3] + [0.99] * 25)]
    rows = least_confident_rows(preds, 3, "m", "3")
    assert [r["id"] for r in rows] == [3, 1, 4] and [r["confidence"] for r in rows] == [0.05, 0.1, 0.3]
    assert "0.05" in write_sheet(rows, tmp_path, "sheet")[0].read_text()
    with pytest.raises(ReviewError, match="before answers carried a confidence"):
        least_confident_rows(PREDS, 3, "m", "3")
    args = parse_review_args(["export", "--config", "c.yaml", "--lowest-confidence", "3"])
    assert args.lowest_confidence == 3
    with pytest.raises(SystemExit):
        parse_review_args(["export", "--config", "c.yaml", "--lowest-confidence", "3", "--n", "5"])


# --- served requests: sampled least confident first, corrected through the sheet ----------------------------


def test_served_requests_sheet_round_trips_corrections_onto_their_traces(tmp_path, store):
    import time

    from run import parse_review_args
    from tests.test_monitoring import record
    from tuneline.evaluate.review import SERVED, read_corrections, served_model, served_rows
    from tuneline.serve.recording import Window, log_correction, read_requests

    now = int(time.time() * 1000)
    ids = [record("m", [f"Game {i} is fun."], ["inform"], now - 5000 + i) for i in range(4)]
    hidden = record("m", ["Hidden text."], ["inform"], now - 100, mode="redacted")
    log_correction(ids[3], "inform(name[Game 3])", "viggo")  # corrected already: not asked again
    records = read_requests("m", Window(now - 60_000, now))
    for r, confidence in zip(records, [0.7, 0.2, 0.5, 0.1, 0.05]):
        r["confidence"] = confidence
    rows = served_rows(records, 2, "m")
    assert [r["id"] for r in rows] == [f"{SERVED}{ids[1]}/0", f"{SERVED}{ids[2]}/0"]  # least sure first
    assert hidden not in str(rows) and rows[0]["reference"] == "" and rows[0]["prediction"].startswith("inform(")
    csv_path, html_path = write_sheet(rows, tmp_path, "served")
    assert "right answer in the CSV's <code>reference</code>" in html_path.read_text()
    assert served_model(csv_path) == "m" and served_model(scored(tmp_path / "test")[0]) is None

    def fill(*answers):
        with csv_path.open() as fh:
            filled = list(csv.DictReader(fh))
        for row, answer in zip(filled, answers):
            row["reference"] = answer
        with csv_path.open("w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(filled[0]))
            writer.writeheader()
            writer.writerows(filled)

    fill("give_opinion(name[Game 1], rating[poor])", "Game 2 is good")
    with pytest.raises(ReviewError, match=r"served\.csv:3 \(id trace:.*\): the corrected answer does not parse"):
        read_corrections(csv_path, lambda version: "viggo")
    assert read_requests("m", Window(now - 60_000, now))[1]["correction"] is None  # nothing stored
    fill("give_opinion(name[Game 1], rating[poor])", "")  # an empty reference skips its row
    [correction] = read_corrections(csv_path, {"1": "viggo"}.__getitem__)
    log_correction(correction.trace_id, correction.answer, correction.task, correction.index, "review")
    after = read_requests("m", Window(now - 60_000, now))
    assert after[1]["correction"]["value"] == "give_opinion(name[Game 1], rating[poor])"
    assert after[2]["correction"] is None
    assert parse_review_args(["export", "--config", "c.yaml", "--from-serving", "--n", "5"]).from_serving
