"""Served requests as MLflow traces, corrections as MLflow expectations and a shadow candidate's answers as MLflow
feedback on them: the one schema the server writes (`record_request`, `log_correction`, `log_shadow`) and the
monitor and the finetune data read back (`read_requests`).

One trace per request, in the experiment `requests_experiment(model)`, tagged with the model name and version; its
root span holds the texts, the answers with their parsed act and fields, confidences and review marks, the device
and the latency. `serving.record: redacted` keeps of each text and answer only its length and SHA-256 (and of an
answer its act and field names), so the store never holds what was sent; a correction of a redacted request is
stored the same way.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass

from tuneline.tasks import readable_fields, reference_problem

TRACE_NAME = "extract"
CORRECTION = "corrected_answer"
SHADOW = "shadow_answer"
TAG_MODEL, TAG_VERSION, TAG_RECORD = "tuneline.model", "tuneline.version", "tuneline.record"


def requests_experiment(model_name: str) -> str:
    """The MLflow experiment a model's requests are traced in, beside its training runs'."""
    return f"{model_name}-requests"


def experiment_id(model_name: str, create: bool = False, artifact_location: str | None = None) -> str | None:
    """The requests experiment's id in the current tracking store (made, marked as a GenAI app, when `create`;
    its trace files in `artifact_location`, by default MLflow's `./mlruns`)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    found = client.get_experiment_by_name(requests_experiment(model_name))
    if found is not None:
        return found.experiment_id
    if not create:
        return None
    return client.create_experiment(
        requests_experiment(model_name),
        artifact_location=artifact_location,
        tags={"mlflow.experimentKind": "genai_development"},
    )


def digest(text: str) -> dict:
    """What redaction keeps of a text: its length and a hash that says whether two texts are the same."""
    return {"chars": len(text), "sha256": hashlib.sha256(" ".join(text.split()).encode()).hexdigest()}


def _redacted_result(row: dict) -> dict:
    kept = {k: v for k, v in row.items() if k not in ("text", "answer", "fields")}
    return kept | {
        "text": digest(row["text"]),
        "answer": digest(row["answer"]),
        "fields": sorted(row["fields"]) if row.get("fields") else None,
    }


def record_request(
    response: dict, model_name: str, version: str, mode: str, start_ns: int, end_ns: int, experiment: str
) -> str | None:
    """Trace one answered request (`Extractor.answer`'s response) after it was answered, with its real start and
    end; MLflow exports it in a background thread (MLFLOW_ENABLE_ASYNC_TRACE_LOGGING). Returns the trace id."""
    if mode == "off":
        return None
    from mlflow.tracking import MlflowClient

    results = response["results"]
    if mode == "redacted":
        results = [_redacted_result(r) for r in results]
    texts = [r["text"] for r in results]
    client = MlflowClient()
    root = client.start_trace(
        TRACE_NAME,
        span_type="LLM",
        inputs={"texts": texts},
        experiment_id=experiment,
        tags={TAG_MODEL: model_name, TAG_VERSION: str(version), TAG_RECORD: mode},
        start_time_ns=start_ns,
        attributes={
            "model": response["model"],
            "device": response["device"],
            "latency_ms": (end_ns - start_ns) / 1e6,
            "threshold": response["threshold"],
        },
    )
    client.end_trace(root.trace_id, outputs={"results": results}, end_time_ns=end_ns)
    return root.trace_id


def recorder(
    model_name: str, mode: str, artifact_location: str | None = None
) -> Callable[[dict, int, int], str | None] | None:
    """What the server calls per answered request (response, start ns, end ns) to trace it, or None when `mode` is
    off; the experiment is made now, not on the first request."""
    if mode == "off":
        return None
    experiment = experiment_id(model_name, create=True, artifact_location=artifact_location)

    def record(response: dict, start_ns: int, end_ns: int) -> str | None:
        return record_request(response, model_name, response["version"], mode, start_ns, end_ns, experiment)

    return record


class CorrectionError(ValueError):
    """A correction that cannot be stored (HTTP 422): the message says why."""


class UnknownTrace(CorrectionError):
    """No recorded request has that trace id (HTTP 404)."""


def check_correction(answer: str, task: str) -> None:
    """CorrectionError naming why, when the task's parser cannot read `answer`: checked before anything is stored,
    by `log_correction` and by a review sheet's import for all its rows at once."""
    if problem := reference_problem(task, answer):
        raise CorrectionError(f"the corrected answer {problem}")


def log_correction(trace_id: str, answer: str, task: str, index: int = 0, source: str | None = None) -> str:
    """Store a person's corrected answer for text `index` of a traced request, once the task's parser reads it;
    returns the expectation's id. A later correction of the same text supersedes an earlier one. The one way a
    correction is stored: `POST /feedback` and `run.py review import` of a served-requests sheet both call it."""
    import mlflow
    from mlflow.entities import AssessmentSource, AssessmentSourceType

    check_correction(answer, task)
    trace = mlflow.get_trace(trace_id, silent=True, flush=True)
    if trace is None:
        raise UnknownTrace(f"no recorded request has trace id {trace_id!r}")
    n = len(_root_outputs(trace).get("results", []))
    if not 0 <= index < n:
        raise CorrectionError(f"index {index}: the request had {n} text(s)")
    value = answer
    if trace.info.tags.get(TAG_RECORD) == "redacted":
        fields = readable_fields(task, answer)
        value = digest(answer) | {"act": fields[0] if fields else None, "fields": sorted(fields[1]) if fields else None}
    who = AssessmentSource(source_type=AssessmentSourceType.HUMAN, source_id=source or "feedback")
    return mlflow.log_expectation(
        trace_id=trace_id, name=CORRECTION, value=value, source=who, metadata={"index": str(index)}
    ).assessment_id


