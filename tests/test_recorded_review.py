"""`run.py review export --from-serving` and `review import` of its sheet, on the session's ZenML store and its
MLflow tracker. Named to run after the pipeline tests, whose first run must be the store's first use."""

import csv
import time

import pytest

from tests.test_monitoring import record


@pytest.mark.slow  # the session's real ZenML store and stack
def test_served_requests_sheet_is_exported_and_its_corrections_imported_through_the_cli(tmp_path, monkeypatch, capsys):
    import mlflow
    from zenml import log_metadata
    from zenml.client import Client

    from run import main
    from runner.first_use import set_up
    from tuneline.serve.recording import Window, read_requests

    monkeypatch.chdir(tmp_path)
    set_up()
    client = Client()
    client.create_model(name="reviewed")
    version = client.create_model_version(model_name_or_id="reviewed")
    assert version.name == "1"  # the version the recorded requests name
    log_metadata(metadata={"raw_data": {"task": "viggo"}}, model_version_id=version.id)
    mlflow.set_tracking_uri(client.active_stack.experiment_tracker.get_tracking_uri())
    now = int(time.time() * 1000)
    traces = [record("reviewed", [f"Game {i} is fun."], ["inform"], now - 1000 + i) for i in range(3)]
    config = tmp_path / "reviewed.yaml"
    config.write_text("model:\n  name: reviewed\nparameters: {}\n")
    export = ["review", "export", "--config", str(config), "--from-serving", "--model-version", "1", "--n", "2"]
    assert main([*export, "--out", str(tmp_path)]) == 0
    sheet = tmp_path / "review-reviewed-v1-served.csv"
    with sheet.open() as fh:
        rows = list(csv.DictReader(fh))
    assert [r["id"] for r in rows] == [f"trace:{t}/0" for t in traces[:2]]

    def write(*answers):
        for row, answer in zip(rows, answers):
            row["reference"] = answer
        with sheet.open("w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)

    write("inform(name[Game 0], rating[good])", "Game 1 is fun")
    assert main(["review", "import", str(sheet)]) == 2
    assert "served.csv:3 (id trace:" in capsys.readouterr().err
    write("inform(name[Game 0], rating[good])", "")
    assert main(["review", "import", str(sheet)]) == 0
    assert "stored 1 corrections on reviewed's recorded requests" in capsys.readouterr().out
    corrections = [r["correction"] for r in read_requests("reviewed", Window(0, int(time.time() * 1000) + 1))]
    assert corrections[0]["value"] == "inform(name[Game 0], rating[good])" and corrections[1:] == [None, None]
