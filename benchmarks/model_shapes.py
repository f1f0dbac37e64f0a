"""Randomly initialized models of a published shape, for GPU throughput runs without a hub.

Throughput depends on the shape, not the weights, so a Llama-3.1-8B-shaped model with random weights trains at
the speed the real one would. The tokenizer is the offline SmolLM2 one: its ids fit in either vocabulary.
"""

from __future__ import annotations

import time
from pathlib import Path

SMOLLM2 = "HuggingFaceTB/SmolLM2-135M-Instruct"

SHAPES: dict[str, dict] = {
    # meta-llama/Llama-3.1-8B-Instruct's config.json
    "llama-3.1-8b": dict(
        hidden_size=4096,
        intermediate_size=14336,
        num_hidden_layers=32,
        num_attention_heads=32,
        num_key_value_heads=8,
        vocab_size=128256,
        max_position_embeddings=131072,
        rope_theta=500000.0,
        rms_norm_eps=1e-5,
        tie_word_embeddings=False,
    ),
    # HuggingFaceTB/SmolLM2-135M-Instruct's config.json
    "smollm2-135m": dict(
        hidden_size=576,
        intermediate_size=1536,
        num_hidden_layers=30,
        num_attention_heads=9,
        num_key_value_heads=3,
        vocab_size=49152,
        max_position_embeddings=8192,
        rope_theta=100000.0,
        rms_norm_eps=1e-5,
        tie_word_embeddings=True,
    ),
}


def build_random_model(shape: str, out: Path, dtype: str = "bfloat16", device: str = "cuda") -> Path:
    """Write a `shape` model with random weights and the SmolLM2 tokenizer to `out` (reused when present)."""
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig

    from tuneline.models.modeling import load_tokenizer, resolve_base_model

    if (out / "config.json").is_file():
        return out
    tokenizer = load_tokenizer(resolve_base_model(SMOLLM2))
    config = LlamaConfig(
        **SHAPES[shape],
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    with torch.device(device):  # initializing 8B parameters on a CPU takes minutes; on the GPU, seconds
        model = AutoModelForCausalLM.from_config(config, dtype=getattr(torch, dtype))
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    del model
    if device == "cuda":
        torch.cuda.empty_cache()
    return out


def bf16_matmul_peak_tflops(seconds: float = 3.0) -> float:
    """Best bf16 GEMM rate of this GPU, measured now: the ceiling a training step could reach."""
    import torch

    best = 0.0
    for n in (4096, 8192, 16384):
        a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
        b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
        a @ b  # warm up
        torch.cuda.synchronize()
        reps, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds / 3:
            for _ in range(10):
                a @ b
            torch.cuda.synchronize()
            reps += 10
        best = max(best, 2 * n**3 * reps / (time.perf_counter() - start) / 1e12)
        del a, b
    return best