def log_shadow(trace_id: str, response: dict, mode: str) -> None:
    """A shadow candidate's answers (`Extractor.answer`'s response) to a recorded request, on its trace: per text
    one MLflow feedback `shadow_answer` by code, `shadow:<version>`, holding the candidate's version, its answer (or,
    redacted, the answer's digest), whether it parsed, its act and confidence."""
    import mlflow
    from mlflow.entities import AssessmentSource, AssessmentSourceType

    if mlflow.get_trace(trace_id, silent=True, flush=True) is None:  # production's trace is exported in background
        raise UnknownTrace(f"no recorded request has trace id {trace_id!r}")
    who = AssessmentSource(source_type=AssessmentSourceType.CODE, source_id=f"shadow:{response['version']}")
    for i, r in enumerate(response["results"]):
        answer = digest(r["answer"]) if mode == "redacted" else {"answer": r["answer"]}
        value = answer | {"version": str(response["version"]), "parsed": r["parsed"], "confidence": r["confidence"]}
        mlflow.log_feedback(
            trace_id=trace_id,
            name=SHADOW,
            value=value | ({"act": r["act"]} if r["act"] else {}),
            source=who,
            metadata={"index": str(i)},
        )


@dataclass(frozen=True)
class Window:
    """[start_ms, end_ms) in milliseconds since the epoch."""

    start_ms: int
    end_ms: int


def _root_outputs(trace) -> dict:
    root = next((s for s in trace.data.spans if s.parent_id is None), None)
    return (root.outputs if root is not None else None) or {}


def _corrections(trace) -> dict[int, dict]:
    """Text index -> the latest correction: its value and when it was made."""
    out: dict[int, dict] = {}
    expectations = [a for a in trace.info.assessments if a.name == CORRECTION and a.valid is not False]
    for a in sorted(expectations, key=lambda a: a.create_time_ms or 0):
        out[int((a.metadata or {}).get("index", 0))] = {"value": a.value, "time_ms": a.create_time_ms}
    return out


def _shadows(trace) -> dict[int, dict]:
    """Text index -> the shadow candidate's answer: its version, answer (None when redacted) and the answer's hash."""
    out = {}
    for a in trace.info.assessments:
        if a.name == SHADOW and isinstance(a.value, dict):
            v = a.value
            out[int((a.metadata or {}).get("index", 0))] = {
                "version": v.get("version"),
                "answer": v.get("answer"),
                "answer_sha256": v["sha256"] if "sha256" in v else digest(v.get("answer", ""))["sha256"],
                "act": v.get("act"),
                "parsed": v.get("parsed", False),
                "confidence": v.get("confidence"),
            }
    return out


def _records(trace) -> list[dict]:
    """One record per text of a traced request."""
    info, tags = trace.info, trace.info.tags
    root = next((s for s in trace.data.spans if s.parent_id is None), None)
    attributes = root.attributes if root is not None else {}
    corrections, shadows = _corrections(trace), _shadows(trace)
    redacted = tags.get(TAG_RECORD) == "redacted"
    out = []
    for i, r in enumerate(_root_outputs(trace).get("results", [])):
        text, answer = r.get("text"), r.get("answer")
        fields = r.get("fields")
        out.append(
            {
                "trace_id": info.trace_id,
                "index": i,
                "timestamp_ms": info.request_time,
                "redacted": redacted,
                "model": tags.get(TAG_MODEL),
                "version": tags.get(TAG_VERSION),
                "device": attributes.get("device"),
                "text": None if redacted else text,
                "text_chars": text["chars"] if redacted else len(text),
                "answer": None if redacted else answer,
                "answer_sha256": answer["sha256"] if redacted else digest(answer)["sha256"],
                "parsed": r.get("parsed", False),
                "act": r.get("act"),
                "field_names": sorted(fields) if fields else [],
                "confidence": r.get("confidence"),
                "needs_review": r.get("needs_review", False),
                "latency_ms": attributes.get("latency_ms"),
                "correction": corrections.get(i),
                "shadow": shadows.get(i),
            }
        )
    return out


def read_requests(model_name: str, window: Window, max_results: int | None = None) -> list[dict]:
    """The model's traced requests that started in `window`, one record per text, oldest first, each with its
    latest correction and its shadow candidate's answer (or None). The model name is matched here, not in the
    filter string, which has no quoting."""
    import mlflow

    found = experiment_id(model_name)
    if found is None:
        return []
    traces = mlflow.search_traces(
        locations=[found],
        return_type="list",
        flush=True,
        max_results=max_results,
        filter_string=f"trace.timestamp_ms >= {window.start_ms} AND trace.timestamp_ms < {window.end_ms}",
    )
    records = [r for t in traces if t.info.tags.get(TAG_MODEL) == model_name for r in _records(t)]
    return sorted(records, key=lambda r: (r["timestamp_ms"], r["index"]))
