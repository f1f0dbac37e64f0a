"""The prompted baseline: the base model told what to do and shown a few training examples, the way anyone would
try the task before paying for fine-tuning. Scored like every other model, on the same test examples."""

from __future__ import annotations

import random

from tuneline.config import PromptedBaseline

INSTRUCTIONS = {
    "viggo": "Turn the sentence about a video game into a meaning representation: a dialogue act followed by "
    "slots in brackets, as in inform(name[Game], genres[role-playing, strategy], rating[good]). Use only "
    "acts and slot names like those in the examples. Answer with the meaning representation only.",
    "json": "Extract the information in the text as JSON with the same structure and keys as in the examples. "
    "Answer with the JSON only.",
    "text": "Answer in the same way as in the examples.",
}


def instruction_for(task: str, cfg: PromptedBaseline) -> str:
    return cfg.instruction if cfg.instruction is not None else INSTRUCTIONS[task]


def pick_shots(train: list[dict], cfg: PromptedBaseline) -> list[dict]:
    """`cfg.shots` training records fixed by `cfg.seed`, each with a distinct input."""
    distinct = list({_user(r): r for r in train}.values())
    return random.Random(cfg.seed).sample(distinct, min(cfg.shots, len(distinct)))


def _user(record: dict) -> str:
    return next(m["content"] for m in reversed(record["messages"]) if m["role"] == "user")


def _answer(record: dict) -> str:
    return record["messages"][-1]["content"]


def few_shot_messages(record: dict, shots: list[dict], instruction: str) -> list[dict[str, str]]:
    """The chat the base model answers: the instruction, each shot as a user turn and its answer, the input."""
    turns = [{"role": "system", "content": instruction}]
    for shot in shots:
        turns += [{"role": "user", "content": _user(shot)}, {"role": "assistant", "content": _answer(shot)}]
    return turns + [{"role": "user", "content": _user(record)}]
