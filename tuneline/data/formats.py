"""Every supported row format becomes the same thing: a list of chat messages ending with an assistant turn.

| format            | keys                                         | becomes                                    |
|-------------------|----------------------------------------------|--------------------------------------------|
| chat              | messages: [{role, content}, ...]             | as is (multi-turn; every assistant turn trains) |
| instruction       | instruction, optional input, output          | user: instruction, blank line, input        |
| prompt_completion | prompt, completion                           | user: prompt; assistant: completion        |
| fields            | data.input_field, data.output_field          | user: input; assistant: output             |

`data.system_prompt` (unless null) is added as the first message for every format but chat (chat rows bring
their own); an empty one still makes a system turn, which keeps a template's default system prompt out. With
`data.format: auto`, the format is detected per row from the keys present, in table order.

For `data.task: json` an answer may be a JSON object or list instead of text; it becomes canonical JSON (keys
sorted). `check_reference` refuses (`bad_reference`) an answer the task's parser cannot read.
"""

from __future__ import annotations

import json

from tuneline.config import DataConfig
from tuneline.tasks import reference_problem

ROLES = ("system", "user", "assistant")


class RowError(ValueError):
    """A row that cannot become a conversation; `reason` is a short category, the message says what and where."""

    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason = reason


def detect_format(row: dict, cfg: DataConfig) -> str:
    if cfg.format != "auto":
        return cfg.format
    if "messages" in row:
        return "chat"
    if "instruction" in row and "output" in row:
        return "instruction"
    if "prompt" in row and "completion" in row:
        return "prompt_completion"
    return "fields"


def _text(row: dict, field: str, required: bool = True, setting: str | None = None) -> str:
    """`setting` is the config key that named `field`, so a wrong mapping says which key to change."""
    if field not in row or row[field] is None:
        if required:
            raise RowError("missing_field", _missing(row, field, setting))
        return ""
    value = row[field]
    if not isinstance(value, str):
        raise RowError("invalid_field", f"field '{field}' is a {type(value).__name__}, not text")
    if required and not value.strip():
        raise RowError("empty_field", f"field '{field}' is empty")
    return value.strip()


def _missing(row: dict, field: str, setting: str | None) -> str:
    present = ", ".join(f"'{k}'" for k in row if not k.startswith("_")) or "none"
    message = f"field '{field}' is missing; the row has {present}"
    return message + (f": set {setting} to one of them (or run `python run.py init --data FILE`)" if setting else "")


def canonical_json(value: dict | list) -> str:
    """How a structured answer is trained on and compared: keys sorted, non-ASCII kept."""
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


def _answer(row: dict, field: str, task: str, setting: str | None = None) -> str:
    value = row.get(field)
    if task == "json" and isinstance(value, (dict, list)):
        return canonical_json(value)
    return _text(row, field, setting=setting)


def _chat(row: dict, task: str) -> list[dict[str, str]]:
    messages = row["messages"]
    if not isinstance(messages, list) or not messages:
        raise RowError("invalid_field", "field 'messages' must be a non-empty list")
    out = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in ROLES:
            role = m.get("role") if isinstance(m, dict) else m
            raise RowError("invalid_role", f"messages[{i}].role is {role!r}; expected one of {list(ROLES)}")
        if m["role"] == "system" and i != 0:
            raise RowError("invalid_role", f"messages[{i}] is a system message after the first turn")
        answer = m["role"] == "assistant"
        out.append(
            {
                "role": m["role"],
                "content": _answer(m, "content", task) if answer else _text(m, "content", m["role"] == "user"),
            }
        )
    if out[-1]["role"] != "assistant":
        raise RowError(
            "invalid_role", f"last message is '{out[-1]['role']}'; a training row must end with the assistant"
        )
    return out


def answer_field(row: dict, cfg: DataConfig) -> str:
    """Where a row keeps the answer that training learns last and evaluation compares."""
    fmt = detect_format(row, cfg)
    return {"chat": "messages[-1].content", "instruction": "output", "prompt_completion": "completion"}.get(
        fmt, cfg.output_field
    )


def to_messages(row: dict, cfg: DataConfig) -> list[dict[str, str]]:
    fmt = detect_format(row, cfg)
    if fmt == "chat":
        return _chat(row, cfg.task)
    if fmt == "instruction":
        instruction, extra = _text(row, "instruction"), _text(row, "input", required=False)
        user = f"{instruction}\n\n{extra}" if extra else instruction
    elif fmt == "prompt_completion":
        user = _text(row, "prompt")
    else:
        user = _text(row, cfg.input_field, setting="data.input_field")
    answer = _answer(row, answer_field(row, cfg), cfg.task, setting="data.output_field" if fmt == "fields" else None)
    return question_messages(user, cfg) + [{"role": "assistant", "content": answer}]


def question_messages(user: str, cfg: DataConfig) -> list[dict[str, str]]:
    """The turns before the answer, as training rows and served requests both have them."""
    system = [] if cfg.system_prompt is None else [{"role": "system", "content": cfg.system_prompt}]
    return system + [{"role": "user", "content": user}]


def check_reference(row: dict, messages: list[dict[str, str]], cfg: DataConfig) -> None:
    """The task's parser must read the answer now: the metrics refuse it at evaluation, after training was paid for."""
    problem = reference_problem(cfg.task, messages[-1]["content"])
    if problem:
        raise RowError("bad_reference", f"field '{answer_field(row, cfg)}' {problem} (task '{cfg.task}')")


def user_input(messages: list[dict[str, str]]) -> str:
    """The text a leakage check compares: all user turns, whitespace-collapsed and lower-cased."""
    return " ".join(" ".join(m["content"].split()).lower() for m in messages if m["role"] == "user")
