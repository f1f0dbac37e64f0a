"""GPU recipes, stack definitions and schedules: what we generate for a cluster, checked without one.

Nothing here reaches a cloud. The GPU configs are compiled, not run, against the local stack plus a stand-in step
operator; the stack definitions go through ZenML's own `zenml stack import`, which validates every component's
config against its flavor; a schedule is registered with the local orchestrator made to say it can schedule.
"""

import os
import re
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path
from uuid import uuid4

import pytest
import yaml
import zenml
from click.testing import CliRunner
from zenml import Model, pipeline
from zenml.cli.cli import cli
from zenml.client import Client
from zenml.config import DockerSettings, ResourceSettings
from zenml.config.compiler import Compiler
from zenml.config.pipeline_run_configuration import PipelineRunConfiguration
from zenml.enums import StackComponentType
from zenml.exceptions import StackValidationError
from zenml.orchestrators.local.local_orchestrator import LocalOrchestrator, LocalOrchestratorConfig
from zenml.stack import Stack
from zenml.stack.utils import validate_stack_component_config
from zenml.step_operators import BaseStepOperator, BaseStepOperatorConfig

from pipelines import finetune
from runner.launch import finetune_params
from runner.schedule import ScheduleError, check_cron, create, describe, requested_cron
from runner.stack import LOCAL_STACK_FILE, ensure_tracking_stack, read_stack_file
from steps import load_data
from tuneline.config import DataConfig, load_run_config

pytestmark = pytest.mark.slow  # real pipelines, processes or deployments: minutes

ROOT = Path(__file__).resolve().parent.parent
GPU_CONFIGS = sorted(ROOT.glob("configs/gpu-*.yaml"))
GPU_STEPS = {"train_lora", "evaluate_base", "evaluate_tuned"}
OPTION = re.compile(r"# (step_operator: true)")


@pytest.fixture(scope="module")
def local_stack():
    """The stack run.py uses (registered from stacks/local.yaml), with the secrets the configs name."""
    client = Client()
    secrets = {"huggingface": {"HF_TOKEN": "test"}, "mlflow_tracking": {"username": "u", "password": "p"}}
    for name, values in secrets.items():
        if not client.list_secrets(name=name).items:
            client.create_secret(name, values)
    ensure_tracking_stack()
    return client.active_stack


class StandInStepOperator(BaseStepOperator):
    """Compiling needs a step operator in the stack; nothing is ever submitted to it here."""


def _stack(local, step_operator: bool):
    """The local stack, plus a stand-in for a cloud step operator (SageMaker, Vertex...) when asked."""
    now = datetime.now(timezone.utc)
    operator = StandInStepOperator(
        name="gpu",
        id=uuid4(),
        config=BaseStepOperatorConfig(),
        flavor="stand-in",
        type=StackComponentType.STEP_OPERATOR,
        user=None,
        created=now,
        updated=now,
    )
    return Stack(
        id=uuid4(),
        name="gpu-compile",
        orchestrator=local.orchestrator,
        artifact_store=local.artifact_store,
        experiment_tracker=local.experiment_tracker,
        step_operator=operator if step_operator else None,
    )


def _compile(path: Path, stack, tmp_path: Path):
    """What `run.py --config path` hands ZenML (as runner/launch.py does), compiled for `stack`, not run."""
    config, zenml_config = load_run_config(path)
    zenml_file = tmp_path / f"zenml-{path.name}"
    zenml_file.write_text(yaml.safe_dump(zenml_config))
    configured = finetune.with_options(config_path=str(zenml_file))
    configured.prepare(**finetune_params(config))
    run_configuration = PipelineRunConfiguration(**zenml_config)
    return config, Compiler().compile(pipeline=configured, stack=stack, run_configuration=run_configuration)


def _typed(cls, settings):
    """Settings as the component that reads them sees them; a mistyped key ZenML would silently ignore fails."""
    typed = cls.model_validate(settings.model_dump())
    assert not typed.model_extra, typed.model_extra
    return typed


def test_there_are_gpu_recipes_for_qlora_and_lora():
    configs = {path.name: load_run_config(path)[0] for path in GPU_CONFIGS}
    assert {c.model.quantization for c in configs.values()} == {"4bit", "none"}
    assert all(c.model.dtype == "bfloat16" for c in configs.values())
    assert configs["gpu-llama3.1-8b-qlora.yaml"].model.base == "meta-llama/Llama-3.1-8B-Instruct"


