"""Per-field confidence from the log-probabilities greedy decoding records, checked against a teacher-forced
forward pass on the tiny model."""

import math

import pytest
import torch
from transformers import LogitsProcessor

from tuneline.config import JsonMatch
from tuneline.generate.confidence import answer_confidence, field_spans, token_spans
from tuneline.generate.generation import generate_greedy
from tuneline.tasks import flatten, json_value

PROMPT = "<|im_start|>user\nI think Halo is poor.<|im_end|>\n<|im_start|>assistant\n"


class Force(LogitsProcessor):
    """Writes `plan` (token ids; None lets the model choose), then ends the answer."""

    def __init__(self, plan: list[int | None], prompt_len: int, eos: int):
        self.plan, self.prompt_len, self.eos = plan, prompt_len, eos

    def __call__(self, input_ids, scores):
        step = input_ids.shape[1] - self.prompt_len
        want = self.plan[step] if step < len(self.plan) else self.eos
        if want is None:
            return scores
        forced = torch.full_like(scores, -math.inf)
        forced[:, want] = 0.0
        return forced


@pytest.fixture(scope="module")
def model(tiny_model_dir):
    from tuneline.models.modeling import load_model

    return load_model(tiny_model_dir)


def ids(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def teacher_forced(model, tokenizer, answer: list[int]) -> list[float]:
    """Log-probability of each answer token (and the end token after it) from one forward pass, by hand."""
    prompt = ids(tokenizer, PROMPT)
    seq = torch.tensor([prompt + answer + [tokenizer.eos_token_id]])
    with torch.no_grad():
        logprobs = torch.log_softmax(model(seq).logits[0].float(), dim=-1)
    return [logprobs[len(prompt) - 1 + k, t].item() for k, t in enumerate(answer + [tokenizer.eos_token_id])]


def generate(model, tokenizer, parts: list[str | list[int | None]]):
    """Greedy decoding forced through `parts` (text, or token ids with None for the model's own choice)."""
    plan = [t for p in parts for t in (ids(tokenizer, p) if isinstance(p, str) else p)]
    force = Force(plan, len(ids(tokenizer, PROMPT)), tokenizer.eos_token_id)
    gen = generate_greedy(
        model, tokenizer, [PROMPT], batch_size=1, max_new_tokens=len(plan) + 1, constraint=lambda: force
    )
    return gen.texts[0], gen.spans[0], gen.logprobs[0]


def greedy_value(model, tokenizer, prefix: list[int], n: int) -> list[int]:
    """The model's own next `n` tokens after `prefix`, by hand."""
    seq = ids(tokenizer, PROMPT) + prefix
    for _ in range(n):
        with torch.no_grad():
            seq.append(int(model(torch.tensor([seq])).logits[0, -1].argmax()))
    return seq[-n:]


def test_field_confidence_is_its_tokens_least_probability(model, tiny_tokenizer):
    tok = tiny_tokenizer
    act, slot, close = ids(tok, "give_opinion("), ids(tok, "name["), ids(tok, "], rating[poor])")
    value = greedy_value(model, tok, act + slot, 2)
    text, spans, logprobs = generate(model, tok, [act, slot, value, close])
    assert text == tok.decode(act + slot + value + close) and text.startswith("give_opinion(name[")

    by_hand = teacher_forced(model, tok, act + slot + value + close)
    assert logprobs == pytest.approx(by_hand, abs=1e-4)  # the end token's included
    # name[...] is `name`, `[`, the value, and the token holding `]`; the act is its own tokens, not `(`.
    name = range(len(act), len(act) + len(slot) + len(value) + 1)
    conf = answer_confidence("viggo", text, spans, logprobs)
    assert set(conf.fields) == {"name", "rating"}
    assert conf.fields["name"] == pytest.approx(math.exp(min(by_hand[k] for k in name)), rel=1e-4)
    assert conf.act == pytest.approx(math.exp(min(by_hand[: len(act) - 1])), rel=1e-4)
    assert conf.answer == pytest.approx(math.exp(sum(by_hand) / len(by_hand)), rel=1e-4)


def test_a_forced_wrong_token_lowers_its_field_and_answer(model, tiny_tokenizer):
    tok = tiny_tokenizer
    act, slot, close = ids(tok, "give_opinion("), ids(tok, "name["), ids(tok, "], rating[poor])")
    value = greedy_value(model, tok, act + slot, 2)
    prompt = ids(tok, PROMPT)
    with torch.no_grad():
        logits = model(torch.tensor([prompt + act + slot])).logits[0, -1]
    letters = [t for t in range(len(tok)) if tok.decode([t]).isalpha()]
    wrong = min(letters, key=lambda t: logits[t].item())  # the least likely plain word piece
    right = answer_confidence("viggo", *generate(model, tok, [act, slot, value, close]))
    forced = answer_confidence("viggo", *generate(model, tok, [act, slot, [wrong, value[1]], close]))
    assert set(forced.fields) == {"name", "rating"}  # still parses: only the value changed
    assert forced.fields["name"] < right.fields["name"] / 10
    assert forced.answer < right.answer and forced.act == pytest.approx(right.act)


def test_token_spans_cover_each_character_even_split_bytes(tiny_tokenizer):
    text = " inform(name[Café Ω])"
    token_ids = ids(tiny_tokenizer, text)
    decoded, spans = token_spans(tiny_tokenizer, token_ids)
    assert decoded == text.strip() and len(spans) == len(token_ids)
    assert all(any(a <= i < b for a, b in spans) for i in range(len(decoded)))
    assert [a for a, _ in spans] == sorted(a for a, _ in spans) and spans[-1][1] == len(decoded)


def by_char(text: str, low: dict[str, float]) -> tuple[list, list]:
    """One token per character; the characters of each key in `low` get that log-probability, others 0."""
    logprobs = [0.0] * len(text)
    for piece, lp in low.items():
        start = text.index(piece)
        logprobs[start : start + len(piece)] = [lp] * len(piece)
    return [(i, i + 1) for i in range(len(text))], logprobs


@pytest.mark.parametrize("lists_as_sets", [True, False])
def test_json_fields_are_flatten_paths_with_their_keys(lists_as_sets):
    match = JsonMatch(lists_as_sets=lists_as_sets)
    text = 'Here: {"city": "Paris", "when": {"day": 3, "tags": ["a", "b"]}, "none": {}}'
    _, spans = field_spans("json", text, match)
    assert set(spans) == set(flatten(json_value(text), match))
    spans, logprobs = by_char(text, {'"day"': -2.0, '"b"': -1.0})
    conf = answer_confidence("json", text, spans, logprobs, match)
    assert conf.fields["when.day"] == pytest.approx(math.exp(-2.0))  # its key counts
    assert conf.fields["city"] == conf.fields["none"] == 1.0
    tags = conf.fields["when.tags"] if lists_as_sets else conf.fields["when.tags[1]"]
    assert tags == pytest.approx(math.exp(-1.0))
    assert conf.answer == pytest.approx(math.exp(sum(logprobs) / len(logprobs)))  # every token, not the least


def test_viggo_slot_written_twice_takes_its_least_confident_and_unparsed_has_no_fields():
    text = "inform(genres[puzzle], genres[shooter])"
    conf = answer_confidence("viggo", text, *by_char(text, {"shooter": -3.0}))
    assert conf.fields == {"genres": pytest.approx(math.exp(-3.0))} and conf.act == 1.0
    junk = answer_confidence("viggo", "inform(name[x]", *by_char("inform(name[x]", {"x": -1.0}))
    assert junk.fields == {} and junk.act is None and junk.answer == pytest.approx(math.exp(-1.0 / 14))
    ended = answer_confidence("text", "ok", [(0, 2)], [-0.1, -0.5])  # the end token counts for the answer
    assert ended.answer == pytest.approx(math.exp(-0.3)) and ended.as_row() == {
        "confidence": ended.answer,
        "field_confidence": {},
    }


def test_evaluation_carries_confidences_calibration_and_its_plot(tiny_model_dir):
    from tuneline.config import EvaluationConfig
    from tuneline.evaluate.evaluation import evaluate_model
    from tuneline.evaluate.report import eval_html

    records = [
        {
            "prompt": PROMPT.replace("Halo", name),
            "messages": [
                {"role": "user", "content": f"I think {name} is poor."},
                {"role": "assistant", "content": f"give_opinion(name[{name}], rating[poor])"},
            ],
        }
        for name in ("Halo", "Doom")
    ]
    result = evaluate_model("base", "viggo", tiny_model_dir, records, EvaluationConfig(max_new_tokens=8), device="cpu")
    assert all(0.0 < p["confidence"] <= 1.0 for p in result.predictions)
    assert {"calibration.ece", "calibration.mean_confidence", "calibration.exact_at_coverage_0.5"} <= set(
        result.metrics
    )
    assert "<svg" in eval_html(result) and "exact match vs coverage" in eval_html(result)
