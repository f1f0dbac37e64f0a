"""Decoding under the task's grammar: built from the training answers, it admits them and nothing the task's
parser would refuse; a constrained evaluation only ever writes what the grammar admits, and its results carry a
different test-set hash, so they are never compared with unconstrained ones."""

import pytest

from tuneline.config import DataConfig, EvaluationConfig
from tuneline.evaluate.evaluation import evaluate_model
from tuneline.generate.grammar import JSON, task_grammar, viggo_grammar
from tuneline.data.sources import load_splits
from tuneline.data.validation import prepare


@pytest.fixture(scope="module")
def splits(tiny_tokenizer):
    data = DataConfig(source="synthetic:viggo")
    return prepare(load_splits(data), data, tiny_tokenizer).splits


@pytest.fixture(scope="module")
def compiled(tiny_tokenizer, tiny_model_dir, splits):
    import xgrammar as xgr
    from transformers import AutoConfig

    vocab = AutoConfig.from_pretrained(tiny_model_dir).vocab_size
    info = xgr.TokenizerInfo.from_huggingface(
        tiny_tokenizer, vocab_size=vocab, stop_token_ids=[tiny_tokenizer.eos_token_id]
    )
    return xgr.GrammarCompiler(info).compile_grammar(task_grammar("viggo", splits["train"]))


def _admits(compiled, text: str, complete: bool = True) -> bool:
    import xgrammar as xgr

    matcher = xgr.GrammarMatcher(compiled)
    return matcher.accept_string(text) and (not complete or matcher.is_completed())


def test_viggo_grammar_admits_training_answers_only(compiled, splits):
    answers = [r["messages"][-1]["content"] for r in splits["train"]]
    assert all(_admits(compiled, a) for a in answers)
    act, rest = answers[0].split("(", 1)
    assert not _admits(compiled, f"dance({rest}"), "an act no training answer uses"
    assert not _admits(compiled, f"{act}(colour[red])"), "a slot name no training answer uses"
    assert not _admits(compiled, f"{act}({rest[:-1]}"), "an unclosed MR is not complete"
    assert _admits(compiled, f"{act}({rest[:-1]}", complete=False)


def test_viggo_grammar_caps_the_slots_at_the_longest_answer():
    grammar = viggo_grammar(["inform(name[A], rating[good])", "request(specifier[fun])"])
    assert '(slot (", " slot){0,1})?' in grammar
    assert '"inform" | "request"' in grammar and '"name" | "rating" | "specifier"' in grammar
    with pytest.raises(ValueError, match="no training answer parses"):
        viggo_grammar(["not an MR"])
    assert task_grammar("json", []) == JSON and task_grammar("text", []) is None


def test_constrained_evaluation_writes_what_the_grammar_admits(tiny_model_dir, compiled, splits):
    test, cfg = splits["test"][:6], EvaluationConfig(batch_size=3, max_new_tokens=12)
    grammar = task_grammar("viggo", splits["train"])
    free = evaluate_model("base", "viggo", tiny_model_dir, test, cfg)
    bound = evaluate_model("base", "viggo", tiny_model_dir, test, cfg, grammar=grammar)
    assert bound.constrained and not free.constrained
    assert bound.test_set_hash != free.test_set_hash
    assert all(_admits(compiled, p["prediction"], complete=False) for p in bound.predictions)
    assert not all(_admits(compiled, p["prediction"], complete=False) for p in free.predictions)
