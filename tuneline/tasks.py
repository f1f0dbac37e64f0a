"""Tasks say how a target string becomes comparable fields.

A parse returns `Parsed(act, fields)` or None when the text does not follow the task's grammar; metrics
count None as wrong, never as skipped.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field

_VIGGO_MR = re.compile(r"\s*(\w+)\((.*)\)\s*", re.DOTALL)
_VIGGO_SLOT = re.compile(r"(\w+)\[([^\[\]]*)\]")


class JsonMatch(BaseModel):
    """How task `json` answers compare. Fields are flattened paths (`slots.date`, `items[0]`); these options say
    when two leaf values are equal. A duplicated key makes an answer unparseable (a reference: `bad_reference`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    case_sensitive: bool = Field(False, description="'Paris' and 'paris' differ only when true.")
    collapse_whitespace: bool = Field(True, description="Runs of whitespace in strings count as one space.")
    numbers_as_strings: bool = Field(True, description='3 and "3" are equal (and 3.5 and "3.5").')
    lists_as_sets: bool = Field(
        True,
        description="A list is one field whose items compare as a set (order and "
        "repeats ignored); false: each item is its own field, `path[i]`.",
    )


@dataclass(frozen=True)
class Parsed:
    act: str | None
    fields: frozenset[tuple[str, str]]


def _norm(value: str) -> str:
    return " ".join(value.split()).lower()


def parse_viggo(text: str) -> Parsed | None:
    """`give_opinion(name[SpellForce 3], rating[poor])` -> act plus {(slot, value)}; strict grammar."""
    m = _VIGGO_MR.fullmatch(text)
    if not m:
        return None
    act, inner = m.group(1), m.group(2).strip()
    slots = _VIGGO_SLOT.findall(inner)
    # Every character of the argument list must be a slot: anything left over means a malformed MR.
    if re.sub(r"\s+", "", ",".join(f"{k}[{v}]" for k, v in slots)) != re.sub(r"\s+", "", inner):
        return None
    return Parsed(act=act, fields=frozenset((k, _norm(v)) for k, v in slots))


def viggo_spans(text: str) -> tuple[tuple[int, int], list[tuple[str, tuple[int, int]]]] | None:
    """Where the act and each slot (`name[value]`, whole) sit in `text`, for per-field confidence; None if the
    text does not parse."""
    if parse_viggo(text) is None:
        return None
    m = _VIGGO_MR.fullmatch(text)
    return m.span(1), [(s.group(1), s.span()) for s in _VIGGO_SLOT.finditer(text, m.start(2), m.end(2))]


_FENCE = re.compile(r"```[\w-]*\s*\n?(.*?)```", re.DOTALL)


class DuplicateKey(ValueError):
    """A JSON object names the same key twice: which value was meant is unknowable, so it is an error."""


def _no_duplicates(pairs: list[tuple[str, object]]) -> dict:
    seen = {}
    for key, value in pairs:
        if key in seen:
            raise DuplicateKey(f"duplicate key '{key}'")
        seen[key] = value
    return seen


def json_value(text: str):
    """The JSON object or list an answer holds: the whole text, the first ``` code fence's content, or the text
    from its first `{` or `[` (a one-line preamble such as "Here is the JSON:"). Raises ValueError (DuplicateKey
    for a repeated key) when none is a JSON object or list."""
    return json_located(text)[0]


def json_located(text: str) -> tuple[object, int]:
    """`json_value` and where in `text` that JSON starts (per-field confidence needs each value's characters)."""
    fenced = _FENCE.search(text)
    candidates = [(0, text)] + ([(fenced.start(1), fenced.group(1))] if fenced else [])
    start = min((i for i in (text.find("{"), text.find("[")) if i >= 0), default=-1)
    if start > 0:
        candidates.append((start, text[start:]))
    error: ValueError = ValueError("no JSON object or list")
    for offset, candidate in candidates:
        try:
            value = json.loads(candidate.strip(), object_pairs_hook=_no_duplicates)
        except DuplicateKey:
            raise
        except (json.JSONDecodeError, TypeError) as err:
            error = err
            continue
        if isinstance(value, (dict, list)):
            return value, offset + len(candidate) - len(candidate.lstrip())
        error = ValueError(f"it is a JSON {type(value).__name__}")
    raise error


def _scalar(value, match: JsonMatch) -> str:
    """A leaf value as compared."""
    if isinstance(value, str):
        text = " ".join(value.split()) if match.collapse_whitespace else value
        text = text if match.case_sensitive else text.lower()
        return text if match.numbers_as_strings else json.dumps(text)
    if isinstance(value, (int, float)) and not isinstance(value, bool) and match.numbers_as_strings:
        return str(value)
    return json.dumps(value, sort_keys=True)


def flatten(value, match: JsonMatch, path: str = "") -> dict[str, str]:
    """Fields as paths: `slots.date`, `items[0]`; with `lists_as_sets` a list is one field, its items a sorted
    set. A leaf's value is normalized by `_scalar`. An empty answer (`{}`, `[]`) has no fields: it is exactly
    right only against an empty reference, and no field is made up to score it by."""
    if not path and isinstance(value, (dict, list)) and not value:
        return {}
    if isinstance(value, dict) and value:
        out = {}
        for key, item in value.items():
            out |= flatten(item, match, f"{path}.{key}" if path else key)
        return out
    if isinstance(value, list) and value and not match.lists_as_sets:
        out = {}
        for i, item in enumerate(value):
            out |= flatten(item, match, f"{path}[{i}]")
        return out
    if isinstance(value, list):
        items = sorted(
            {
                json.dumps(flatten(item, match), sort_keys=True)
                if isinstance(item, (dict, list))
                else _scalar(item, match)
                for item in value
            }
        )
        return {path or "[]": json.dumps(items)}
    return {path or "value": _scalar(value, match) if not isinstance(value, dict) else "{}"}


def parse_json(text: str, match: JsonMatch = JsonMatch()) -> Parsed | None:
    """Fields are the flattened paths of the JSON object or list the answer holds (`json_value`), values
    normalized as `match` (evaluation.json_match) says. A bare scalar has no fields to extract."""
    try:
        value = json_value(text)
    except ValueError:
        return None
    return Parsed(act=None, fields=frozenset(flatten(value, match).items()))


def parse_text(text: str) -> Parsed | None:
    return Parsed(act=None, fields=frozenset())


PARSERS = {"viggo": parse_viggo, "json": parse_json, "text": parse_text}
_GRAMMARS = {"viggo": "a meaning representation act(slot[value], ...)", "json": "a JSON object or list"}


# ViGGO's slots that hold several values, written "genres[shooter, puzzle]".
VIGGO_LIST_SLOTS = frozenset({"genres", "platforms", "player_perspective"})


def _viggo_value(slot: str, value: str) -> str | list[str]:
    return [v.strip() for v in value.split(",") if v.strip()] if slot in VIGGO_LIST_SLOTS else value


def readable_fields(task: str, text: str) -> tuple[str | None, dict] | None:
    """(act, fields) as a caller wants them: values as written, not normalized for scoring, a list slot's values
    as a JSON list; None if unparseable."""
    if task == "text" or PARSERS[task](text) is None:
        return None
    if task == "viggo":
        return _VIGGO_MR.fullmatch(text).group(1), {k: _viggo_value(k, v) for k, v in _VIGGO_SLOT.findall(text)}
    obj = json_value(text)
    return None, ({f"[{i}]": v for i, v in enumerate(obj)} if isinstance(obj, list) else obj)


def reference_problem(task: str, text: str) -> str | None:
    """Why `text` cannot be a reference of the task (the metrics would refuse it at evaluation), or None."""
    if PARSERS[task](text) is not None:
        return None
    why = ""
    if task == "json":
        try:
            json_value(text)
        except json.JSONDecodeError as err:
            why = f"; not valid JSON: {err.msg} (column {err.colno})"
        except ValueError as err:
            why = f"; {err}"
    return f"does not parse as {_GRAMMARS[task]}{why}"


ROUGE_TYPES = ("rouge1", "rouge2", "rougeL", "rougeLsum")
_FIELD_METRICS = ("parse_rate", "slot_precision", "slot_recall", "slot_accuracy", "micro_f1", "macro_f1")


def metric_list(task: str) -> list[str]:
    """The fixed metrics `metrics.aggregate` reports for a task, in report order; fields add `f1.<field>` per field
    seen."""
    return [
        *ROUGE_TYPES,
        "exact_match",
        *(_FIELD_METRICS if task != "text" else ()),
        *(("act_accuracy",) if task == "viggo" else ()),
    ]


def metric_names(task: str) -> set[str]:
    return set(metric_list(task))


def can_be_tested(metric: str, task: str) -> bool:
    """Promotion bootstraps a metric over examples; macro_f1 is a mean of per-field ratios, so it cannot be."""
    return metric != "macro_f1" and (metric in metric_names(task) or (task != "text" and metric.startswith("f1.")))