@pytest.mark.parametrize("path", GPU_CONFIGS, ids=lambda p: p.stem)
def test_gpu_config_compiles_with_docker_resources_and_retries(path, local_stack, tmp_path):
    config, snapshot = _compile(path, _stack(local_stack, step_operator=False), tmp_path)
    docker = _typed(DockerSettings, snapshot.pipeline_configuration.settings["docker"])
    torch_pin = re.search(r'"torch==([^"]+)"', (ROOT / "pyproject.toml").read_text()).group(1)
    assert re.fullmatch(rf"pytorch/pytorch:{re.escape(torch_pin)}-cuda[\d.]+-cudnn\d+-runtime", docker.parent_image)
    assert (ROOT / docker.pyproject_path).is_file() and "{directory}/pyproject.toml" in docker.pyproject_export_command
    bitsandbytes = [r for r in docker.requirements or [] if r.startswith("bitsandbytes==")]
    assert bool(bitsandbytes) == (config.model.quantization != "none")

    steps = {name: step.config for name, step in snapshot.step_configurations.items()}
    for name, step in steps.items():
        if name in GPU_STEPS | {"promote"}:  # promote may re-score production
            resources = _typed(ResourceSettings, step.settings["resources"])
            assert resources.gpu_count >= 1 and resources.memory, name
        else:
            assert "resources" not in step.settings, name
        assert (step.retry is not None and step.retry.max_retries >= 1) == (name in GPU_STEPS), name
        assert step.step_operator is None, name
    # One process per GPU: the pod must have as many GPUs as training starts processes.
    train_resources = _typed(ResourceSettings, steps["train_lora"].settings["resources"])
    assert train_resources.gpu_count == config.training.num_processes
    gated = config.model.base.startswith("meta-llama/")  # the pods need a hub token, from a ZenML secret
    assert (Client().get_secret("huggingface").id in snapshot.pipeline_configuration.secrets) == gated


@pytest.mark.parametrize("path", GPU_CONFIGS, ids=lambda p: p.stem)
def test_step_operator_option_sends_only_train_and_evaluate(path, local_stack, tmp_path):
    opted, n = OPTION.subn(r"\1", path.read_text())
    assert n == len(GPU_STEPS)  # the documented option: uncomment these lines
    opted_path = tmp_path / path.name
    opted_path.write_text(opted)
    _, snapshot = _compile(opted_path, _stack(local_stack, step_operator=True), tmp_path)
    assert {n for n, s in snapshot.step_configurations.items() if s.config.step_operator} == GPU_STEPS
    with pytest.raises(StackValidationError, match="step operator"):
        _compile(opted_path, _stack(local_stack, step_operator=False), tmp_path)


def _import(name: str, path: Path):
    result = CliRunner().invoke(cli, ["stack", "import", name, "--filename", str(path)])
    assert result.exit_code == 0, result.output + repr(result.exception)
    return Client().get_stack(name)


def _components(stack) -> dict[str, list]:
    """A registered stack's components by type, as the stack files list them."""
    return {kind.value: components for kind, components in stack.components.items()}


def test_stack_files_name_this_zenml_and_known_flavors():
    for path in sorted((ROOT / "stacks").glob("*.yaml")):
        definition = yaml.safe_load(path.read_text())
        assert definition["zenml_version"] == zenml.__version__, path  # `zenml stack import` refuses others
        for kind, specs in definition["components"].items():
            for spec in specs:
                assert Client().get_flavor_by_name_and_type(spec["flavor"], StackComponentType(kind)), (path, spec)


def test_local_stack_file_is_what_run_py_registers(local_stack):
    definition = read_stack_file(LOCAL_STACK_FILE)
    registered = Client().active_stack_model
    assert registered.name == definition["stack_name"]
    assert {kind: [(c.name, c.flavor_name) for c in cs] for kind, cs in _components(registered).items()} == {
        kind: [(spec["name"], spec["flavor"]) for spec in specs] for kind, specs in definition["components"].items()
    }
    imported = _import("tuneline-local-imported", LOCAL_STACK_FILE)  # ZenML's own command reuses the same parts
    ids = {kind: [c.id for c in cs] for kind, cs in _components(imported).items()}
    assert ids == {kind: [c.id for c in cs] for kind, cs in _components(registered).items()}


def test_kubernetes_gpu_stack_imports_and_every_component_validates(local_stack):
    pytest.importorskip("kubernetes", reason="validating pod tolerations needs the kubernetes client (dev extra)")
    stack = _import("tuneline-k8s-gpu-imported", ROOT / "stacks" / "kubernetes-gpu.yaml")
    components = _components(stack)
    assert {k: [c.flavor_name for c in v] for k, v in components.items()} == {
        "orchestrator": ["kubernetes"],
        "artifact_store": ["s3"],
        "container_registry": ["default"],
        "experiment_tracker": ["mlflow"],
        "deployer": ["kubernetes"],
    }
    configs = {
        kind: validate_stack_component_config(c.configuration, c.flavor_name, StackComponentType(kind))
        for kind, [c] in components.items()
    }
    assert not any(config.is_local for config in configs.values())  # a remote orchestrator refuses local parts
    orchestrator = configs["orchestrator"]
    assert orchestrator.is_schedulable  # so `run.py --schedule` works on this stack
    assert orchestrator.pod_settings.node_selectors and orchestrator.pod_settings.tolerations
    assert configs["artifact_store"].path.startswith("s3://")
    assert configs["experiment_tracker"].tracking_uri.startswith("https://")


