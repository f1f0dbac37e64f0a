"""How the served model is doing: figures over a window of recorded requests (`tuneline.serve.recording` records), their
drift against the training data and the previous window, accuracy on corrected requests, and a verdict.

Drift is measured by one named statistic everywhere, the population stability index
PSI = sum((p - q) * ln(p / q)) over the bins of a distribution (q the reference's shares, p the window's, both
floored at EPS so an empty bin counts without dividing by zero): the act (one bin per act), each field's presence
(present / absent) and the input length in characters (bins at the deciles of the training inputs' lengths).
"""

from __future__ import annotations

import math
import re
from bisect import bisect_right
from collections import Counter
from typing import Literal

from pydantic import BaseModel

from tuneline.config import JsonMatch, MonitoringConfig
from tuneline.evaluate.metrics import compare
from tuneline.tasks import readable_fields

EPS = 1e-4
OTHER = "(unseen in training)"


def window_ms(text: str) -> int:
    """`30m`, `12h`, `7d` in milliseconds."""
    m = re.fullmatch(r"(\d+)([mhd])", text.strip())
    if not m or int(m.group(1)) == 0:
        raise ValueError(f"window {text!r}: expected a positive number and m, h or d, e.g. 7d")
    return int(m.group(1)) * {"m": 60_000, "h": 3_600_000, "d": 86_400_000}[m.group(2)]


def psi(reference: Counter, window: Counter) -> float:
    """Population stability index of `window` against `reference`, over the union of their bins."""
    bins = set(reference) | set(window)
    n_ref, n_win = sum(reference.values()) or 1, sum(window.values()) or 1
    total = 0.0
    for b in bins:
        q, p = max(reference[b] / n_ref, EPS), max(window[b] / n_win, EPS)
        total += (p - q) * math.log(p / q)
    return total


class Profile(BaseModel):
    """What drift is measured on: counts of acts, of answers holding each field, of inputs per length bin."""

    n: int = 0
    acts: dict[str, int] = {}
    fields: dict[str, int] = {}
    lengths: dict[str, int] = {}


