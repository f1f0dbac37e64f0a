"""`POST /feedback` on the `extract` deployment (a ZenML custom endpoint, registered in runner/serve.py behind the
same key as /invoke): a person's corrected answer for a recorded request, stored on its trace as an MLflow
expectation (tuneline/serve/recording.py), from which the next finetune run learns."""

import anyio
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from zenml.steps.step_context import get_or_create_run_context

from tuneline.serve.recording import CorrectionError, UnknownTrace, log_correction
from tuneline.serve.serving import ModelSlot


class Correction(BaseModel):
    trace_id: str = Field(description="The `trace_id` the answer came with.")
    answer: str = Field(description="The right answer, as the model should have written it.")
    index: int = Field(0, ge=0, description="Which text of the request (0: the first).")
    source: str | None = Field(None, description="Who corrected it; shown in MLflow.")


async def feedback(correction: Correction) -> JSONResponse:
    """200 with the expectation's id; 422 naming why when the answer does not parse, the trace has no such text or
    nothing is recorded; 404 for an unknown trace; 503 until the model (and so the task) is loaded."""
    context = get_or_create_run_context()
    if not (context.initialized and isinstance(context.state, ModelSlot)):
        return JSONResponse({"detail": "the model is still loading"}, 503)
    if context.state.record is None:
        return JSONResponse({"detail": "serving.record is off: no request was recorded to correct"}, 422)
    task = context.state.current()[0].task
    try:
        assessment = await anyio.to_thread.run_sync(
            lambda: log_correction(correction.trace_id, correction.answer, task, correction.index, correction.source)
        )
    except CorrectionError as err:
        return JSONResponse({"detail": str(err)}, 404 if isinstance(err, UnknownTrace) else 422)
    return JSONResponse({"trace_id": correction.trace_id, "index": correction.index, "assessment_id": assessment})
