"""Extraction as a service: a merged model loaded once; each request's texts are checked, generated together in
the evaluator's batches, and returned with their parsed act and fields.

`Extractor` knows nothing of HTTP or ZenML: `pipelines/extract.py` serves it as a ZenML deployment, and the
tests call it directly to show it answers exactly as the offline evaluator does.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tuneline.config import DataConfig, EvaluationConfig, ServingConfig
from tuneline.generation import generate_greedy
from tuneline.tasks import readable_fields

log = logging.getLogger(__name__)

# No tokenizer averages more characters per token over a real text, so a text longer than this many characters per
# token of the limit is refused without tokenizing it: tokenizing megabytes takes seconds.
CHARS_PER_TOKEN = 32


class RequestError(ValueError):
    """A request the server refuses (HTTP 422); the message says which text and why."""


@dataclass
class Extractor:
    label: str  # what answers, e.g. "tuneline-viggo version 3", echoed in every response
    task: str
    model: object
    tokenizer: object
    data: DataConfig
    evaluation: EvaluationConfig
    serving: ServingConfig
    device: str

    def prompt(self, text: str) -> str:
        """The prompt the training and evaluation rows were rendered with (tuneline/formats.py, chat_format.py)."""
        system = [] if self.data.system_prompt is None else [{"role": "system", "content": self.data.system_prompt}]
        messages = system + [{"role": "user", "content": text}]
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def max_input_tokens(self) -> int:
        if self.serving.max_input_tokens is not None:
            return self.serving.max_input_tokens
        context = self.model.config.max_position_embeddings
        template = len(self.tokenizer(self.prompt(""), add_special_tokens=False)["input_ids"])
        return context - template - self.evaluation.max_new_tokens

    def check(self, texts: list[str]) -> None:
        if not texts:
            raise RequestError("texts is empty: send one text or a list of texts")
        if len(texts) > self.serving.max_texts:
            raise RequestError(f"texts has {len(texts)} texts; at most {self.serving.max_texts} per request "
                               "(serving.max_texts)")
        limit = self.max_input_tokens()
        for i, text in enumerate(texts):
            if not text.strip():
                raise RequestError(f"texts[{i}] is empty")
            if len(text) > limit * CHARS_PER_TOKEN:
                raise RequestError(f"texts[{i}] is {len(text)} characters; the model reads at most {limit} tokens, "
                                   f"and no text has over {CHARS_PER_TOKEN} characters per token")
            n = len(self.tokenizer(text, add_special_tokens=False)["input_ids"])
            if n > limit:
                raise RequestError(f"texts[{i}] is {n} tokens; the model reads at most {limit} "
                                   "(its context less the prompt template and evaluation.max_new_tokens)")

    def extract(self, texts: list[str]) -> dict:
        """Per text: the raw answer, whether it parsed, its act and fields (tasks that have them). `seconds` per
        text is its share of the batched generation, which ran once for the whole request."""
        self.check(texts)
        gen = generate_greedy(self.model, self.tokenizer, [self.prompt(t) for t in texts],
                              self.evaluation.batch_size, self.evaluation.max_new_tokens,
                              max_batch_tokens=self.evaluation.max_batch_tokens)
        results = []
        for text, answer in zip(texts, gen.texts):
            fields = readable_fields(self.task, answer)
            results.append({
                "text": text, "answer": answer, "parsed": fields is not None,
                "act": fields[0] if fields else None, "fields": fields[1] if fields else None,
                "seconds": gen.seconds / len(texts),
            })
        return {"model": self.label, "device": self.device, "seconds": gen.seconds, "results": results}


def load_extractor(label: str, task: str, base_dir: Path, adapter_dir: Path, data: DataConfig,
                   evaluation: EvaluationConfig, serving: ServingConfig, dtype: str = "float32",
                   device: str = "auto") -> Extractor:
    """Base and adapter merged once, on the GPU when there is one; the tokenizer (and its chat template) is the
    one saved with the adapter, so prompts render as in training."""
    from tuneline.modeling import load_merged, load_tokenizer, placement

    device, dtype = placement(device, dtype)
    model = load_merged(base_dir, adapter_dir, dtype, device).eval()
    return Extractor(label, task, model, load_tokenizer(adapter_dir), data, evaluation, serving, device)


class ModelSlot:
    """The extractor in service, replaceable while requests run: a request takes the current one and finishes on
    it; a swap only changes what the next request takes. The new model loads beside the old one, so no request
    waits for a load or fails during one."""

    def __init__(self, extractor: Extractor, version: str):
        self._lock = threading.Lock()
        self._current = (extractor, version)
        self._stop = threading.Event()

    def current(self) -> tuple[Extractor, str]:
        with self._lock:
            return self._current

    def swap(self, extractor: Extractor, version: str) -> None:
        with self._lock:
            self._current = (extractor, version)

    def follow(self, latest: Callable[[], str | None], load: Callable[[str], Extractor], every_s: float) -> None:
        """In a daemon thread, every `every_s`: when `latest()` names another version, load it and swap it in."""

        def loop() -> None:
            while not self._stop.wait(every_s):
                try:
                    version = latest()
                    if version is not None and version != self.current()[1]:
                        self.swap(load(version), version)
                        log.info("now serving %s", self.current()[0].label)
                except Exception:  # a failed look-up or load must not stop the service: keep the current model
                    log.exception("could not switch models; still serving %s", self.current()[0].label)

        threading.Thread(target=loop, name="tuneline-follow", daemon=True).start()

    def close(self) -> None:
        self._stop.set()