def length_edges(lengths: list[int], bins: int = 10) -> list[int]:
    """Bin edges at the quantiles of the training inputs' lengths (repeated edges merged)."""
    s = sorted(lengths)
    return sorted({s[min(len(s) - 1, len(s) * i // bins)] for i in range(1, bins)}) if s else []


def _length_bin(n: int, edges: list[int]) -> str:
    return str(bisect_right(edges, n))


def profile(items: list[tuple[int, str | None, list[str]]], edges: list[int]) -> Profile:
    """`items`: (input length, act, field names) of each parsed answer or training row."""
    acts, fields, lengths = Counter(), Counter(), Counter()
    for chars, act, names in items:
        lengths[_length_bin(chars, edges)] += 1
        if act is not None:
            acts[act] += 1
        fields.update(set(names))
    return Profile(n=len(items), acts=dict(acts), fields=dict(fields), lengths=dict(lengths))


def training_profile(rows: list[tuple[str, str]], task: str) -> tuple[Profile, list[int]]:
    """The reference: the training rows' (input, answer) pairs, and the length bins drawn from them."""
    edges = length_edges([len(text) for text, _ in rows])
    items = []
    for text, answer in rows:
        fields = readable_fields(task, answer)
        items.append((len(text), fields[0] if fields else None, sorted(fields[1]) if fields else []))
    return profile(items, edges), edges


def _records_profile(records: list[dict], edges: list[int]) -> Profile:
    return profile([(r["text_chars"], r["act"], r["field_names"]) for r in records if r["parsed"]], edges)


def drift(reference: Profile, window: Profile) -> dict[str, float]:
    """PSI per distribution: `act`, `input_length`, `field.<name>` (presence), against `reference`."""
    out = {}
    if reference.acts or window.acts:
        out["act"] = psi(Counter(reference.acts), Counter(window.acts))
    out["input_length"] = psi(Counter(reference.lengths), Counter(window.lengths))
    for name in sorted(set(reference.fields) | set(window.fields)):
        ref = Counter({"present": reference.fields.get(name, 0), "absent": reference.n - reference.fields.get(name, 0)})
        win = Counter({"present": window.fields.get(name, 0), "absent": window.n - window.fields.get(name, 0)})
        out[f"field.{name}"] = psi(ref, win)
    return out


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


def _equal(task: str, answer: str | None, sha256: str, value, match: JsonMatch) -> bool:
    """Whether an answer equals a correction's `value`: as the metrics compare (act and fields); a redacted answer
    (None) by the hash of its whitespace-collapsed text."""
    if answer is None or not isinstance(value, str):
        return isinstance(value, dict) and value.get("sha256") == sha256
    return bool(compare(task, answer, value, match)["exact"])


def is_right(record: dict, task: str, match: JsonMatch = JsonMatch()) -> bool:
    """Whether the served answer equals its correction."""
    return _equal(task, record["answer"], record["answer_sha256"], record["correction"]["value"], match)


class ShadowFigures(BaseModel):
    """A shadow candidate beside production (tuneline/serve/shadow.py), on the answers both gave."""

    versions: dict[str, int]  # shadow version -> answers it gave
    answers: int
    agreement: float  # share of them equal to production's (as the metrics compare)
    corrected: int  # of them corrected by a person
    accuracy: float | None = None  # the shadow's exact match on those
    production_accuracy: float | None = None  # production's on the same ones


def _agrees(record: dict, task: str, match: JsonMatch) -> bool:
    """The shadow's answer equals production's: the same text, or (both readable) as the metrics compare."""
    shadow = record["shadow"]
    if shadow["answer_sha256"] == record["answer_sha256"]:
        return True
    if record["answer"] is None or shadow["answer"] is None or not record["parsed"]:
        return False
    return bool(compare(task, shadow["answer"], record["answer"], match)["exact"])


def shadow_figures(records: list[dict], task: str, match: JsonMatch = JsonMatch()) -> ShadowFigures | None:
    """None when no answer in `records` was shadowed."""
    both = [r for r in records if r.get("shadow")]
    if not both:
        return None
    agree = [_agrees(r, task, match) for r in both]
    corrected = [r for r in both if r["correction"]]
    right = [
        _equal(task, r["shadow"]["answer"], r["shadow"]["answer_sha256"], r["correction"]["value"], match)
        for r in corrected
    ]
    return ShadowFigures(
        versions=dict(Counter(str(r["shadow"]["version"]) for r in both)),
        answers=len(both),
        agreement=sum(agree) / len(both),
        corrected=len(corrected),
        accuracy=sum(right) / len(corrected) if corrected else None,
        production_accuracy=sum(is_right(r, task, match) for r in corrected) / len(corrected) if corrected else None,
    )


class WindowFigures(BaseModel):
    start_ms: int
    end_ms: int
    answers: int = 0  # texts answered (a request may carry several)
    requests: int = 0
    parse_rate: float | None = None
    review_share: float | None = None
    latency_p50_ms: float | None = None
    latency_p95_ms: float | None = None
    corrected: int = 0
    accuracy: float | None = None  # exact match on corrected answers
    versions: dict[str, int] = {}
    profile: Profile = Profile()
    shadow: ShadowFigures | None = None


def figures(records: list[dict], start_ms: int, end_ms: int, edges: list[int], task: str) -> WindowFigures:
    n = len(records)
    latencies = {r["trace_id"]: r["latency_ms"] for r in records if r["latency_ms"] is not None}
    corrected = [r for r in records if r["correction"]]
    return WindowFigures(
        start_ms=start_ms,
        end_ms=end_ms,
        answers=n,
        requests=len({r["trace_id"] for r in records}),
        parse_rate=sum(r["parsed"] for r in records) / n if n else None,
        review_share=sum(bool(r["needs_review"]) for r in records) / n if n else None,
        latency_p50_ms=_percentile(list(latencies.values()), 0.5),
        latency_p95_ms=_percentile(list(latencies.values()), 0.95),
        corrected=len(corrected),
        accuracy=sum(is_right(r, task) for r in corrected) / len(corrected) if corrected else None,
        versions=dict(Counter(str(r["version"]) for r in records)),
        profile=_records_profile(records, edges),
        shadow=shadow_figures(records, task),
    )


Verdict = Literal["ok", "drift", "decline"]


class MonitorReport(BaseModel):
    """One monitor run: the window's figures beside the previous window's, drift against each, the verdict."""

    model_name: str
    production_version: str | None
    task: str
    current: WindowFigures
    previous: WindowFigures
    training: Profile
    drift_training: dict[str, float]
    drift_previous: dict[str, float]
    verdict: Verdict
    reasons: list[str]
    new_corrections: int = 0  # made since the production version was trained
    thresholds: dict

    def metrics(self) -> dict[str, float]:
        """Flat numbers for MLflow, logged once per run so each becomes a curve over time."""
        c = self.current
        out = {
            "answers": c.answers,
            "requests": c.requests,
            "corrected": c.corrected,
            "new_corrections": self.new_corrections,
            "verdict_code": {"ok": 0, "drift": 1, "decline": 2}[self.verdict],
        }
        for key in ("parse_rate", "review_share", "latency_p50_ms", "latency_p95_ms", "accuracy"):
            if getattr(c, key) is not None:
                out[key] = getattr(c, key)
        if c.shadow is not None:
            shadow = c.shadow.model_dump(exclude={"versions"}, exclude_none=True)
            out |= {f"shadow.{k}": v for k, v in shadow.items()}
        out |= {f"psi_training.{k}": v for k, v in self.drift_training.items()}
        return out | {f"psi_previous.{k}": v for k, v in self.drift_previous.items()}


def _shares(counts: dict[str, int], n: int, top: int = 3) -> str:
    return ", ".join(f"{k} {v / n:.0%}" for k, v in Counter(counts).most_common(top)) if n else "none"


def _drift_reasons(found: dict[str, float], against: str, ref: Profile, win: Profile, limit: float) -> list[str]:
    reasons = []
    for key, value in sorted(found.items(), key=lambda kv: -kv[1]):
        if value <= limit:
            continue
        detail = f" ({against} {_shares(ref.acts, ref.n)}; now {_shares(win.acts, win.n)})" if key == "act" else ""
        reasons.append(f"{key}: PSI {value:.2f} against {against} > monitoring.max_psi {limit}{detail}")
    return reasons


def verdict(
    current: WindowFigures, previous: WindowFigures, training: Profile, cfg: MonitoringConfig
) -> tuple[Verdict, list[str], dict[str, float], dict[str, float]]:
    """`decline` when answers got worse (parse rate, review share, accuracy on corrections), else `drift` when an
    input or answer distribution moved, else `ok`; every reason names its field, value and threshold."""
    decline, drifted = [], []
    judged = current.answers >= cfg.min_requests
    if judged and current.parse_rate < cfg.min_parse_rate:
        decline.append(f"parse_rate: {current.parse_rate:.3f} < monitoring.min_parse_rate {cfg.min_parse_rate}")
    if judged and previous.answers >= cfg.min_requests:
        rise = current.review_share - previous.review_share
        if rise > cfg.max_review_increase:
            decline.append(
                f"review_share: {previous.review_share:.3f} -> {current.review_share:.3f}, up more than "
                f"monitoring.max_review_increase {cfg.max_review_increase}"
            )
    if current.corrected >= cfg.min_corrections and current.accuracy < cfg.min_accuracy:
        decline.append(
            f"accuracy: exact match {current.accuracy:.3f} on {current.corrected} corrected answers < "
            f"monitoring.min_accuracy {cfg.min_accuracy}"
        )
    vs_training = drift(training, current.profile) if judged and training.n else {}
    vs_previous = drift(previous.profile, current.profile) if judged and previous.answers >= cfg.min_requests else {}
    drifted += _drift_reasons(vs_training, "the training data", training, current.profile, cfg.max_psi)
    drifted += _drift_reasons(vs_previous, "the previous window", previous.profile, current.profile, cfg.max_psi)
    if not judged:
        notes = [
            f"{current.answers} answers in the window, fewer than monitoring.min_requests {cfg.min_requests}: "
            "distributions not judged"
        ]
        return ("decline" if decline else "ok"), decline + notes, vs_training, vs_previous
    if decline:
        return "decline", decline + drifted, vs_training, vs_previous
    return ("drift" if drifted else "ok"), drifted, vs_training, vs_previous


def monitor(
    model_name: str,
    production_version: str | None,
    task: str,
    current: list[dict],
    previous: list[dict],
    window: tuple[int, int, int],
    training_rows: list[tuple[str, str]],
    cfg: MonitoringConfig,
    trained_at_ms: int | None = None,
) -> MonitorReport:
    """The report over `current` (records in [start, end)) and `previous` (in [previous_start, start)); `window`
    is (previous_start, start, end). `trained_at_ms`: when the production version was made; corrections after it
    are new (not yet learned from)."""
    training, edges = training_profile(training_rows, task)
    previous_start, start, end = window
    now, before = figures(current, start, end, edges, task), figures(previous, previous_start, start, edges, task)
    kind, reasons, vs_training, vs_previous = verdict(now, before, training, cfg)
    new = sum(
        1 for r in current + previous if r["correction"] and (r["correction"]["time_ms"] or 0) >= (trained_at_ms or 0)
    )
    return MonitorReport(
        model_name=model_name,
        production_version=production_version,
        task=task,
        current=now,
        previous=before,
        training=training,
        drift_training=vs_training,
        drift_previous=vs_previous,
        verdict=kind,
        reasons=reasons,
        new_corrections=new,
        thresholds=cfg.model_dump(),
    )


def should_retrain(report: MonitorReport, cfg: MonitoringConfig) -> str | None:
    """Why the monitor launches the finetune pipeline, or None."""
    if not cfg.retrain or report.verdict == "ok" or report.new_corrections < cfg.min_corrections:
        return None
    return (
        f"verdict {report.verdict} and {report.new_corrections} new corrections (monitoring.min_corrections "
        f"{cfg.min_corrections})"
    )
