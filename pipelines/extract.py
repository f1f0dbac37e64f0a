"""`run.py serve`: the `extract` pipeline, deployed with the active stack's deployer, answers HTTP requests.

POST /invoke {"parameters": {"texts": "one text" | ["a", "b", ...]}}. Before a run exists, the deployment's guard
(steps.serve.guard_requests) refuses a body over serving.max_request_bytes (413) and checks the texts off the event
loop, and the body is validated against this pipeline's signature: an empty text, too many texts, a text over the
model's context or a wrong type is a 422 that names the text, and the server keeps serving. The default text
below is only for ZenML's deploy, which compiles the pipeline: a request without texts is a 422 too. The step
generates through the deployment's batcher (tuneline/serve/batcher.py), with concurrent requests' texts.
"""

from typing import Annotated, Union

from pydantic import AfterValidator, StrictStr
from zenml import pipeline

from steps.serve import extract_texts


def _texts(value: Union[str, list[str]]) -> list[str]:
    return [value] if isinstance(value, str) else value


Texts = Annotated[Union[StrictStr, list[StrictStr]], AfterValidator(_texts)]


# The hooks (steps.serve.start_serving with its arguments, stop_serving) are set at deploy time in runner/serve.py:
# validating a hook here, at import, opens ZenML's store, which must wait for first-use set-up (runner/first_use.py).
@pipeline(name="extract", enable_cache=False)
def extract(texts: Texts = "I think SpellForce 3 is a poor game."):
    return extract_texts(texts)
