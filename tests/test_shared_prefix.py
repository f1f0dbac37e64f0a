"""Prompts that begin alike run their common start once (tuneline/generate/generation.py) and get the answers they
would get without it."""

import pytest

from tuneline.generate.generation import MIN_SHARED_TOKENS, generate_greedy, shared_prefix

SYSTEM = (
    "<|im_start|>system\n" + "Answer with the meaning representation only, as in the examples. " * 6 + "<|im_end|>\n"
)
PROMPTS = [SYSTEM + f"<|im_start|>user\n{'word ' * n}<|im_end|>\n<|im_start|>assistant\n" for n in (1, 9, 3, 14, 6, 2)]


def test_shared_start_keeps_a_token_of_each_prompt_and_a_floor():
    long = list(range(100, 100 + MIN_SHARED_TOKENS + 5))
    assert shared_prefix([long, long + [7], long[:-1] + [8, 9]]) == len(long) - 1
    assert shared_prefix([long, long + [7]]) == len(long) - 1  # the first prompt keeps its last token
    assert shared_prefix([long[: MIN_SHARED_TOKENS - 1] + [1], long[: MIN_SHARED_TOKENS - 1] + [2]]) == 0
    assert shared_prefix([long]) == 0  # nothing to share with


@pytest.mark.parametrize("max_batch_tokens", [None, 160])
def test_shared_start_runs_once_and_answers_as_without_it(tiny_model_dir, tiny_tokenizer, max_batch_tokens):
    from tuneline.models.modeling import load_model

    model = load_model(tiny_model_dir)
    ids = tiny_tokenizer(PROMPTS, add_special_tokens=False)["input_ids"]
    common = next(i for i in range(min(map(len, ids))) if len({row[i] for row in ids}) > 1)
    shared = generate_greedy(model, tiny_tokenizer, PROMPTS, 4, 6, max_batch_tokens=max_batch_tokens)
    plain = generate_greedy(model, tiny_tokenizer, PROMPTS, 4, 6, max_batch_tokens=max_batch_tokens, share_prefix=False)
    alone = [generate_greedy(model, tiny_tokenizer, [p], 1, 6) for p in PROMPTS]
    assert shared.shared_tokens == common >= MIN_SHARED_TOKENS and plain.shared_tokens == 0
    assert shared.texts == plain.texts == [a.texts[0] for a in alone]
    assert shared.new_tokens == plain.new_tokens
    for with_, without in zip(shared.logprobs, plain.logprobs):
        assert with_ == pytest.approx(without, abs=1e-4)
