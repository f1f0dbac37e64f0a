"""Make sure the active ZenML stack can track experiments; register the local MLflow stack once if not.

The local stack is defined once, in `stacks/local.yaml`, the format `zenml stack import` reads, so the stack
run.py registers and the one a user imports by hand are the same.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import yaml
from zenml.client import Client
from zenml.enums import StackComponentType

log = logging.getLogger(__name__)

STACKS = Path(__file__).resolve().parent.parent / "stacks"
LOCAL_STACK_FILE = STACKS / "local.yaml"


def read_stack_file(path: Path) -> dict[str, Any]:
    """A stack definition as `zenml stack export` writes it: stack_name, zenml_version, components by type."""
    return yaml.safe_load(path.read_text())


def _component_id(client: Client, kind: StackComponentType, spec: dict[str, Any]):
    """Reuse a component of that name (as `zenml stack import` does), else register it."""
    existing = client.list_stack_components(type=kind, name=spec["name"])
    if existing.items:
        return existing.items[0].id
    return client.create_stack_component(
        name=spec["name"], flavor=spec["flavor"], component_type=kind, configuration=spec.get("configuration") or {}
    ).id


def register_stack(definition: dict[str, Any]) -> str:
    """Register a stack definition without `zenml stack import`'s prompts; returns its name."""
    client = Client()
    components = {
        StackComponentType(kind): [_component_id(client, StackComponentType(kind), spec) for spec in specs]
        for kind, specs in definition["components"].items()
    }
    client.create_stack(name=definition["stack_name"], components=components)
    return definition["stack_name"]


def ensure_tracking_stack() -> str:
    """Return the name of the stack the run will use, saying so when it registers or switches."""
    client = Client()
    if client.active_stack_model.components.get(StackComponentType.EXPERIMENT_TRACKER):
        return client.active_stack_model.name
    local = read_stack_file(LOCAL_STACK_FILE)
    name = local["stack_name"]
    if not client.list_stacks(name=name).items:
        register_stack(local)
        log.info(
            "registered ZenML stack '%s' from %s (local orchestrator and artifact store, MLflow tracker)",
            name,
            LOCAL_STACK_FILE.relative_to(STACKS.parent),
        )
    client.activate_stack(name)
    log.info("active stack had no experiment tracker; switched to '%s'", name)
    return name


class NoDeployer(RuntimeError):
    """The active stack cannot serve; the message says how to give it a deployer."""


def ensure_deployer() -> tuple[str, str]:
    """The active stack's deployer: (name, flavor). A `tuneline-local` stack registered before it had one gains the
    local
    deployer; any other stack is the user's to change, so the message says how."""
    client = Client()
    stack = client.active_stack_model
    if stack.components.get(StackComponentType.DEPLOYER):
        deployer = stack.components[StackComponentType.DEPLOYER][0]
        return deployer.name, deployer.flavor_name
    local = read_stack_file(LOCAL_STACK_FILE)
    if stack.name != local["stack_name"]:
        raise NoDeployer(
            f"stack '{stack.name}' has no deployer: `zenml stack update {stack.name} -D <deployer>` "
            "(`zenml deployer list`; `default` is the local one)"
        )
    spec = local["components"]["deployer"][0]
    client.update_stack(
        stack.name,
        component_updates={StackComponentType.DEPLOYER: [_component_id(client, StackComponentType.DEPLOYER, spec)]},
    )
    log.info("gave stack '%s' the local deployer '%s'", stack.name, spec["name"])
    return spec["name"], spec["flavor"]
