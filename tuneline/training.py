"""LoRA / QLoRA fine-tuning with peft + the transformers Trainer, loss on the answer only.

Two things make it fast on small models, where the vocabulary projection is a fifth of the compute:
batches carry no padding (packed rows or length-grouped batches), and logits are computed only at the
positions that have a target, never for the prompt.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from tuneline.batching import PackCollator, PadCollator
from tuneline.chat_format import IGNORE, ensure_chat_template, tokenize_segments
from tuneline.config import LoraConfig, ModelConfig, TrainingConfig

log = logging.getLogger(__name__)

MetricsHook = Callable[[int, dict[str, float]], None]


class TrainingSetupError(RuntimeError):
    """A setting this machine cannot honour (bf16 or QLoRA without CUDA, resume without checkpoints)."""


@dataclass
class TrainResult:
    adapter_dir: Path
    history: list[dict] = field(default_factory=list)
    eval_loss: float | None = None
    train_loss: float | None = None
    steps: int = 0
    seconds: float = 0.0
    target_tokens: int = 0
    tokens: int = 0
    resumed_from: str | None = None

    @property
    def resumed_from_step(self) -> int | None:
        return int(self.resumed_from.rsplit("-", 1)[1]) if self.resumed_from else None

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds if self.seconds else 0.0


def check_hardware(model_cfg: ModelConfig, cuda: bool | None = None) -> None:
    """Fail before loading anything when the config asks for what only a CUDA GPU does."""
    cuda = torch.cuda.is_available() if cuda is None else cuda
    if cuda:
        return
    if model_cfg.quantization != "none":
        raise TrainingSetupError(
            f"model.quantization: {model_cfg.quantization} (QLoRA through bitsandbytes) needs a CUDA GPU and this "
            "machine has none; set model.quantization: none, or run on a GPU stack (configs/gpu-*.yaml)"
        )
    if model_cfg.dtype != "float32":
        raise TrainingSetupError(
            f"model.dtype: {model_cfg.dtype} training needs a CUDA GPU and this machine has none; "
            "use model.dtype: float32 on CPU"
        )


def load_trainable_model(model_dir: Path, model_cfg: ModelConfig, lora_cfg: LoraConfig, gradient_checkpointing: bool):
    """The base (quantized for QLoRA) with a fresh LoRA adapter on `lora.target_modules`."""
    from peft import LoraConfig as PeftLoraConfig
    from peft import get_peft_model, prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    dtype = getattr(torch, model_cfg.dtype)
    if model_cfg.quantization == "none":
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype)
    else:
        quant = (
            BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                               bnb_4bit_compute_dtype=dtype)
            if model_cfg.quantization == "4bit"
            else BitsAndBytesConfig(load_in_8bit=True)
        )
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype, quantization_config=quant)
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=gradient_checkpointing)
    model.config.use_cache = False
    peft_config = PeftLoraConfig(
        r=lora_cfg.r, lora_alpha=lora_cfg.alpha, lora_dropout=lora_cfg.dropout,
        target_modules=list(lora_cfg.target_modules), task_type="CAUSAL_LM",
    )
    return get_peft_model(model, peft_config)


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


def _trainer_class():
    from transformers import Trainer

    class AnswerLossTrainer(Trainer):
        """The Trainer's loop, checkpoints and callbacks, with `answer_loss` as the objective."""

        loss_is_scaled_for_ga = True  # answer_loss divides by the target count of the whole accumulated step

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            loss = answer_loss(model, inputs, num_items_in_batch if model.training else None)
            if model.training and num_items_in_batch is not None and self.args.average_tokens_across_devices:
                # num_items_in_batch counts the targets of all processes and DDP averages the gradients over them
                loss = loss * self.accelerator.num_processes
            return (loss, {"loss": loss}) if return_outputs else loss

    return AnswerLossTrainer


def _progress_callback(hook: MetricsHook | None, on_checkpoint: Callable[[Path], None] | None):
    from transformers import TrainerCallback

    class Progress(TrainerCallback):
        """Step, loss and ETA in the log, every logged value to the hook (e.g. MLflow), each checkpoint to its own."""

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
                    state.global_step, state.max_steps, logs["loss"], logs.get("learning_rate", 0.0), elapsed, eta,
                )
            if "eval_loss" in logs:
                log.info("step %d/%d  eval_loss %.4f", state.global_step, state.max_steps, logs["eval_loss"])
            if hook and logs:
                hook(state.global_step, logs)

    return Progress()


def last_checkpoint(checkpoint_dir: Path | None) -> str | None:
    from transformers.trainer_utils import get_last_checkpoint

    if checkpoint_dir is None or not checkpoint_dir.is_dir():
        return None
    return get_last_checkpoint(str(checkpoint_dir))


