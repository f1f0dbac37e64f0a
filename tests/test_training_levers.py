"""The speed levers keep the plain path's loss: padding-free rows, token-budget batches, adapters in the compute
dtype, QLoRA without upcasts; the CUDA-only ones (Liger, flash attention) fail clearly on a CPU."""

import pytest
import torch

from tuneline.train.batching import BatchCollator, PackCollator, PadCollator, length_grouped_batches
from tuneline.data.chat_format import IGNORE
from tuneline.config import LoraConfig, ModelConfig, TrainingConfig
from tuneline.train.lora_model import TrainingSetupError, check_hardware, load_trainable_model
from tuneline.train.train_job import TrainJob
from tuneline.train.trainer import LIGER_KERNELS, answer_loss, trainer_arguments
from tuneline.train.training import batches, build_trainer


@pytest.fixture(scope="module")
def records(tiny_tokenizer):
    from tuneline.config import DataConfig
    from tuneline.data.sources import load_splits
    from tuneline.data.validation import prepare

    data = DataConfig(source="synthetic:viggo")
    return prepare(load_splits(data), data, tiny_tokenizer).splits["train"]


def test_padding_free_row_keeps_the_padded_loss(tiny_model_dir, tiny_tokenizer, records):
    from tuneline.models.modeling import load_model

    model = load_model(tiny_model_dir).eval()
    batch = records[:6]
    one_row = PackCollator(tiny_tokenizer.pad_token_id, padding_free=True)(batch)
    bounded = PackCollator(tiny_tokenizer.pad_token_id)(batch)
    padded = PadCollator(tiny_tokenizer.pad_token_id)(batch)
    assert one_row["input_ids"].shape == (1, sum(len(r["input_ids"]) for r in batch))  # not one pad token
    assert bounded["input_ids"].shape[1] == max(len(r["input_ids"]) for r in batch) < one_row["input_ids"].shape[1]
    with torch.no_grad():
        plain = answer_loss(model, padded)
        assert torch.allclose(answer_loss(model, one_row), plain, atol=1e-5)
        assert torch.allclose(answer_loss(model, bounded), plain, atol=1e-5)


@pytest.mark.parametrize("packed", [False, True])
def test_token_budget_batches(packed):
    lengths = [30, 10, 50, 20, 40, 10, 300]
    groups = length_grouped_batches(lengths, batch_size=4, max_tokens=100, packed=packed)
    assert sorted(i for g in groups for i in g) == list(range(len(lengths)))
    for g in groups:
        cost = sum(lengths[i] for i in g) if packed else len(g) * max(lengths[i] for i in g)
        assert len(g) <= 4 and (cost <= 100 or len(g) == 1)
    assert [6] in groups
    # Without a budget the row cap alone decides, shortest rows first.
    assert length_grouped_batches(lengths, 4) == [[1, 5, 3, 0], [4, 2, 6]]


def test_prebuilt_batches_use_the_records_token_ids(tiny_tokenizer, records, tmp_path):
    """The data step's ids, not a second tokenization; the collator sees one prebuilt batch per step."""
    job = TrainJob("unused", records, [], tmp_path, training=TrainingConfig(batch_size=8, max_batch_tokens=200))
    built = batches(job, records)
    assert sum(len(b) for b in built) == len(records)
    assert all(len(b) * max(len(r["input_ids"]) for r in b) <= 200 or len(b) == 1 for b in built)
    collated = BatchCollator(PadCollator(tiny_tokenizer.pad_token_id))([built[0]])
    first = built[0][0]
    row = next(i for i, r in enumerate(built[0]) if r is first)
    assert collated["input_ids"][row, : len(first["input_ids"])].tolist() == first["input_ids"]
    assert (collated["labels"] != IGNORE).sum() == sum(sum(t != IGNORE for t in r["labels"]) for r in built[0])


def _job(tiny_model_dir, tmp_path, dtype, lora: LoraConfig = LoraConfig(r=4, alpha=8), **training):
    return TrainJob(
        tiny_model_dir, [], [], tmp_path, model=ModelConfig(dtype=dtype), lora=lora, training=TrainingConfig(**training)
    )


def _hidden(out):
    return out[0] if isinstance(out, tuple) else out


def test_last_layers_adapts_only_those_and_the_backward_stops_there(tiny_model_dir, tiny_tokenizer, records, tmp_path):
    model = load_trainable_model(_job(tiny_model_dir, tmp_path, "float32", LoraConfig(r=4, alpha=8, last_layers=1)))
    layers = model.get_base_model().model.layers
    adapted = [i for i, layer in enumerate(layers) if any(p.requires_grad for p in layer.parameters())]
    assert adapted == [len(layers) - 1]
    needs_grad = {}  # a layer's output is in the backward graph only if something at or below it trains
    for i, layer in enumerate(layers):
        layer.register_forward_hook(lambda _m, _in, out, i=i: needs_grad.__setitem__(i, _hidden(out).requires_grad))
    answer_loss(model, PadCollator(tiny_tokenizer.pad_token_id)(records[:2])).backward()
    assert [i for i, g in needs_grad.items() if g] == [len(layers) - 1], "the backward pass goes below the adapter"
    with pytest.raises(TrainingSetupError, match="lora.last_layers: 99, but the base model has"):
        load_trainable_model(_job(tiny_model_dir, tmp_path, "float32", LoraConfig(last_layers=99)))


