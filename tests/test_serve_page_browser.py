"""The deployment's page (ui/index.html) in a real headless Chromium (Debian's, driven by Playwright) against the
smoke model deployed on loopback: a double click while a request is in flight sends one request and shows one
row; a server that answers too late or is gone, and a refused text, each show one readable line, never the input,
and the page stops saying "generating". A row is corrected from the page: an answer that does not parse shows the
server's reason, a parsing one is saved once and stored on the request's trace. The server is made slow by pausing
its process (SIGSTOP), the page's 300 s timeout passes on Playwright's fake clock, and the last test stops the
deployment.

Named to run after test_serve_deployment.py (the smoke model is trained by then), and so after the pipeline tests,
whose first run must be the session store's first use. Needs /usr/bin/chromium (`apt-get install -y chromium`):
without it these tests fail saying so."""

import contextlib
import os
import re
import signal
import time

import pytest

from scripts.dashboard_check import Missing, browser, check_prerequisites
from tests.test_serve_deployment import CONFIG, _cli, deploy, served_record, trained  # noqa: F401 (fixture: the smoke model)

pytestmark = pytest.mark.slow  # a real deployment and a real browser

CHROMIUM = "/usr/bin/chromium"
TEXT = "I think SpellForce 3 is a poor game."
CORRECTED = "give_opinion(name[SpellForce 3], rating[poor])"
PAGE_TIMEOUT = "05:01"  # just past the page's TIMEOUT_S


@pytest.fixture(scope="module")
def served(trained):  # noqa: F811
    """The smoke model's deployment: its URL and its server's process id."""
    from zenml.client import Client

    url = deploy("--model-version", str(trained["model_version"]))
    yield url, Client().get_deployment(f"{trained['model_name']}-extract").deployment_metadata["pid"]
    _cli("serve", "--config", CONFIG, "--stop")


@pytest.fixture
def page():
    try:
        check_prerequisites(CHROMIUM)
    except Missing as err:
        pytest.fail(f"the page tests need a browser: {err}", pytrace=False)
    with browser(CHROMIUM) as opened:
        yield opened


@contextlib.contextmanager
def paused(pid: int):
    """The server holds every request it gets (the kernel still accepts the connection) until resumed."""
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


def requests_to(page, path: str) -> list:
    """The page's requests to `path`, as it sends them."""
    sent = []
    page.on("request", lambda request: sent.append(request) if request.url.endswith(path) else None)
    return sent


def open_page(page, url: str, text: str = TEXT) -> None:
    page.goto(url + "/")
    page.locator("#texts").fill(text)


def assert_one_line_error(page, *expected: str) -> str:
    """The error is shown as one line naming the problem; nothing says "generating" and Extract works again."""
    from playwright.sync_api import expect

    error = page.locator("#error")
    expect(error).to_be_visible()
    expect(error).to_contain_text(expected[0])
    line = error.inner_text()
    assert "\n" not in line and len(line) <= 303 and all(e in line for e in expected), line
    assert "generating" not in page.locator("#status").inner_text()
    expect(page.locator("#go")).to_be_enabled()
    expect(page.locator("#results")).to_be_hidden()
    return line


def test_a_double_click_while_generating_sends_one_request_and_shows_one_row(served, page):
    from playwright.sync_api import expect

    url, pid = served
    sent = requests_to(page, "/invoke")
    open_page(page, url)
    with paused(pid):
        page.locator("#go").dblclick()
        expect(page.locator("#status")).to_have_text("generating...")
        page.locator("#go").click(force=True)  # once more, the request still in flight
        assert len(sent) == 1
    expect(page.locator("#status")).to_contain_text("s generating")
    rows = page.locator("#results tbody tr")
    expect(rows).to_have_count(1)
    assert rows.locator("td").first.inner_text() == TEXT and len(sent) == 1


def test_a_server_that_answers_too_late_is_an_error_line(served, page):
    url, pid = served
    page.clock.install()
    open_page(page, url)
    with paused(pid):
        page.locator("#go").click()
        page.locator("#status").get_by_text("generating").wait_for()
        page.clock.fast_forward(PAGE_TIMEOUT)
        assert_one_line_error(page, "no answer within 300 s")