@pytest.mark.parametrize("cron", ["0 3 * *", "0 0 3 * * 0", "61 3 * * *", "every sunday"])
def test_invalid_cron_is_refused(cron):
    with pytest.raises(ScheduleError, match="not a valid cron expression; expected 5 fields"):
        check_cron(cron)


def test_config_schedule_block_needs_a_cron():
    zenml_config = {"schedule": {"cron_expression": "0 3 * * 0"}}
    assert requested_cron(None, zenml_config) == "0 3 * * 0" and "schedule" not in zenml_config
    assert requested_cron("30 2 * * 1-5", {"schedule": {"cron_expression": "0 3 * * 0"}}) == "30 2 * * 1-5"
    with pytest.raises(ScheduleError, match="only cron schedules"):
        requested_cron(None, {"schedule": {"interval_second": 3600}})


def _cli(*args):
    return subprocess.run(
        [sys.executable, "run.py", *args], cwd=ROOT, env=os.environ.copy(), capture_output=True, text=True, timeout=300
    )


def test_run_py_refuses_bad_cron_before_registering_anything(local_stack):
    proc = _cli("--config", "configs/smoke.yaml", "--schedule", "0 3 * *")
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "error: schedule '0 3 * *': not a valid cron expression" in proc.stderr
    assert not Client().list_schedules().items


def test_local_orchestrator_refuses_a_schedule_naming_those_that_can(local_stack):
    config, zenml_config = load_run_config(ROOT / "configs" / "smoke.yaml")
    with pytest.raises(ScheduleError) as refused:
        create(config, zenml_config, "0 3 * * 0")
    message = str(refused.value).split("Orchestrators that can:")
    assert "stack 'tuneline-local' runs on the 'local' orchestrator, which cannot run schedules" in message[0]
    capable = message[1].split(".")[0].replace(",", " ").split()
    assert {"kubernetes", "vertex", "sagemaker", "airflow", "kubeflow"} <= set(capable) and "local" not in capable
    assert not Client().list_schedules().items


def test_schedule_is_registered_on_an_orchestrator_that_schedules(local_stack, monkeypatch):
    """Only the orchestrator's capability is mocked: ZenML compiles, registers the schedule and hands the snapshot
    to the orchestrator, which here records it instead of creating a cron job on a cluster."""
    submitted = []
    monkeypatch.setattr(LocalOrchestratorConfig, "is_schedulable", property(lambda self: True))
    monkeypatch.setattr(LocalOrchestrator, "submit_pipeline", lambda self, snapshot, **kw: submitted.append(snapshot))
    config, zenml_config = load_run_config(ROOT / "configs" / "smoke.yaml")
    runs_before = Client().list_pipeline_runs(size=1).total

    schedule = create(config, zenml_config, "0 3 * * 0")
    assert schedule.cron_expression == "0 3 * * 0" and schedule.active
    assert schedule.name.startswith("tuneline-smoke-")
    assert Client().get_pipeline(schedule.pipeline_id).name == "finetune"
    assert [s.schedule.id for s in submitted] == [schedule.id]
    assert Client().list_pipeline_runs(size=1).total == runs_before  # registered, nothing ran
    text = describe(schedule)
    for command in ("list", "deactivate", "activate", "delete"):
        assert f"zenml pipeline schedule {command}" in text
    Client().delete_schedule(schedule.id)
    assert not Client().list_schedules().items


@pipeline(model=Model(name="tuneline-remote-test"))
def _load_only(data: DataConfig) -> None:
    load_data(data)


def test_load_data_records_the_data_hash_and_row_counts(local_stack):
    """What a scheduled run reads: the hash ZenML stores for the `raw_data` artifact and the rows per split, on the
    step and on the model version."""
    run = _load_only(DataConfig(source="synthetic:viggo"))
    step = Client().get_pipeline_run(run.id).steps["load_data"]
    raw = step.outputs["raw_data"][0]
    expected = {
        "content_hash": raw.content_hash,
        "rows": raw.load().counts(),
        "source": "synthetic:viggo",
        "task": "viggo",
    }
    assert step.run_metadata["raw_data"] == expected
    version = Client().get_model_version("tuneline-remote-test", run.model_version.number)
    assert version.run_metadata["raw_data"] == expected
