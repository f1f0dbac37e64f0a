"""Check in a real headless browser that ZenML's local dashboard shows a finetune run and its evaluation report.

    scripts/in-venv python scripts/dashboard_check.py [--config configs/smoke.yaml] [--screenshot docs/dashboard.png]

Unit and pipeline tests prove that the artifacts exist; only a browser proves that `zenml login --local` serves a
dashboard where a person can open the run and read the report. This script:

1. uses a throw-away ZenML state (a temporary ZENML_CONFIG_PATH) and runs `python run.py --config CONFIG` in it.
   `--zenml-state current` uses yours instead and runs the pipeline only when it has no completed finetune run
   (or always, with `--new-run`); like `zenml logout --local`, it leaves your client on its default local store;
2. starts the local ZenML server with `zenml login --local` (a background daemon, no authentication) and marks its
   default user's onboarding survey as answered, which the dashboard would otherwise show first;
3. asks the server's REST API for the latest completed `finetune` run, its steps and the `eval_report` artifact of
   `promote`, so the browser goes to the run by URL and knows what it should see;
4. drives Debian's Chromium headless through Playwright: it opens the run's page, checks every step is drawn in the
   DAG, opens `eval_report` from the DAG, loads its visualization and checks the report's text inside its iframe;
5. saves a screenshot of the rendered report, prints PASS or FAIL for each check, stops the server and cleans up.

Exit status: 0 when every check passes, 1 when one fails, 2 when something it needs is missing.
Needs `pip install playwright` (the Python package only: Chromium comes from Debian, `playwright install` is never
needed) and `apt-get install chromium`.
"""

from __future__ import annotations

import argparse
import html
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PIPELINE = "finetune"
REPORT_STEP, REPORT_ARTIFACT = "promote", "eval_report"
EXPECTED_STEPS = ("train_lora", "evaluate_tuned", "promote")
DEFAULT_PORT = 8237  # what `zenml login --local` uses when given no port
# Without the background-networking flags Chromium keeps calling Google services, which the closed network refuses.
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
VIEWPORT = {"width": 1400, "height": 900}
TIMEOUT_MS = 60_000
LOG = Path(tempfile.gettempdir()) / "dashboard_check.log"  # output of run.py and zenml; kept after the check


class CheckFailed(Exception):
    """A check on the dashboard did not pass."""


