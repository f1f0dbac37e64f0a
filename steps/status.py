"""The deployment's /health and API page, in place of ZenML's (runner/serve.py registers them as custom endpoints):
ZenML's /health answers `null` whatever is loaded, and its /docs and /redoc load Swagger UI and ReDoc from a CDN,
so they are blank offline (and the deployment's own Content-Security-Policy blocks the CDN anyway)."""

import html

from fastapi.responses import HTMLResponse, JSONResponse
from zenml.steps.step_context import get_or_create_run_context

from tuneline.serve.serving import ModelSlot


def health() -> JSONResponse:
    """Which model and version answer, on which device; 503 until the init hook has loaded one."""
    context = get_or_create_run_context()
    if not (context.initialized and isinstance(context.state, ModelSlot)):
        return JSONResponse({"status": "loading", "ready": False}, status_code=503)
    extractor = context.state.current()[0]
    return JSONResponse(
        {
            "status": "ready",
            "ready": True,
            "model": extractor.name,
            "version": extractor.version,
            "label": extractor.label,
            "task": extractor.task,
            "device": extractor.device,
        }
    )


def api_page(app_runner):
    """A page that works offline: each endpoint with its summary, and the OpenAPI schema to hand to a tool."""

    def page() -> HTMLResponse:
        schema = app_runner.asgi_app.openapi()
        rows = "".join(
            f"<tr><td><code>{method.upper()} {html.escape(path)}</code></td>"
            f"<td>{html.escape(op.get('summary') or op.get('description') or '')}</td></tr>"
            for path, ops in schema["paths"].items()
            for method, op in ops.items()
        )
        title = html.escape(schema["info"]["title"])
        return HTMLResponse(
            f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{title}: API</title>"
            "<style>body{font-family:system-ui,sans-serif;max-width:52rem;margin:2rem auto}td{padding:.2rem .6rem}"
            f"</style></head><body><h1>{title}</h1><p>The full schema: <a href='/openapi.json'>openapi.json</a> "
            "(for Swagger UI, Postman, or a client generator). The page: <a href='/'>/</a>.</p>"
            f"<table>{rows}</table></body></html>"
        )

    return page
