"""Turn raw rows into training records, quarantining every row that is unfit, with its reason.

Order of checks: unreadable (`encoding`, `unparseable`), format problems (`missing_field`, `empty_field`,
`invalid_field`, `invalid_role`), an answer the task's parser cannot read (`bad_reference`), `template_mismatch`,
length (`too_long`, or truncated and counted), exact
duplicates across all splits (`duplicate`; the test copy is kept), then `leakage`: a train or validation row whose
normalized user input also appears in test, then inputs with different answers (counted; quarantined as
`conflict` with data.conflicts: quarantine). Accepted + quarantined = input for every split; nothing is lost.
"""

from __future__ import annotations

import json
import random
from collections import Counter

from pydantic import BaseModel

from tuneline.data.chat_format import render, tokenize_segments
from tuneline.config import DataConfig
from tuneline.data.feedback import FEEDBACK
from tuneline.data.formats import RowError, check_reference, detect_format, to_messages, user_input
from tuneline.data.readers import DETAIL, ERROR, RAW
from tuneline.data.sources import DataError, made_splits

HISTOGRAM_BINS = 20


class SplitCounts(BaseModel):
    input: int = 0
    accepted: int = 0
    quarantined: int = 0
    truncated: int = 0
    used: int = 0  # accepted rows kept after data.max_*_samples caps


class DataReport(BaseModel):
    splits: dict[str, SplitCounts]
    made: list[str] = []  # splits carved from train by a seeded shuffle; the others are as the source gives them
    reasons: dict[str, dict[str, int]]  # split -> reason -> count
    formats: dict[str, int]
    field_coverage: dict[str, float]  # share of readable raw rows with the field present and non-empty
    token_lengths: dict[str, float]  # min, mean, p50, p95, max over accepted rows
    histogram: list[tuple[int, int, int]]  # (low, high, count) of token lengths of accepted rows
    max_seq_len: int
    chat_template_fallback: bool
    reject_fraction: float
    max_reject_fraction: float
    distinct_inputs: dict[str, int] = {}  # split -> distinct user inputs among the rows used
    conflicts: int = 0  # inputs with more than one distinct answer, over all splits
    conflict_example: str | None = None  # the first such input's rows, as file:line

    @property
    def passed(self) -> bool:
        return self.reject_fraction <= self.max_reject_fraction

    def origins(self) -> str:
        """Which splits the user gave and which were carved from train: a given test split is never replaced."""
        given = ", ".join(s for s in self.splits if s not in self.made) or "none"
        return f"splits given: {given}" + (f"; made from train (seeded): {', '.join(self.made)}" if self.made else "")

    def reason_totals(self) -> dict[str, int]:
        total: Counter = Counter()
        for counts in self.reasons.values():
            total.update(counts)
        return dict(total.most_common())

    def metrics(self) -> dict[str, float]:
        """Flat numbers for an experiment tracker."""
        out = {f"{split}.{k}": float(v) for split, c in self.splits.items() for k, v in c.model_dump().items()}
        out |= {f"quarantined.{reason}": float(n) for reason, n in self.reason_totals().items()}
        out |= {f"tokens.{k}": v for k, v in self.token_lengths.items()}
        return out | {"reject_fraction": self.reject_fraction}


class Prepared(BaseModel):
    splits: dict[str, list[dict]]
    quarantine: list[dict]
    report: DataReport


def _quarantine(split: str, row: dict, reason: str, detail: str) -> dict:
    raw = row.get(RAW) if ERROR in row else {k: v for k, v in row.items() if not k.startswith("_")}
    return {
        "split": split,
        "file": row.get("_file"),
        "line": row.get("_line"),
        "reason": reason,
        "detail": detail,
        "raw": raw,
    }


def _sample(rows: list, cap: int | None, seed: int) -> list:
    if cap is None or cap >= len(rows):
        return rows
    picked = sorted(random.Random(seed).sample(range(len(rows)), cap))
    return [rows[i] for i in picked]