class Missing(Exception):
    """Something the check needs (browser, package, file) is not there."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--config", default="configs/smoke.yaml", help="run config for the finetune run (default: %(default)s)"
    )
    p.add_argument(
        "--screenshot",
        type=Path,
        default=Path("docs/dashboard.png"),
        help="PNG of the rendered evaluation report (default: %(default)s)",
    )
    p.add_argument("--dag-screenshot", type=Path, help="also save a PNG of the run's page with its DAG here")
    p.add_argument(
        "--zenml-state",
        choices=["temp", "current"],
        default="temp",
        help="temp: a throw-away ZENML_CONFIG_PATH (default); current: your ZenML state as it is",
    )
    p.add_argument("--new-run", action="store_true", help="run the pipeline even when a finetune run exists")
    p.add_argument(
        "--port",
        type=int,
        help=f"port for the local server (default: a free one; {DEFAULT_PORT} with --zenml-state current)",
    )
    p.add_argument("--chromium", default="/usr/bin/chromium", help="Chromium binary (default: %(default)s)")
    p.add_argument("--keep-server", action="store_true", help="leave the server (and the temp state) running")
    return p.parse_args(argv)


# -- prerequisites ---------------------------------------------------------------------------------------------------


def check_prerequisites(chromium: str) -> None:
    """Fail in a second, before any slow work, when the browser or Playwright is missing."""
    if not Path(chromium).is_file():
        raise Missing(
            f"no Chromium at {chromium}. Install Debian's package: "
            "sudo apt-get install -y chromium (or pass --chromium PATH)"
        )
    try:
        import playwright.sync_api  # noqa: F401  (imported for real in browser())
    except ImportError:
        raise Missing(
            "the Python package playwright is not installed. Install it into the venv: "
            f"{sys.executable} -m pip install playwright  (no `playwright install`: "
            "the check uses Debian's Chromium)"
        ) from None


# -- ZenML state, pipeline run and server ----------------------------------------------------------------------------


def zenml_env(state_dir: Path | None) -> dict[str, str]:
    """Environment for every ZenML subprocess: no analytics, no browser popping up, the chosen state."""
    env = dict(os.environ)
    env.setdefault("ZENML_ANALYTICS_OPT_IN", "false")
    env["ZENML_AUTO_OPEN_DASHBOARD"] = "false"
    mirror = ROOT.parent / "shared" / "mirror"
    if "TUNELINE_MIRROR" not in env and mirror.is_dir():
        env["TUNELINE_MIRROR"] = str(mirror)
    if state_dir is not None:
        env["ZENML_CONFIG_PATH"] = str(state_dir)
    return env


def run_logged(cmd: list[str], env: dict[str, str], log: Path, what: str) -> None:
    """Run a command from the repo root with its output in `log`; on failure show the end of that log."""
    with log.open("a") as out:
        proc = subprocess.run(cmd, check=False, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        tail = "".join(log.read_text(errors="replace").splitlines(keepends=True)[-25:])
        raise CheckFailed(f"{what} failed (exit {proc.returncode}): {' '.join(cmd)}\n{tail}")


def zenml_cli() -> str:
    """The `zenml` command of the Python running this script (its venv), else the one on PATH."""
    beside = Path(sys.executable).parent / "zenml"
    return str(beside) if beside.exists() else "zenml"


def has_finetune_run(env: dict[str, str]) -> bool:
    code = (
        f"from zenml.client import Client; print(len(Client().list_pipeline_runs("
        f"pipeline_name={PIPELINE!r}, status='completed', size=1).items))"
    )
    out = subprocess.run([sys.executable, "-c", code], check=False, cwd=ROOT, env=env, capture_output=True, text=True)
    return out.returncode == 0 and out.stdout.strip().splitlines()[-1:] == ["1"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


@contextmanager
def local_server(env: dict[str, str], port: int, log: Path, keep: bool) -> Iterator[str]:
    """`zenml login --local` on `port`, yielding its URL; `zenml logout --local` afterwards if it was ours."""
    url = f"http://127.0.0.1:{port}"
    already_up = server_healthy(url)
    run_logged([zenml_cli(), "login", "--local", "--port", str(port)], env, log, "zenml login --local")
    if not server_healthy(url):
        raise CheckFailed(f"zenml login --local returned but {url}/health does not answer; see {log}")
    try:
        yield url
    finally:
        if keep or already_up:
            print(
                f"server left running at {url}"
                + (
                    ""
                    if already_up
                    else f"; stop it with: ZENML_CONFIG_PATH={env.get('ZENML_CONFIG_PATH', '~')} zenml logout --local"
                )
            )
        else:
            subprocess.run(
                [zenml_cli(), "logout", "--local"],
                check=False,
                cwd=ROOT,
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            if server_healthy(url):
                print(f"warning: the server at {url} still answers after `zenml logout --local`", file=sys.stderr)


# -- REST API: what the browser should find --------------------------------------------------------------------------


def api(url: str, path: str, body: dict | None = None) -> dict:
    """One call to the server's REST API (the local server runs with auth scheme NO_AUTH: no token needed)."""
    req = urllib.request.Request(
        f"{url}/api/v1{path}",
        method="PUT" if body is not None else "GET",
        data=json.dumps(body).encode() if body is not None else None,
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.load(r)


def skip_onboarding(url: str) -> bool:
    """Answer the dashboard's first-visit survey for the server's user, as a person would once; True if needed.

    The dashboard redirects to /survey while the user's `email_opted_in` is unset or its metadata lacks
    `finished_onboarding_survey` (see the dashboard bundle's check); the local server has one user, `default`.
    """
    user = api(url, "/current-user")
    metadata = (user.get("metadata") or {}).get("user_metadata") or {}
    if user["body"].get("email_opted_in") is not None and metadata.get("finished_onboarding_survey"):
        return False
    api(
        url,
        "/current-user",
        {
            "email_opted_in": bool(user["body"].get("email_opted_in")),
            "user_metadata": {**metadata, "finished_onboarding_survey": True, "overview_tour_done": True},
        },
    )
    return True


def find_report(url: str) -> dict:
    """The latest completed finetune run, its step names, and the eval_report artifact version with its HTML."""
    runs = api(url, f"/runs?pipeline_name={PIPELINE}&status=completed&sort_by=desc:created&size=1")["items"]
    if not runs:
        raise CheckFailed(f"the server has no completed run of pipeline '{PIPELINE}'")
    run = runs[0]
    steps = api(url, f"/steps?pipeline_run_id={run['id']}&size=100")["items"]
    by_name = {s["name"]: s for s in steps}
    absent = [s for s in EXPECTED_STEPS if s not in by_name]
    if absent:
        raise CheckFailed(f"run {run['name']} has no step {absent}")
    outputs = (by_name[REPORT_STEP].get("resources") or {}).get("outputs") or {}
    if not outputs.get(REPORT_ARTIFACT):
        raise CheckFailed(f"step '{REPORT_STEP}' of run {run['name']} has no output '{REPORT_ARTIFACT}'")
    artifact_id = outputs[REPORT_ARTIFACT][0]["id"]
    stored = api(url, f"/artifact_versions/{artifact_id}/visualize?index=0")
    heading = re.search(r"<h2>(.*?)</h2>", stored.get("value", ""), re.DOTALL)
    if stored.get("type") != "html" or not heading:
        raise CheckFailed(f"{REPORT_ARTIFACT} {artifact_id}: its visualization is not an HTML report with a heading")
    return {
        "run_id": run["id"],
        "run_name": run["name"],
        "status": run["body"]["status"],
        "steps": sorted(by_name),
        "artifact_id": artifact_id,
        "heading": html.unescape(re.sub(r"<[^>]+>", "", heading.group(1))).strip(),
    }


# -- the browser -----------------------------------------------------------------------------------------------------


@contextmanager
def browser(chromium: str) -> Iterator[object]:
    """A page in headless Chromium with a fresh profile, closed (profile removed) afterwards."""
    from playwright.sync_api import sync_playwright

    profile = tempfile.mkdtemp(prefix="dashboard-check-chromium-")
    try:
        with sync_playwright() as pw:
            context = pw.chromium.launch_persistent_context(
                profile, executable_path=chromium, args=CHROMIUM_FLAGS, headless=True, viewport=VIEWPORT
            )
            context.set_default_timeout(TIMEOUT_MS)
            try:
                yield context.new_page()
            finally:
                context.close()
    finally:
        shutil.rmtree(profile, ignore_errors=True)


def passed(what: str) -> None:
    print(f"PASS  {what}")


def open_page(page, url: str, ready) -> None:
    """Go to `url` and wait for `ready`, or for the login or survey page the dashboard may redirect to instead."""
    page.goto(url)
    detour = page.locator("input[type=password]").or_(page.get_by_text("Add your account details"))
    ready.or_(detour).first.wait_for()
    if not ready.first.is_visible():
        raise CheckFailed(f"the dashboard sent the browser to {page.url} instead of {url}")


def check_run_page(page, url: str, found: dict, dag_screenshot: Path | None) -> None:
    """Open /projects/default/runs/<id>; every step of the run must be drawn in the DAG."""
    open_page(
        page,
        f"{url}/projects/default/runs/{found['run_id']}",
        page.get_by_test_id(f"rf__node-step/{EXPECTED_STEPS[0]}"),
    )
    page.get_by_text(found["run_name"]).first.wait_for()
    missing = [s for s in found["steps"] if not page.get_by_test_id(f"rf__node-step/{s}").is_visible()]
    if missing:
        raise CheckFailed(f"run page: steps not drawn in the DAG: {missing}")
    passed(
        f"run page {url}/projects/default/runs/{found['run_id']} opens: run {found['run_name']} "
        f"({found['status']}), all {len(found['steps'])} steps in the DAG, including {', '.join(EXPECTED_STEPS)}"
    )
    if dag_screenshot:
        save_screenshot(page, dag_screenshot)


def check_report(page, found: dict, screenshot: Path) -> None:
    """From the DAG open eval_report, load its visualization and find the stored report's text in the iframe."""
    node = page.get_by_test_id(f"rf__node-{REPORT_STEP}/outputs/step_output/{REPORT_ARTIFACT}")
    node.get_by_text(REPORT_ARTIFACT, exact=True).click()
    page.get_by_text(found["artifact_id"], exact=True).wait_for()
    passed(f"artifact panel opens: {REPORT_ARTIFACT} (output of {REPORT_STEP}), version {found['artifact_id']}")
    page.get_by_role("tab", name="Visualization").click()
    # The dashboard asks before rendering HTML ("This preview may contain harmful code").
    page.get_by_role("button", name="Load Preview").click()
    report = page.frame_locator("iframe[title='Secure HTML Content']")
    report.get_by_text(found["heading"], exact=True).wait_for()
    expected = [found["heading"], "metric", "tuned", "delta", "Per field", "Error taxonomy", "Guards"]
    text = report.locator("body").inner_text()
    absent = [t for t in expected if t not in text]
    if absent or not report.locator("table").first.is_visible():
        raise CheckFailed(f"evaluation report: iframe rendered without {absent or 'a visible table'}")
    passed(
        f'evaluation report renders in the dashboard: "{found["heading"]}", headline metrics table, '
        "per-field, error taxonomy and guards sections"
    )
    save_screenshot(page, screenshot)


def save_screenshot(page, path: Path) -> None:
    path = path if path.is_absolute() else ROOT / path
    path.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(path))
    passed(
        f"screenshot saved: {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path} "
        f"({path.stat().st_size // 1024} KB)"
    )


