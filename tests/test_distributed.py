"""`training.num_processes` > 1, for real: two CPU processes (gloo) under `accelerate launch`, on the tiny model."""

import json
import math
import shutil

import pytest
import torch

from tuneline.config import DataConfig, EvaluationConfig, LoraConfig, TrainingConfig
from tuneline.train.distributed import DistributedTrainingError, train_distributed
from tuneline.train.train_job import TrainJob

pytestmark = pytest.mark.slow  # real pipelines, processes or deployments: minutes

LORA = LoraConfig(r=8, alpha=16, dropout=0.0)


@pytest.fixture(scope="module")
def splits(tiny_tokenizer):
    from tuneline.data.sources import load_splits
    from tuneline.data.validation import prepare

    data = DataConfig(source="synthetic:viggo")
    return prepare(load_splits(data), data, tiny_tokenizer).splits


def _base_answer_loss(model_dir, tokenizer, records) -> float:
    """Mean loss per answer token of the untrained base over `records`: what a first training step must log."""
    from tuneline.train.batching import PadCollator
    from tuneline.models.modeling import load_model
    from tuneline.train.trainer import answer_loss

    model = load_model(model_dir).eval()
    batch = PadCollator(tokenizer.pad_token_id)(records)
    with torch.no_grad():
        return float(answer_loss(model, batch))


def test_two_processes_train_one_synchronized_adapter_and_resume(tiny_model_dir, tiny_tokenizer, splits, tmp_path):
    from tuneline.evaluate.evaluation import evaluate_model

    cfg = TrainingConfig(
        num_processes=2, threads=1, epochs=3, batch_size=4, learning_rate=1e-2, logging_steps=1, save_steps=12
    )
    logged, pushed = [], []

    def push(checkpoint):  # what the step's checkpoint mirror does; the checkpoint must be whole when it is called
        assert (checkpoint / "adapter_model.safetensors").is_file() and (checkpoint / "trainer_state.json").is_file()
        pushed.append(checkpoint.name)
        if checkpoint.name == "checkpoint-24":
            shutil.copytree(checkpoint, tmp_path / "saved" / checkpoint.name)

    result = train_distributed(
        TrainJob(tiny_model_dir, splits["train"], splits["validation"], tmp_path, lora=LORA, training=cfg),
        on_metrics=lambda step, values: logged.append((step, values)),
        on_checkpoint=push,
    )
    job = tmp_path / "distributed"
    ranks = [json.loads((job / "ranks" / f"{r}.json").read_text()) for r in (0, 1)]
    base = _base_answer_loss(tiny_model_dir, tiny_tokenizer, splits["train"])
    print(
        f"ranks {ranks}; steps {result.steps}; loss {result.history[0]['loss']:.3f} -> "
        f"{result.history[-1]['loss']:.3f} (base model {base:.3f}); eval_loss {result.eval_loss:.3f}; "
        f"{result.seconds:.1f}s"
    )

    # Both ranks trained, in one job, and ended with the same weights: their gradients were all-reduced.
    assert [r["world_size"] for r in ranks] == [2, 2] and ranks[0]["pid"] != ranks[1]["pid"]
    assert ranks[0]["adapter_sha256"] == ranks[1]["adapter_sha256"]
    # max_steps counts optimizer steps, each over batch_size rows per process: 96 rows x 3 epochs / (4 x 2).
    assert result.steps == math.ceil(len(splits["train"]) * 3 / (4 * 2)) == 36
    assert ranks[0]["steps"] == ranks[1]["steps"] == 36
    assert result.tokens > 0 and result.target_tokens > 0

    # The logged loss is the mean per answer token over both processes' rows, not divided by the process count:
    # the first step is logged before any update, so it is the base model's loss on 8 training rows.
    losses = [h["loss"] for h in result.history]
    assert len(losses) == 36
    assert 0.75 < losses[0] / base < 1.33, (losses[0], base)
    assert sum(losses[-5:]) / 5 < 0.7 * sum(losses[:5]) / 5

    # Rank 0's hooks reached this process: every logged step, the final eval loss, each checkpoint.
    assert [s for s, v in logged if "loss" in v] == list(range(1, 37))
    assert any("eval_loss" in v for _, v in logged) and result.eval_loss is not None
    assert pushed == ["checkpoint-12", "checkpoint-24", "checkpoint-36"]

    assert (result.adapter_dir / "adapter_config.json").is_file() and result.adapter_dir == tmp_path / "adapter"
    res = evaluate_model(
        "tuned",
        "viggo",
        tiny_model_dir,
        splits["test"][:4],
        EvaluationConfig(batch_size=2, max_new_tokens=8),
        adapter_dir=result.adapter_dir,
    )
    assert res.n_examples == 4 and len(res.predictions) == 4

    # Resumed in two processes from the pushed copy of checkpoint 24 (each rank's RNG state included), training
    # ends where it ended without the interruption.
    resumed = train_distributed(
        TrainJob(
            tiny_model_dir,
            splits["train"],
            splits["validation"],
            tmp_path / "resumed",
            lora=LORA,
            training=cfg,
            checkpoint_dir=tmp_path / "saved",
            resume=True,
        )
    )
    assert resumed.resumed_from.endswith("checkpoint-24") and resumed.steps == 36
    assert [h["step"] for h in resumed.history][-12:] == list(range(25, 37))
    assert resumed.history[-1]["loss"] == pytest.approx(losses[-1], rel=1e-3)
    assert resumed.eval_loss == pytest.approx(result.eval_loss, rel=1e-3)


