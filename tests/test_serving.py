"""Serving without ZenML: the extractor answers exactly as the offline evaluator does, refuses bad requests with
a message naming the text, and a followed stage swaps models between requests without failing one."""

import threading
import time

import pytest

from tuneline.config import DataConfig, EvaluationConfig, ServingConfig
from tuneline.evaluation import evaluate_model
from tuneline.serving import ModelSlot, RequestError, load_extractor
from tuneline.sources import load_splits
from tuneline.validation import prepare

DATA = DataConfig(source="synthetic:viggo")
EVAL = EvaluationConfig(batch_size=4, max_new_tokens=16)


@pytest.fixture(scope="module")
def adapter_dir(tiny_model_dir, tiny_tokenizer, tmp_path_factory):
    """A LoRA adapter with random (not zero) B matrices, so the merged model differs from the base."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    import torch

    torch.manual_seed(0)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_dir),
                           LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    out = tmp_path_factory.mktemp("adapter")
    model.save_pretrained(out)
    tiny_tokenizer.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def extractor(tiny_model_dir, adapter_dir):
    return load_extractor("tiny v1", "viggo", tiny_model_dir, adapter_dir, DATA, EVAL,
                          ServingConfig(max_texts=8, max_input_tokens=40))


def test_answers_equal_the_offline_evaluators(extractor, tiny_model_dir, tiny_tokenizer, adapter_dir):
    test = prepare(load_splits(DATA), DATA, tiny_tokenizer).splits["test"][:7]
    offline = evaluate_model("tuned", "viggo", tiny_model_dir, test, EVAL, adapter_dir=adapter_dir)
    texts = [p["input"] for p in offline.predictions]
    assert [extractor.prompt(t) for t in texts] == [r["prompt"] for r in test]
    served = extractor.extract(texts)
    assert [r["answer"] for r in served["results"]] == [p["prediction"] for p in offline.predictions]
    assert served["model"] == "tiny v1" and served["device"] == "cpu"
    for r, p in zip(served["results"], offline.predictions):
        assert r["text"] == p["input"] and r["parsed"] == p["parsed"] and r["seconds"] > 0
        assert (r["fields"] is None) == (not r["parsed"])


def test_fields_are_read_as_written():
    from tuneline.tasks import readable_fields

    assert readable_fields("viggo", "inform(name[SpellForce 3], rating[Poor])") == (
        "inform", {"name": "SpellForce 3", "rating": "Poor"})
    assert readable_fields("json", '{"city": "Paris", "n": 3}') == (None, {"city": "Paris", "n": 3})
    assert readable_fields("json", "[1, 2]") == (None, {"[0]": 1, "[1]": 2})
    assert readable_fields("viggo", "inform(name[x]") is None and readable_fields("text", "anything") is None


@pytest.mark.parametrize("texts, message", [
    ([], "texts is empty"),
    (["fine", "  "], r"texts\[1\] is empty"),
    (["a"] * 9, "texts has 9 texts; at most 8"),
    (["fine", "word " * 60], r"texts\[1\] is \d+ tokens; the model reads at most 40"),
])
def test_bad_requests_name_the_text(extractor, texts, message):
    with pytest.raises(RequestError, match=message):
        extractor.extract(texts)


def test_context_limit_defaults_to_the_models(extractor):
    from dataclasses import replace

    unbounded = replace(extractor, serving=ServingConfig())
    limit = unbounded.max_input_tokens()
    assert 0 < limit < extractor.model.config.max_position_embeddings - EVAL.max_new_tokens


def test_followed_stage_swaps_between_requests_and_none_fails(extractor):
    """Requests keep running while the slot loads and swaps in a new model; each finishes on the model it took."""
    slot = ModelSlot(extractor, "v1")
    newer = {"version": "v1"}
    loaded = []

    def load(version):
        time.sleep(0.3)  # a load takes time; requests must not wait for it
        loaded.append(version)
        from dataclasses import replace

        return replace(extractor, label=f"tiny {version}")

    slot.follow(lambda: newer["version"], load, every_s=0.05)
    labels, errors = [], []

    def client():
        for _ in range(6):
            try:
                labels.append(slot.current()[0].extract(["I like Tetris."])["model"])
            except Exception as err:  # noqa: BLE001 (any failure is what the test counts)
                errors.append(err)

    threads = [threading.Thread(target=client) for _ in range(3)]
    for t in threads:
        t.start()
    newer["version"] = "v2"
    for t in threads:
        t.join()
    deadline = time.monotonic() + 5
    while slot.current()[1] != "v2" and time.monotonic() < deadline:
        time.sleep(0.05)
    slot.close()
    assert not errors and len(labels) == 18
    assert slot.current() == (slot.current()[0], "v2") and slot.current()[0].label == "tiny v2"
    assert loaded == ["v2"], "loaded once, not once per poll"
    assert set(labels) <= {"tiny v1", "tiny v2"}


def test_a_failed_load_keeps_the_current_model(extractor):
    slot = ModelSlot(extractor, "v1")

    def broken(version):
        raise OSError(f"adapter of {version} is gone")

    slot.follow(lambda: "v2", broken, every_s=0.02)
    time.sleep(0.2)
    slot.close()
    assert slot.current() == (extractor, "v1")
    assert extractor.extract(["I like Tetris."])["model"] == "tiny v1"
