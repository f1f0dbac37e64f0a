"""The OpenAI endpoints of a json-task model, called by the real `openai` package over HTTP on loopback: a
`json_schema` response_format is enforced by constrained decoding, so even the random tiny model's answer parses
and validates against the client's schema, and `json_object` starts JSON. The endpoint functions are those the
deployment registers (steps/openai_api.py), served here by uvicorn with a json-task extractor in the slot; the
viggo smoke deployment's own OpenAI test is in test_serve_deployment.py."""

import json
import threading
import time
from dataclasses import replace

import pytest

from test_serving import adapter_dir, extractor  # noqa: F401 (fixtures)
from tuneline.config import EvaluationConfig
from tuneline.serve.serving import ModelSlot

SCHEMA = {
    "type": "object",
    "properties": {"name": {"type": "string", "maxLength": 12}, "rating": {"enum": ["poor", "good", "excellent"]}},
    "required": ["name", "rating"],
    "additionalProperties": False,
}


@pytest.fixture(scope="module")
def base_url(extractor):  # noqa: F811
    import uvicorn
    from fastapi import FastAPI

    from steps import openai_api

    json_model = replace(extractor, task="json", name="tiny-json", version="1")
    json_model.evaluation = EvaluationConfig(batch_size=4, max_new_tokens=64)
    slot = ModelSlot(json_model, "1")
    app = FastAPI()
    app.post("/v1/chat/completions")(openai_api.chat_completions)
    app.get("/v1/models")(openai_api.list_models)
    patch = pytest.MonkeyPatch()
    patch.setattr(openai_api, "serving_slot", lambda: slot)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    port = server.servers[0].sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}/v1"
    server.should_exit = True
    thread.join(10)
    slot.close()
    patch.undo()


@pytest.fixture(scope="module")
def client(base_url):
    from openai import OpenAI

    return OpenAI(base_url=base_url, api_key="none", max_retries=0, timeout=120)


def test_a_json_schema_response_format_gives_json_that_validates(client):
    import jsonschema

    [model] = client.models.list().data
    assert model.id == "tiny-json" and model.model_extra["task"] == "json"
    completion = client.chat.completions.create(
        model="tiny-json",
        messages=[{"role": "user", "content": "I think SpellForce 3 is a poor game."}],
        response_format={"type": "json_schema", "json_schema": {"name": "opinion", "schema": SCHEMA}},
    )
    answer = completion.choices[0].message.content
    jsonschema.validate(json.loads(answer), SCHEMA)
    assert completion.model_extra["tuneline"]["parsed"] is True


def test_json_object_gives_json_and_a_schema_that_cannot_compile_is_a_400(client):
    import openai

    completion = client.chat.completions.create(
        model="tiny-json",
        messages=[{"role": "user", "content": "Halo is a shooter from 2001."}],
        response_format={"type": "json_object"},
    )
    content, finish = completion.choices[0].message.content, completion.choices[0].finish_reason
    assert content.lstrip()[:1] in ("{", "["), content  # JSON, though free JSON from a random model may run to the cap
    if finish == "stop":
        json.loads(content)
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(
            model="tiny-json",
            messages=[{"role": "user", "content": "Halo"}],
            response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "no such"}}},
        )
    assert err.value.body["param"] == "messages" or "schema" in err.value.body["message"], err.value.body
