"""The Trainer side of a training run: our objective, our progress report, and the job's TrainingArguments.

The objective is cross-entropy over answer tokens only, with logits computed only where there is a target: on
small models the vocabulary projection is a fifth of the compute, and the prompt never needs it.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from tuneline.data.chat_format import IGNORE
from tuneline.train.selection import PRIMARY_METRIC
from tuneline.train.train_job import CheckpointHook, MetricsHook, TrainJob

log = logging.getLogger(__name__)

# Liger's fused RMSNorm, SwiGLU and RoPE; not its fused cross-entropy heads: `answer_loss` already projects only
# the answer positions, through the model's own forward.
LIGER_KERNELS = {
    "rope": True,
    "rms_norm": True,
    "swiglu": True,
    "cross_entropy": False,
    "fused_linear_cross_entropy": False,
}


def answer_loss(model, inputs: dict, num_items: torch.Tensor | int | None = None) -> torch.Tensor:
    """Cross-entropy over answer tokens, projecting to the vocabulary only where there is a target.

    It calls the model itself (a boolean `logits_to_keep` mask selects the positions), never its inner modules:
    under DDP only a forward through the wrapper makes the backward all-reduce the gradients."""
    labels = inputs["labels"]
    targets = labels[:, 1:]
    keep = targets != IGNORE
    logits = model(
        input_ids=inputs["input_ids"],
        attention_mask=inputs.get("attention_mask"),
        position_ids=inputs.get("position_ids"),
        use_cache=False,  # a cache would also switch off the packed-sequence mask
        logits_to_keep=F.pad(keep, (0, 1), value=False),  # position t predicts token t + 1
    ).logits.float()
    total = F.cross_entropy(logits, targets[keep], reduction="sum")
    return total / (num_items if num_items is not None else keep.sum().clamp(min=1))


def trainer_class():
    from transformers import Trainer

    class AnswerLossTrainer(Trainer):
        """The Trainer's loop, checkpoints and callbacks, with `answer_loss` as the objective, and evaluations that
        also score generated answers when `score_validation` is set (`tuneline.train.selection`)."""

        loss_is_scaled_for_ga = True  # answer_loss divides by the target count of the whole accumulated step
        score_validation = None  # model -> {metric: value}, added to each evaluation's metrics as eval_<metric>
        budget = None  # the `tuneline.train.budget` callback, when training.budget_minutes is set
        loraplus_lr_ratio = None  # training.loraplus_lr_ratio

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            loss = answer_loss(model, inputs, num_items_in_batch if model.training else None)
            if model.training and num_items_in_batch is not None and self.args.average_tokens_across_devices:
                # num_items_in_batch counts the targets of all processes and DDP averages the gradients over them
                loss = loss * self.accelerator.num_processes
            return (loss, {"loss": loss}) if return_outputs else loss

        def create_optimizer(self, model=None):
            """peft's LoRA+ param groups when `loraplus_lr_ratio` is set; the Trainer's own optimizer otherwise."""
            if self.loraplus_lr_ratio and self.optimizer is None:
                from peft.optimizers import create_loraplus_optimizer

                model = self.model if model is None else model
                cls, kwargs = self.get_optimizer_cls_and_kwargs(self.args, model)
                kwargs.pop("lr", None)
                self.optimizer = create_loraplus_optimizer(
                    model,
                    cls,
                    lr=self.args.learning_rate,
                    loraplus_lr_ratio=self.loraplus_lr_ratio,
                    loraplus_weight_decay=self.args.weight_decay,
                    **kwargs,
                )
            return super().create_optimizer(model)

        def evaluation_loop(
            self, dataloader, description, prediction_loss_only=None, ignore_keys=None, metric_key_prefix="eval"
        ):
            """Our `compute_metrics`: it needs the model to generate, which the Trainer's hook never sees. Added
            here, before the Trainer logs the metrics and hands them to the callbacks and the best-model check."""
            out = super().evaluation_loop(dataloader, description, prediction_loss_only, ignore_keys, metric_key_prefix)
            if self.score_validation:
                scores = self.score_validation(self.model)
                out.metrics.update({f"{metric_key_prefix}_{k}": v for k, v in scores.items()})
            return out

    return AnswerLossTrainer


# What the Trainer logs once, at the end of a run or an evaluation, that is not a curve. Its rates count dataset
# items as samples, and ours are prebuilt batches (so `train_samples_per_second` is batches/s); `TrainResult` has
# rates named for what they count. `train_loss`, the run's mean loss, is in the run's summary. `epoch` comes with
# every log: it goes to the hook with the training loss only, one point per logging step.
NOT_CURVES = (
    "train_loss",
    "total_flos",
    "train_runtime",
    "train_samples_per_second",
    "train_steps_per_second",
    "eval_runtime",
    "eval_samples_per_second",
    "eval_steps_per_second",
)


def progress_callback(hook: MetricsHook | None, on_checkpoint: CheckpointHook | None):
    from transformers import TrainerCallback

    class Progress(TrainerCallback):
        """Step, loss and ETA in the log, the logged curves to the hook (e.g. MLflow), each checkpoint to its own."""

        def on_save(self, args, state, control, **kw):
            if on_checkpoint:
                on_checkpoint(Path(args.output_dir) / f"checkpoint-{state.global_step}")

        def on_train_begin(self, args, state, control, **kw):
            self.start, self.first_step = time.monotonic(), state.global_step

        def on_log(self, args, state, control, logs=None, **kw):
            logs = {k: float(v) for k, v in (logs or {}).items() if isinstance(v, (int, float))}
            done = state.global_step - self.first_step
            if done and "loss" in logs:
                elapsed = time.monotonic() - self.start
                eta = elapsed / done * (state.max_steps - state.global_step)
                log.info(
                    "step %d/%d  loss %.4f  lr %.2e  elapsed %.0fs  eta %.0fs",
                    state.global_step,
                    state.max_steps,
                    logs["loss"],
                    logs.get("learning_rate", 0.0),
                    elapsed,
                    eta,
                )
            if "eval_loss" in logs:
                log.info("step %d/%d  eval_loss %.4f", state.global_step, state.max_steps, logs["eval_loss"])
            curves = {k: v for k, v in logs.items() if k not in NOT_CURVES and (k != "epoch" or "loss" in logs)}
            if hook and curves:
                hook(state.global_step, curves)

    return Progress()


def trainer_arguments(job: TrainJob, max_steps: int, evaluate_during: bool):
    """Our config in the Trainer's terms. The Trainer draws one prebuilt batch per step (see `batching`)."""
    from transformers import TrainingArguments

    cfg = job.training
    select = cfg.select_by == "primary_metric" and evaluate_during
    save_steps = cfg.save_steps or (cfg.eval_steps if select else None)
    return TrainingArguments(
        output_dir=str(job.checkpoint_dir),
        max_steps=max_steps,
        per_device_train_batch_size=1,
        per_device_eval_batch_size=1,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps,
        activation_checkpointing=job.gradient_checkpointing,
        activation_checkpointing_kwargs={"use_reentrant": False},
        learning_rate=cfg.learning_rate,
        warmup_steps=int(cfg.warmup_ratio * max_steps),
        lr_scheduler_type=cfg.lr_scheduler,
        weight_decay=cfg.weight_decay,
        logging_steps=cfg.logging_steps,
        eval_strategy="steps" if evaluate_during else "no",
        eval_steps=cfg.eval_steps if evaluate_during else None,
        save_strategy="steps" if save_steps else "no",
        save_steps=save_steps or 500,
        save_total_limit=2 if save_steps else None,  # the best and the last
        # The best adapter can only be restored from a checkpoint written at an evaluation step.
        load_best_model_at_end=select
        or bool(cfg.early_stopping_patience and cfg.save_steps and cfg.save_steps % cfg.eval_steps == 0),
        metric_for_best_model=(
            PRIMARY_METRIC[job.task] if select else "eval_loss" if cfg.early_stopping_patience else None
        ),
        greater_is_better=True if select else None,
        include_num_input_tokens_seen="all" if cfg.budget_minutes else "no",  # the budget's tokens per second
        prediction_loss_only=True,
        report_to="none",
        disable_tqdm=True,
        seed=cfg.seed,
        data_seed=cfg.seed,
        use_cpu=not torch.cuda.is_available(),
        bf16=job.model.dtype == "bfloat16",
        fp16=job.model.dtype == "float16",
        remove_unused_columns=False,
        use_liger_kernel=cfg.liger_kernel,
        liger_kernel_config=LIGER_KERNELS if cfg.liger_kernel else None,
        torch_compile=cfg.torch_compile,
    )
