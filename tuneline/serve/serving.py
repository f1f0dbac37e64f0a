"""Extraction as a service: a merged model loaded once; each request's texts are checked, decoded with concurrent
requests' (tuneline/serve/batcher.py: continuously, or in the evaluator's batches under a grammar), and returned
with their parsed act and fields, their confidences (tuneline/generate/confidence.py) and whether they need review
(`ReviewRule`).

`Extractor` knows nothing of HTTP or ZenML: `pipelines/extract.py` serves it as a ZenML deployment, and the
tests call it directly to show it answers exactly as the offline evaluator does.
"""

from __future__ import annotations

import copy
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tuneline.serve.batcher import Batcher
from tuneline.generate.confidence import ANSWER_MEASURE, answer_confidence, token_spans
from tuneline.generate.continuous import Decoder, Row
from tuneline.config import DataConfig, EvaluationConfig, ServingConfig
from tuneline.data.chat_format import generation_prompt
from tuneline.data.formats import question_messages
from tuneline.generate.generation import Generated, generate_greedy
from tuneline.generate.grammar import processor_factory
from tuneline.tasks import readable_fields

log = logging.getLogger(__name__)

CONSTRAINTS_KEPT = 32  # compiled grammars cached per extractor; clients' JSON schemas could otherwise pile up

# No tokenizer averages more characters per token over a real text, so a text longer than this many characters per
# token of the limit is refused without tokenizing it: tokenizing megabytes takes seconds.
CHARS_PER_TOKEN = 32


class RequestError(ValueError):
    """A request the server refuses (HTTP 422); the message says which text and why."""


@dataclass(frozen=True)
class ReviewRule:
    """An answer needs review when its confidence is below `min_confidence`; None: every answer does (no threshold
    is known to be safe). `recorded` is the model version's `confidence_threshold` metadata when that set it, so a
    client sees the test-set precision and coverage the threshold stands for."""

    min_confidence: float | None
    source: str
    recorded: dict = field(default_factory=dict)

    def needs_review(self, confidence: float) -> bool:
        return self.min_confidence is None or confidence < self.min_confidence

    def as_dict(self) -> dict:
        return self.recorded | {"min_confidence": self.min_confidence, "source": self.source}