def test_a_failing_worker_fails_the_step_with_its_error(tiny_model_dir, splits, tmp_path):
    cfg = TrainingConfig(num_processes=2, threads=1, max_steps=2, batch_size=2)
    with pytest.raises(DistributedTrainingError) as err:
        train_distributed(
            TrainJob(
                tiny_model_dir,
                splits["train"][:8],
                [],
                tmp_path,
                lora=LoraConfig(target_modules=["no_such_proj"]),
                training=cfg,
            )
        )
    message = str(err.value)
    print(message)
    assert "2 processes" in message and "exited with code" in message
    # Each rank's own exception, not just the launcher's summary (which has no traceback).
    assert "rank-0: peft" in message and "no_such_proj" in message


def test_fsdp_shards_the_model_trains_like_one_process_and_resumes(tiny_model_dir, splits, tmp_path):
    """training.strategy fsdp: FSDP2 (accelerate's plugin, torch's fully_shard) in two CPU processes over gloo."""
    from tuneline.train.training import train_lora

    shape = dict(threads=1, epochs=2, batch_size=4, learning_rate=1e-2, logging_steps=1, save_steps=12)
    cfg = TrainingConfig(num_processes=2, strategy="fsdp", **shape)
    saved = tmp_path / "saved"

    def push(checkpoint):
        if checkpoint.name == "checkpoint-12":
            shutil.copytree(checkpoint, saved / checkpoint.name)

    result = train_distributed(
        TrainJob(tiny_model_dir, splits["train"], splits["validation"], tmp_path, lora=LORA, training=cfg),
        on_checkpoint=push,
    )
    ranks = [json.loads((tmp_path / "distributed" / "ranks" / f"{r}.json").read_text()) for r in (0, 1)]
    # One process, the same rows per optimizer step: its two accumulated batches are the two ranks' batches.
    single = train_lora(
        TrainJob(
            tiny_model_dir,
            splits["train"],
            splits["validation"],
            tmp_path / "single",
            lora=LORA,
            training=TrainingConfig(gradient_accumulation_steps=2, **shape),
        )
    )
    print(f"ranks {ranks}; eval_loss fsdp {result.eval_loss:.4f} one process {single.eval_loss:.4f}")

    # accelerate ran FSDP (its checkpoints are the plugin's), and both ranks ended with the same whole adapter.
    assert [r["distributed_type"] for r in ranks] == ["FSDP", "FSDP"]
    assert (saved / "checkpoint-12" / "pytorch_model_fsdp.bin").is_file()
    assert ranks[0]["adapter_sha256"] == ranks[1]["adapter_sha256"]
    assert result.steps == single.steps == math.ceil(len(splits["train"]) * 2 / (4 * 2)) == 24
    # It trained as one process does on the same batches (rank r takes every other one; the process accumulates
    # them in pairs), to within the order of the sums.
    assert result.eval_loss == pytest.approx(single.eval_loss, rel=1e-2)
    assert result.history[-1]["loss"] < 0.7 * result.history[0]["loss"]

    from tuneline.evaluate.evaluation import evaluate_model  # the gathered adapter loads without FSDP

    res = evaluate_model(
        "tuned",
        "viggo",
        tiny_model_dir,
        splits["test"][:2],
        EvaluationConfig(batch_size=2, max_new_tokens=4),
        adapter_dir=result.adapter_dir,
    )
    assert res.n_examples == 2

    resumed = train_distributed(
        TrainJob(
            tiny_model_dir,
            splits["train"],
            splits["validation"],
            tmp_path / "resumed",
            lora=LORA,
            training=cfg,
            checkpoint_dir=saved,
            resume=True,
        )
    )
    assert resumed.resumed_from.endswith("checkpoint-12") and resumed.steps == 24
    assert [h["step"] for h in resumed.history][-12:] == list(range(13, 25))
    assert resumed.history[-1]["loss"] == pytest.approx(result.history[-1]["loss"], rel=1e-3)
    assert resumed.eval_loss == pytest.approx(result.eval_loss, rel=1e-3)
