import pytest
import torch

from tuneline.train.batching import PackCollator, PadCollator, pack
from tuneline.data.chat_format import IGNORE, tokenize_segments
from tuneline.config import EvaluationConfig, LoraConfig, ModelConfig, TrainingConfig
from tuneline.train.lora_model import TrainingSetupError, check_hardware
from tuneline.train.trainer import answer_loss
from tuneline.train.train_job import TrainJob

PROMPT = {"text": "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n", "train": False}
ANSWER = {"text": "request(genres[puzzle])<|im_end|>", "train": True}


def test_labels_cover_answer_and_eos_even_when_pad_is_eos(tiny_tokenizer):
    tok = tiny_tokenizer
    assert tok.pad_token_id == tok.eos_token_id  # the trap this guards against
    ex = tokenize_segments(tok, [PROMPT, ANSWER], 64)
    targets = [t for t in ex["labels"] if t != IGNORE]
    assert targets[-1] == tok.eos_token_id
    assert tok.decode(targets[:-1]) == "request(genres[puzzle])"
    batch = PadCollator(tok.pad_token_id)([ex, {"input_ids": [5, 6], "labels": [IGNORE, 6]}])
    short = batch["labels"][1]
    assert short[2:].eq(IGNORE).all() and batch["attention_mask"][1].sum() == 2
    assert batch["labels"][0][len(ex["labels"]) - 1] == tok.eos_token_id


def test_truncation_keeps_answer(tiny_tokenizer):
    ex = tokenize_segments(tiny_tokenizer, [{"text": "x " * 200, "train": False}, ANSWER], 32)
    assert len(ex["input_ids"]) == 32 and ex["labels"][-1] == tiny_tokenizer.eos_token_id and ex["truncated"]


def test_lora_training_learns_and_adapter_generates(tiny_model_dir, tiny_tokenizer, tmp_path):
    """Real peft + Trainer on the tiny model: loss falls, and the saved adapter loads for evaluation."""
    from tuneline.config import DataConfig
    from tuneline.evaluate.evaluation import evaluate_model
    from tuneline.data.sources import load_splits
    from tuneline.train.training import train_lora
    from tuneline.data.validation import prepare

    data = DataConfig(source="synthetic:viggo")
    splits = prepare(load_splits(data), data, tiny_tokenizer).splits
    logged = []
    job = TrainJob(
        tiny_model_dir,
        splits["train"],
        splits["validation"],
        tmp_path,
        lora=LoraConfig(r=8, alpha=16, dropout=0.0),
        training=TrainingConfig(max_steps=60, learning_rate=1e-2, batch_size=8, logging_steps=10),
    )
    result = train_lora(job, on_metrics=lambda step, values: logged.append((step, values)))
    losses = [h["loss"] for h in result.history]
    assert len(losses) == 6 and losses[-1] < losses[0] * 0.7
    assert (result.adapter_dir / "adapter_config.json").is_file()
    assert any("eval_loss" in v for _, v in logged) and result.eval_loss is not None
    res = evaluate_model(
        "tuned",
        "viggo",
        tiny_model_dir,
        splits["test"][:4],
        EvaluationConfig(batch_size=2, max_new_tokens=8),
        adapter_dir=result.adapter_dir,
    )
    assert res.n_examples == 4 and len(res.predictions) == 4 and 0.0 <= res.metrics["rouge1"] <= 1.0


def _examples(tok, n):
    answers = ["inform(name[Halo])", "request(genres[puzzle], platforms[PC])", "confirm(rating[good])"]
    return [
        tokenize_segments(
            tok,
            [
                {
                    "text": f"<|im_start|>user\nsentence {i} " + "x " * (3 * i) + "<|im_end|>\n<|im_start|>assistant\n",
                    "train": False,
                },
                {"text": answers[i % 3] + "<|im_end|>", "train": True},
            ],
            128,
        )
        for i in range(n)
    ]


def test_pack_fills_bins_without_overflow():
    lengths = [70, 50, 40, 30, 20, 60]
    bins = pack(lengths, 100)
    assert sorted(i for b in bins for i in b) == list(range(6))
    assert all(sum(lengths[i] for i in b) <= 100 for b in bins) and len(bins) == 3