def review_rule(serving: ServingConfig, recorded: dict | None, label: str) -> ReviewRule:
    """`serving.min_confidence` for `label`'s answers. 'auto' takes the threshold the version recorded, measured on
    its own test predictions (steps/evaluate.py); a version without one (trained before confidences were recorded)
    gets the safe rule: every answer is marked for review, and the log says so once."""
    if serving.min_confidence != "auto":
        return ReviewRule(float(serving.min_confidence), "serving.min_confidence")
    if recorded is None:
        log.warning(
            "%s recorded no confidence_threshold (trained before confidences were): every answer is marked "
            "needs_review; evaluate it again or set serving.min_confidence",
            label,
        )
        return ReviewRule(None, "auto: the model version recorded no threshold")
    if recorded.get("measure") != ANSWER_MEASURE:
        log.warning(
            "%s recorded its threshold for another confidence measure (%s): every answer is marked needs_review; "
            "evaluate it again (`run.py evaluate`) or set serving.min_confidence",
            label,
            recorded.get("measure", "the least likely token's probability"),
        )
        return ReviewRule(None, "auto: the model version's threshold is for another confidence measure")
    if recorded["min_confidence"] is None:
        log.warning(
            "%s: no confidence threshold reached exact match %s on its test set: every answer is marked needs_review",
            label,
            recorded["target_precision"],
        )
    if recorded["target_precision"] != serving.target_precision:
        log.warning(
            "%s recorded its threshold for target_precision %s, not the configured %s: serving the recorded one",
            label,
            recorded["target_precision"],
            serving.target_precision,
        )
    return ReviewRule(recorded["min_confidence"], "auto: the model version's confidence_threshold", recorded)


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
    review: ReviewRule
    name: str = ""  # the registered model and version, for /health and /v1/models
    version: str = ""
    # The fast tokenizer is not thread-safe: `generate_greedy` sets its padding side and pads, and a concurrent call
    # fails ("Already borrowed") or pads to another's length. So generation holds `lock`, and request threads check
    # texts on a copy (`checker`) under `check_lock`, never waiting for a generation. Shared by `replace` copies.
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False, compare=False)
    check_lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)
    checker: object = field(default=None, repr=False, compare=False)
    constraints: dict = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self):
        if self.checker is None:
            self.checker = copy.deepcopy(self.tokenizer)

    def prompt(self, text: str) -> str:
        """The prompt the training and evaluation rows were rendered with."""
        return generation_prompt(self.tokenizer, question_messages(text, self.data))

    def max_input_tokens(self) -> int:
        if self.serving.max_input_tokens is not None:
            return self.serving.max_input_tokens
        context = self.model.config.max_position_embeddings
        template = len(self.checker(self.prompt(""), add_special_tokens=False)["input_ids"])
        return context - template - self.evaluation.max_new_tokens

    def check(self, texts: list[str]) -> list[int]:
        """Each text's tokens; RequestError when the request cannot be served."""
        with self.check_lock:
            return self._check(texts)

    def _check(self, texts: list[str]) -> list[int]:
        if not texts:
            raise RequestError("texts is empty: send one text or a list of texts")
        if len(texts) > self.serving.max_texts:
            raise RequestError(
                f"texts has {len(texts)} texts; at most {self.serving.max_texts} per request (serving.max_texts)"
            )
        limit, counts = self.max_input_tokens(), []
        for i, text in enumerate(texts):
            if not text.strip():
                raise RequestError(f"texts[{i}] is empty")
            if len(text) > limit * CHARS_PER_TOKEN:
                raise RequestError(
                    f"texts[{i}] is {len(text)} characters; the model reads at most {limit} tokens, "
                    f"and no text has over {CHARS_PER_TOKEN} characters per token"
                )
            n = len(self.checker(text, add_special_tokens=False)["input_ids"])
            if n > limit:
                raise RequestError(
                    f"texts[{i}] is {n} tokens; the model reads at most {limit} "
                    "(its context less the prompt template and evaluation.max_new_tokens)"
                )
            counts.append(n)
        return counts

    def constraint(self, grammar: str | None):
        """The logits-processor factory of `grammar` (tuneline/generate/grammar.py), compiled once; RequestError when it
        does not compile (a client's JSON schema)."""
        if grammar is None:
            return None
        with self.check_lock:  # xgrammar reads the vocabulary: the checker's copy, not the generating tokenizer
            if grammar not in self.constraints:
                try:
                    factory = processor_factory(grammar, self.checker, self.model.config.vocab_size)
                except (RuntimeError, ValueError) as err:
                    raise RequestError(f"the JSON schema cannot be enforced: {str(err).splitlines()[0]}") from None
                if len(self.constraints) >= CONSTRAINTS_KEPT:
                    self.constraints.pop(next(iter(self.constraints)))
                self.constraints[grammar] = factory
            return self.constraints[grammar]

    def generate(self, texts: list[str], grammar: str | None = None) -> Generated:
        """Checked texts' answers, in the evaluator's batches (what `extract` and the batcher run)."""
        constraint = self.constraint(grammar)
        with self.lock:
            return generate_greedy(
                self.model,
                self.tokenizer,
                [self.prompt(t) for t in texts],
                self.evaluation.batch_size,
                self.evaluation.max_new_tokens,
                max_batch_tokens=self.evaluation.max_batch_tokens,
                constraint=constraint,
            )

    def decoder(self) -> Decoder:
        """A continuous decoder on this model (tuneline/serve/batcher.py drives it, under `lock`)."""
        eos = self.tokenizer.eos_token_id
        pad = eos if self.tokenizer.pad_token_id is None else self.tokenizer.pad_token_id
        return Decoder(self.model, eos, pad, self.evaluation.max_new_tokens)

    def encode(self, texts: list[str]) -> list[list[int]]:
        """Checked texts' prompts as token ids, for `decoder`; under `lock` (the generating tokenizer)."""
        return self.tokenizer([self.prompt(t) for t in texts], add_special_tokens=False)["input_ids"]

    def generated(self, rows: list[Row], seconds: float) -> Generated:
        """Decoded rows as `generate` returns its answers: texts, each token's characters, log-probabilities."""
        texts, spans = zip(*(token_spans(self.tokenizer, row.ids) for row in rows)) if rows else ((), ())
        return Generated(
            texts=list(texts),
            seconds=seconds,
            new_tokens=sum(len(row.ids) for row in rows),
            spans=list(spans),
            logprobs=[row.logprobs for row in rows],
        )

    def extract(self, texts: list[str], grammar: str | None = None) -> dict:
        """One request generated on its own (the deployment goes through tuneline/serve/batcher.py)."""
        counts = self.check(texts)
        return self.answer(texts, counts, self.generate(texts, grammar))

    def answer(self, texts: list[str], counts: list[int], gen: Generated) -> dict:
        """Per text: the raw answer, whether it parsed, its act and fields (tasks that have them), its confidences
        and whether it needs review, its tokens in and out and whether it hit max_new_tokens; `threshold` says by
        which rule. `seconds` is the request's share of the generation it ran in, split evenly over its texts."""
        results = []
        for text, n, answer, spans, logprobs in zip(texts, counts, gen.texts, gen.spans, gen.logprobs):
            fields = readable_fields(self.task, answer)
            confidence = answer_confidence(self.task, answer, spans, logprobs, self.evaluation.json_match)
            results.append(
                {
                    "text": text,
                    "answer": answer,
                    "parsed": fields is not None,
                    "act": fields[0] if fields else None,
                    "fields": fields[1] if fields else None,
                    **confidence.as_row(),
                    "needs_review": self.review.needs_review(confidence.answer),
                    "input_tokens": n,
                    "new_tokens": len(spans),
                    "truncated": len(logprobs) == len(spans) == self.evaluation.max_new_tokens,
                    "seconds": gen.seconds / len(texts),
                }
            )
        return {
            "model": self.label,
            "version": self.version,
            "device": self.device,
            "seconds": gen.seconds,
            "threshold": self.review.as_dict(),
            "results": results,
        }


