"""Check in headless Chromium that the `extract` deployment's page turns typed sentences into fields.

    scripts/in-venv python scripts/serve_page_check.py [--config configs/finetune.yaml] [--model-version production]
        [--url URL [--key KEY]] [--screenshot docs/serve-page.png]

The deployment tests call the HTTP API; only a browser shows that the page at `/` works for a person. The
script deploys the config's model version with `run.py serve`'s own code (or uses `--url`), opens the page,
types two sentences (and the key when the page asks for one), presses Extract, and checks that the table shows
for each sentence the act and fields the API returns for the same text. It leaves the deployment running.

Exit status: 0 when every check passes, 1 when one fails, 2 when Chromium or Playwright is missing (see
scripts/dashboard_check.py for both).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from scripts.dashboard_check import (  # noqa: E402  (the same browser set-up as the dashboard check)
    CheckFailed,
    Missing,
    browser,
    check_prerequisites,
    passed,
    save_screenshot,
)

SENTENCES = ["I think SpellForce 3 is a poor game.", "Have you ever played a first person shooter from 2014 on Steam?"]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="configs/finetune.yaml")
    p.add_argument("--model-version", default="production")
    p.add_argument("--url", help="a running deployment (skips deploying)")
    p.add_argument("--key", help="its key, when it has one")
    p.add_argument("--screenshot", type=Path, default=Path("docs/serve-page.png"))
    p.add_argument("--chromium", default="/usr/bin/chromium")
    return p.parse_args(argv)


def deployed(args: argparse.Namespace) -> tuple[str, str | None]:
    if args.url:
        return args.url.rstrip("/"), args.key
    from runner import serve
    from tuneline.config import load_run_config

    config, zenml_config = load_run_config(args.config)
    deployment = serve.serve(config, zenml_config, args.model_version)
    passed(f"deployed: {deployment.name} at {deployment.url}")
    return deployment.url, deployment.auth_key


def api_answers(url: str, key: str | None) -> list[dict]:
    headers = {"Content-Type": "application/json"} | ({"Authorization": f"Bearer {key}"} if key else {})
    body = json.dumps({"parameters": {"texts": SENTENCES}, "skip_artifact_materialization": True}).encode()
    with urllib.request.urlopen(urllib.request.Request(url + "/invoke", body, headers), timeout=300) as reply:
        return json.loads(reply.read())["outputs"]["extractions"]["results"]


def expected_row(result: dict) -> list[str]:
    """What the page's script writes into a row's cells for one result."""
    # as the page writes them: JavaScript's JSON.stringify, no spaces after separators
    fields = "\n".join(
        f"{k}: {json.dumps(v, ensure_ascii=False, separators=(',', ':'))}" for k, v in (result["fields"] or {}).items()
    )
    act = (result["act"] or "") if result["parsed"] else "(did not parse)"
    return [result["text"], act, fields, result["answer"], "Correct"]  # the last: the row's correct control


def check_page(page, url: str, key: str | None, expected: list[list[str]], screenshot: Path) -> None:
    page.goto(url + "/")
    page.get_by_role("button", name="Extract").wait_for()
    passed(f"page {url}/ opens: {page.title()}")
    if page.locator("#key").count():
        if not key:
            raise CheckFailed("the page asks for a key and none was given (--key)")
        page.locator("#key").fill(key)
    page.locator("#texts").fill("\n".join(SENTENCES))
    page.get_by_role("button", name="Extract").click()
    page.locator("#results tbody tr").nth(len(SENTENCES) - 1).wait_for()
    rows = [
        [cell.inner_text().strip() for cell in row.locator("td").all()]
        for row in page.locator("#results tbody tr").all()
    ]
    # inner_text follows the rendering: the fields cell keeps its line breaks (white-space: pre-line).
    if rows != [[c.strip() for c in row] for row in expected]:
        raise CheckFailed(f"the table shows {rows}, the API answers {expected}")
    passed(
        f"typed {len(SENTENCES)} sentences, pressed Extract: the table shows the API's act and fields for each "
        f"({'; '.join(r[1] for r in rows)})"
    )
    status = page.locator("#status").inner_text()
    if "s generating" not in status:
        raise CheckFailed(f"no timing line under the form: {status!r}")
    passed(f"status line: {status}")
    save_screenshot(page, screenshot)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    t0 = time.monotonic()
    try:
        check_prerequisites(args.chromium)
    except Missing as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    try:
        url, key = deployed(args)
        expected = [expected_row(r) for r in api_answers(url, key)]
        with browser(args.chromium) as page:
            check_page(page, url, key, expected, args.screenshot)
    except Exception as err:  # noqa: BLE001 - any failure is a FAIL with its reason
        print(f"FAIL  {err if isinstance(err, CheckFailed) else f'{type(err).__name__}: {err}'}")
        return 1
    print(f"serve page check PASSED in {time.monotonic() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