def check_in_browser(url: str, found: dict, args: argparse.Namespace) -> None:
    with browser(args.chromium) as page:
        try:
            check_run_page(page, url, found, args.dag_screenshot)
            check_report(page, found, args.screenshot)
        except Exception:
            shot = Path(tempfile.gettempdir()) / "dashboard_check-failure.png"
            try:
                page.screenshot(path=str(shot), timeout=15_000)  # the survey page's animation slows screenshots
                print(f"the page as it was at the failure: {shot} (at {page.url})")
            except Exception as err:  # noqa: BLE001 - the failure itself is what matters
                print(f"(no screenshot of the failure: {err})")
            raise


# -- main ------------------------------------------------------------------------------------------------------------


def check(args: argparse.Namespace, work: Path) -> None:
    t0 = time.monotonic()
    state = work / "zenml" if args.zenml_state == "temp" else None
    env = zenml_env(state)
    log = LOG
    log.write_text("")
    print(f"ZenML state: {state or 'your current one'}; output of run.py and zenml: {log}")
    if args.new_run or state is not None or not has_finetune_run(env):
        print(f"running the finetune pipeline: python run.py --config {args.config} ...")
        run_logged([sys.executable, "run.py", "--config", args.config], env, log, "the finetune run")
        passed(f"finetune run with {args.config} finished in {time.monotonic() - t0:.0f} s")
    port = args.port or (free_port() if state is not None else DEFAULT_PORT)
    t1 = time.monotonic()
    with local_server(env, port, log, keep=args.keep_server) as url:
        passed(f"zenml login --local: dashboard at {url} in {time.monotonic() - t1:.0f} s")
        if skip_onboarding(url):
            print("answered the dashboard's first-visit survey for user 'default' (no e-mails)")
        found = find_report(url)
        t2 = time.monotonic()
        check_in_browser(url, found, args)
        print(f"browser checks took {time.monotonic() - t2:.0f} s")


def resolve_config(config: str) -> str:
    """The config as run.py (started in the repo root) will find it: relative to here, else to the repo root."""
    for path in (Path(config), ROOT / config):
        if path.is_file():
            return os.path.relpath(path.resolve(), ROOT) if path.resolve().is_relative_to(ROOT) else str(path.resolve())
    raise Missing(f"no config file {config}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    t0 = time.monotonic()
    try:
        check_prerequisites(args.chromium)
        args.config = resolve_config(args.config)
    except Missing as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="dashboard-check-"))
    try:
        check(args, work)
    except Exception as err:  # noqa: BLE001 - any failure is a FAIL with its reason
        reason = str(err) if isinstance(err, CheckFailed) else f"{type(err).__name__}: {err}"
        print(f"FAIL  {reason}")
        print(f"dashboard check FAILED after {time.monotonic() - t0:.0f} s")
        return 1
    finally:
        if not args.keep_server:
            shutil.rmtree(work, ignore_errors=True)
    print(f"dashboard check PASSED in {time.monotonic() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