def train_lora(
    model_dir: Path,
    train_records: list[dict],
    validation_records: list[dict],
    lora_cfg: LoraConfig,
    cfg: TrainingConfig,
    output_dir: Path,
    max_seq_len: int,
    model_cfg: ModelConfig = ModelConfig(),
    on_metrics: MetricsHook | None = None,
    checkpoint_dir: Path | None = None,
    resume: bool = False,
    on_checkpoint: Callable[[Path], None] | None = None,
) -> TrainResult:
    """Train an adapter into `output_dir/adapter`. With `cfg.save_steps`, checkpoints go to `checkpoint_dir`
    (default `output_dir/checkpoints`) and each is handed to `on_checkpoint`; `resume` continues from the
    newest one there."""
    from transformers import EarlyStoppingCallback, PrinterCallback, TrainingArguments, set_seed

    from tuneline.modeling import load_tokenizer

    check_hardware(model_cfg)
    checkpoint_dir = checkpoint_dir or output_dir / "checkpoints"
    resume_from = last_checkpoint(checkpoint_dir) if resume else None
    if resume and resume_from is None:
        raise TrainingSetupError(
            f"--resume: no checkpoint in {checkpoint_dir}; checkpoints are written every training.save_steps "
            "steps by a run with the same data and config"
        )
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    set_seed(cfg.seed)
    tokenizer = load_tokenizer(model_dir)
    ensure_chat_template(tokenizer)  # saved with the adapter, so evaluation renders the same way
    train_set, val_set = (
        [tokenize_segments(tokenizer, r["segments"], max_seq_len) for r in records]
        for records in (train_records, validation_records)
    )
    model = load_trainable_model(model_dir, model_cfg, lora_cfg, cfg.gradient_checkpointing)
    trainable, total = model.get_nb_trainable_parameters()
    log.info("LoRA: %s trainable of %s parameters (%.2f%%)", f"{trainable:,}", f"{total:,}", 100 * trainable / total)

    per_step = cfg.batch_size * cfg.gradient_accumulation_steps * cfg.num_processes
    max_steps = cfg.max_steps or max(1, math.ceil(len(train_set) * cfg.epochs / per_step))
    evaluate_during = bool(cfg.eval_steps and val_set)
    args = TrainingArguments(
        output_dir=str(checkpoint_dir),
        max_steps=max_steps,
        per_device_train_batch_size=cfg.batch_size,
        per_device_eval_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps,
        activation_checkpointing=cfg.gradient_checkpointing,
        activation_checkpointing_kwargs={"use_reentrant": False},
        learning_rate=cfg.learning_rate,
        warmup_steps=int(cfg.warmup_ratio * max_steps),
        lr_scheduler_type=cfg.lr_scheduler,
        weight_decay=cfg.weight_decay,
        logging_steps=cfg.logging_steps,
        eval_strategy="steps" if evaluate_during else "no",
        eval_steps=cfg.eval_steps if evaluate_during else None,
        save_strategy="steps" if cfg.save_steps else "no",
        save_steps=cfg.save_steps or 500,
        save_total_limit=2 if cfg.save_steps else None,
        # The best adapter can only be restored from a checkpoint written at an evaluation step.
        load_best_model_at_end=bool(
            cfg.early_stopping_patience and cfg.save_steps and cfg.save_steps % cfg.eval_steps == 0
        ),
        metric_for_best_model="eval_loss" if cfg.early_stopping_patience else None,
        prediction_loss_only=True,
        report_to="none",
        disable_tqdm=True,
        seed=cfg.seed,
        data_seed=cfg.seed,
        use_cpu=not torch.cuda.is_available(),
        bf16=model_cfg.dtype == "bfloat16",
        fp16=model_cfg.dtype == "float16",
        remove_unused_columns=False,
        # Packing removes padding inside a batch; grouping by length keeps the rows of a batch alike.
        train_sampling_strategy="group_by_length",
    )
    callbacks = [_progress_callback(on_metrics, on_checkpoint)]
    if cfg.early_stopping_patience:
        callbacks.append(EarlyStoppingCallback(cfg.early_stopping_patience))
    collator = PackCollator(tokenizer.pad_token_id, max_seq_len) if cfg.packing else PadCollator(tokenizer.pad_token_id)
    trainer = _trainer_class()(
        model=model, args=args, train_dataset=train_set, eval_dataset=val_set or None,
        data_collator=collator, callbacks=callbacks,
    )
    trainer.remove_callback(PrinterCallback)  # our Progress callback reports the same values, with ETA
    if resume_from:
        log.info("resuming from %s", resume_from)
    start = time.monotonic()
    out = trainer.train(resume_from_checkpoint=resume_from)
    seconds = time.monotonic() - start
    eval_loss = trainer.evaluate()["eval_loss"] if val_set else None
    if on_metrics and eval_loss is not None:
        on_metrics(trainer.state.global_step, {"eval_loss": eval_loss})

    adapter_dir = output_dir / "adapter"
    model.save_pretrained(adapter_dir)
    tokenizer.save_pretrained(adapter_dir)
    start_step = int(resume_from.rsplit("-", 1)[1]) if resume_from else 0
    seen = (trainer.state.global_step - start_step) * per_step  # rows all processes trained on
    avg_len = sum(len(x["input_ids"]) for x in train_set) / max(1, len(train_set))
    avg_target = sum(sum(1 for t in x["labels"] if t != IGNORE) for x in train_set) / max(1, len(train_set))
    return TrainResult(
        adapter_dir=adapter_dir,
        history=[h for h in trainer.state.log_history if "loss" in h],
        eval_loss=eval_loss,
        train_loss=out.training_loss,
        steps=trainer.state.global_step,
        seconds=seconds,
        tokens=int(seen * avg_len),
        target_tokens=int(seen * avg_target),
        resumed_from=resume_from,
    )