def _histogram(lengths: list[int]) -> list[tuple[int, int, int]]:
    if not lengths:
        return []
    lo, hi = min(lengths), max(lengths)
    width = max(1, -(-(hi - lo + 1) // HISTOGRAM_BINS))
    counts = Counter((n - lo) // width for n in lengths)
    return [(lo + b * width, lo + (b + 1) * width - 1, counts.get(b, 0)) for b in range(max(counts) + 1)]


def _length_stats(lengths: list[int]) -> dict[str, float]:
    if not lengths:
        return {}
    s = sorted(lengths)
    return {
        "min": s[0],
        "mean": sum(s) / len(s),
        "p50": s[len(s) // 2],
        "p95": s[min(len(s) - 1, int(0.95 * len(s)))],
        "max": s[-1],
    }


def _coverage(raw: dict[str, list[dict]]) -> dict[str, float]:
    readable = [r for rows in raw.values() for r in rows if ERROR not in r]
    if not readable:
        return {}
    present: Counter = Counter()
    for r in readable:
        present.update(k for k, v in r.items() if not k.startswith("_") and v not in (None, "", [], {}))
    return {k: n / len(readable) for k, n in sorted(present.items())}


def _drop_leakage(accepted: dict[str, list[tuple[dict, dict]]]) -> list[dict]:
    """Remove, from every split but test, rows whose user input is also a test input, and return their quarantine
    entries: validation is checked as well as train, since a split carved from train can carry a leaked row."""
    test_inputs = {user_input(rec["messages"]) for _, rec in accepted.get("test", [])}
    if not test_inputs:
        return []
    leaked = []
    for split in [s for s in accepted if s != "test"]:
        clean = []
        for row, rec in accepted[split]:
            if user_input(rec["messages"]) in test_inputs:
                leaked.append(_quarantine(split, row, "leakage", "its input also appears in the test split"))
            else:
                clean.append((row, rec))
        accepted[split] = clean
    return leaked


def _answers_by_input(accepted: dict[str, list[tuple[dict, dict]]]) -> dict[str, list[tuple[str, dict, dict]]]:
    by_input: dict[str, list[tuple[str, dict, dict]]] = {}
    for split, kept in accepted.items():
        for row, rec in kept:
            by_input.setdefault(user_input(rec["messages"]), []).append((split, row, rec))
    return by_input


def _conflicts(accepted: dict[str, list[tuple[dict, dict]]], quarantine: bool) -> tuple[list[str], list[dict]]:
    """Inputs whose rows give different answers (whitespace aside), as `file:line, file:line` each; with
    `quarantine`, all their rows leave `accepted` (which answer is right is not ours to guess)."""
    found, entries, dropped = [], [], set()
    for rows in _answers_by_input(accepted).values():
        answers = {" ".join(rec["messages"][-1]["content"].split()) for _, _, rec in rows}
        if len(answers) < 2:
            continue
        found.append(", ".join(rec["source"] for _, _, rec in rows))
        if quarantine:
            dropped |= {id(rec) for _, _, rec in rows}
            entries += [
                _quarantine(split, row, "conflict", f"{len(answers)} different answers for one input: {found[-1]}")
                for split, row, _ in rows
            ]
    for split in accepted if dropped else ():
        accepted[split] = [(row, rec) for row, rec in accepted[split] if id(rec) not in dropped]
    return found, entries


def prepare(raw: dict[str, list[dict]], cfg: DataConfig, tokenizer, template_fallback: bool = False) -> Prepared:
    quarantine: list[dict] = []
    counts = {split: SplitCounts(input=len(rows)) for split, rows in raw.items()}
    formats: Counter = Counter()
    accepted: dict[str, list[dict]] = {}
    seen: set[str] = set()
    # Test first: a row that is in test and also elsewhere stays in test, its copies go (test stays stable); a
    # correction (the feedback split) that repeats a source row is the duplicate.
    for split in sorted(raw, key=lambda s: {"test": 0, "validation": 1, FEEDBACK: 3}.get(s, 2)):
        rows = raw[split]
        kept = []
        for row in rows:
            if ERROR in row:
                quarantine.append(_quarantine(split, row, row[ERROR], row[DETAIL]))
                continue
            try:
                messages = to_messages(row, cfg)
                check_reference(row, messages, cfg)
                rendered = render(tokenizer, messages)
            except RowError as err:
                quarantine.append(_quarantine(split, row, err.reason, str(err)))
                continue
            tokens = tokenize_segments(tokenizer, rendered["segments"], cfg.max_seq_len)
            n_tokens = tokens["n_tokens"]
            if n_tokens > cfg.max_seq_len and cfg.overlong == "quarantine":
                quarantine.append(
                    _quarantine(split, row, "too_long", f"{n_tokens} tokens > data.max_seq_len {cfg.max_seq_len}")
                )
                continue
            key = json.dumps(messages, sort_keys=True)
            if key in seen:
                quarantine.append(_quarantine(split, row, "duplicate", "same conversation appears earlier"))
                continue
            seen.add(key)
            # The ids are kept: training reads them instead of tokenizing every row again.
            kept.append(
                (
                    row,
                    {
                        "messages": messages,
                        **rendered,
                        "n_tokens": n_tokens,
                        "input_ids": tokens["input_ids"],
                        "labels": tokens["labels"],
                        "source": f"{row['_file']}:{row['_line']}",
                    },
                )
            )
        accepted[split] = kept

    quarantine += _drop_leakage(accepted)
    conflicts, conflicting = _conflicts(accepted, cfg.conflicts == "quarantine")
    quarantine += conflicting

    caps = {"train": cfg.max_train_samples, "validation": cfg.max_validation_samples, "test": cfg.max_test_samples}
    splits = {}
    for split in raw:
        kept = accepted[split]
        formats.update(detect_format(row, cfg) for row, _ in kept)
        counts[split].truncated = sum(rec["n_tokens"] > cfg.max_seq_len for _, rec in kept)
        counts[split].accepted = len(kept)
        splits[split] = _sample([rec for _, rec in kept], caps.get(split), cfg.seed)
        counts[split].used = len(splits[split])
    reasons: dict[str, Counter] = {split: Counter() for split in raw}
    for q in quarantine:
        reasons[q["split"]][q["reason"]] += 1
    for split, c in counts.items():
        c.quarantined = sum(reasons[split].values())
        if c.accepted + c.quarantined != c.input:
            raise RuntimeError(f"row accounting broken for split {split}: {c}")

    lengths = [rec["n_tokens"] for kept in accepted.values() for _, rec in kept]
    total_in = sum(c.input for c in counts.values())
    report = DataReport(
        splits=counts,
        made=made_splits(raw),
        reasons={s: dict(r.most_common()) for s, r in reasons.items()},
        formats=dict(formats),
        field_coverage=_coverage(raw),
        token_lengths=_length_stats(lengths),
        histogram=_histogram(lengths),
        max_seq_len=cfg.max_seq_len,
        chat_template_fallback=template_fallback,
        reject_fraction=len(quarantine) / total_in if total_in else 0.0,
        max_reject_fraction=cfg.max_reject_fraction,
        distinct_inputs={s: len({user_input(rec["messages"]) for rec in rows}) for s, rows in splits.items()},
        conflicts=len(conflicts),
        conflict_example=conflicts[0] if conflicts else None,
    )
    missing = [s for s in ("train", "test") if not splits.get(s)]
    if missing and report.passed:
        raise DataError(f"data.source '{cfg.source}': no usable rows in split(s) {missing}")
    if FEEDBACK in splits:  # counted apart in the report, trained on with the rest
        splits["train"] = splits["train"] + splits.pop(FEEDBACK)
    return Prepared(splits=splits, quarantine=quarantine, report=report)


def gate_message(report: DataReport, quarantine: list[dict], examples: int = 5) -> str:
    """Why a run stops: the share, the counts by reason, and rejected rows with file and line: the first of each
    reason (a minor reason must not hide the main one), then the next ones up to `examples`."""
    lines = [
        f"{report.reject_fraction:.1%} of input rows were quarantined, above data.max_reject_fraction "
        f"{report.max_reject_fraction:.1%}; counts by reason: {report.reason_totals()}",
    ]
    first = {}
    for i, q in enumerate(quarantine):
        first.setdefault(q["reason"], i)
    firsts = set(first.values())
    shown = sorted(firsts) + [i for i in range(len(quarantine)) if i not in firsts][: max(0, examples - len(firsts))]
    lines += [
        f"  {q['file']}:{q['line']}: {q['reason']}: {q['detail']}" for q in (quarantine[i] for i in sorted(shown))
    ]
    if len(quarantine) > len(shown):
        lines.append(f"  ... and {len(quarantine) - len(shown)} more in the 'quarantine' artifact")
    return "\n".join(lines)
