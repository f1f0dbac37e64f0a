"""Every supported row format becomes the same thing: a list of chat messages ending with an assistant turn.

| format            | keys                                         | becomes                                    |
|-------------------|----------------------------------------------|--------------------------------------------|
| chat              | messages: [{role, content}, ...]             | as is (multi-turn kept; every assistant turn trains) |
| instruction       | instruction, optional input, output          | user: instruction + blank line + input; assistant: output |
| prompt_completion | prompt, completion                           | user: prompt; assistant: completion        |
| fields            | data.input_field, data.output_field          | user: input; assistant: output             |

`data.system_prompt`, when set, is added as the first message for every format but chat (chat rows bring
their own). With `data.format: auto`, the format is detected per row from the keys present, in table order.
"""

from __future__ import annotations

from tuneline.config import DataConfig

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


def _text(row: dict, field: str, required: bool = True) -> str:
    if field not in row or row[field] is None:
        if required:
            raise RowError("missing_field", f"field '{field}' is missing")
        return ""
    value = row[field]
    if not isinstance(value, str):
        raise RowError("invalid_field", f"field '{field}' is a {type(value).__name__}, not text")
    if required and not value.strip():
        raise RowError("empty_field", f"field '{field}' is empty")
    return value.strip()


def _chat(row: dict) -> list[dict[str, str]]:
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
        out.append({"role": m["role"], "content": _text(m, "content", required=m["role"] != "system")})
    if out[-1]["role"] != "assistant":
        raise RowError("invalid_role", f"last message is '{out[-1]['role']}'; a training row must end with the assistant")
    return out


def to_messages(row: dict, cfg: DataConfig) -> list[dict[str, str]]:
    fmt = detect_format(row, cfg)
    if fmt == "chat":
        return _chat(row)
    if fmt == "instruction":
        instruction, extra = _text(row, "instruction"), _text(row, "input", required=False)
        user, answer = f"{instruction}\n\n{extra}" if extra else instruction, _text(row, "output")
    elif fmt == "prompt_completion":
        user, answer = _text(row, "prompt"), _text(row, "completion")
    else:
        user, answer = _text(row, cfg.input_field), _text(row, cfg.output_field)
    system = [{"role": "system", "content": cfg.system_prompt}] if cfg.system_prompt else []
    return system + [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]


def user_input(messages: list[dict[str, str]]) -> str:
    """The text a leakage check compares: all user turns, whitespace-collapsed and lower-cased."""
    return " ".join(" ".join(m["content"].split()).lower() for m in messages if m["role"] == "user")
