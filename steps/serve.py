"""The `extract` deployment's hooks and step: the model loads once when the server starts (`start_serving`), each
request passes the guard (`guard_requests`) before the app reads it, and each request's step takes whatever model is
current (`extract_texts`)."""

import hmac
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import anyio
from zenml import get_step_context, step
from zenml.client import Client
from zenml.enums import ModelStages
from zenml.steps.step_context import get_or_create_run_context

from tuneline.artifacts import LoraAdapter
from tuneline.config import parse_config
from tuneline.models.modeling import resolve_base_model
from tuneline.serve.recording import recorder
from tuneline.serve.serving import Extractor, ModelSlot, RequestError, load_extractor
from tuneline.serve.shadow import Shadow

if TYPE_CHECKING:  # the server's modules, imported by the server, not by every `run.py` command
    from fastapi.exceptions import RequestValidationError
    from zenml.deployers.server.app import BaseDeploymentAppRunner

log = logging.getLogger(__name__)


def start_serving(model_name: str, version: str, parameters: dict, shadow: str | None = None) -> ModelSlot:
    """`version` is a number, a name or a stage; a stage is followed: each newly promoted version is swapped in.
    `shadow` (a number, name or stage, looked up once) loads that version beside it to answer every recorded
    request off the request path (tuneline/serve/shadow.py)."""
    config = parse_config(parameters, "the deployment's parameters")
    client = Client()

    def load(version_id: str) -> Extractor:
        """The version's adapter, and the confidence threshold its finetune run recorded (none before confidences)."""
        mv = client.get_model_version(model_version_name_or_number_or_id=version_id)
        adapter: LoraAdapter = mv.get_artifact("lora_adapter").load()
        return load_extractor(
            f"{model_name} version {mv.name}",
            config.data.task,
            resolve_base_model(adapter.base_model),
            Path(adapter.path),
            config.data,
            config.evaluation,
            config.serving,
            config.model.dtype,
            config.model.device,
            threshold=mv.run_metadata.get("confidence_threshold"),
            name=model_name,
            version=str(mv.name),
        )

    def latest() -> str:
        return str(client.get_model_version(model_name, version).id)

    first = latest()
    record = _recorder(model_name, config.serving.record)
    if shadow is not None and record is not None:
        candidate = load(str(client.get_model_version(model_name, shadow).id))
        record = Shadow(candidate, config.serving.record).wrap(record)
        log.info("shadowing with %s: its answers are recorded on production's traces", candidate.label)
    elif shadow is not None:
        log.warning("no shadow: requests are not recorded (serving.record off, or no MLflow tracker)")
    slot = ModelSlot(load(first), first, record)
    log.info("serving %s on %s", slot.current()[0].label, slot.current()[0].device)
    if version in {stage.value for stage in ModelStages}:
        slot.follow(latest, load, config.serving.follow_seconds)
    return slot


def _recorder(model_name: str, mode: str):
    """Requests are traced in the stack's MLflow tracking store, where the monitor and the finetune data read them."""
    tracker = Client().active_stack.experiment_tracker
    if mode == "off" or tracker is None or not hasattr(tracker, "configure_mlflow"):
        return None
    tracker.configure_mlflow()
    # ZenML's own rule for its experiments: a local store keeps its files beside it, not in the server's ./mlruns.
    local = None if tracker.config.tracking_uri else "file:" + tracker._local_mlflow_artifact_path()
    return recorder(model_name, mode, local)


def stop_serving() -> None:
    state = get_or_create_run_context().state
    if isinstance(state, ModelSlot):
        state.close()


def check_request(texts: list[str]) -> None:
    """Called by the guard, in a worker thread, before any run is created: a bad request costs no run and gets a
    422, and its tokenizing never holds up the event loop."""
    context = get_or_create_run_context()
    if context.initialized and isinstance(context.state, ModelSlot):
        context.state.current()[0].check(texts)


class _Gone(Exception):
    """The client left before its body arrived: nobody to answer."""


class RequestGuard:
    """ASGI middleware that sees a request before the app reads it. A body over `max_bytes` gets a 413 unread (its
    Content-Length says so) or as soon as that much has arrived (chunked). On `paths` the texts are checked by
    `check` in a worker thread, so a bad one gets a 422 at once and no text is tokenized in the event loop, where
    it would stall every other request, /health included. Refusals are one line and never echo the input."""

    def __init__(
        self, app, max_bytes: int, paths: set[str], check: Callable[[list[str]], None], auth_key: str | None = None
    ):
        self.app, self.max_bytes, self.paths, self.check, self.auth_key = app, max_bytes, paths, check, auth_key

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = _content_length(scope)
        if declared > self.max_bytes:
            return await _refuse(
                send,
                413,
                f"the request body is {declared} bytes; the server "
                f"takes at most {self.max_bytes} (serving.max_request_bytes)",
                scope["path"],
            )
        try:
            body = await _read_body(receive, self.max_bytes)
        except _Gone:
            return
        if body is None:
            return await _refuse(
                send, 413, f"the request body is over {self.max_bytes} bytes (serving.max_request_bytes)", scope["path"]
            )
        if scope["method"] == "POST" and scope["path"] in self.paths and self._authorized(scope):
            problem = await anyio.to_thread.run_sync(self._problem, body)
            if problem:
                return await _refuse(send, 422, problem, scope["path"])
        await self.app(scope, _replay(body, receive), send)

    def _authorized(self, scope) -> bool:
        """Only a caller the app lets in has its texts checked (tokenizing costs); others get the app's 401."""
        if not self.auth_key:
            return True
        scheme, _, token = dict(scope["headers"]).get(b"authorization", b"").partition(b" ")
        return scheme.lower() == b"bearer" and hmac.compare_digest(token, self.auth_key.encode())

    def _problem(self, body: bytes) -> str | None:
        """What `check` refuses in the body's texts, or that it has none; None when they pass or are not texts at
        all (then the app's own validation answers)."""
        texts = _texts_of(body)
        if texts is None:
            return NO_TEXTS if _without_parameters(body) else None
        try:
            self.check(texts)
        except RequestError as err:
            return str(err)
        return None


