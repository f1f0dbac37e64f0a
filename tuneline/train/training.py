"""The LoRA / QLoRA training recipe: model, batches, Trainer, run, result, one function each.

What makes it fast: no padding (length-grouped batches, or packed rows with positions restarting per example),
batches sized by a token budget when one is set, logits only at answer positions (`trainer.answer_loss`),
adapters in the compute dtype, and, on a GPU, Liger's fused kernels and torch.compile when asked for.
"""

from __future__ import annotations

import logging
import math
import time

import torch

from tuneline.train.batching import BatchCollator, PackCollator, PadCollator, length_grouped_batches
from tuneline.train.budget import MAX_EPOCHS, budget_callback
from tuneline.data.chat_format import IGNORE, ensure_chat_template
from tuneline.train.lora_model import FLASH, TrainingSetupError, check_hardware, load_trainable_model
from tuneline.train.selection import validation_scorer
from tuneline.train.train_job import CheckpointHook, MetricsHook, TrainJob, TrainResult
from tuneline.train.trainer import progress_callback, trainer_arguments, trainer_class

log = logging.getLogger(__name__)


def last_checkpoint(job: TrainJob) -> str | None:
    from transformers.trainer_utils import get_last_checkpoint

    if not job.checkpoint_dir.is_dir():
        return None
    return get_last_checkpoint(str(job.checkpoint_dir))


def batches(job: TrainJob, records: list[dict]) -> list[list[dict]]:
    """The records' token ids (made once, by the data step) grouped into batches of like length."""
    examples = [{"input_ids": r["input_ids"], "labels": r["labels"]} for r in records]
    cfg = job.training
    groups = length_grouped_batches(
        [len(e["input_ids"]) for e in examples], cfg.batch_size, cfg.max_batch_tokens, packed=cfg.packing
    )
    return [[examples[i] for i in group] for group in groups]


def _per_step(job: TrainJob) -> int:
    return job.training.gradient_accumulation_steps * job.training.num_processes


def _steps(job: TrainJob, n_batches: int, epochs: float | None = None) -> int:
    epochs = epochs or job.training.epochs
    return job.training.max_steps or max(1, math.ceil(n_batches * epochs / _per_step(job)))


def _budget(job: TrainJob, train_set: list[list[dict]], collate):
    """The budget's callback; tokens per step are counted as the collator builds them (padding, packing and all),
    as the Trainer counts the tokens it has seen."""
    tokens = sum(collate(b)["input_ids"].numel() for b in train_set)
    per_epoch = len(train_set) / _per_step(job)
    return budget_callback(
        job.training.budget_minutes,
        tokens / per_epoch,
        per_epoch,
        len(job.train),
        _steps(job, len(train_set)),
        job.training.warmup_ratio,
    )


def build_trainer(job: TrainJob, tokenizer, on_metrics: MetricsHook | None, on_checkpoint: CheckpointHook | None):
    from transformers import EarlyStoppingCallback, PrinterCallback

    cfg = job.training
    train_set, val_set = batches(job, job.train), batches(job, job.validation)
    if cfg.select_by == "primary_metric" and not val_set:
        raise TrainingSetupError("training.select_by primary_metric needs validation rows to score")
    model = load_trainable_model(job)
    steps = _steps(job, len(train_set), MAX_EPOCHS if cfg.budget_minutes else None)  # a budget's upper bound
    args = trainer_arguments(job, steps, bool(cfg.eval_steps and val_set))
    collate = (
        PackCollator(tokenizer.pad_token_id, padding_free=job.model.attn_implementation in FLASH)
        if cfg.packing
        else PadCollator(tokenizer.pad_token_id)
    )
    callbacks = [progress_callback(on_metrics, on_checkpoint)]
    budget = _budget(job, train_set, collate) if cfg.budget_minutes else None
    callbacks += [budget] if budget else []
    if cfg.early_stopping_patience:
        callbacks.append(EarlyStoppingCallback(cfg.early_stopping_patience))
    trainer = trainer_class()(
        model=model,
        args=args,
        train_dataset=train_set,
        eval_dataset=val_set or None,
        data_collator=BatchCollator(collate),
        callbacks=callbacks,
    )
    trainer.remove_callback(PrinterCallback)  # our progress callback reports the same values, with ETA
    trainer.budget = budget
    trainer.loraplus_lr_ratio = cfg.loraplus_lr_ratio
    if cfg.select_by == "primary_metric":
        trainer.score_validation = validation_scorer(job.task, tokenizer, job.validation)
    return trainer


