"""Continuous batching on the tiny model: rows that join a batch mid-decoding, and rows that leave it when they end,
get the tokens and log-probabilities each would get decoded alone."""

import copy
from collections import Counter

import pytest
import torch

from tuneline.generate.continuous import Decoder

PROMPTS = ["I like Tetris.", "Portal 2 is a great puzzle game on PlayStation.", "zzkq", "Halo", "Do you know Myst?"]
NEW = 12


@pytest.fixture(scope="module")
def model(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()


def alone(model, ids: list[int], eos: int) -> tuple[list[int], list[float]]:
    """Hugging Face's greedy `generate` on one prompt, no padding: the reference."""
    out = model.generate(
        torch.tensor([ids]),
        attention_mask=torch.ones(1, len(ids), dtype=torch.long),
        do_sample=False,
        max_new_tokens=NEW,
        eos_token_id=eos,
        pad_token_id=eos,
        output_logits=True,
        return_dict_in_generate=True,
    )
    tokens = out.sequences[0, len(ids) :].tolist()
    logprobs = [torch.log_softmax(step[0].float(), -1)[t].item() for step, t in zip(out.logits, tokens)]
    return (tokens[: tokens.index(eos)] if eos in tokens else tokens), logprobs


def test_rows_joining_and_leaving_get_what_they_get_alone(model, tiny_tokenizer):
    prompts = [tiny_tokenizer(p, add_special_tokens=False)["input_ids"] for p in PROMPTS]
    # An end token the random model does write, so rows end at different steps, but not in the first two rows'
    # first four tokens, so they are still decoding when the others join.
    free = [alone(model, p, eos=-1)[0] for p in prompts]
    early = {t for ids in free[:2] for t in ids[:4]}
    eos = Counter(t for ids in free for t in ids if t not in early).most_common(1)[0][0]
    expected = {i: alone(model, p, eos) for i, p in enumerate(prompts)}
    assert len({len(ids) for ids, _ in expected.values()}) > 1, "the rows should end at different steps"

    decoder, ended, widths = Decoder(model, eos, pad_token_id=0, max_new_tokens=NEW), [], []
    ended += decoder.add(prompts[:2], [0, 1])
    for _ in range(3):
        ended += decoder.step()
    ended += decoder.add(prompts[2:], [2, 3, 4])  # join two rows three tokens into their answers
    while len(decoder):
        widths.append((decoder._mask.shape[1], len(decoder)))
        ended += decoder.step()

    assert sorted(row.key for row in ended) == [0, 1, 2, 3, 4]
    for row in ended:
        ids, logprobs = expected[row.key]
        assert row.ids == ids, f"prompt {row.key}"
        assert row.ended == (len(logprobs) > len(ids))
        assert row.logprobs == pytest.approx(logprobs, abs=1e-4)
    longest = max(map(len, prompts))
    assert all(width <= longest + NEW for width, _ in widths), "padding nobody needs is dropped"
    assert len({rows for _, rows in widths}) > 1, "rows left the batch as they ended"


SHARED = "Answer with the meaning representation only, as in the examples. " * 6


@pytest.mark.parametrize("start", ["", SHARED], ids=["distinct", "shared start"])
def test_continuous_batches_answer_as_fixed_batches(model, tiny_tokenizer, start):
    """Evaluation's batches are continuous: with two places for five prompts, rows that end early make room for
    waiting ones, and every answer and log-probability is the one Hugging Face's fixed batches give."""
    from tuneline.generate.generation import generate_greedy

    prompts = [start + p for p in PROMPTS]
    ids = [tiny_tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    free = [alone(model, p, eos=-1)[0] for p in ids]
    tokenizer = copy.deepcopy(tiny_tokenizer)  # an end token the random model writes, at different steps
    common = Counter(t for row in free for t in row[2:]).most_common(1)[0][0]
    tokenizer.eos_token = tokenizer.convert_ids_to_tokens(common)

    fixed = generate_greedy(model, tokenizer, prompts, 2, NEW, continuous=False)
    continuous = generate_greedy(model, tokenizer, prompts, 2, NEW)
    assert continuous.texts == fixed.texts
    assert continuous.new_tokens == fixed.new_tokens
    assert len({len(lps) for lps in continuous.logprobs}) > 1, "the rows should end at different steps"
    for got, want in zip(continuous.logprobs, fixed.logprobs):
        assert got == pytest.approx(want, abs=1e-4)
    assert continuous.shared_tokens == fixed.shared_tokens
    assert (continuous.shared_tokens > 0) == bool(start)
