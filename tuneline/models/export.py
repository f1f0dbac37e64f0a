"""Merge a LoRA adapter into its base model and save a plain Hugging Face folder (safetensors + tokenizer),
loadable with `AutoModelForCausalLM.from_pretrained` by anything that has never heard of peft."""

from __future__ import annotations

from pathlib import Path

from tuneline.models.modeling import load_merged, load_tokenizer, pick_device


def export_merged(
    model_dir: Path, adapter_dir: Path, out_dir: Path, dtype: str = "float32", device: str = "auto"
) -> Path:
    """Saved in `dtype` (`model.dtype`) wherever it merges: unlike generation, the CPU keeps a bf16 config's dtype,
    since the folder's dtype is what its users load. `device` is `model.device`."""
    merged = load_merged(model_dir, adapter_dir, dtype, pick_device(device))
    merged.save_pretrained(out_dir, safe_serialization=True)
    # The adapter folder's tokenizer is the one training rendered with (chat template fallback included).
    load_tokenizer(adapter_dir).save_pretrained(out_dir)
    return out_dir