def load_extractor(
    label: str,
    task: str,
    base_dir: Path,
    adapter_dir: Path,
    data: DataConfig,
    evaluation: EvaluationConfig,
    serving: ServingConfig,
    dtype: str = "float32",
    device: str = "auto",
    threshold: dict | None = None,
    name: str = "",
    version: str = "",
) -> Extractor:
    """Base and adapter merged once, on the GPU when there is one; the tokenizer (and its chat template) is the
    one saved with the adapter, so prompts render as in training. `threshold`: the version's
    `confidence_threshold` metadata, None when it has none; `name` and `version`: the registered model's."""
    from tuneline.models.modeling import load_merged, load_tokenizer, placement

    device, dtype = placement(device, dtype)
    model = load_merged(base_dir, adapter_dir, dtype, device).eval()
    return Extractor(
        label,
        task,
        model,
        load_tokenizer(adapter_dir),
        data,
        evaluation,
        serving,
        device,
        review_rule(serving, threshold, label),
        name,
        version,
    )


class ModelSlot:
    """The extractor in service, replaceable while requests run: a request takes the current one and finishes on
    it; a swap only changes what the next request takes. The new model loads beside the old one, so no request
    waits for a load or fails during one. Requests go through `batcher`, which generates each batch on the
    extractor current when the batch starts."""

    def __init__(
        self, extractor: Extractor, version: str, record: Callable[[dict, int, int], str | None] | None = None
    ):
        self.record = record  # tuneline/serve/recording.py `recorder`: traces each answered request
        self._lock = threading.Lock()
        self._current = (extractor, version)
        self._stop = threading.Event()
        serving = extractor.serving
        self.batcher = Batcher(lambda: self.current()[0], serving.batch_wait_ms / 1000, serving.max_batch_tokens)

    def current(self) -> tuple[Extractor, str]:
        with self._lock:
            return self._current

    def answer(self, texts: list[str], grammar: str | None = None) -> dict:
        """One request through the batcher; with recording on, traced with its wall time, and its `trace_id` (the
        key for /feedback) returned with it. A failed recording is logged, never the request's failure."""
        start = time.time_ns()
        response = self.batcher.extract(texts, grammar)
        if self.record is not None:
            try:
                response["trace_id"] = self.record(response, start, time.time_ns())
            except Exception:  # the store may be down or full: answer anyway
                log.exception("could not record the request as an MLflow trace")
        return response

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
        self.batcher.close()