def test_adapters_in_the_compute_dtype_and_nothing_upcast(tiny_model_dir, tmp_path):
    model = load_trainable_model(_job(tiny_model_dir, tmp_path, "bfloat16", gradient_checkpointing=True))
    trainable = {p.dtype for p in model.parameters() if p.requires_grad}
    frozen = {n: p.dtype for n, p in model.named_parameters() if not p.requires_grad}
    assert trainable == {torch.bfloat16}
    assert set(frozen.values()) == {torch.bfloat16}, "embeddings, norms and head stay in the model's dtype"
    kept = load_trainable_model(_job(tiny_model_dir, tmp_path, "bfloat16", adapter_dtype="float32"))
    assert {p.dtype for p in kept.parameters() if p.requires_grad} == {torch.float32}


def test_float16_adapters_keep_float32_for_the_gradient_scaler(tiny_model_dir, tiny_tokenizer, records, tmp_path):
    """fp16 training scales the loss, and the scaler refuses to unscale float16 gradients: the first optimizer
    step would fail with adapters in the compute dtype."""
    model = load_trainable_model(_job(tiny_model_dir, tmp_path, "float16"))
    adapters = [p for p in model.parameters() if p.requires_grad]
    assert {p.dtype for p in adapters} == {torch.float32}
    assert {p.dtype for p in model.parameters() if not p.requires_grad} == {torch.float16}
    scaler, optimizer = torch.amp.GradScaler("cpu"), torch.optim.AdamW(adapters)
    scaler.scale(answer_loss(model, PadCollator(tiny_tokenizer.pad_token_id)(records[:2]))).backward()
    scaler.unscale_(optimizer)  # raises "Attempting to unscale FP16 gradients" on float16 adapters


def test_adapter_dtype_keeps_the_loss(tiny_model_dir, tiny_tokenizer, records, tmp_path):
    batch = PadCollator(tiny_tokenizer.pad_token_id)(records[:4])
    losses = []
    for adapter_dtype in ("compute", "float32"):
        model = load_trainable_model(_job(tiny_model_dir, tmp_path, "bfloat16", adapter_dtype=adapter_dtype)).eval()
        with torch.no_grad():
            losses.append(float(answer_loss(model, batch)))
    assert losses[0] == pytest.approx(losses[1], rel=2e-2)  # bf16 rounding of a zero-initialized update only


def test_qlora_keeps_gradient_checkpointing_on_by_default(tiny_model_dir, tmp_path):
    quantized = TrainJob(tiny_model_dir, [], [], tmp_path, model=ModelConfig(quantization="4bit", dtype="bfloat16"))
    assert quantized.gradient_checkpointing
    assert not TrainJob(tiny_model_dir, [], [], tmp_path).gradient_checkpointing
    off = TrainJob(
        tiny_model_dir,
        [],
        [],
        tmp_path,
        model=ModelConfig(quantization="4bit"),
        training=TrainingConfig(gradient_checkpointing=False),
    )
    assert not off.gradient_checkpointing


def test_liger_and_compile_reach_the_trainer(tmp_path):
    job = TrainJob("unused", [], [], tmp_path, training=TrainingConfig(liger_kernel=True, torch_compile=True))
    args = trainer_arguments(job, max_steps=10, evaluate_during=False)
    assert args.use_liger_kernel and args.liger_kernel_config == LIGER_KERNELS and args.torch_compile
    # Our answer-only head replaces Liger's fused cross-entropy, which would compute every position's logits.
    assert not LIGER_KERNELS["fused_linear_cross_entropy"] and LIGER_KERNELS["rms_norm"] and LIGER_KERNELS["swiglu"]
    assert not trainer_arguments(TrainJob("unused", [], [], tmp_path), 10, False).use_liger_kernel


def test_loraplus_gives_the_b_matrices_their_own_rate(tiny_model_dir, tiny_tokenizer, records, tmp_path):
    def rates(**training):
        job = TrainJob(
            tiny_model_dir,
            records[:8],
            [],
            tmp_path,
            lora=LoraConfig(r=4, alpha=8),
            training=TrainingConfig(**training),
        )
        trainer = build_trainer(job, tiny_tokenizer, None, None)
        names = {id(p): n for n, p in trainer.model.named_parameters()}
        optimizer = trainer.create_optimizer()
        by_lr = {}
        for group in optimizer.param_groups:
            for p in group["params"]:
                by_lr.setdefault(round(group["lr"], 9), set()).add("lora_B" in names[id(p)])
        return by_lr, sum(len(g["params"]) for g in optimizer.param_groups)

    plain, n_plain = rates(learning_rate=1e-3)
    plus, n_plus = rates(learning_rate=1e-3, loraplus_lr_ratio=16)
    assert plain == {1e-3: {True, False}}
    assert plus == {1e-3: {False}, 1.6e-2: {True}}
    assert n_plus == n_plain  # every trainable parameter, in one group or the other


@pytest.mark.parametrize(
    "model, training, key",
    [
        ({}, {"liger_kernel": True}, "training.liger_kernel"),
        ({"attn_implementation": "flash_attention_2"}, {}, "model.attn_implementation: flash_attention_2"),
    ],
)
def test_cuda_only_levers_fail_clearly_without_cuda(model, training, key):
    with pytest.raises(TrainingSetupError, match=key):
        check_hardware(ModelConfig(**model), TrainingConfig(**training), cuda=False)
    check_hardware(ModelConfig(**model), TrainingConfig(**training), cuda=True)
