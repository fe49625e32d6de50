"""The dashboard in a real browser: Debian's chromium, driven by Playwright, against a
real ``loop gateway`` process on loopback.

Set ``LOOPS_SCREENSHOTS_DIR`` to write the review screenshots (docs/screenshots/).
Without chromium the tests are skipped, unless ``LOOPS_REQUIRE_BROWSER=1`` (CI), where
a missing browser fails them.
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

CHROMIUM = Path("/usr/bin/chromium")
LOOP = Path(sys.executable).with_name("loop")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
TOKEN = "dash-secret-token"
INJECTION = '<img src=x onerror="window.__pwned=1">'
SHOTS = os.environ.get("LOOPS_SCREENSHOTS_DIR")

pytestmark = pytest.mark.slow

if not CHROMIUM.exists():
    if os.environ.get("LOOPS_REQUIRE_BROWSER") == "1":
        pytest.fail("LOOPS_REQUIRE_BROWSER=1 but /usr/bin/chromium is missing", pytrace=False)
    pytest.skip("chromium is not installed (apt-get install chromium)", allow_module_level=True)

from playwright.sync_api import Browser, Page, expect, sync_playwright  # noqa: E402

# a loaded CI machine can be slow to draw; the assertions wait for a state, not a time
expect.set_options(timeout=15_000)


class Gateway:
    """A ``loop gateway`` process on loopback and an HTTP client to it."""

    def __init__(self, root: Path, token: str | None = None, toml: str = "") -> None:
        if toml:
            (root / "loops.toml").write_text(toml)
        self.home = root / "home"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("QUEUE_", "LOOPS_"))}
        env.update(
            QUEUE_DB_PATH=str(root / "queue.sqlite"),
            QUEUE_SQLITE_SYNC="normal",
            QUEUE_TICK_INTERVAL_MS="0",  # the tests press Tick themselves
            LOOPS_HOME=str(self.home),
        )
        if token:
            env["QUEUE_API_TOKEN"] = token
        self.process = subprocess.Popen(
            [str(LOOP), "gateway", "--port", "0"],
            env=env,
            cwd=root,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.reader = threading.Thread(target=self._pump, daemon=True)
        self.reader.start()
        first = self.lines.get(timeout=30)
        assert first is not None and " on http://127.0.0.1:" in first, first
        self.url = first.split(" on ", 1)[1].split(";", 1)[0].split(" ", 1)[0].rstrip("/")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.http = httpx.Client(base_url=self.url, headers=headers, timeout=10)

    def _pump(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def create(self, prompt: str, **fields: Any) -> dict[str, Any]:
        response = self.http.post("/tasks", json={"prompt": prompt, **fields})
        assert response.status_code == 201, response.text
        task: dict[str, Any] = response.json()
        return task

    def fail(self, task_id: int, error: str) -> None:
        leased = self.http.post(f"/tasks/{task_id}/lease", json={"worker": "w-test"}).json()
        token = leased["lease"]["token"]
        done = self.http.post(
            f"/tasks/{task_id}/complete",
            json={"lease_token": token, "status": "failed", "error": error},
        )
        assert done.status_code == 200, done.text

    def stop(self) -> None:
        self.http.close()
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=30)
        self.reader.join(timeout=30)
        assert self.process.stdout is not None
        self.process.stdout.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as p:
        launched = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[Gateway]:
    gw = Gateway(tmp_path)
    yield gw
    gw.stop()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    opened = context.new_page()
    errors: list[str] = []
    opened.on("pageerror", lambda exc: errors.append(str(exc)))
    # console errors include Content-Security-Policy refusals (an inline style, say)
    opened.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    yield opened
    context.close()
    assert not errors, errors


def shoot(page: Page, name: str, *, full_page: bool = False) -> None:
    if SHOTS:
        Path(SHOTS).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(SHOTS) / name), full_page=full_page)


def rows(page: Page) -> Any:
    return page.locator("table[aria-label=Tasks] tbody tr")


def test_list_filter_open_and_watch_live(gateway: Gateway, page: Page) -> None:
    for n in range(3):
        gateway.create(f"build part {n}", title=f"Build part {n}", type="build", priority=2)
    broken = gateway.create("fix the flaky test", title="Fix the flaky test", type="fix")
    gateway.fail(broken["id"], "check failed: 2 tests failed")

    page.goto(gateway.url + "/")
    expect(rows(page)).to_have_count(4)
    expect(rows(page).first).to_contain_text("Fix the flaky test")  # newest first
    expect(page.locator("button[data-status=failed] .n")).to_have_text("1")
    expect(page.locator("button[data-status=queued] .n")).to_have_text("3")
    shoot(page, "tasks-1280x800.png")

    # filter by status (the count button) and by type (the form)
    page.locator("button[data-status=failed]").click()
    expect(rows(page)).to_have_count(1)
    expect(rows(page).first).to_contain_text("failed")
    page.goto(gateway.url + "/#/tasks")
    page.fill("#f-type", "build")
    page.press("#f-type", "Enter")
    expect(rows(page)).to_have_count(3)
    expect(page).to_have_url(gateway.url + "/#/tasks?type=build")

    # a task created now appears without reloading the page, and its count moves
    page.goto(gateway.url + "/#/tasks")
    expect(rows(page)).to_have_count(4)
    marker = page.evaluate("() => { document.body.dataset.marker = 'same page'; return 1 }")
    assert marker == 1
    fresh = gateway.create("arrives live", title="Arrives while watching")
    expect(rows(page).first).to_contain_text("Arrives while watching")
    expect(page.locator("button[data-status=queued] .n")).to_have_text("4")
    assert page.evaluate("() => document.body.dataset.marker") == "same page"

    # open a task: prompt, error, history
    page.click(f"a[href='#/tasks/{broken['id']}']")
    expect(page.locator("h1")).to_contain_text("Fix the flaky test")
    expect(page.locator("pre.prompt")).to_have_text("fix the flaky test")
    expect(page.locator("ol.history")).to_contain_text("task.failed")
    expect(page.locator("pre.error")).to_contain_text("2 tests failed")
    shoot(page, "task-failed-1280x800.png")

    # and a status change shows up live on the task page
    page.goto(gateway.url + f"/#/tasks/{fresh['id']}")
    expect(page.locator("h1 .status")).to_have_text("queued")
    gateway.http.post(f"/tasks/{fresh['id']}/lease", json={"worker": "w-live"})
    expect(page.locator("h1 .status")).to_have_text("leased")
    expect(page.locator("ol.history")).to_contain_text("worker w-live")


def test_cancel_and_requeue_ask_first(gateway: Gateway, page: Page) -> None:
    queued = gateway.create("to be cancelled", title="Cancel me")
    failed = gateway.create("to be retried", title="Retry me")
    gateway.fail(failed["id"], "gate not met")

    page.goto(gateway.url + f"/#/tasks/{queued['id']}")
    page.click("#cancel")
    expect(page.locator("#confirm-dialog")).to_be_visible()
    page.click("#confirm-dialog button[value=cancel]")  # changed my mind
    expect(page.locator("h1 .status")).to_have_text("queued")
    page.click("#cancel")
    page.click("#confirm-ok")
    expect(page.locator("h1 .status")).to_have_text("cancelled")
    assert gateway.http.get(f"/tasks/{queued['id']}").json()["status"] == "cancelled"
    expect(page.locator("#cancel")).to_have_count(0)

    page.goto(gateway.url + f"/#/tasks/{failed['id']}")
    page.click("#requeue")
    page.click("#confirm-ok")
    expect(page.locator("h1 .status")).to_have_text("queued")
    body = gateway.http.get(f"/tasks/{failed['id']}").json()
    assert (body["status"], body["attempts"], body["error"]) == ("queued", 0, None)
    expect(page.locator("ol.history")).to_contain_text("task.requeued")


def wait_for_approval(gateway: Gateway, task_id: int, path: str) -> None:
    """Put a task where a worker leaves a loop task paused at the gate ``path``."""
    leased = gateway.http.post(f"/tasks/{task_id}/lease", json={"worker": "w-test"}).json()
    asked = {"type": "approval.requested", "data": {"path": path, "question": "Ship it?"}}
    gateway.http.post(f"/tasks/{task_id}/events", json={"events": [asked]})
    done = gateway.http.post(
        f"/tasks/{task_id}/complete",
        json={"lease_token": leased["lease"]["token"], "status": "waiting_approval"},
    )
    assert done.status_code == 200, done.text


def test_approve_and_reject_a_waiting_task(gateway: Gateway, page: Page) -> None:
    yes = gateway.create("a.loop.py", type="loop", title="Approve me")
    no = gateway.create("b.loop.py", type="loop", title="Reject me")
    for task in (yes, no):
        wait_for_approval(gateway, task["id"], "ship/signoff")

    page.goto(gateway.url + "/#/tasks?status=waiting_approval")
    expect(rows(page)).to_have_count(2)
    page.goto(gateway.url + f"/#/tasks/{yes['id']}")
    expect(page.locator("h1 .status")).to_have_text("waiting approval")
    gate = page.locator('#approvals li[data-path="ship/signoff"]')
    expect(gate).to_contain_text("Ship it?")
    gate.locator("input[name=by]").fill("frank")
    gate.locator("button.approve").click()
    expect(page.locator("h1 .status")).to_have_text("queued")
    expect(gate).to_contain_text("approved by frank")
    answer = gateway.http.get(f"/tasks/{yes['id']}/approvals").json()["gates"][0]["answer"]
    assert (answer["approved"], answer["by"]) == (True, "frank")

    page.goto(gateway.url + f"/#/tasks/{no['id']}")
    gate = page.locator('#approvals li[data-path="ship/signoff"]')
    expect(gate.locator("input[name=by]")).to_have_value("frank")  # remembered
    gate.locator("button.reject").click()  # no reason yet: refused in the page
    expect(page.locator("h1 .status")).to_have_text("waiting approval")
    gate.locator("input[name=reason]").fill("not on a Friday")
    gate.locator("button.reject").click()
    expect(gate).to_contain_text("rejected by frank")
    answer = gateway.http.get(f"/tasks/{no['id']}/approvals").json()["gates"][0]["answer"]
    assert (answer["approved"], answer["reason"]) == (False, "not on a Friday")


def test_task_text_is_never_markup(gateway: Gateway, page: Page) -> None:
    evil = gateway.create(
        f"<script>window.__pwned=2</script>{INJECTION}",
        title=INJECTION,
        success='"><svg onload="window.__pwned=3">',
    )
    gateway.http.post(
        f"/tasks/{evil['id']}/artifacts",
        params={"name": "transcript.jsonl", "kind": "transcript"},
        content=(
            '{"type": "agent.text", "text": "<b>bold?</b> ' + INJECTION.replace('"', '\\"') + '"}\n'
            '{"type": "agent.tool_use", "id": "t1", "tool": "Bash", "input": {"command": "ls"}}\n'
            '{"type": "agent.tool_result", "id": "t1", "output": "<iframe src=x></iframe>"}\n'
        ).encode(),
    )
    gateway.http.post(
        f"/tasks/{evil['id']}/artifacts",
        params={"name": "change.diff", "kind": "diff"},
        content=(
            b"--- a/x.py\n+++ b/x.py\n@@ -1 +1 @@\n-x = '<b>'\n"
            b'+def f(): return "<img src=x onerror=alert(1)>"\n'
        ),
    )
    page.goto(gateway.url + "/")
    expect(rows(page).first.locator("td.title a")).to_have_text(INJECTION)
    page.click(f"a[href='#/tasks/{evil['id']}']")
    expect(page.locator("h1 .title-text")).to_have_text(INJECTION)
    expect(page.locator("pre.prompt")).to_contain_text("<script>window.__pwned=2</script>")
    expect(page.locator(".convo .msg")).to_contain_text("<b>bold?</b>")
    expect(page.locator(".convo details summary")).to_have_text("tool call: Bash")
    expect(page.locator(".convo details")).not_to_have_attribute("open", "")
    expect(page.locator("pre.diff .add")).to_contain_text("<img src=x onerror=alert(1)>")
    expect(page.locator("pre.diff .add .kw").first).to_have_text("def")
    assert page.locator("main img, main script, main svg, main iframe, main b").count() == 0
    assert page.evaluate("() => window.__pwned") is None
    page.locator("details").first.click()  # unfold one tool call
    shoot(page, "task-transcript-diff-1280.png", full_page=True)


def test_event_stream_live_pause_and_filter(gateway: Gateway, page: Page) -> None:
    gateway.create("first")
    page.goto(gateway.url + "/#/events")
    events = page.locator("ol.events-list li:visible")
    expect(events.first).to_contain_text("task.created")
    before = events.count()
    second = gateway.create("second")
    expect(events).to_have_count(before + 1)
    expect(events.first).to_contain_text(f"task {second['id']}")

    page.click("#ev-pause")
    gateway.create("third")
    expect(page.locator("[role=status]", has_text="1 new")).to_be_visible()
    expect(events).to_have_count(before + 1)
    page.click("#ev-pause")
    expect(events).to_have_count(before + 2)
    shoot(page, "events-1280x800.png")

    page.fill("#ev-filter", "tick")
    expect(events).to_have_count(0)
    gateway.http.post("/tick")
    expect(events).to_have_count(1)


def test_phone_width_and_keyboard(gateway: Gateway, browser: Browser) -> None:
    task = gateway.create("a task on a phone", title="Small screen")
    context = browser.new_context(viewport={"width": 390, "height": 844})
    page = context.new_page()
    try:
        page.goto(gateway.url + "/")
        expect(rows(page)).to_have_count(1)
        # nothing is wider than the screen but the table's own scroller
        assert page.evaluate("() => document.documentElement.scrollWidth") <= 390
        shoot(page, "tasks-phone-390.png")
        # keyboard: tab to the task link and open it with Enter
        link = page.locator(f"a[href='#/tasks/{task['id']}']")
        for _ in range(40):
            page.keyboard.press("Tab")
            if link.evaluate("el => el === document.activeElement"):
                break
        else:
            pytest.fail("the task link cannot be reached with Tab")
        page.keyboard.press("Enter")
        expect(page.locator("h1")).to_contain_text("Small screen")
    finally:
        context.close()


def test_asks_for_the_token_and_keeps_it_out_of_urls(tmp_path: Path, browser: Browser) -> None:
    gw = Gateway(tmp_path, token=TOKEN)
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    urls: list[str] = []
    page.on("request", lambda request: urls.append(request.url))
    try:
        gw.create("guarded", title="Behind a token")
        page.goto(gw.url + "/")
        expect(page.locator("#token-dialog")).to_be_visible()
        page.fill("#token-input", "wrong")
        page.press("#token-input", "Enter")
        expect(page.locator("#token-error")).to_contain_text("invalid token")
        page.fill("#token-input", TOKEN)
        page.press("#token-input", "Enter")
        expect(rows(page)).to_have_count(1)
        expect(page.locator("#live")).to_have_text("● live")
        gw.create("while watching", title="Streamed with the token")
        expect(rows(page).first).to_contain_text("Streamed with the token")
        assert page.evaluate("() => sessionStorage.getItem('loops.token')") == TOKEN
        assert urls and not any(TOKEN in url for url in urls)
    finally:
        context.close()
        gw.stop()


def test_runs_workers_and_responsibilities(tmp_path: Path, page: Page) -> None:
    import asyncio

    from loops import run
    from loops.runs import recorder
    from run_helpers import demo_job

    gw = Gateway(
        tmp_path,
        toml='[[responsibilities]]\nname = "triage"\nevery = "1h"\nprompt = "look around"\n',
    )
    try:
        job = demo_job()
        work = tmp_path / "work"
        work.mkdir()
        rec = recorder.open_run("r-demo", home=gw.home, title=job.name, shape=job.shape(), cwd=work)
        # Playwright's sync API owns this thread's event loop: record the run in another
        recording = threading.Thread(
            target=lambda: asyncio.run(run(job, cwd=work, sinks=[rec], run_id="r-demo"))
        )
        recording.start()
        recording.join(timeout=60)

        page.goto(gw.url + "/#/runs")
        expect(page.locator("table[aria-label=Runs] tbody tr")).to_have_count(1)
        page.click("a[href='#/runs/r-demo']")
        tree = page.locator("ul.tree")
        expect(tree).to_contain_text("impl")
        expect(tree).to_contain_text("met")
        expect(page.locator("h1 .status")).to_have_text("pass")
        expect(page.locator("[role=meter]").first).to_be_visible()
        shoot(page, "run-tree-1280x800.png")

        page.goto(gw.url + "/#/responsibilities")
        row = page.locator("table[aria-label=Responsibilities] tbody tr")
        expect(row).to_contain_text("triage")
        expect(row.locator("a")).to_have_count(0)  # never dispatched yet
        page.click("#tick")
        expect(page.locator("#toast")).to_contain_text("1 dispatched (triage)")
        expect(row.locator("a")).to_have_text("#1")

        gw.http.post("/tasks/1/lease", json={"worker": "worker-7"})
        page.goto(gw.url + "/#/workers")
        expect(page.locator("section.worker h2")).to_contain_text("worker-7")
        expect(page.locator("section.worker tbody tr")).to_contain_text("#1 triage")
        shoot(page, "workers-1280x800.png")
    finally:
        page.goto("about:blank")  # leave before the gateway stops (no refused reconnects)
        gw.stop()
