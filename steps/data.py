from typing import Annotated, Tuple

from zenml import get_step_context, log_metadata, step
from zenml.client import Client

from materializers.chat_dataset import ChatDatasetMaterializer
from steps.caching import CACHE_POLICY

from tuneline.registry import tracking
from tuneline.artifacts import ChatDataset, Quarantine
from tuneline.data.chat_format import ensure_chat_template
from tuneline.config import DataConfig, ModelConfig
from tuneline.data.feedback import FEEDBACK, load_feedback
from tuneline.models.modeling import load_tokenizer, resolve_base_model
from tuneline.evaluate.report import data_report_html
from tuneline.data.sources import DataError, load_splits
from tuneline.data.validation import DataReport, gate_message, prepare


def _record(key: str, dataset: ChatDataset, **extra) -> None:
    """The rows' content hash (the one ZenML stores for the artifact) and counts, on the step run and on the model
    version when the pipeline has one (`--prepare-only` has none), so every run says which data it used."""
    values = {
        "content_hash": ChatDatasetMaterializer(uri="").compute_content_hash(dataset),
        "rows": dataset.counts(),
        **extra,
    }
    log_metadata(metadata={key: values})
    if get_step_context().model_version is not None:
        log_metadata(metadata={key: values}, infer_model=True)


@step(enable_cache=False)
def load_data(data: DataConfig) -> Annotated[ChatDataset, "raw_data"]:
    """Never cached: files and hub datasets change under the same config, and a scheduled run must read them as
    they are now. The artifact's content hash lets the steps after it hit the cache when the rows did not change."""
    splits = load_splits(data)
    rows, lineage = _feedback(data)
    if rows:
        splits[FEEDBACK] = rows
    raw = ChatDataset(splits=splits)
    _record(
        "raw_data",
        raw,
        source=data.source,
        task=data.task,
        **({"feedback": lineage} if lineage and lineage["corrections"] else {}),
    )
    return raw


def _feedback(data: DataConfig) -> tuple[list[dict], dict | None]:
    """The corrections of the run's model's served requests, from the stack's MLflow store, and their lineage;
    none where there is no model (prepare-only) or no MLflow tracker to read them from."""
    model_version = get_step_context().model_version
    tracker = Client().active_stack.experiment_tracker
    if model_version is None or tracker is None or not hasattr(tracker, "configure_mlflow"):
        return [], None
    tracker.configure_mlflow()
    return load_feedback(model_version.model.name, data)


@step(experiment_tracker=True, cache_policy=CACHE_POLICY)
def prepare_dataset(
    raw: ChatDataset, data: DataConfig, model: ModelConfig
) -> Tuple[
    Annotated[ChatDataset, "chat_dataset"], Annotated[Quarantine, "quarantine"], Annotated[DataReport, "data_report"]
]:
    tokenizer = load_tokenizer(resolve_base_model(model.base))
    fallback = ensure_chat_template(tokenizer)
    prepared = prepare(raw.splits, data, tokenizer, template_fallback=fallback)
    dataset = ChatDataset(splits=prepared.splits)
    _record("chat_dataset", dataset, quarantined={split: c.quarantined for split, c in prepared.report.splits.items()})
    tracking.log_sections(data=data)
    tracking.log_metrics(prepared.report.metrics(), prefix="data.")
    tracking.log_text(data_report_html(prepared.report), "data/report.html")
    return dataset, Quarantine(rows=prepared.quarantine), prepared.report


@step(cache_policy=CACHE_POLICY)
def check_data(report: DataReport, quarantine: Quarantine) -> None:
    """The gate: after prepare so the quarantine and report are saved even when the run stops here."""
    if not report.passed:
        raise DataError(gate_message(report, quarantine.rows))
