"""Scheduled retraining: register the finetune pipeline on a cron schedule, checked before ZenML registers anything.

ZenML finds out that an orchestrator cannot run schedules only after it has compiled and registered the pipeline,
and does not say which orchestrators can; so both checks happen here first. Every scheduled run reads the data as
it is then (`load_data` is never cached), records its hash and row counts, and promotes only when the promotion
rule says so.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import TYPE_CHECKING

from croniter import croniter

if TYPE_CHECKING:
    from zenml.models import ScheduleResponse

    from tuneline.config import TunelineConfig

CRON_FIELDS = "minute hour day-of-month month day-of-week"


class ScheduleError(ValueError):
    """A schedule that cannot be registered; the message says why and what would work."""


def requested_cron(flag: str | None, zenml_config: dict) -> str | None:
    """The cron expression asked for: `--schedule`, else the config's ZenML `schedule:` block (taken out of
    `zenml_config` so it goes through the same checks). None means run now."""
    block = zenml_config.pop("schedule", None) or {}
    cron = flag or block.get("cron_expression")
    if block and not cron:
        raise ScheduleError("schedule: only cron schedules are supported; set schedule.cron_expression")
    return check_cron(cron) if cron else None


def check_cron(expression: str) -> str:
    """Five fields, as every scheduling orchestrator takes them (croniter alone would also accept seconds)."""
    fields = str(expression).split()
    if len(fields) != 5 or not croniter.is_valid(" ".join(fields)):
        raise ScheduleError(
            f"schedule {expression!r}: not a valid cron expression; expected 5 fields ({CRON_FIELDS}), "
            "e.g. '0 3 * * 0' for Sundays at 03:00"
        )
    return expression


def schedulable_flavors() -> list[str]:
    """Orchestrator flavors, built in or from an integration, whose config says `is_schedulable`."""
    from zenml.enums import StackComponentType
    from zenml.integrations.registry import integration_registry
    from zenml.stack.flavor_registry import FlavorRegistry

    classes = FlavorRegistry().builtin_flavors + [
        flavor for integration in integration_registry.integrations.values() for flavor in integration.flavors()
    ]
    flavors = [cls() for cls in classes]
    return sorted(
        f.name
        for f in flavors
        if f.type == StackComponentType.ORCHESTRATOR and f.config_class.model_construct().is_schedulable
    )


def check_stack() -> None:
    """Stop unless the active stack's orchestrator runs schedules (the test ZenML makes, made earlier)."""
    from zenml.client import Client

    stack = Client().active_stack
    if not stack.orchestrator.config.is_schedulable:
        raise ScheduleError(
            f"--schedule: stack '{stack.name}' runs on the '{stack.orchestrator.flavor}' orchestrator, which cannot "
            f"run schedules. Orchestrators that can: {', '.join(schedulable_flavors())}. Switch to a stack with one "
            "of them, e.g. `zenml stack import stacks/kubernetes-gpu.yaml && zenml stack set tuneline-k8s-gpu`."
        )


def create(config: TunelineConfig, zenml_config: dict, cron: str, enable_cache: bool = True) -> ScheduleResponse:
    """Register the finetune pipeline to run on `cron` on the active stack; nothing runs now."""
    from zenml.client import Client
    from zenml.config.schedule import Schedule

    from runner import launch
    from runner.first_use import set_up
    from runner.versions import model_name_of

    set_up()
    check_stack()
    name = f"{model_name_of(config, zenml_config)}-{datetime.now(timezone.utc):%Y%m%d-%H%M%S}"
    launch.launch(config, zenml_config, enable_cache, schedule=Schedule(name=name, cron_expression=cron))
    return Client().get_schedule(name)


def describe(schedule: ScheduleResponse, pipeline: str = "finetune") -> str:
    """What was registered, when it next runs, and the ZenML commands that list, pause, resume and delete it."""
    nxt = croniter(schedule.cron_expression, datetime.now(timezone.utc)).get_next(datetime)
    return (
        f"schedule '{schedule.name}' registered: the {pipeline} pipeline runs at cron '{schedule.cron_expression}' "
        f"(next {nxt:%Y-%m-%d %H:%M} UTC, by the orchestrator's clock).\n"
        "  list:   zenml pipeline schedule list\n"
        f"  pause:  zenml pipeline schedule deactivate {schedule.name}\n"
        f"  resume: zenml pipeline schedule activate {schedule.name}\n"
        f"  delete: zenml pipeline schedule delete {schedule.name}"
    )
