"""Decoding that follows the task's grammar (`evaluation.constrained`), through xgrammar's transformers logits
processor: every answer parses, and a viggo answer can only use the dialogue acts and slot names that the
training answers use, with at most as many slots as the longest of them (so a model that starts repeating a
slot still finishes). `json` answers are JSON; `text` has no grammar.

A grammar is a string (EBNF, or `JSON`) so that it can be hashed with the test set: results decoded under
different grammars are never compared as if they were the same measurement.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from tuneline.tasks import parse_viggo

JSON = "JSON"
SCHEMA = "JSON schema: "  # followed by the schema, as `json_schema_grammar` writes it


def _alternatives(words: list[str]) -> str:
    return " | ".join(json.dumps(w) for w in words)


def viggo_grammar(answers: list[str]) -> str:
    parsed = [p for a in answers if (p := parse_viggo(a)) is not None]
    if not parsed:
        raise ValueError("no training answer parses as act(slot[value], ...): nothing to build a grammar from")
    acts = sorted({p.act for p in parsed})
    slots = sorted({name for p in parsed for name, _ in p.fields})
    most = max(len(p.fields) for p in parsed)
    if not slots:
        return f'root ::= act "()"\nact ::= {_alternatives(acts)}'
    return "\n".join(
        [
            f'root ::= act "(" (slot (", " slot){{0,{most - 1}}})? ")"',
            f"act ::= {_alternatives(acts)}",
            'slot ::= name "[" [^\\[\\]]* "]"',
            f"name ::= {_alternatives(slots)}",
        ]
    )


def task_grammar(task: str, train_records: list[dict]) -> str | None:
    """The grammar of `task`, learned from the training answers where the task leaves names open."""
    if task == "json":
        return JSON
    if task == "viggo":
        return viggo_grammar([r["messages"][-1]["content"] for r in train_records])
    return None


def evaluation_grammar(constrained: bool, task: str, train_records: list[dict]) -> str | None:
    return task_grammar(task, train_records) if constrained else None


def json_schema_grammar(schema: dict) -> str:
    """A client's JSON schema (an OpenAI `response_format`) as a grammar string: equal schemas, equal strings."""
    return SCHEMA + json.dumps(schema, sort_keys=True)


def processor_factory(grammar: str, tokenizer, vocab_size: int) -> Callable[[], object]:
    """Compile once; a fresh logits processor per `generate` call (xgrammar's matchers hold per-row state)."""
    import xgrammar as xgr
    from xgrammar.contrib.hf import LogitsProcessor

    info = xgr.TokenizerInfo.from_huggingface(tokenizer, vocab_size=vocab_size, stop_token_ids=[tokenizer.eos_token_id])
    compiler = xgr.GrammarCompiler(info)
    if grammar == JSON:
        compiled = compiler.compile_builtin_json_grammar()
    elif grammar.startswith(SCHEMA):  # compact: whitespace the schema does not need would only cost tokens
        compiled = compiler.compile_json_schema(grammar[len(SCHEMA) :], any_whitespace=False)
    else:
        compiled = compiler.compile_grammar(grammar)
    return lambda: LogitsProcessor(compiled)
