"""Where models generate: the CUDA GPU when there is one (or model.device says so), else the CPU, unchanged."""

import pytest
import torch

from tuneline.config import EvaluationConfig
from tuneline.generate.generation import generate_greedy, length_batches
from tuneline.models.modeling import DeviceError, pick_device, placement


@pytest.mark.parametrize(
    "device, dtype, cuda, expected",
    [
        ("auto", "float32", False, ("cpu", "float32")),
        ("auto", "bfloat16", False, ("cpu", "float32")),  # a bf16 GPU config still evaluates on a CPU-only machine
        ("auto", "bfloat16", True, ("cuda", "bfloat16")),
        ("auto", "float32", True, ("cuda", "float32")),
        ("cpu", "bfloat16", True, ("cpu", "float32")),
        ("cuda", "float16", True, ("cuda", "float16")),
    ],
)
def test_placement(device, dtype, cuda, expected):
    assert placement(device, dtype, cuda=cuda) == expected


@pytest.mark.parametrize(
    "device, cuda, expected",
    [("auto", True, "cuda"), ("auto", False, "cpu"), ("cpu", True, "cpu"), ("cuda", True, "cuda")],
)
def test_pick_device(device, cuda, expected):
    assert pick_device(device, cuda=cuda) == expected


def test_forced_cuda_without_gpu_names_the_key():
    for pick in (lambda: placement("cuda", "bfloat16", cuda=False), lambda: pick_device("cuda", cuda=False)):
        with pytest.raises(DeviceError, match="model.device: cuda"):
            pick()


def test_auto_follows_cuda_availability(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert placement("auto", "bfloat16") == ("cuda", "bfloat16")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert placement("auto", "bfloat16") == ("cpu", "float32")


@pytest.mark.parametrize("cuda, loaded", [(True, ("bfloat16", "cuda")), (False, ("float32", "cpu"))])
def test_evaluate_model_loads_where_placement_says(monkeypatch, tiny_model_dir, cuda, loaded):
    """With CUDA reported, evaluation asks the loader for cuda and the config's dtype; without, the CPU in float32
    as before. The load itself is the only thing faked, since this machine has no GPU."""
    from tuneline.evaluate import evaluation
    from tuneline.models import modeling
    from tuneline.config import DataConfig
    from tuneline.data.sources import load_splits
    from tuneline.data.validation import prepare

    data = DataConfig(source="synthetic:viggo")
    records = prepare(load_splits(data), data, modeling.load_tokenizer(tiny_model_dir)).splits["test"][:2]
    asked = []
    real_load = modeling.load_model

    def load(model_dir, dtype="float32", device="cpu"):
        asked.append((dtype, device))
        return real_load(model_dir)  # run on the CPU all the same

    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(modeling, "load_model", load)
    result = evaluation.evaluate_model(
        "base", "viggo", tiny_model_dir, records, EvaluationConfig(batch_size=2, max_new_tokens=4), dtype="bfloat16"
    )
    assert asked == [loaded]
    assert (result.device, result.dtype) == loaded[::-1]


@pytest.mark.parametrize(
    "device, cuda, merged_on", [("auto", True, "cuda"), ("auto", False, "cpu"), ("cpu", True, "cpu")]
)
def test_export_merges_where_model_device_says_in_model_dtype(
    monkeypatch, tmp_path, tiny_model_dir, device, cuda, merged_on
):
    """The merged folder keeps model.dtype on either device: its users load it in that dtype."""
    from peft import LoraConfig, get_peft_model

    from tuneline.models import export, modeling

    adapter_dir = tmp_path / "adapter"
    get_peft_model(modeling.load_model(tiny_model_dir), LoraConfig(r=2, target_modules=["q_proj"])).save_pretrained(
        adapter_dir
    )
    modeling.load_tokenizer(tiny_model_dir).save_pretrained(adapter_dir)
    merged, asked = modeling.load_merged(tiny_model_dir, adapter_dir, "bfloat16"), []  # on the CPU all the same

    def merge(model_dir, adapter, dtype="float32", device="cpu"):
        asked.append((dtype, device))
        return merged

    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(export, "load_merged", merge)
    out = export.export_merged(tiny_model_dir, adapter_dir, tmp_path / "merged", dtype="bfloat16", device=device)
    assert asked == [("bfloat16", merged_on)]
    assert '"dtype": "bfloat16"' in (out / "config.json").read_text()


def test_length_batches_respect_both_caps():
    lengths = [50, 10, 30, 10, 20, 200, 40]
    batches = length_batches(lengths, batch_size=3, max_new_tokens=20, max_batch_tokens=120)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    for b in batches:
        assert len(b) <= 3
        assert len(b) == 1 or len(b) * (max(lengths[i] for i in b) + 20) <= 120
    assert [5] in batches  # over the budget alone, still generated
    assert length_batches(lengths, 3, 20) == [[1, 3, 4], [2, 6, 0], [5]]  # no budget: rows only, shortest first


def test_token_budget_does_not_change_outputs(tiny_model_dir, tiny_tokenizer):
    """Greedy, left-padded, float32: the same texts, in input order, whichever prompts share a batch."""
    from tuneline.models.modeling import load_model

    model = load_model(tiny_model_dir)
    prompts = [f"<|im_start|>user\n{'word ' * n}<|im_end|>\n<|im_start|>assistant\n" for n in (1, 9, 3, 14, 6, 2)]
    lengths = [len(tiny_tokenizer(p, add_special_tokens=False)["input_ids"]) for p in prompts]
    assert len(length_batches(lengths, 4, 6, 40)) > len(length_batches(lengths, 4, 6))  # the budget regroups them
    plain = generate_greedy(model, tiny_tokenizer, prompts, batch_size=4, max_new_tokens=6)
    budget = generate_greedy(model, tiny_tokenizer, prompts, batch_size=4, max_new_tokens=6, max_batch_tokens=40)
    alone = [generate_greedy(model, tiny_tokenizer, [p], batch_size=1, max_new_tokens=6).texts[0] for p in prompts]
    assert budget.texts == plain.texts == alone and budget.new_tokens == plain.new_tokens