def test_packed_rows_never_attend_across_examples(tiny_model_dir, tiny_tokenizer):
    """Same loss packed or padded: a token that saw its neighbour example would change it."""
    from tuneline.models.modeling import load_model

    model = load_model(tiny_model_dir).eval()
    batch = _examples(tiny_tokenizer, 5)
    packed = PackCollator(tiny_tokenizer.pad_token_id, capacity=128)(batch)
    padded = PadCollator(tiny_tokenizer.pad_token_id)(batch)
    assert packed["input_ids"].shape[0] < len(batch) and "attention_mask" not in packed
    assert (packed["labels"] != IGNORE).sum() == (padded["labels"] != IGNORE).sum()
    with torch.no_grad():
        together, apart = answer_loss(model, packed), answer_loss(model, padded)
        single = [answer_loss(model, PadCollator(tiny_tokenizer.pad_token_id)([b])) for b in batch]
    assert torch.allclose(together, apart, atol=1e-5)
    per_target = [int((torch.tensor(b["labels"][1:]) != IGNORE).sum()) for b in batch]
    mean = sum(loss * n for loss, n in zip(single, per_target)) / sum(per_target)
    assert torch.allclose(together, mean, atol=1e-5)
    # Without the packed positions the same row attends across examples, and the loss moves.
    with torch.no_grad():
        crossing = answer_loss(model, {**packed, "position_ids": None})
    assert not torch.allclose(crossing, together, atol=1e-4)


def test_answer_loss_matches_the_models_own_loss(tiny_model_dir, tiny_tokenizer):
    from tuneline.models.modeling import load_model

    model = load_model(tiny_model_dir).eval()
    batch = PadCollator(tiny_tokenizer.pad_token_id)(_examples(tiny_tokenizer, 3))
    with torch.no_grad():
        ours = answer_loss(model, batch)
        theirs = model(**batch, use_cache=False).loss
    assert torch.allclose(ours, theirs, atol=1e-5)


@pytest.mark.parametrize(
    "setting, key",
    [
        ({"quantization": "4bit"}, "model.quantization: 4bit"),
        ({"quantization": "8bit"}, "model.quantization: 8bit"),
        ({"dtype": "bfloat16"}, "model.dtype: bfloat16"),
    ],
)
def test_gpu_only_settings_fail_clearly_without_cuda(setting, key):
    cfg = ModelConfig(**setting)
    with pytest.raises(TrainingSetupError, match=key) as err:
        check_hardware(cfg, cuda=False)
    assert "CUDA" in str(err.value)
    check_hardware(cfg, cuda=True)  # the same config is fine on a GPU machine


def test_eval_loss_during_training_and_early_stopping(tiny_model_dir, tiny_tokenizer, tmp_path):
    """A learning rate that blows training up: validation loss rises, and patience 1 stops the run early."""
    from tuneline.config import DataConfig
    from tuneline.data.sources import load_splits
    from tuneline.train.training import train_lora
    from tuneline.data.validation import prepare

    data = DataConfig(source="synthetic:viggo")
    splits = prepare(load_splits(data), data, tiny_tokenizer).splits
    logged = []
    cfg = TrainingConfig(
        max_steps=60,
        learning_rate=3.0,
        batch_size=8,
        logging_steps=5,
        eval_steps=5,
        early_stopping_patience=1,
        warmup_ratio=0.0,
        lr_scheduler="constant_with_warmup",
    )
    job = TrainJob(
        tiny_model_dir,
        splits["train"],
        splits["validation"][:16],
        tmp_path,
        lora=LoraConfig(r=8, alpha=16, dropout=0.0),
        training=cfg,
    )
    result = train_lora(job, on_metrics=lambda step, values: logged.append((step, values)))
    evals = [(step, v["eval_loss"]) for step, v in logged if "eval_loss" in v]
    assert [s for s, _ in evals][:2] == [5, 10]
    assert result.steps < 60 and result.steps % 5 == 0


def test_early_stopping_needs_eval_steps():
    with pytest.raises(ValueError, match="early_stopping_patience needs eval_steps"):
        TrainingConfig(early_stopping_patience=2)
