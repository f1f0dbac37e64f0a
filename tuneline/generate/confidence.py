"""How sure the model was of an answer and of each of its fields, from the log-probabilities of the tokens it
generated (tuneline/generate/generation.py records them during greedy decoding; nothing is run again).

A unit's confidence is the probability of its least likely token: exp(min log-prob). A wrong value is usually
one guessed token (the first of an invented name, `poor` for `average`) followed by tokens that are certain once
it is written (`Spell` -> `Force 3`), so the mean over a value's tokens dilutes the guess by the value's length,
and the minimum does not. Units: the act (viggo), and each field with its name: a viggo slot `name[value]`, a
json leaf `"key": value` keyed by its flattened path as `tuneline.tasks.flatten` names it (a list compared as a
set is one field). A field's tokens are those whose characters overlap it, so a token that also holds `, ` or
`]` counts for it.

The answer's confidence is the geometric mean of all its tokens' probabilities, the end-of-answer token included:
exp(mean log-prob). Which answers are right depends on more than their least sure token; on the default model's
validation answers (benchmarks/confidence_ranking.py) the mean ranked right above wrong answers better than the
minimum (AUROC 0.850 against 0.842) and let a 0.95-precision threshold accept more of them (0.200 against 0.143).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

from tuneline.config import JsonMatch
from tuneline.tasks import json_located, parse_json, viggo_spans

Span = tuple[int, int]
# What an answer's confidence is; a threshold recorded for another measure cannot be compared with it.
ANSWER_MEASURE = "geometric mean of token probabilities"


@dataclass(frozen=True)
class Confidence:
    answer: float
    act: float | None = None  # viggo only
    fields: dict[str, float] = field(default_factory=dict)  # empty when the answer does not parse

    def as_row(self) -> dict:
        """The keys an evaluation prediction (and a served answer) carries."""
        return {"confidence": self.answer, "field_confidence": dict(self.fields)} | (
            {"act_confidence": self.act} if self.act is not None else {}
        )


def token_spans(tokenizer, ids: list[int]) -> tuple[str, list[Span]]:
    """The answer text as `generate_greedy` returns it (decoded, stripped) and each token's characters in it.

    Prefixes are decoded, so any tokenizer works (byte-level BPE, SentencePiece). A token holding part of a
    multi-byte character decodes to U+FFFD until the character completes: its span ends past that character
    and the completing token's span starts before it, so both count for it."""
    prefixes = tokenizer.batch_decode([ids[:k] for k in range(len(ids) + 1)], skip_special_tokens=True)
    full = prefixes[-1]
    lead = len(full) - len(full.lstrip())
    text = full.strip()

    def at(i: int) -> int:
        return min(max(i - lead, 0), len(text))

    spans = [(at(len(prefixes[k].rstrip("\ufffd"))), at(len(prefixes[k + 1]))) for k in range(len(ids))]
    return text, spans


def _json_units(text: str, pos: int, path: str, match: JsonMatch, decoder=json.JSONDecoder()) -> tuple[int, dict]:
    """(end, {path: span}) of the JSON value at `pos`, paths as `flatten` makes them."""
    pos = _skip(text, pos)
    start, opener = pos, text[pos]
    if opener == "{" and text[_skip(text, pos + 1)] != "}":
        units, pos = {}, _skip(text, pos + 1)
        while text[pos] != "}":
            key, after = json.decoder.scanstring(text, pos + 1)
            child = f"{path}.{key}" if path else key
            end, inner = _json_units(text, _skip(text, after) + 1, child, match)
            units |= {p: (pos, e) if p == child else (s, e) for p, (s, e) in inner.items()}  # a leaf owns its key
            pos = _skip(text, end)
            pos = _skip(text, pos + 1) if text[pos] == "," else pos
        return pos + 1, units
    if opener == "[" and not match.lists_as_sets and text[_skip(text, pos + 1)] != "]":
        units, pos, i = {}, _skip(text, pos + 1), 0
        while text[pos] != "]":
            end, inner = _json_units(text, pos, f"{path}[{i}]", match)
            units |= inner
            pos, i = _skip(text, end), i + 1
            pos = _skip(text, pos + 1) if text[pos] == "," else pos
        return pos + 1, units
    end = decoder.raw_decode(text, pos)[1]
    return end, {path or ("[]" if opener == "[" else "value"): (start, end)}


def _skip(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in " \t\n\r":
        pos += 1
    return pos


def field_spans(task: str, text: str, match: JsonMatch = JsonMatch()) -> tuple[Span | None, dict[str, list[Span]]]:
    """(act span, {field: spans}) of a parsed answer; a viggo slot written twice has two spans."""
    if task == "viggo" and (found := viggo_spans(text)) is not None:
        act, slots = found
        spans: dict[str, list[Span]] = {}
        for name, span in slots:
            spans.setdefault(name, []).append(span)
        return act, spans
    if task == "json" and parse_json(text, match) is not None:
        _, start = json_located(text)
        return None, {p: [s] for p, s in _json_units(text, start, "", match)[1].items()}
    return None, {}


def answer_confidence(
    task: str, text: str, spans: list[Span], logprobs: list[float], match: JsonMatch = JsonMatch()
) -> Confidence:
    """The confidence of one generated answer. `spans` and `logprobs` are per generated token (from
    `token_spans` and the decoding); `logprobs` may hold one more, the end-of-answer token's."""
    spans = spans + [(len(text), len(text))] * (len(logprobs) - len(spans))

    def unit(where: list[Span]) -> float:
        inside = [lp for (a, b), lp in zip(spans, logprobs) if any(a < e and b > s for s, e in where)]
        return math.exp(min(inside)) if inside else 1.0

    act, fields = field_spans(task, text, match)
    return Confidence(
        answer=math.exp(sum(logprobs) / len(logprobs)) if logprobs else 1.0,
        act=None if act is None else unit([act]),
        fields={name: unit(where) for name, where in fields.items()},
    )
