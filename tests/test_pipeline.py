"""End to end: `run.py` on the smoke config through real ZenML (own config dir, SQLite store) and real MLflow."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # real pipelines, processes or deployments: minutes

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = {
    "load_data": "raw_data",
    "prepare_dataset": "chat_dataset",  # also "quarantine" and "data_report"
    "train_lora": "lora_adapter",
    "evaluate_base": "eval_base",
    "evaluate_tuned": "eval_tuned",
    "promote": "promotion_decision",  # also "eval_report"
}


def run_cli(*args, tmp_path, expect_ok=True):
    summary = tmp_path / f"summary-{len(list(tmp_path.glob('summary-*')))}.json"
    proc = subprocess.run(
        [sys.executable, "run.py", *args, "--summary-json", str(summary)],
        cwd=ROOT,
        env=os.environ.copy(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    if expect_ok:
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        return json.loads(summary.read_text()), proc
    return None, proc


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("runs")
    first, first_proc = run_cli("--config", "configs/smoke.yaml", tmp_path=tmp)
    second, _ = run_cli("--config", "configs/smoke.yaml", tmp_path=tmp)
    forced, _ = run_cli("--config", "configs/smoke.yaml", "--no-cache", tmp_path=tmp)
    return first, second, forced, first_proc


def test_summary_json_and_table(runs):
    first, _, _, proc = runs
    for key in (
        "zenml_run_id",
        "model_name",
        "model_version",
        "stage",
        "mlflow_run_id",
        "mlflow_tracking_uri",
        "base_metrics",
        "tuned_metrics",
        "promoted",
        "promotion_reason",
    ):
        assert first[key] is not None, key
    assert first["model_name"] == "tuneline-smoke"
    assert "registered ZenML stack 'tuneline-local'" in proc.stdout + proc.stderr
    assert "promotion:" in proc.stdout and "rougeL" in proc.stdout


def test_artifacts_named_and_loadable(runs):
    from zenml.client import Client

    from tuneline.artifacts import ChatDataset, LoraAdapter
    from tuneline.evaluate.evaluation import EvalResult

    run = Client().get_pipeline_run(runs[0]["zenml_run_id"])
    for step, name in ARTIFACTS.items():
        assert name in run.steps[step].outputs, (step, list(run.steps[step].outputs))
    assert {"quarantine", "data_report"} <= set(run.steps["prepare_dataset"].outputs)

    def out(step):
        return run.steps[step].outputs[ARTIFACTS[step]][0]

    dataset = out("prepare_dataset").load()
    assert isinstance(dataset, ChatDataset) and {"train", "validation", "test"} <= set(dataset.splits)
    adapter = out("train_lora").load()
    assert isinstance(adapter, LoraAdapter) and (Path(adapter.path) / "adapter_config.json").is_file()
    tuned = out("evaluate_tuned").load()
    assert isinstance(tuned, EvalResult) and tuned.metrics == runs[0]["tuned_metrics"]
    base = out("evaluate_base").load()
    assert base.test_set_hash == tuned.test_set_hash and base.n_examples == tuned.n_examples == 16
    visualizations = out("evaluate_tuned").visualizations
    assert visualizations and visualizations[0].type.value == "html"
    report = run.steps["promote"].outputs["eval_report"][0]
    assert report.visualizations[0].type.value == "html"
    html = report.load()
    for section in ("Base vs tuned", "Per field", "Error taxonomy", "Guards", "Worst"):
        assert section in html


def test_model_version_stage_and_metadata(runs):
    from zenml.client import Client

    first = runs[0]
    version = Client().get_model_version(first["model_name"], first["model_version"])
    meta = version.run_metadata
    assert meta["tuned"]["rougeL"] == pytest.approx(first["tuned_metrics"]["rougeL"])
    assert meta["base"]["rougeL"] == pytest.approx(first["base_metrics"]["rougeL"])
    decision = meta["promotion"]
    assert decision["promote"] == first["promoted"] and decision["reference"] == "base model"
    assert decision["ci_low"] <= decision["difference"] <= decision["ci_high"]
    # The stage follows the rule, whatever the numbers are: the interval above min_gain and every guard ok.
    rule = decision["ci_low"] > decision["min_gain"] and all(g["ok"] for g in decision["guards"].values())
    assert first["promoted"] == rule
    assert first["stage"] == ("production" if rule else None)
    # What a scheduled run records of the data it found: the stored artifact's hash and its row counts.
    run = Client().get_pipeline_run(first["zenml_run_id"])
    raw = run.steps["load_data"].outputs["raw_data"][0]
    assert meta["raw_data"]["content_hash"] == raw.content_hash and meta["raw_data"]["rows"] == raw.load().counts()
    assert meta["chat_dataset"]["quarantined"] == {s: c["quarantined"] for s, c in first["data"].items()}


def test_mlflow_has_params_curve_metrics_and_artifacts(runs):
    from mlflow.tracking import MlflowClient

    from tuneline.registry.tracking import metric_key

    first = runs[0]
    client = MlflowClient(tracking_uri=first["mlflow_tracking_uri"])
    run = client.get_run(first["mlflow_run_id"])
    assert run.data.params["training.max_steps"] == "120"
    assert run.data.params["lora.r"] == "8"
    assert run.data.params["data.source"] == "synthetic:viggo"
    assert run.data.params["evaluation.max_samples"] == "16"
    assert run.data.params["promotion.primary_metric"] == "rougeL"
    curve = client.get_metric_history(run.info.run_id, metric_key("train", "loss"))
    assert len(curve) == 120 // 5 and curve[-1].step == 120
    for label in ("base", "tuned"):
        for metric in ("exact_match", "slot_accuracy", "act_accuracy", "rougeL"):
            assert run.data.metrics[metric_key(label, metric)] == pytest.approx(first[f"{label}_metrics"][metric])
    paths = {a.path for a in client.list_artifacts(run.info.run_id, "adapter")}
    assert "adapter/adapter_config.json" in paths
    evals = {a.path for a in client.list_artifacts(run.info.run_id, "eval")}
    assert {"eval/tuned_predictions.jsonl", "eval/tuned_report.html", "eval/base_report.html"} <= evals
    assert any(a.path.endswith("loss_curve.png") for a in client.list_artifacts(run.info.run_id, "training"))
    if first["promoted"]:  # the MLflow registry mirrors the ZenML stage
        mv = client.get_model_version_by_alias(first["model_name"], "production")
        assert mv.tags["zenml_version"] == str(first["model_version_number"])


def test_second_run_is_cached_and_never_demotes(runs):
    from zenml.client import Client
    from zenml.enums import ExecutionStatus

    first, second, forced, _ = runs
    run = Client().get_pipeline_run(second["zenml_run_id"])
    for step in ("prepare_dataset", "train_lora", "evaluate_tuned"):
        assert run.steps[step].status == ExecutionStatus.CACHED, step
    for step in ("load_data", "promote"):  # always run: data as it is now, registry as it is now
        assert run.steps[step].status == ExecutionStatus.COMPLETED, step
    assert second["model_version_number"] == first["model_version_number"] + 1
    assert not second["promoted"] and second["tuned_metrics"] == first["tuned_metrics"]
    if first["promoted"]:  # compared with production's stored predictions on the same examples: a tie
        assert (
            "production version 1" in second["promotion_reason"]
            and "CI [+0.0000, +0.0000]" in second["promotion_reason"]
        )
    if first["promoted"]:
        still = Client().get_model_version(first["model_name"], first["model_version"])
        assert still.stage == "production"
    forced_run = Client().get_pipeline_run(forced["zenml_run_id"])
    assert forced_run.steps["train_lora"].status == ExecutionStatus.COMPLETED
    # The cached version still has its MLflow run (the original train step's) and its registry entry.
    from mlflow.tracking import MlflowClient

    assert second["mlflow_run_id"] == first["mlflow_run_id"] is not None
    registry = MlflowClient(tracking_uri=first["mlflow_tracking_uri"]).search_model_versions(
        f"name='{first['model_name']}'"
    )
    assert {str(s["model_version_number"]) for s in (first, second, forced)} <= {
        v.tags["zenml_version"] for v in registry
    }


def test_unknown_config_key_fails_before_zenml(tmp_path):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("parameters:\n  training:\n    lerning_rate: 0.1\n")
    _, proc = run_cli("--config", str(cfg), tmp_path=tmp_path, expect_ok=False)
    assert proc.returncode == 2
    assert f"{cfg}: invalid config" in proc.stderr and "parameters.training.lerning_rate: unknown key" in proc.stderr


def test_missing_data_path_fails_before_zenml(tmp_path):
    _, proc = run_cli(
        "--config", "configs/smoke.yaml", "--set", "data.source=./no/such.jsonl", tmp_path=tmp_path, expect_ok=False
    )
    assert proc.returncode == 2 and "data.source: no such file or folder" in proc.stderr


def _good_rows(n):
    return [
        json.dumps(
            {
                "target": f"I think Game {i} is good.",
                "meaning_representation": f"give_opinion(name[Game {i}], rating[good])",
            }
        )
        for i in range(n)
    ]


def test_malformed_jsonl_line_is_quarantined_and_stops_before_training(tmp_path):
    from zenml.client import Client
    from zenml.enums import ExecutionStatus

    data = tmp_path / "data.jsonl"
    rows = _good_rows(7)
    data.write_text("\n".join(rows[:5] + ['{"target": "cut off'] + rows[5:]) + "\n")
    # Other data is another model's lineage (the smoke model's production version learned synthetic:viggo).
    config = tmp_path / "malformed.yaml"
    config.write_text(
        (ROOT / "configs/smoke.yaml").read_text().replace("name: tuneline-smoke", "name: tuneline-malformed")
    )
    _, proc = run_cli("--config", str(config), "--set", f"data.source={data}", tmp_path=tmp_path, expect_ok=False)
    assert proc.returncode == 1
    assert "12.5% of input rows were quarantined, above data.max_reject_fraction 5.0%" in proc.stderr
    assert f"{data}:6: unparseable: not valid JSON" in proc.stderr
    run = Client().get_pipeline("finetune").last_run
    assert run.steps["check_data"].status == ExecutionStatus.FAILED
    assert "train_lora" not in run.steps or run.steps["train_lora"].status != ExecutionStatus.COMPLETED
    quarantine = run.steps["prepare_dataset"].outputs["quarantine"][0].load()
    assert [(q["line"], q["reason"]) for q in quarantine.rows] == [(6, "unparseable")]
    assert quarantine.rows[0]["raw"] == '{"target": "cut off'


def _prepare_only(tmp_path, *args):
    proc = subprocess.run(
        [sys.executable, "run.py", "--config", "configs/smoke.yaml", "--prepare-only", *args],
        cwd=ROOT,
        env=os.environ.copy(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    return proc


def test_prepare_only_reports_messy_file_and_caches_on_content(tmp_path):
    from zenml.client import Client
    from zenml.enums import ExecutionStatus

    data = tmp_path / "messy.jsonl"
    rows = _good_rows(40)
    data.write_bytes(("\n".join(rows + [rows[0], '{"target": "x"}']) + "\n").encode() + b'{"target": "\xff"}\n')
    proc = _prepare_only(tmp_path, "--set", f"data.source={data}", "--set", "data.max_reject_fraction=0.1")
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = proc.stdout
    for reason in ("duplicate", "missing_field", "encoding"):
        assert re.search(rf"quarantined \w+\s+{reason}\s+1\b", out), (reason, out[-1500:])
    assert re.search(r"quarantined share: 6\.98% \(limit 10\.00%\) -> passed", out)
    report = Client().get_pipeline("prepare_data").last_run.steps["prepare_dataset"].outputs["data_report"][0].load()
    assert sum(c.input for c in report.splits.values()) == 43
    assert sum(c.accepted + c.quarantined for c in report.splits.values()) == 43

    again = _prepare_only(tmp_path, "--set", f"data.source={data}", "--set", "data.max_reject_fraction=0.1")
    steps = Client().get_pipeline("prepare_data").last_run.steps
    assert again.returncode == 0 and steps["prepare_dataset"].status == ExecutionStatus.CACHED
    data.write_text("\n".join(_good_rows(41)) + "\n")  # the file changed: prepare must run again
    changed = _prepare_only(tmp_path, "--set", f"data.source={data}", "--set", "data.max_reject_fraction=0.1")
    steps = Client().get_pipeline("prepare_data").last_run.steps
    assert changed.returncode == 0 and steps["prepare_dataset"].status == ExecutionStatus.COMPLETED

    strict = _prepare_only(
        tmp_path,
        "--set",
        f"data.source={data}",
        "--set",
        "data.max_reject_fraction=0.0",
        "--set",
        "data.max_seq_len=16",
    )
    assert strict.returncode == 1 and "too_long" in strict.stdout and "above data.max_reject_fraction" in strict.stderr


def _cli(*args, timeout=300):
    return subprocess.run(
        [sys.executable, "run.py", *args],
        cwd=ROOT,
        env=os.environ.copy(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_evaluate_only_reproduces_stored_scores(runs):
    first = runs[0]
    version = _cli("--config", "configs/smoke.yaml", "--evaluate-only", "--model-version", str(first["model_version"]))
    assert version.returncode == 0, version.stderr[-2000:]
    assert f"rougeL           {first['tuned_metrics']['rougeL']:.4f}" in version.stdout
    base = _cli("--config", "configs/smoke.yaml", "--evaluate-only", "--model-version", "base")
    assert base.returncode == 0 and f"rougeL           {first['base_metrics']['rougeL']:.4f}" in base.stdout
    missing = _cli("--config", "configs/smoke.yaml", "--evaluate-only", "--model-version", "99")
    assert missing.returncode == 1 and "has no version '99'" in missing.stderr


def test_review_export_import_round_trip(runs, tmp_path):
    import csv

    from mlflow.tracking import MlflowClient
    from zenml.client import Client

    first = runs[0]
    exported = _cli(
        "review",
        "export",
        "--config",
        "configs/smoke.yaml",
        "--model-version",
        str(first["model_version"]),
        "--n",
        "4",
        "--out",
        str(tmp_path),
    )
    assert exported.returncode == 0, exported.stderr[-2000:]
    sheet = tmp_path / f"review-{first['model_name']}-v{first['model_version']}.csv"
    with sheet.open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 4 and (tmp_path / sheet.name.replace(".csv", ".html")).is_file()
    for row, score in zip(rows, ("5", "4", "4", "3")):
        row.update(relevance=score, accuracy=score, fluency="5", format="2")

    def save(accuracy_of_third_row: str) -> None:
        rows[2]["accuracy"] = accuracy_of_third_row
        with sheet.open("w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)

    save("9")
    bad = _cli("review", "import", str(sheet))
    assert bad.returncode == 2 and f"{sheet}:4 (id" in bad.stderr and "got '9'" in bad.stderr
    save("4")
    good = _cli("review", "import", str(sheet))
    assert good.returncode == 0, good.stderr[-2000:]
    meta = Client().get_model_version(first["model_name"], first["model_version"]).run_metadata["human_review"]
    assert meta["accuracy"] == pytest.approx(4.0) and meta["format"] == pytest.approx(2.0) and meta["rows"] == 4
    client = MlflowClient(tracking_uri=first["mlflow_tracking_uri"])
    assert client.get_run(first["mlflow_run_id"]).data.metrics["review.accuracy"] == pytest.approx(4.0)


def test_changed_test_set_rescores_production_on_the_same_examples(runs, tmp_path):
    first = runs[0]
    assert first["promoted"], "the seeded smoke run must promote version 1, or there is nothing to re-score"
    summary, _ = run_cli("--config", "configs/smoke.yaml", "--set", "evaluation.max_samples=12", tmp_path=tmp_path)
    # Training is cached (only `evaluation` changed), so the candidate is production's own adapter: re-scored on
    # the same 12 examples, the two tie exactly, which the stored 16-example predictions could not show.
    assert summary["n_test_examples"] == 12
    assert f"production version {first['model_version']}" in summary["promotion_reason"]
    assert "CI [+0.0000, +0.0000]" in summary["promotion_reason"] and not summary["promoted"]


def test_export_merges_a_version_into_a_plain_hf_folder(runs, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    first = runs[0]
    out = tmp_path / "merged"
    proc = _cli(
        "--config", "configs/smoke.yaml", "--export", "--model-version", str(first["model_version"]), "--out", str(out)
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "merged model: artifact 'merged_model'" in proc.stdout
    assert (out / "model.safetensors").is_file() and not (out / "adapter_config.json").exists()
    model, tokenizer = AutoModelForCausalLM.from_pretrained(out), AutoTokenizer.from_pretrained(out)
    enc = tokenizer(
        tokenizer.apply_chat_template(
            [{"role": "user", "content": "Halo is good."}], tokenize=False, add_generation_prompt=True
        ),
        return_tensors="pt",
    )
    with torch.no_grad():
        assert torch.isfinite(model(**enc).logits).all()


def test_new_training_sample_reuses_the_base_scores(runs, tmp_path):
    """evaluate_base is keyed on the rows it reads (the selected test rows), not the whole dataset."""
    from zenml.client import Client
    from zenml.enums import ExecutionStatus

    summary, _ = run_cli(
        "--config",
        "configs/smoke.yaml",
        "--set",
        "data.max_train_samples=48",
        "--set",
        "training.max_steps=10",
        tmp_path=tmp_path,
    )
    run = Client().get_pipeline_run(summary["zenml_run_id"])
    for step in ("prepare_dataset", "select_examples", "train_lora", "evaluate_tuned"):
        assert run.steps[step].status == ExecutionStatus.COMPLETED, step
    assert run.steps["evaluate_base"].status == ExecutionStatus.CACHED
    assert summary["base_metrics"] == runs[0]["base_metrics"]


def test_other_data_under_the_same_model_name_is_refused_before_training(runs, tmp_path):
    """A copy of the config with only `data.source` changed would add a version to the smoke model's lineage."""
    data = tmp_path / "mine.jsonl"
    data.write_text(json.dumps({"target": "Halo is fun.", "meaning_representation": "inform(name[Halo])"}) + "\n")
    _, proc = run_cli(
        "--config", "configs/smoke.yaml", "--set", f"data.source={data}", tmp_path=tmp_path, expect_ok=False
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert (
        f"model 'tuneline-smoke' production version {runs[0]['model_version']} learned source "
        f"'synthetic:viggo' (this run: '{data}')" in proc.stderr
    )
    assert "Step train_lora has started" not in proc.stdout
