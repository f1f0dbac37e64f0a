"""`run.py init`: read a user's data, propose how tuneline should read it (format, fields, task), and say why.

The proposal comes from the rows themselves: the answer is the field the task's parser reads in (nearly) every
row (JSON objects or lists: task `json`; `act(slot[value])`: task `viggo`), else a field with an answer-like
name (task `text`); the input is the remaining text field with an input-like name, else the longest one.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from tuneline.formats import canonical_json, detect_format
from tuneline.config import DataConfig
from tuneline.readers import ERROR
from tuneline.tasks import PARSERS

SAMPLE = 500  # rows read to decide
AGREE = 0.9  # share of rows a field must satisfy to be chosen
INPUT_NAMES = ("input", "text", "sentence", "utterance", "question", "query", "prompt", "instruction", "source",
               "document", "context", "content")
OUTPUT_NAMES = ("output", "answer", "label", "labels", "target", "response", "completion", "extraction", "result",
                "json", "meaning_representation", "references", "summary")
FIXED_FORMATS = {"chat": "a 'messages' list", "instruction": "'instruction' and 'output'",
                 "prompt_completion": "'prompt' and 'completion'"}


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


def propose(rows: list[dict], task: str | None = None) -> Proposal:
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
        return Proposal(fmt, chosen, None, None, len(rows), coverage,
                        [f"{n} of {len(rows)} rows have {FIXED_FORMATS[fmt]}: format '{fmt}'",
                         f"task '{chosen}'" + ("" if task else " (give --task json or viggo if answers are structured)")])
    return _propose_fields(rows, keys, coverage, task)


def _propose_fields(rows: list[dict], keys: list[str], coverage: dict[str, float], task: str | None) -> Proposal:
    why = []
    structured = [task] if task in ("json", "viggo") else [] if task == "text" else ["json", "viggo"]
    output, chosen = None, task or "text"
    for candidate_task in structured:
        readable = [k for k in keys if _share(rows, k, _parses(candidate_task)) >= AGREE]
        if readable:
            output = _by_name(readable, OUTPUT_NAMES) or readable[0]
            chosen = candidate_task
            why.append(f"'{output}' reads as task '{candidate_task}' in "
                       f"{_share(rows, output, _parses(candidate_task)):.0%} of rows: the answer")
            break
    if task in ("json", "viggo") and output is None:
        raise ProposalError(f"no field reads as task '{task}' in {AGREE:.0%} of rows; fields: {_describe(rows, keys)}")
    texts = [k for k in keys if _share(rows, k, _is_text) >= AGREE and k != output]
    if output is None:
        output = _by_name(texts, OUTPUT_NAMES) or (texts[-1] if len(texts) > 1 else None)
        if output is None:
            raise ProposalError(f"need two text fields (input and answer); fields: {_describe(rows, keys)}")
        why.append(f"'{output}' is text with an answer-like name or comes last: the answer, task 'text' "
                   "(no field reads as JSON or act(slot[value]))")
        texts.remove(output)
    if not texts:
        raise ProposalError(f"no text field left for the input besides '{output}'; fields: {_describe(rows, keys)}")
    named = _by_name(texts, INPUT_NAMES)
    source = named or max(texts, key=lambda k: sum(len(r[k]) for r in rows if _is_text(r.get(k))))
    why.append(f"'{source}' is text " + ("with an input-like name" if named else "and the longest field") +
               ": the input")
    return Proposal("fields", chosen, source, output, len(rows), coverage, why)


def _describe(rows: list[dict], keys: list[str]) -> str:
    def kind(k: str) -> str:
        types = Counter(type(r.get(k)).__name__ for r in rows)
        return "/".join(t for t, _ in types.most_common(2))

    return ", ".join(f"'{k}' ({kind(k)})" for k in keys) or "none in 90% of rows"
