"""Teacher-forced exact match on the tiny model: an answer counts exactly when greedy decoding writes it, and the
loss is Hugging Face's loss over the answer tokens, whatever the batch and its padding."""

import pytest
import torch

from tuneline.data.chat_format import IGNORE
from tuneline.evaluate.teacher_forced import teacher_forced

PROMPTS = ["I like Tetris.", "Portal 2 is a great puzzle game on PlayStation.", "zzkq", "Halo, the game"]


@pytest.fixture(scope="module")
def model(tiny_model_dir):
    """The tiny model's shape, freshly initialized with spread-out logits: the stored one answers every prompt with
    its end token at once, which makes answers one token long."""
    from transformers import AutoConfig, AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(tiny_model_dir)).eval()
    with torch.no_grad():
        model.lm_head.weight.mul_(50.0)
    return model


def row(prompt: str, prompt_ids: list[int], answer: list[int]) -> dict:
    return {"prompt": prompt, "input_ids": prompt_ids + answer, "labels": [IGNORE] * len(prompt_ids) + answer}


def greedy(model, ids: list[int], n: int) -> list[int]:
    out = model.generate(
        torch.tensor([ids]),
        attention_mask=torch.ones(1, len(ids), dtype=torch.long),
        do_sample=False,
        max_new_tokens=n,
        pad_token_id=0,
    )
    answer = out[0, len(ids) :].tolist()
    assert len(answer) == n  # no end token on the way: answers as long as asked
    return answer


def test_exact_when_greedy_decoding_writes_the_answer_and_not_otherwise(model, tiny_tokenizer):
    rows, wrong = [], []
    for i, prompt in enumerate(PROMPTS):
        ids = tiny_tokenizer(prompt, add_special_tokens=False)["input_ids"]
        answer = greedy(model, ids, 6 + i)  # answers of different lengths: the batch pads
        flipped = list(answer)
        flipped[i % len(answer)] = (flipped[i % len(answer)] + 1) % model.config.vocab_size
        rows.append(row(prompt, ids, answer))
        wrong.append(row(prompt, ids, flipped))
    for batch in (1, 3, 8):
        assert teacher_forced(model, rows, batch).exact_match == 1.0
        assert teacher_forced(model, wrong, batch).exact_match == 0.0  # one token off is not exact
    # A prompt with several references is exact when one of them is: half the prompts keep a right answer.
    mixed = wrong + rows[:2]
    assert teacher_forced(model, mixed, 4).exact_match == 0.5


def test_loss_is_the_mean_over_answer_tokens_in_any_batch(model, tiny_tokenizer):
    rows = []
    for i, prompt in enumerate(PROMPTS):
        ids = tiny_tokenizer(prompt, add_special_tokens=False)["input_ids"]
        rows.append(row(prompt, ids, [(7 * i + k) % 100 + 3 for k in range(3 + 2 * i)]))
    total, tokens = 0.0, 0
    for r in rows:  # Hugging Face's own loss, one unpadded row at a time, weighted by its answer tokens
        n = sum(t != IGNORE for t in r["labels"][1:])
        out = model(input_ids=torch.tensor([r["input_ids"]]), labels=torch.tensor([r["labels"]]))
        total, tokens = total + out.loss.item() * n, tokens + n
    for batch in (1, 4):
        assert teacher_forced(model, rows, batch).loss == pytest.approx(total / tokens, rel=1e-4)
