"""Make sure the active ZenML stack can track experiments; register a local MLflow stack once if not."""

from __future__ import annotations

import logging

from zenml.client import Client
from zenml.enums import StackComponentType

log = logging.getLogger(__name__)

LOCAL_STACK = "tuneline-local"
LOCAL_TRACKER = "tuneline-mlflow"


def _component_id(client: Client, kind: StackComponentType, name: str, flavor: str) -> str:
    existing = client.list_stack_components(type=kind, name=name)
    if existing.items:
        return existing.items[0].id
    return client.create_stack_component(name=name, flavor=flavor, component_type=kind, configuration={}).id


def ensure_tracking_stack() -> str:
    """Return the name of the stack the run will use, saying so when it registers or switches."""
    client = Client()
    if client.active_stack_model.components.get(StackComponentType.EXPERIMENT_TRACKER):
        return client.active_stack_model.name
    existing = client.list_stacks(name=LOCAL_STACK)
    if not existing.items:
        components = {
            StackComponentType.ORCHESTRATOR: _component_id(client, StackComponentType.ORCHESTRATOR, "default", "local"),
            StackComponentType.ARTIFACT_STORE: _component_id(client, StackComponentType.ARTIFACT_STORE, "default", "local"),
            StackComponentType.EXPERIMENT_TRACKER: _component_id(
                client, StackComponentType.EXPERIMENT_TRACKER, LOCAL_TRACKER, "mlflow"
            ),
        }
        client.create_stack(name=LOCAL_STACK, components=components)
        log.info("registered ZenML stack '%s' (local orchestrator and artifact store, MLflow tracker '%s')",
                 LOCAL_STACK, LOCAL_TRACKER)
    client.activate_stack(LOCAL_STACK)
    log.info("active stack had no experiment tracker; switched to '%s'", LOCAL_STACK)
    return LOCAL_STACK