def choices(trainer) -> dict:
    """What the budget planned and which checkpoint was kept, with why, for the run's summary."""
    state, out = trainer.state, {}
    if trainer.budget:
        out["budget"] = trainer.budget.summary(state)
    if trainer.args.load_best_model_at_end and state.best_global_step:
        out["selected"] = {
            "metric": trainer.args.metric_for_best_model,
            "value": state.best_metric,
            "step": state.best_global_step,
            "of_steps": state.global_step,
        }
    return out


def final_eval_loss(trainer) -> float | None:
    """The returned adapter's validation loss. An evaluation at the last step already measured it, unless the best
    checkpoint was loaded at the end; `trainer.evaluate` logs its result through the callbacks (the hook's
    `eval_loss` curve), so it runs only when needed and the curve gets no second point at the last step."""
    if not trainer.eval_dataset:
        return None
    last = next((h for h in reversed(trainer.state.log_history) if "eval_loss" in h), None)
    if last and last["step"] == trainer.state.global_step and not trainer.args.load_best_model_at_end:
        return last["eval_loss"]
    return trainer.evaluate()["eval_loss"]


def save_adapter(trainer, adapter_dir) -> None:
    """Under FSDP the adapter's weights are shards (DTensors) that cannot be written as they are: every rank
    gathers them whole, the frozen base left out, and writes the same adapter."""
    state = None
    if trainer.is_fsdp_enabled:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        options = StateDictOptions(full_state_dict=True, ignore_frozen_params=True)
        state = get_model_state_dict(trainer.model, options=options)
    trainer.model.save_pretrained(adapter_dir, state_dict=state)


def _result(
    job: TrainJob, trainer, out, seconds: float, eval_loss: float | None, resumed_from: str | None, tokenizer
) -> TrainResult:
    adapter_dir = job.output_dir / "adapter"
    save_adapter(trainer, adapter_dir)
    tokenizer.save_pretrained(adapter_dir)
    start_step = int(resumed_from.rsplit("-", 1)[1]) if resumed_from else 0
    cfg = job.training
    rows_per_batch = len(job.train) / max(1, len(trainer.train_dataset))
    batches_per_step = cfg.gradient_accumulation_steps * cfg.num_processes
    seen = (trainer.state.global_step - start_step) * batches_per_step * rows_per_batch  # rows all processes saw
    n = max(1, len(job.train))
    avg_len = sum(len(r["input_ids"]) for r in job.train) / n
    avg_target = sum(sum(1 for t in r["labels"] if t != IGNORE) for r in job.train) / n
    return TrainResult(
        adapter_dir=adapter_dir,
        history=[h for h in trainer.state.log_history if "loss" in h],
        eval_loss=eval_loss,
        train_loss=out.training_loss,
        steps=trainer.state.global_step,
        seconds=seconds,
        rows=round(seen),
        tokens=int(seen * avg_len),
        target_tokens=int(seen * avg_target),
        resumed_from=resumed_from,
        choices=choices(trainer),
    )


def train_lora(
    job: TrainJob, on_metrics: MetricsHook | None = None, on_checkpoint: CheckpointHook | None = None
) -> TrainResult:
    """Train an adapter into `job.output_dir/adapter`. `on_metrics` gets the logged curves (e.g. for MLflow);
    with `training.save_steps`, each checkpoint is handed to `on_checkpoint` (e.g. to mirror it)."""
    from transformers import set_seed

    from tuneline.models.modeling import load_tokenizer

    check_hardware(job.model, job.training)
    resumed_from = last_checkpoint(job) if job.resume else None
    if job.resume and resumed_from is None:
        raise TrainingSetupError(
            f"--resume: no checkpoint in {job.checkpoint_dir}; checkpoints are written every training.save_steps "
            "steps by a run with the same data and config"
        )
    if job.training.threads:
        torch.set_num_threads(job.training.threads)
    set_seed(job.training.seed)
    tokenizer = load_tokenizer(job.model_dir)
    ensure_chat_template(tokenizer)  # saved with the adapter, so evaluation renders the same way
    trainer = build_trainer(job, tokenizer, on_metrics, on_checkpoint)
    if resumed_from:
        log.info("resuming from %s", resumed_from)
    start = time.monotonic()
    out = trainer.train(resume_from_checkpoint=resumed_from)
    seconds = time.monotonic() - start
    return _result(job, trainer, out, seconds, final_eval_loss(trainer), resumed_from, tokenizer)
