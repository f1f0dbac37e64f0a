"""OpenAI-compatible endpoints of the `extract` deployment (ZenML custom endpoints, registered in runner/serve.py
behind the same key as /invoke), so clients that speak the chat-completions protocol (the `openai` SDK, LangChain,
any "OpenAI-compatible base URL" field) call the model as they would call vLLM or LLaMA-Factory's API server.

A completion is the extractor's answer to the last user message, generated through the same batcher as /invoke
and without a pipeline run; tuneline's reading of it (act, fields, confidences, needs_review) rides in the
`tuneline` field, which OpenAI clients ignore. Decoding is greedy and the prompt is the one the model was trained
with: sampling parameters and system messages are accepted and ignored. Errors have OpenAI's shape.
"""

import time
import uuid

from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from zenml.steps.step_context import get_or_create_run_context

from tuneline.generate.grammar import JSON, json_schema_grammar
from tuneline.serve.serving import ModelSlot, RequestError

PREFIX = "/v1/"


class OpenAIError(Exception):
    """An error as OpenAI's API writes it: {"error": {"message", "type", "param", "code"}}."""

    def __init__(
        self,
        status: int,
        message: str,
        param: str | None = None,
        code: str | None = None,
        kind: str = "invalid_request_error",
    ):
        super().__init__(message)
        self.status, self.param, self.code, self.kind = status, param, code, kind

    def response(self) -> JSONResponse:
        return error_response(self.status, str(self), self.param, self.code, self.kind)


def error_response(
    status: int, message: str, param: str | None = None, code: str | None = None, kind: str = "invalid_request_error"
) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": kind, "param": param, "code": code}}, status)


class ContentPart(BaseModel):
    model_config = ConfigDict(extra="allow")

    type: str
    text: str | None = None


class Message(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: str
    content: str | list[ContentPart] | None = None


class ChatRequest(BaseModel):
    """The chat-completions request; parameters that do not apply to greedy extraction are allowed and ignored."""

    model_config = ConfigDict(extra="allow")

    model: str
    messages: list[Message] = Field(min_length=1)
    response_format: dict | None = None
    stream: bool = False
    n: int = 1


def serving_slot() -> ModelSlot:
    """The init hook's state (steps/serve.py `start_serving`), which ZenML keeps for the process."""
    context = get_or_create_run_context()
    if not (context.initialized and isinstance(context.state, ModelSlot)):
        raise OpenAIError(503, "the model is still loading", kind="server_error")
    return context.state


def chat_completions(request: ChatRequest) -> JSONResponse:
    try:
        slot = serving_slot()
        extractor = slot.current()[0]
        if request.model != extractor.name:
            raise OpenAIError(
                404,
                f"the model '{request.model}' does not exist here; this deployment serves "
                f"'{extractor.name}' (GET /v1/models)",
                "model",
                "model_not_found",
            )
        if request.stream:
            raise OpenAIError(400, "streaming is not supported: send stream false", "stream")
        if request.n != 1:
            raise OpenAIError(400, "n must be 1: greedy decoding has one answer", "n")
        grammar = _grammar(request.response_format, extractor.task)
        text = _user_text(request.messages)
        try:
            out = slot.answer([text], grammar)
        except RequestError as err:
            raise OpenAIError(400, str(err).replace("texts[0]", "the user message"), "messages") from None
    except OpenAIError as err:
        return err.response()
    return JSONResponse(_completion(out, extractor.name, extractor.version))


def list_models() -> JSONResponse:
    try:
        extractor = serving_slot().current()[0]
    except OpenAIError as err:
        return err.response()
    return JSONResponse(
        {
            "object": "list",
            "data": [
                {
                    "id": extractor.name,
                    "object": "model",
                    "created": 0,
                    "owned_by": "tuneline",
                    "version": extractor.version,
                    "task": extractor.task,
                }
            ],
        }
    )


def _user_text(messages: list[Message]) -> str:
    user = [m for m in messages if m.role == "user"]
    if not user:
        raise OpenAIError(400, "no user message: the last user message is the text to extract from", "messages")
    content = user[-1].content
    if isinstance(content, list):
        content = "".join(part.text or "" for part in content if part.type == "text")
    if not content or not content.strip():
        raise OpenAIError(400, "the last user message is empty", "messages")
    return content


def _grammar(response_format: dict | None, task: str) -> str | None:
    """The grammar a `response_format` asks for; JSON only from a model trained to answer in JSON."""
    kind = (response_format or {}).get("type", "text")
    if kind == "text":
        return None
    if kind not in ("json_object", "json_schema"):
        raise OpenAIError(
            400, f"response_format type '{kind}' is not one of text, json_object, json_schema", "response_format"
        )
    if task != "json":
        raise OpenAIError(
            400,
            f"this model answers in its '{task}' task's format, not JSON: leave response_format out",
            "response_format",
        )
    if kind == "json_object":
        return JSON
    schema = (response_format.get("json_schema") or {}).get("schema")
    if not isinstance(schema, dict):
        raise OpenAIError(400, "response_format json_schema needs json_schema.schema, an object", "response_format")
    return json_schema_grammar(schema)


def _completion(out: dict, name: str, version: str) -> dict:
    r = out["results"][0]
    reading = {k: v for k, v in r.items() if k not in ("text", "answer", "seconds")}
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": name,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": r["answer"]},
                "logprobs": None,
                "finish_reason": "length" if r["truncated"] else "stop",
            }
        ],
        "usage": {
            "prompt_tokens": r["input_tokens"],
            "completion_tokens": r["new_tokens"],
            "total_tokens": r["input_tokens"] + r["new_tokens"],
        },
        "tuneline": reading
        | {"model": out["model"], "version": version, "threshold": out["threshold"], "trace_id": out.get("trace_id")},
    }
