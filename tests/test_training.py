from tuneline.chat_format import IGNORE, tokenize_segments
from tuneline.config import EvaluationConfig, LoraConfig, TrainingConfig
from tuneline.training import PadCollator

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
    from tuneline.evaluation import evaluate_model
    from tuneline.sources import load_splits
    from tuneline.training import train_lora
    from tuneline.validation import prepare

    data = DataConfig(source="synthetic:viggo")
    splits = prepare(load_splits(data), data, tiny_tokenizer).splits
    logged = []
    result = train_lora(
        tiny_model_dir, splits["train"], splits["validation"], LoraConfig(r=8, alpha=16, dropout=0.0),
        TrainingConfig(max_steps=60, learning_rate=1e-2, batch_size=8, logging_steps=10), tmp_path, max_seq_len=128,
        on_metrics=lambda step, values: logged.append((step, values)),
    )
    losses = [h["loss"] for h in result.history]
    assert len(losses) == 6 and losses[-1] < losses[0] * 0.7
    assert (result.adapter_dir / "adapter_config.json").is_file()
    assert any("eval_loss" in v for _, v in logged) and result.eval_loss is not None
    res = evaluate_model("tuned", "viggo", tiny_model_dir, splits["test"][:4], EvaluationConfig(batch_size=2, max_new_tokens=8),
                         adapter_dir=result.adapter_dir)
    assert res.n_examples == 4 and len(res.predictions) == 4 and 0.0 <= res.metrics["rouge1"] <= 1.0
