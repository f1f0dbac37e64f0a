"""The `extract` deployment's hooks and step: the model loads once when the server starts (`start_serving`), and
each request's step takes whatever model is current (`extract_texts`)."""

import logging
from pathlib import Path
from typing import Annotated

from zenml import get_step_context, step
from zenml.client import Client
from zenml.enums import ModelStages
from zenml.steps.step_context import get_or_create_run_context

from tuneline.artifacts import LoraAdapter
from tuneline.config import parse_config
from tuneline.modeling import resolve_base_model
from tuneline.serving import Extractor, ModelSlot, load_extractor

log = logging.getLogger(__name__)


def start_serving(model_name: str, version: str, parameters: dict) -> ModelSlot:
    """`version` is a number, a name or a stage; a stage is followed: each newly promoted version is swapped in."""
    config = parse_config(parameters, "the deployment's parameters")
    client = Client()

    def load(version_id: str) -> Extractor:
        mv = client.get_model_version(model_version_name_or_number_or_id=version_id)
        adapter: LoraAdapter = mv.get_artifact("lora_adapter").load()
        return load_extractor(f"{model_name} version {mv.name}", config.data.task,
                              resolve_base_model(adapter.base_model), Path(adapter.path), config.data,
                              config.evaluation, config.serving, config.model.dtype, config.model.device)

    def latest() -> str:
        return str(client.get_model_version(model_name, version).id)

    first = latest()
    slot = ModelSlot(load(first), first)
    log.info("serving %s on %s", slot.current()[0].label, slot.current()[0].device)
    if version in {stage.value for stage in ModelStages}:
        slot.follow(latest, load, config.serving.follow_seconds)
    return slot


def stop_serving() -> None:
    state = get_or_create_run_context().state
    if isinstance(state, ModelSlot):
        state.close()


def check_request(texts: list[str]) -> None:
    """Called by the request validator, before any run is created: a bad request costs no run and gets a 422."""
    context = get_or_create_run_context()
    if context.initialized and isinstance(context.state, ModelSlot):
        context.state.current()[0].check(texts)


@step(enable_cache=False)
def extract_texts(texts: list[str]) -> Annotated[dict, "extractions"]:
    slot: ModelSlot = get_step_context().pipeline_state
    return slot.current()[0].extract(texts)