def _content_length(scope) -> int:
    """The declared body size; 0 when none is declared (a chunked body is counted as it arrives)."""
    value = dict(scope["headers"]).get(b"content-length", b"0")
    return int(value) if value.isdigit() else 0


async def _read_body(receive, max_bytes: int) -> bytes | None:
    """The whole body, or None as soon as more than `max_bytes` has arrived."""
    chunks, size, more = [], 0, True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _Gone
        chunks.append(message.get("body", b""))
        size += len(chunks[-1])
        if size > max_bytes:
            return None
        more = message.get("more_body", False)
    return b"".join(chunks)


def _replay(body: bytes, receive):
    """The app's `receive`: the body read already, then the client's own messages (a disconnect)."""
    pending = [{"type": "http.request", "body": body, "more_body": False}]

    async def replay():
        return pending.pop() if pending else await receive()

    return replay


async def _refuse(send, status: int, detail: str, path: str) -> None:
    """FastAPI's shape, `{"detail": ...}`, or OpenAI's on its paths (steps/openai_api.py)."""
    from steps.openai_api import PREFIX

    shaped = {"error": {"message": detail, "type": "invalid_request_error", "param": None, "code": None}}
    body = json.dumps(shaped if path.startswith(PREFIX) else {"detail": detail}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


# The pipeline's `texts` has a default (ZenML's deploy compiles the pipeline with it), which a request must not run
# on: without it, a request would get an answer about a text it never sent.
NO_TEXTS = "parameters.texts is required: one text or a list of texts"


def _without_parameters(body: bytes) -> bool:
    """An /invoke body that names no parameters at all (`{}`, `{"parameters": {}}`)."""
    try:
        request = json.loads(body)
    except (ValueError, RecursionError):
        return False
    return isinstance(request, dict) and request.get("parameters", {}) in ({}, None)


def _texts_of(body: bytes) -> list[str] | None:
    """An /invoke body's `parameters.texts` as a list of strings; None when it has none or other types."""
    try:
        texts = json.loads(body)["parameters"]["texts"]
    except (ValueError, KeyError, TypeError, RecursionError):
        return None
    texts = [texts] if isinstance(texts, str) else texts
    return texts if isinstance(texts, list) and all(isinstance(t, str) for t in texts) else None


async def _one_line_422(request, error: "RequestValidationError"):
    """FastAPI's 422 lists each error with its input, which would send a huge text back: here place and reason.
    On the OpenAI paths, OpenAI's 400 with the first wrong parameter."""
    from fastapi.responses import JSONResponse

    from steps.openai_api import PREFIX, error_response

    detail = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors())
    if request.url.path.startswith(PREFIX):
        return error_response(400, detail, ".".join(map(str, error.errors()[0]["loc"][1:])) or None)
    return JSONResponse({"detail": detail}, status_code=422)


async def _openai_http_error(request, error):
    """ZenML's 401 (a missing or wrong key) and other HTTP errors in OpenAI's shape on its paths."""
    from fastapi.exception_handlers import http_exception_handler

    from steps.openai_api import PREFIX, error_response

    if not request.url.path.startswith(PREFIX):
        return await http_exception_handler(request, error)
    code = "invalid_api_key" if error.status_code == 401 else None
    return error_response(error.status_code, str(error.detail), code=code)


def guard_requests(app_runner: "BaseDeploymentAppRunner", max_bytes: int) -> None:
    """The deployment's app extension (runner/serve.py): `RequestGuard` outermost, before ZenML's middleware and
    auth, and validation errors without their input."""
    from fastapi.exceptions import RequestValidationError
    from starlette.exceptions import HTTPException

    settings = app_runner.settings
    paths = {settings.api_url_path + settings.invoke_url_path, settings.api_url_path + settings.submit_url_path}
    app = app_runner.asgi_app
    app.add_middleware(
        RequestGuard, max_bytes=max_bytes, paths=paths, check=check_request, auth_key=app_runner.deployment.auth_key
    )
    app.add_exception_handler(RequestValidationError, _one_line_422)
    app.add_exception_handler(HTTPException, _openai_http_error)


@step(enable_cache=False)
def extract_texts(texts: list[str]) -> Annotated[dict, "extractions"]:
    """Runs in the deployment's process: its texts join the batcher's queue with the OpenAI endpoints' ones."""
    slot: ModelSlot = get_step_context().pipeline_state
    return slot.answer(texts)
