"""What a finetune run shows in MLflow, on a real local store: the experiment's kind, curves without made-up
points, rates that count what their names say, and sections in reading order. No pipeline run."""

import pytest

from tuneline.registry import tracking
from tuneline.config import LoraConfig, TrainingConfig
from tuneline.train.train_job import TrainJob

CURVES = ("loss", "eval_loss", "learning_rate", "grad_norm", "epoch")


@pytest.fixture
def mlflow_run(tmp_path, monkeypatch):
    """A run in a fresh sqlite store. The tracking URI is put back as it was, unset included: `set_tracking_uri`
    also writes MLFLOW_TRACKING_URI (monkeypatch restores it), and a URI left set would override that variable in
    the tests that use it."""
    import mlflow
    from mlflow.tracking import MlflowClient
    from mlflow.tracking._tracking_service import utils

    previous = utils._tracking_uri  # None unless set in code: the environment or the default decides
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    try:
        client = MlflowClient()
        with mlflow.start_run(experiment_id=client.create_experiment("finetune")) as run:
            yield client, run
    finally:
        mlflow.set_tracking_uri(previous)


def test_experiment_is_marked_as_model_training(mlflow_run):
    client, run = mlflow_run
    tracking.log_params({"lora.r": 8})
    tags = client.get_experiment(run.info.experiment_id).tags
    assert tags[tracking.EXPERIMENT_KIND_TAG] == tracking.EXPERIMENT_KIND == "custom_model_development"


def test_sections_sort_training_first():
    """MLflow orders chart sections by name; training first, the tuned model before the baselines."""
    keys = [tracking.metric_key(s, "x") for s in ("base", "data", "v3", "prompted", "tuned", "train", "throughput")]
    assert [k.split("/")[0] for k in sorted(keys)] == [
        "1_train",
        "2_throughput",
        "3_tuned",
        "4_base",
        "5_prompted",
        "7_data",
        "v3",
    ]
    assert tracking.metric_key("tuned.", "exact_match") == "3_tuned/exact_match"


@pytest.mark.slow
def test_training_logs_curves_from_step_one_and_rates_named_for_what_they_count(
    mlflow_run, tiny_model_dir, tiny_tokenizer, tmp_path
):
    from tuneline.config import DataConfig
    from tuneline.data.sources import load_splits
    from tuneline.train.training import train_lora
    from tuneline.data.validation import prepare

    client, run = mlflow_run
    data = DataConfig(source="synthetic:viggo")
    splits = prepare(load_splits(data), data, tiny_tokenizer).splits
    train = splits["train"][:48]  # one epoch of 8-row batches: 6 steps, so every row is seen once
    cfg = TrainingConfig(epochs=1, batch_size=8, logging_steps=2, eval_steps=3, learning_rate=1e-2)
    job = TrainJob(
        tiny_model_dir,
        train,
        splits["validation"][:8],
        tmp_path,
        lora=LoraConfig(r=8, alpha=16, dropout=0.0),
        training=cfg,
    )
    result = train_lora(job, on_metrics=tracking.log_training_curves)
    tracking.log_training_result(result)

    metrics = client.get_run(run.info.run_id).data.metrics
    for name in CURVES:
        steps = [m.step for m in client.get_metric_history(run.info.run_id, tracking.metric_key("train", name))]
        assert steps and min(steps) >= 1 and len(steps) == len(set(steps)), (name, steps)
    eval_curve = client.get_metric_history(run.info.run_id, tracking.metric_key("train", "eval_loss"))
    assert [m.step for m in eval_curve] == [3, 6] and eval_curve[-1].value == pytest.approx(result.eval_loss)
    assert not [k for k in metrics if "samples_per_second" in k or "runtime" in k or "flos" in k]

    def throughput(name):
        return metrics[tracking.metric_key("throughput", name)]

    assert result.steps == 6 and throughput("rows") == len(train) == result.rows
    assert throughput("seconds") == pytest.approx(result.seconds)
    assert throughput("rows_per_second") == pytest.approx(len(train) / result.seconds, rel=1e-6)
    assert throughput("steps_per_second") == pytest.approx(6 / result.seconds, rel=1e-6)
    assert throughput("tokens_per_second") == pytest.approx(result.tokens / result.seconds, rel=1e-6)
    assert metrics[tracking.metric_key("train", "mean_loss")] == pytest.approx(result.train_loss)
