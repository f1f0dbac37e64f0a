"""`run.py init`: read a user's data, propose how tuneline should read it (format, fields, task), and say why.

The proposal comes from the rows themselves: the answer is the field the task's parser reads in (nearly) every
row (JSON objects or lists: task `json`; `act(slot[value])`: task `viggo`), else a field with an answer-like
name (task `text`); the input is the remaining text field with an input-like name, else the longest one. When
nothing but the order of two plain text fields would decide which is the answer, the direction is a guess that
could train the reverse task: the user is asked for `--input` and `--answer` instead.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from tuneline.data.formats import canonical_json, detect_format
from tuneline.config import DataConfig
from tuneline.data.readers import ERROR
from tuneline.tasks import PARSERS

SAMPLE = 500  # rows read to decide
AGREE = 0.9  # share of rows a field must satisfy to be chosen
INPUT_NAMES = (
    "input",
    "text",
    "sentence",
    "utterance",
    "question",
    "query",
    "prompt",
    "instruction",
    "source",
    "document",
    "context",
    "content",
)
OUTPUT_NAMES = (
    "output",
    "answer",
    "label",
    "labels",
    "target",
    "response",
    "completion",
    "extraction",
    "result",
    "json",
    "meaning_representation",
    "references",
    "summary",
)
FIXED_FORMATS = {
    "chat": "a 'messages' list",
    "instruction": "'instruction' and 'output'",
    "prompt_completion": "'prompt' and 'completion'",
}


class ProposalError(ValueError):
    """The rows give nothing to propose from; the message says what was found."""


@dataclass
class Proposal:
    format: str
    task: str
    input_field: str | None
    output_field: str | None
    rows_read: int
    coverage: dict[str, float]  # share of the rows read that have each key
    why: list[str] = field(default_factory=list)
    example: tuple[str, str] | None = None  # one (input, answer) pair from the file, as it would be trained

    def data_section(self, source: str) -> dict:
        section = {"source": source, "task": self.task, "format": self.format}
        if self.format == "fields":
            section |= {"input_field": self.input_field, "output_field": self.output_field}
        return section


def _as_answer(value) -> str | None:
    """A value as the answer text tuneline would train on (objects and lists as JSON), or None if it cannot be."""
    if isinstance(value, (dict, list)):
        return canonical_json(value)
    return value if isinstance(value, str) and value.strip() else None


def _share(rows: list[dict], key: str, accept) -> float:
    return sum(1 for r in rows if accept(r.get(key))) / len(rows)


def _parses(task: str):
    return lambda value: (text := _as_answer(value)) is not None and PARSERS[task](text) is not None


def _is_text(value) -> bool:
    return isinstance(value, str) and bool(value.strip())


def _by_name(keys: list[str], names: tuple[str, ...]) -> str | None:
    lowered = {k.lower(): k for k in keys}
    return next((lowered[n] for n in names if n in lowered), None)


def propose(
    rows: list[dict], task: str | None = None, input_field: str | None = None, answer_field: str | None = None
) -> Proposal:
    """`input_field` and `answer_field` are the user's choice (`--input`, `--answer`); each must be a field of
    (nearly) every row."""
    rows = [r for r in rows if ERROR not in r][:SAMPLE]
    if not rows:
        raise ProposalError("no readable rows (every line was refused: see `run.py --prepare-only` for why)")
    counts = Counter(k for r in rows for k in r if not k.startswith("_"))
    coverage = {k: n / len(rows) for k, n in counts.most_common()}
    keys = [k for k, share in coverage.items() if share >= AGREE]
    formats = Counter(detect_format(r, DataConfig()) for r in rows)
    fmt, n = formats.most_common(1)[0]
    if fmt in FIXED_FORMATS and n / len(rows) >= AGREE:
        chosen = task or "text"
        return Proposal(
            fmt,
            chosen,
            None,
            None,
            len(rows),
            coverage,
            [
                f"{n} of {len(rows)} rows have {FIXED_FORMATS[fmt]}: format '{fmt}'",
                f"task '{chosen}'" + ("" if task else " (give --task json or viggo if answers are structured)"),
            ],
        )
    for flag, given in (("--input", input_field), ("--answer", answer_field)):
        if given is not None and given not in keys:
            raise ProposalError(
                f"{flag} '{given}' is not a field of {AGREE:.0%} of rows; fields: {_describe(rows, keys)}"
            )
    proposal = _propose_fields(rows, keys, coverage, task, input_field, answer_field)
    proposal.example = _example(rows, proposal.input_field, proposal.output_field)
    return proposal


def _example(rows: list[dict], source: str, output: str) -> tuple[str, str] | None:
    row = next((r for r in rows if _is_text(r.get(source)) and _as_answer(r.get(output)) is not None), None)
    return (row[source], _as_answer(row[output])) if row else None


def _propose_fields(
    rows: list[dict],
    keys: list[str],
    coverage: dict[str, float],
    task: str | None,
    input_field: str | None,
    answer_field: str | None,
) -> Proposal:
    why = []
    structured = [task] if task in ("json", "viggo") else [] if task == "text" else ["json", "viggo"]
    output, chosen = answer_field, None
    for candidate_task in structured:
        readable = [
            k
            for k in ([answer_field] if answer_field else keys)
            if k != input_field and _share(rows, k, _parses(candidate_task)) >= AGREE
        ]
        if readable:
            output = answer_field or _by_name(readable, OUTPUT_NAMES) or readable[0]
            chosen = candidate_task
            why.append(
                f"'{output}' reads as task '{candidate_task}' in "
                f"{_share(rows, output, _parses(candidate_task)):.0%} of rows: the answer"
                + (" (--answer)" if answer_field else "")
            )
            break
    if task in ("json", "viggo") and chosen is None:
        raise ProposalError(f"no field reads as task '{task}' in {AGREE:.0%} of rows; fields: {_describe(rows, keys)}")
    chosen = chosen or "text"
    texts = [k for k in keys if _share(rows, k, _is_text) >= AGREE and k != output]
    if output is None:
        output = _text_answer(rows, texts, input_field)
        texts.remove(output)
        why.append(
            f"'{output}' is text with an answer-like name (or beside a field named as the input): the answer, "
            "task 'text' (no field reads as JSON or act(slot[value]))"
        )
    elif output == answer_field and chosen == "text":
        why.append(f"'{output}': the answer (--answer), task 'text'")
    if input_field:
        return Proposal(
            "fields", chosen, input_field, output, len(rows), coverage, why + [f"'{input_field}': the input (--input)"]
        )
    if not texts:
        raise ProposalError(f"no text field left for the input besides '{output}'; fields: {_describe(rows, keys)}")
    named = _by_name(texts, INPUT_NAMES)
    source = named or max(texts, key=lambda k: _mean_length(rows, k))
    if named:
        reason = "with an input-like name"
    elif len(texts) == 1:
        reason = "the only other text field"
    else:
        reason = f"the longest of {len(texts)} text fields ({_mean_length(rows, source):.0f} characters on average)"
    why.append(f"'{source}' is text, {reason}: the input")
    return Proposal("fields", chosen, source, output, len(rows), coverage, why)


def _text_answer(rows: list[dict], texts: list[str], input_field: str | None) -> str:
    """The answer among plain text fields: only a field whose name says so (or whose partner's name says it is
    the input) is chosen; anything else would be a guess at the direction."""
    others = [k for k in texts if k != input_field]
    named = _by_name(others, OUTPUT_NAMES)
    if named:
        return named
    if input_field and len(others) == 1:
        return others[0]
    inputs = _by_name(others, INPUT_NAMES)
    if inputs and len(others) == 2:
        return next(k for k in others if k != inputs)
    if len(others) < 2:
        raise ProposalError(f"need two text fields (input and answer); text fields: {others or 'none'}")
    a, b = others[:2]
    row = next((r for r in rows if _is_text(r.get(a)) and _is_text(r.get(b))), {})
    raise ProposalError(
        f"which text field is the answer is a guess: '{a}' -> '{b}' or '{b}' -> '{a}'? One row: {a}: "
        f"{_clip(row.get(a))} | {b}: {_clip(row.get(b))}. Say which with --input FIELD --answer FIELD"
    )


def _mean_length(rows: list[dict], key: str) -> float:
    lengths = [len(r[key]) for r in rows if _is_text(r.get(key))]
    return sum(lengths) / max(len(lengths), 1)


def _clip(text, limit: int = 80) -> str:
    text = repr(text)
    return text if len(text) <= limit else text[: limit - 4] + "...'"


def _describe(rows: list[dict], keys: list[str]) -> str:
    def kind(k: str) -> str:
        types = Counter(type(r.get(k)).__name__ for r in rows)
        return "/".join(t for t, _ in types.most_common(2))

    return ", ".join(f"'{k}' ({kind(k)})" for k in keys) or "none in 90% of rows"
