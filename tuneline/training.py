"""LoRA fine-tuning with peft + the transformers Trainer, loss on the answer only.

Labels are built from token positions, never from token ids: SmolLM2's pad token *is* its EOS, and masking
"every pad id" would mask the EOS too, leaving a model that never learns to stop.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from tuneline.chat_format import IGNORE, ensure_chat_template, tokenize_segments
from tuneline.config import LoraConfig, TrainingConfig

log = logging.getLogger(__name__)

MetricsHook = Callable[[int, dict[str, float]], None]


@dataclass
class PadCollator:
    """Pad each batch to its own longest row (right side), masking pads by position."""

    pad_id: int

    def __call__(self, batch: list[dict]) -> dict[str, torch.Tensor]:
        width = max(len(b["input_ids"]) for b in batch)
        ids = torch.full((len(batch), width), self.pad_id, dtype=torch.long)
        labels = torch.full((len(batch), width), IGNORE, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for i, b in enumerate(batch):
            n = len(b["input_ids"])
            ids[i, :n] = torch.tensor(b["input_ids"])
            labels[i, :n] = torch.tensor(b["labels"])
            mask[i, :n] = 1
        return {"input_ids": ids, "labels": labels, "attention_mask": mask}


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

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds if self.seconds else 0.0


def _progress_callback(hook: MetricsHook | None):
    from transformers import TrainerCallback

    class Progress(TrainerCallback):
        """Step, loss and ETA in the log, and every logged value to the hook (e.g. MLflow)."""

        def on_train_begin(self, args, state, control, **kw):
            self.start = time.monotonic()

        def on_log(self, args, state, control, logs=None, **kw):
            logs = {k: float(v) for k, v in (logs or {}).items() if isinstance(v, (int, float))}
            if state.global_step and "loss" in logs:
                elapsed = time.monotonic() - self.start
                eta = elapsed / state.global_step * (state.max_steps - state.global_step)
                log.info(
                    "step %d/%d  loss %.4f  lr %.2e  elapsed %.0fs  eta %.0fs",
                    state.global_step, state.max_steps, logs["loss"], logs.get("learning_rate", 0.0), elapsed, eta,
                )
            if hook and logs:
                hook(state.global_step, logs)

    return Progress()


def train_lora(
    model_dir: Path,
    train_records: list[dict],
    validation_records: list[dict],
    lora_cfg: LoraConfig,
    cfg: TrainingConfig,
    output_dir: Path,
    max_seq_len: int,
    dtype: str = "float32",
    on_metrics: MetricsHook | None = None,
) -> TrainResult:
    from peft import LoraConfig as PeftLoraConfig
    from peft import get_peft_model
    from transformers import PrinterCallback, Trainer, TrainingArguments, set_seed

    from tuneline.modeling import load_model, load_tokenizer

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    set_seed(cfg.seed)
    tokenizer = load_tokenizer(model_dir)
    ensure_chat_template(tokenizer)  # saved with the adapter, so evaluation renders the same way
    train_set, val_set = (
        [tokenize_segments(tokenizer, r["segments"], max_seq_len) for r in records]
        for records in (train_records, validation_records)
    )

    model = load_model(model_dir, dtype)
    model = get_peft_model(
        model,
        PeftLoraConfig(
            r=lora_cfg.r,
            lora_alpha=lora_cfg.alpha,
            lora_dropout=lora_cfg.dropout,
            target_modules=list(lora_cfg.target_modules),
            task_type="CAUSAL_LM",
        ),
    )
    trainable, total = model.get_nb_trainable_parameters()
    log.info("LoRA: %s trainable of %s parameters (%.2f%%)", f"{trainable:,}", f"{total:,}", 100 * trainable / total)

    per_step = cfg.batch_size * cfg.gradient_accumulation_steps
    max_steps = cfg.max_steps or max(1, math.ceil(len(train_set) * cfg.epochs / per_step))
    args = TrainingArguments(
        output_dir=str(output_dir / "trainer"),
        max_steps=max_steps,
        per_device_train_batch_size=cfg.batch_size,
        per_device_eval_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps,
        learning_rate=cfg.learning_rate,
        warmup_steps=int(cfg.warmup_ratio * max_steps),
        lr_scheduler_type="cosine",
        weight_decay=cfg.weight_decay,
        logging_steps=cfg.logging_steps,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        seed=cfg.seed,
        use_cpu=not torch.cuda.is_available(),
        bf16=dtype == "bfloat16",
        remove_unused_columns=False,
        train_sampling_strategy="group_by_length",  # less padding than random batches, same data per epoch
    )
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=train_set,
        eval_dataset=val_set or None,
        data_collator=PadCollator(tokenizer.pad_token_id),
        callbacks=[_progress_callback(on_metrics)],
    )
    trainer.remove_callback(PrinterCallback)  # our Progress callback reports the same values, with ETA
    start = time.monotonic()
    out = trainer.train()
    seconds = time.monotonic() - start
    eval_loss = trainer.evaluate()["eval_loss"] if val_set else None
    if on_metrics and eval_loss is not None:
        on_metrics(max_steps, {"eval_loss": eval_loss})

    adapter_dir = output_dir / "adapter"
    model.save_pretrained(adapter_dir)
    tokenizer.save_pretrained(adapter_dir)
    seen = max_steps * per_step  # the Trainer cycles through the data until max_steps
    avg_len = sum(len(x["input_ids"]) for x in train_set) / max(1, len(train_set))
    avg_target = sum(sum(1 for t in x["labels"] if t != IGNORE) for x in train_set) / max(1, len(train_set))
    return TrainResult(
        adapter_dir=adapter_dir,
        history=[h for h in trainer.state.log_history if "loss" in h],
        eval_loss=eval_loss,
        train_loss=out.training_loss,
        steps=max_steps,
        seconds=seconds,
        tokens=int(seen * avg_len),
        target_tokens=int(seen * avg_target),
    )
