"""`run.py serve`: deploy the `extract` pipeline for one model version with the active stack's deployer.

The key: a deployment that listens beyond loopback always has one. It is the `auth_key` value of the ZenML
secret `tuneline-serve` when that exists (then it protects loopback deployments too), else ZenML generates one.
It never comes from the config file, which is committed with the code.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
import signal
from pathlib import Path

from zenml.client import Client
from zenml.config import AppExtensionSpec, DeploymentDefaultEndpoints, DeploymentSettings, EndpointSpec
from zenml.constants import ENV_ZENML_CUSTOM_SOURCE_ROOT
from zenml.deployers.exceptions import DeployerError
from zenml.models import DeploymentResponse

from pipelines import extract
from runner.first_use import set_up
from runner.versions import adapter_of, model_name_of
from runner.stack import ensure_deployer
from steps import feedback, openai_api, status
from steps.serve import guard_requests, start_serving, stop_serving
from tuneline.config import ConfigError, ServingConfig, TunelineConfig

log = logging.getLogger(__name__)

KEY_SECRET = "tuneline-serve"
UI_FILES = "ui"  # relative to the source root (the repository, or its copy in a container image)
SOURCE_ROOT = Path(__file__).resolve().parents[1]
LOG_TAIL = 30


class DeployFailed(RuntimeError):
    """The deployment did not come up; the message carries the end of its log."""


def deployment_name(config: TunelineConfig, zenml_config: dict) -> str:
    return f"{model_name_of(config, zenml_config)}-extract"


def _is_loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return address == "localhost"


def _secret_key() -> str | None:
    try:
        return Client().get_secret(KEY_SECRET, allow_partial_name_match=False).secret_values["auth_key"]
    except KeyError:
        return None


def deployer_settings(flavor: str, serving: ServingConfig, secret_key: str | None) -> dict:
    """Address and port are the local deployer's; every other deployer listens beyond loopback, so has a key."""
    local = flavor == "local"
    settings = {"address": serving.address, "port": serving.port} if local else {}
    if secret_key:
        settings["auth_key"] = secret_key
    elif not (local and _is_loopback(serving.address)):
        settings["generate_auth_key"] = True
    return settings


def serve(config: TunelineConfig, zenml_config: dict, version: str, shadow: str | None = None) -> DeploymentResponse:
    """Deploy (or replace) the model's `extract` deployment, with `shadow` a candidate version answering beside it
    (docs/monitoring.md). A version that does not exist or has no adapter fails here, before anything is deployed."""
    set_up()
    deployer, flavor = ensure_deployer()
    model_name = model_name_of(config, zenml_config)
    adapter_of(model_name, version)
    if shadow is not None:
        if config.serving.record == "off":
            raise ConfigError("--shadow records the candidate's answers on the requests' traces: serving.record is off")
        shadow = adapter_of(model_name, shadow)[0]  # pinned: a later promotion does not move the shadow
    settings = {
        "deployer": deployer_settings(flavor, config.serving, _secret_key()),
        "deployment": DeploymentSettings(
            dashboard_files_path=UI_FILES,
            app_title=f"tuneline: {model_name}",
            app_extensions=[
                AppExtensionSpec(
                    extension=guard_requests, extension_kwargs={"max_bytes": config.serving.max_request_bytes}
                )
            ],
            include_default_endpoints=DeploymentDefaultEndpoints.ALL & ~DeploymentDefaultEndpoints.DOC,
            custom_endpoints=endpoints(),
        ),
    }
    pipeline = extract.with_options(
        settings=settings,
        on_init=start_serving,
        on_cleanup=stop_serving,
        on_init_kwargs={
            "model_name": model_name,
            "version": version,
            "parameters": config.model_dump(mode="json"),
            "shadow": shadow,
        },
        # Each request is a pipeline run; what ZenML lets us turn off, we turn off (README, "Serving").
        enable_artifact_metadata=False,
        enable_artifact_visualization=False,
        enable_step_logs=False,
        enable_pipeline_logs=False,
    )
    name = deployment_name(config, zenml_config)
    log.info("deploying '%s' (%s version %s) with deployer '%s'", name, model_name, version, deployer)
    try:
        with _local_server(flavor == "local"):
            return pipeline.deploy(deployment_name=name)
    except DeployerError as err:
        raise DeployFailed(
            f"{err}\nlast lines of its log (`zenml deployment logs {name}`):\n{_log_tail(name)}"
        ) from None