def test_a_refused_text_is_one_line_without_the_text(served, page):
    url, _ = served
    word = "zebracorn"
    open_page(page, url, " ".join([word] * 20_000))  # over the smoke model's context, in characters
    page.locator("#go").click()
    line = assert_one_line_error(page, "422: ", "texts[0] is ")
    assert word not in line


def extract_one(page, url: str) -> dict:
    """Extract TEXT on the page: /invoke's `extractions` as the page got them."""
    open_page(page, url)
    with page.expect_response(lambda reply: reply.url.endswith("/invoke")) as invoked:
        page.locator("#go").click()
    return invoked.value.json()["outputs"]["extractions"]


def stored_correction(model_name: str, trace_id: str, since_ms: int) -> dict | None:
    """The latest correction of the trace's first text as the monitor and finetune read it back (up to 30 s)."""
    record = served_record(model_name, trace_id, since_ms, lambda r: r["correction"], seconds=30)
    return record["correction"] if record else None


def test_a_row_is_corrected_once_its_answer_parses_and_the_correction_is_on_its_trace(served, page, trained):  # noqa: F811
    from playwright.sync_api import expect

    url, pid = served
    since_ms = int(time.time() * 1000)
    sent = requests_to(page, "/feedback")
    out = extract_one(page, url)
    model_answer, row = out["results"][0]["answer"], page.locator("#results tbody tr")
    answer_cell = row.locator("td").nth(3)
    row.get_by_role("button", name="Correct").click()
    box = answer_cell.get_by_role("textbox", name="corrected answer")
    expect(box).to_have_value(model_answer)
    box.fill("SpellForce is poor, not an MR")
    row.get_by_role("button", name="Save").click()
    reason = row.locator(".error")
    expect(reason).to_contain_text("422: the corrected answer does not parse as a meaning representation")
    line = reason.inner_text()
    assert "\n" not in line and "SpellForce" not in line, line
    box.fill(CORRECTED)
    with paused(pid):
        row.get_by_role("button", name="Save").click()
        expect(row.get_by_text("saving...")).to_be_visible()
        box.press("Enter")  # again, the save still in flight
        expect(row.get_by_role("button", name="Save")).to_be_disabled()
    expect(row.locator(".saved")).to_have_text("saved")
    expect(answer_cell).to_have_text(model_answer)  # the cell goes on showing the model's answer
    assert len(sent) == 2  # the refused answer and one save of the right one
    stored = stored_correction(trained["model_name"], out["trace_id"], since_ms)
    assert stored and stored["value"] == CORRECTED, stored
    row.get_by_role("button", name="Correct").click()
    expect(box).to_have_value(CORRECTED)  # a second look starts from the saved correction
    row.get_by_role("button", name="Cancel").click()
    expect(answer_cell).to_have_text(model_answer)


def test_an_answer_without_a_trace_cannot_be_corrected(served, page):
    """What the page shows for a deployment with serving.record: off, emulated by dropping the real answer's
    trace_id on its way to the page (a second deployment would take minutes)."""
    from playwright.sync_api import expect

    def untraced(route):
        reply = route.fetch()
        answer = reply.json()
        del answer["outputs"]["extractions"]["trace_id"]
        route.fulfill(response=reply, json=answer)

    page.route("**/invoke", untraced)
    extract_one(page, served[0])
    correct = page.locator("#results tbody tr").get_by_role("button", name="Correct")
    expect(correct).to_be_disabled()
    expect(correct).to_have_attribute("title", re.compile("recording is off"))


def test_a_stopped_server_is_an_error_line(served, page):
    """Last: it stops the deployment."""
    url, _ = served
    open_page(page, url)
    stopped = _cli("serve", "--config", CONFIG, "--stop")
    assert stopped.returncode == 0, stopped.stderr[-2000:]
    page.locator("#go").click()
    assert_one_line_error(page, "cannot reach the server")
