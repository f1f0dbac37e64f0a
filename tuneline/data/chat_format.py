"""Chat messages -> text rendered with the base model's chat template, split into what the model reads and
what it must learn to write.

`render` returns the evaluation `prompt` (everything before the last answer, with the generation prompt) and
training `segments`: `[{"text", "train"}]` pieces whose concatenation is the whole conversation, where every
assistant answer (EOS included) is a `train` piece. Training and generation start from the same rendering.
"""

from __future__ import annotations

import logging

from tuneline.data.formats import RowError

log = logging.getLogger(__name__)

IGNORE = -100

# Used when a base model's tokenizer has no chat template (base, non-instruct models): ChatML, the format of
# SmolLM2, Qwen2.5 and many others. Its markers are plain text to such a tokenizer; EOS ends each answer.
FALLBACK_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + "
    "'<|im_end|>' + '\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def ensure_chat_template(tokenizer) -> bool:
    """Give a template-less tokenizer the fallback; returns True when it did."""
    if tokenizer.chat_template:
        return False
    tokenizer.chat_template = FALLBACK_TEMPLATE
    log.warning("base model has no chat template; using the ChatML fallback (see tuneline/data/chat_format.py)")
    return True


def _template(tokenizer, messages, generation_prompt: bool) -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)


def generation_prompt(tokenizer, messages: list[dict[str, str]]) -> str:
    """The text a model continues to answer the last turn of `messages`."""
    ensure_chat_template(tokenizer)
    return _template(tokenizer, messages, True)


def render(tokenizer, messages: list[dict[str, str]]) -> dict:
    eos = tokenizer.eos_token
    segments: list[dict] = []
    done = ""  # text covered by segments so far
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        before = _template(tokenizer, messages[:i], True)
        upto = _template(tokenizer, messages[: i + 1], False)
        if not (before.startswith(done) and upto.startswith(before)):
            raise RowError("template_mismatch", "chat template renders earlier turns differently as the chat grows")
        answer = upto[len(before) :]
        # Templates put separators after EOS (ChatML adds "\n"); the answer ends at EOS so the model learns to stop.
        answer = answer[: answer.rindex(eos) + len(eos)] if eos in answer else answer + eos
        segments += [{"text": before[len(done) :], "train": False}, {"text": answer, "train": True}]
        done = before + answer
    return {"prompt": _template(tokenizer, messages[:-1], True), "segments": segments}


def tokenize_segments(tokenizer, segments: list[dict], max_len: int) -> dict:
    """Token ids and labels (IGNORE outside answers). Over-long rows lose their start, never the last answer;
    `truncated` says whether that happened."""
    ids: list[int] = []
    labels: list[int] = []
    for seg in segments:
        part = tokenizer(seg["text"], add_special_tokens=False)["input_ids"]
        if seg["train"] and (not part or part[-1] != tokenizer.eos_token_id):
            part = part + [tokenizer.eos_token_id]
        ids += part
        labels += part if seg["train"] else [IGNORE] * len(part)
    cut = max(0, len(ids) - max_len)
    return {"input_ids": ids[cut:], "labels": labels[cut:], "truncated": cut > 0, "n_tokens": len(ids)}