def endpoints() -> list[EndpointSpec]:
    """Beside ZenML's /invoke: the OpenAI-compatible API (same key), our /health in place of ZenML's, and an API
    page that needs no CDN at /docs and /redoc (steps/status.py)."""

    def spec(path: str, method: str, handler, summary: str | None, auth: bool = True) -> EndpointSpec:
        shown = {"summary": summary} if summary else {"include_in_schema": False}
        return EndpointSpec(path=path, method=method, handler=handler, auth_required=auth, extra_kwargs=shown)

    return [
        spec(
            "/v1/chat/completions",
            "POST",
            openai_api.chat_completions,
            "OpenAI chat completions: the last user message is the text",
        ),
        spec("/v1/models", "GET", openai_api.list_models, "OpenAI model list: the served model and version"),
        spec("/feedback", "POST", feedback.feedback, "A corrected answer for a recorded request (its trace_id)"),
        spec(
            "/health",
            "GET",
            status.health,
            "The loaded model and version, and whether ready (503 until then)",
            auth=False,
        ),
        spec("/docs", "GET", status.api_page, None, auth=False),
        spec("/redoc", "GET", status.api_page, None, auth=False),
    ]


@contextlib.contextmanager
def _local_server(enabled: bool):
    """Two things ZenML's local deployer leaves out when it starts the server (`python -m
    zenml.deployers.server.app`, a child of this process with this environment):
    - the source root, which would be ZenML's own folder, where our page is not: it is set to the repository;
    - reaping the child: a server that exits at start stays a zombie that ZenML takes for a live process, so
      `deploy` would wait its whole timeout. Ignoring SIGCHLD while deploying has the kernel reap it at once."""
    if not enabled:
        yield
        return
    previous = signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    with _env(ENV_ZENML_CUSTOM_SOURCE_ROOT, str(SOURCE_ROOT)):
        try:
            yield
        finally:
            signal.signal(signal.SIGCHLD, previous)


@contextlib.contextmanager
def _env(name: str, value: str):
    previous = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(name)
        else:
            os.environ[name] = previous


def _log_tail(name: str) -> str:
    try:
        return "".join(f"  {line.rstrip()}\n" for line in Client().get_deployment_logs(name, tail=LOG_TAIL))
    except Exception as err:  # the log is a courtesy; the error above is the news
        return f"  (no log: {err})"


def stop(config: TunelineConfig, zenml_config: dict) -> str:
    name = deployment_name(config, zenml_config)
    set_up()
    try:
        Client().delete_deployment(name, force=True)
    except KeyError:
        raise DeployFailed(f"nothing to stop: no deployment named '{name}' (see `zenml deployment list`)") from None
    return name


def describe(deployment: DeploymentResponse) -> str:
    """Where it listens and a request to paste; the key is printed once, here, for the person who deployed."""
    auth = f' -H "Authorization: Bearer {deployment.auth_key}"' if deployment.auth_key else ""
    return "\n".join(
        [
            f"deployment '{deployment.name}' is {deployment.status} at {deployment.url}",
            f"  page:   {deployment.url}/",
            f"  call:   curl -s -X POST {deployment.url}/invoke -H 'Content-Type: application/json'{auth} \\",
            """            -d '{"parameters": {"texts": ["I think SpellForce 3 is a poor game."]}, """
            """"skip_artifact_materialization": true}'""",
            f"  stop:   python run.py serve --config <config> --stop   (or: zenml deployment delete {deployment.name})",
        ]
    )
