"""Tasks say how a target string becomes comparable fields.

A parse returns `Parsed(act, fields)` or None when the text does not follow the task's grammar; metrics
count None as wrong, never as skipped.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

_VIGGO_MR = re.compile(r"\s*(\w+)\((.*)\)\s*", re.DOTALL)
_VIGGO_SLOT = re.compile(r"(\w+)\[([^\[\]]*)\]")


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


def parse_json(text: str) -> Parsed | None:
    """A JSON object's top-level keys are its fields, a JSON list's items are fields `[0]`, `[1]`, ...; values
    compare by canonical JSON. A bare scalar has no fields to extract."""
    try:
        obj = json.loads(text)
    except (json.JSONDecodeError, TypeError):
        return None
    if isinstance(obj, list):
        obj = {f"[{i}]": v for i, v in enumerate(obj)}
    if not isinstance(obj, dict):
        return None
    return Parsed(act=None, fields=frozenset((k, json.dumps(v, sort_keys=True)) for k, v in obj.items()))


def parse_text(text: str) -> Parsed | None:
    return Parsed(act=None, fields=frozenset())


PARSERS = {"viggo": parse_viggo, "json": parse_json, "text": parse_text}
_GRAMMARS = {"viggo": "a meaning representation act(slot[value], ...)", "json": "a JSON object or list"}


def readable_fields(task: str, text: str) -> tuple[str | None, dict] | None:
    """(act, fields) as a caller wants them: values as written, not normalized for scoring; None if unparseable."""
    if task == "text" or PARSERS[task](text) is None:
        return None
    if task == "viggo":
        return _VIGGO_MR.fullmatch(text).group(1), dict(_VIGGO_SLOT.findall(text))
    obj = json.loads(text)
    return None, ({f"[{i}]": v for i, v in enumerate(obj)} if isinstance(obj, list) else obj)


def reference_problem(task: str, text: str) -> str | None:
    """Why `text` cannot be a reference of the task (the metrics would refuse it at evaluation), or None."""
    if PARSERS[task](text) is not None:
        return None
    why = ""
    if task == "json":
        try:
            why = f"; it is a JSON {type(json.loads(text)).__name__}"
        except json.JSONDecodeError as err:
            why = f"; not valid JSON: {err.msg} (column {err.colno})"
    return f"does not parse as {_GRAMMARS[task]}{why}"

_ROUGE = {"rouge1", "rouge2", "rougeL", "rougeLsum"}
_FIELD_METRICS = {"parse_rate", "slot_accuracy", "slot_precision", "slot_recall", "micro_f1", "macro_f1"}


def metric_names(task: str) -> set[str]:
    """Fixed metric names `metrics.aggregate` reports for a task; fields add `f1.<field>` per field seen."""
    names = _ROUGE | {"exact_match"}
    if task != "text":
        names |= _FIELD_METRICS
    if task == "viggo":
        names.add("act_accuracy")
    return names


def can_be_tested(metric: str, task: str) -> bool:
    """Promotion bootstraps a metric over examples; macro_f1 is a mean of per-field ratios, so it cannot be."""
    return metric != "macro_f1" and (metric in metric_names(task) or (task != "text" and metric.startswith("f1.")))
