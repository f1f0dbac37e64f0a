"""The corrected slice: the served requests a person corrected (tuneline/serve/recording.py), scored at promotion
for the candidate and the version in production and reported beside the test set.

These are the inputs production met and a person judged, so a candidate that gains on the test set and loses here
is worth a look. They are few and picked by people (often the doubtful answers), so they are reported, not gated
on. The candidate may have learned some of them (the `feedback` split, tuneline/data/feedback.py): those are
counted (`learned`) and the scores are given on the rest too (`unseen`), where the comparison is fair.
"""

from __future__ import annotations

from collections import Counter
from html import escape

from pydantic import BaseModel

from tuneline.config import DataConfig
from tuneline.data.chat_format import render
from tuneline.data.feedback import correction_rows
from tuneline.data.formats import RowError, to_messages
from tuneline.evaluate.metrics import metric_value


def slice_examples(records: list[dict], cfg: DataConfig, tokenizer) -> list[dict]:
    """The corrected, unredacted records (`recording.read_requests`) as test rows: rendered exactly as the
    `feedback` training rows are, with their `source` (`mlflow-trace:<id>:<line>`) and the version that served
    them; a correction the data's format refuses is left out, as validation would quarantine it."""
    served = {(r["trace_id"], r["index"] + 1): r["version"] for r in records}
    examples = []
    for row in correction_rows(records, cfg):
        try:
            messages = to_messages(row, cfg)
        except RowError:
            continue
        trace_id = row["_file"].split(":", 1)[1]
        examples.append(
            {
                "messages": messages,
                "prompt": render(tokenizer, messages)["prompt"],
                "source": f"{row['_file']}:{row['_line']}",
                "served_by": served[(trace_id, row["_line"])],
            }
        )
    return examples


class SliceScores(BaseModel):
    n_examples: int
    candidate: float
    reference: float
    difference: float


class CorrectedSlice(BaseModel):
    """The candidate and the reference on the corrected requests, in the promotion's primary metric."""

    metric: str
    reference: str  # e.g. "production version 3"
    served_by: dict[str, int]  # version -> corrected examples it had answered
    learned: int  # of them among the candidate's training rows
    all: SliceScores
    unseen: SliceScores | None  # the ones the candidate did not learn; None when it learned every one


def _scores(metric: str, candidate: list[dict], reference: list[dict]) -> SliceScores:
    c, r = metric_value(metric, candidate), metric_value(metric, reference)
    return SliceScores(n_examples=len(candidate), candidate=c, reference=r, difference=c - r)


def compare_slice(
    metric: str,
    examples: list[dict],
    candidate: list[dict],
    reference: list[dict],
    trained_sources: set[str],
    reference_label: str,
) -> CorrectedSlice:
    """`candidate` and `reference`: both models' per-example rows on `examples`, in order; `trained_sources`: the
    `source` of each of the candidate's training rows."""
    learned = [e["source"] in trained_sources for e in examples]
    unseen = [i for i, seen in enumerate(learned) if not seen]
    return CorrectedSlice(
        metric=metric,
        reference=reference_label,
        served_by=dict(Counter(str(e["served_by"]) for e in examples)),
        learned=sum(learned),
        all=_scores(metric, candidate, reference),
        unseen=_scores(metric, [candidate[i] for i in unseen], [reference[i] for i in unseen]) if unseen else None,
    )


def slice_html(found: CorrectedSlice) -> str:
    """The slice's section of the promotion report."""
    rows = [("all corrected", found.all)] + ([("not learned by the candidate", found.unseen)] if found.unseen else [])
    body = "".join(
        f"<tr><td>{name}</td><td>{s.n_examples}</td><td>{s.reference:.4f}</td><td>{s.candidate:.4f}</td>"
        f"<td>{s.difference:+.4f}</td></tr>"
        for name, s in rows
    )
    served = ", ".join(f"version {v}: {n}" for v, n in sorted(found.served_by.items()))
    return (
        f"<h3>Corrected production requests</h3><p>{escape(found.metric)} on the served requests a person corrected "
        f"(served by {escape(served)}); the candidate trained on {found.learned} of them. Reported, not a gate.</p>"
        f"<table><tr><th>slice</th><th>examples</th><th>{escape(found.reference)}</th><th>candidate</th>"
        f"<th>candidate - reference</th></tr>{body}</table>"
    )
