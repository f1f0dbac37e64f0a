"""The model a training run updates: the base (quantized for QLoRA) with a fresh LoRA adapter.

QLoRA follows TRL rather than `prepare_model_for_kbit_training`: that helper upcasts every non-quantized weight
(embeddings, norms, the LM head) to float32, which costs gigabytes on an 8B model and buys nothing a frozen
weight needs. Adapters sit in the compute dtype by default, so their matmuls run on tensor cores with the base's.
"""

from __future__ import annotations

import logging

import torch

from tuneline.config import ModelConfig, TrainingConfig
from tuneline.train.train_job import TrainJob

log = logging.getLogger(__name__)

FLASH = ("flash_attention_2", "flash_attention_3", "flash_attention_4")


class TrainingSetupError(RuntimeError):
    """A setting this machine cannot honour (bf16, QLoRA, Liger or flash attention without CUDA; resume without
    checkpoints)."""


def check_hardware(
    model_cfg: ModelConfig, training_cfg: TrainingConfig = TrainingConfig(), cuda: bool | None = None
) -> None:
    """Fail before loading anything when the config asks for what only a CUDA GPU does."""
    cuda = torch.cuda.is_available() if cuda is None else cuda
    if cuda:
        return
    needs_cuda = [
        (
            model_cfg.quantization != "none",
            f"model.quantization: {model_cfg.quantization} (QLoRA through bitsandbytes)",
            "set model.quantization: none, or run on a GPU stack (configs/gpu-*.yaml)",
        ),
        (model_cfg.dtype != "float32", f"model.dtype: {model_cfg.dtype} training", "use model.dtype: float32 on CPU"),
        (
            model_cfg.attn_implementation in FLASH,
            f"model.attn_implementation: {model_cfg.attn_implementation}",
            "use auto, sdpa or eager on CPU",
        ),
        (training_cfg.liger_kernel, "training.liger_kernel: true (Triton kernels)", "set it to false on CPU"),
    ]
    for asked, what, fix in needs_cuda:
        if asked:
            raise TrainingSetupError(f"{what} needs a CUDA GPU and this machine has none; {fix}")


def _load_base(job: TrainJob):
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    dtype = getattr(torch, job.model.dtype)
    kwargs: dict = {"dtype": dtype}
    if job.model.attn_implementation != "auto":
        kwargs["attn_implementation"] = job.model.attn_implementation
    if job.model.quantization == "4bit":
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=dtype,
            # FSDP shards floating-point tensors only, and all of a layer's in one dtype: under training.strategy
            # fsdp the packed 4-bit weights are stored in the compute dtype (the same bytes), else bnb's uint8.
            bnb_4bit_quant_storage=dtype if job.training.strategy == "fsdp" else torch.uint8,
        )
    elif job.model.quantization == "8bit":
        kwargs["quantization_config"] = BitsAndBytesConfig(load_in_8bit=True)
    model = AutoModelForCausalLM.from_pretrained(job.model_dir, **kwargs)
    model.config.use_cache = False
    return model


def adapter_dtype(job: TrainJob) -> torch.dtype:
    """The compute dtype, except under float16: its gradient scaler refuses to unscale float16 gradients, so
    float16 adapters would fail at the first optimizer step; they keep float32 master weights there."""
    if job.training.adapter_dtype == "float32" or job.model.dtype == "float16":
        return torch.float32
    return getattr(torch, job.model.dtype)


def adapted_layers(n_layers: int, last: int | None) -> list[int] | None:
    """Indices of the decoder layers that get adapters (None: every layer)."""
    if last is None:
        return None
    if last > n_layers:
        raise TrainingSetupError(f"lora.last_layers: {last}, but the base model has {n_layers} decoder layers")
    return list(range(n_layers - last, n_layers))


def load_trainable_model(job: TrainJob):
    from peft import LoraConfig as PeftLoraConfig
    from peft import get_peft_model

    model = _load_base(job)
    if job.gradient_checkpointing:
        model.enable_input_require_grads()  # frozen embeddings: checkpointed blocks still need a grad to flow
    peft_config = PeftLoraConfig(
        r=job.lora.r,
        lora_alpha=job.lora.alpha,
        lora_dropout=job.lora.dropout,
        target_modules=list(job.lora.target_modules),
        task_type="CAUSAL_LM",
        layers_to_transform=adapted_layers(model.config.get_text_config().num_hidden_layers, job.lora.last_layers),
    )
    model = get_peft_model(model, peft_config)  # freezes the base; adapters start in float32
    dtype = adapter_dtype(job)
    for param in model.parameters():
        if param.requires_grad:
            param.data = param.data.to(dtype)
    trainable, total = model.get_nb_trainable_parameters()
    log.info(
        "LoRA: %s trainable of %s parameters (%.2f%%), adapters in %s",
        f"{trainable:,}",
        f"{total:,}",
        100 * trainable / total,
        dtype,
    )
    return model
