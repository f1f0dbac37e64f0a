import json
from pathlib import Path
from typing import Annotated

from zenml import get_step_context, step

from steps.caching import CACHE_POLICY
from steps.checkpoints import CheckpointMirror, training_key

from tuneline.registry import tracking
from tuneline.artifacts import ChatDataset, LoraAdapter
from tuneline.config import DataConfig, LoraConfig, ModelConfig, TrainingConfig
from tuneline.train.distributed import train_distributed
from tuneline.train.lora_model import TrainingSetupError
from tuneline.models.modeling import resolve_base_model
from tuneline.train.train_job import TrainJob
from tuneline.train.training import train_lora as train_in_process


def _work_dir() -> Path:
    """Training's scratch folder (checkpoints, the adapter). ZenML stores the returned adapter only after the step
    function has returned, so the folder must outlive it: this one, from the output's materializer, is removed by
    ZenML once the step has ended, its outputs stored or failed. `--resume` reads the checkpoints' copies in the
    artifact store (`CheckpointMirror`), never this folder."""
    materializer = get_step_context().get_output_materializer("lora_adapter")
    with materializer.get_temporary_directory(delete_at_exit=False) as folder:
        return Path(folder)


@step(experiment_tracker=True, cache_policy=CACHE_POLICY)
def train_lora(
    dataset: ChatDataset,
    data: DataConfig,
    model: ModelConfig,
    lora: LoraConfig,
    training: TrainingConfig,
    resume: bool = False,
) -> Annotated[LoraAdapter, "lora_adapter"]:
    tracking.log_sections(data=data, model=model, lora=lora, training=training)
    train, validation = dataset.splits["train"], dataset.splits.get("validation", [])
    work = _work_dir()
    mirror = CheckpointMirror(
        training_key(
            train,
            validation,
            data.max_seq_len,
            model.model_dump(),
            lora.model_dump(),
            training.model_dump(exclude={"save_steps", "logging_steps"}),
        )
    )
    if resume and mirror.pull_latest(work / "checkpoints") is None:
        raise TrainingSetupError(
            f"--resume: no complete checkpoint in {mirror.remote}; an interrupted run with the same data and "
            "config, and training.save_steps set, writes them there"
        )
    job = TrainJob(
        model_dir=resolve_base_model(model.base),
        train=train,
        validation=validation,
        output_dir=work,
        model=model,
        lora=lora,
        training=training,
        resume=resume,
        task=data.task,
    )
    run_training = train_distributed if training.num_processes > 1 else train_in_process
    result = run_training(
        job,
        on_metrics=tracking.log_training_curves,
        on_checkpoint=mirror.push,
    )
    mirror.clear()
    tracking.log_loss_curve(result.history)
    tracking.log_dir(result.adapter_dir, "adapter")
    summary = {
        "steps": result.steps,
        "train_loss": result.train_loss,
        "final_loss": result.history[-1]["loss"] if result.history else None,
        "eval_loss": result.eval_loss,
        "train_seconds": round(result.seconds, 1),
        "tokens_per_second": round(result.tokens_per_second, 1),
        "rows_per_second": round(result.rows_per_second, 2),
        "steps_per_second": round(result.steps_per_second, 3),
        "train_examples": len(train),
        "resumed_from_step": result.resumed_from_step,
        **result.choices,  # `budget`: the rows and epochs the time budget bought, and why; `selected`: the checkpoint
    }
    tracking.log_training_result(result)
    if result.choices:
        tracking.log_text(json.dumps(result.choices, indent=2), "training/choices.json")
    return LoraAdapter(path=str(result.adapter_dir), base_model=model.base, train_summary=summary)
