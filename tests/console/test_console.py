"""The web console in a real headless Chromium against the real daemon (issue 14).

One daemon (one worker, the gateway on a free port) serves the whole module: the page is
opened as a person would, watches a session tick, pauses it (no new steps), guides it (the
context changes), resumes and destroys it; posts to a conversation and sees the persona reply;
runs a fleet operation; and a page of another origin fails to open a WebSocket. Screenshots of
every view, at 1280x800 and at a phone width, land in ``artifacts/console/``.
"""

from __future__ import annotations

import http.server
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from .consoletools import (
    DESKTOP,
    PHONE,
    REPO,
    artifacts_dir,
    chromium_path,
    console_daemon,
    create_sessions,
    free_port,
)

pytestmark = pytest.mark.timeout(90)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    executable = chromium_path()
    from playwright.sync_api import sync_playwright

    tmp = tmp_path_factory.mktemp("console")
    with console_daemon(tmp) as (daemon, port):
        sids, cid, persona = create_sessions(daemon, jokes=4)  # before Playwright runs its own loop
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=executable, args=["--no-sandbox", "--disable-gpu"])
            try:
                yield {"daemon": daemon, "port": port, "sids": sids, "cid": cid, "persona": persona, "browser": browser}
            finally:
                browser.close()


def _page(world: dict[str, Any], size: dict[str, int] = DESKTOP) -> Any:
    page = world["browser"].new_page(viewport=size)
    page.set_default_timeout(15_000)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.errors = errors
    return page


def _url(world: dict[str, Any], path: str = "/") -> str:
    return f"http://127.0.0.1:{world['port']}{path}"


def _shot(page: Any, name: str) -> None:
    page.screenshot(path=str(artifacts_dir() / f"{name}.png"), full_page=False)


def _top_seq(page: Any) -> int:
    first = page.locator("#steps li").first
    return int(first.get_attribute("data-seq") or 0)


def _acked(page: Any, what: str) -> int:
    """Wait for the ack of ``what`` and for its step (the ack can beat the step's live event)."""
    page.wait_for_function(f"() => document.querySelector('#ack').textContent.includes('{what} acknowledged at seq')")
    seq = int(page.get_attribute("#ack", "data-seq") or 0)
    page.wait_for_function(f"() => Number(document.querySelector('#steps li').dataset.seq) >= {seq}")
    return seq


def test_session_live_pause_guide_resume_destroy(world: dict[str, Any]) -> None:
    page = _page(world)
    sid = world["sids"][0]
    page.goto(_url(world))
    page.wait_for_selector(f"tr[data-session='{sid}']")
    page.wait_for_selector("#conn[data-state='live']")
    _shot(page, "fleet-1280")

    page.click(f"a[href='/ui/session/{sid}']")
    page.wait_for_selector("#steps li")
    first = _top_seq(page)
    page.wait_for_function(f"() => Number(document.querySelector('#steps li').dataset.seq) >= {first + 3}")
    _shot(page, "session-1280")

    page.click("button[data-action='pause']")
    paused_at = _acked(page, "pause")
    assert _top_seq(page) == paused_at
    time.sleep(1.5)  # five tick intervals: a running session would have ticked
    assert _top_seq(page) == paused_at, "a paused session still ticks"

    page.fill("#guidance", "about cats")
    page.click("form.guide button[type=submit]")
    assert _acked(page, "interrupt") == paused_at + 1  # the guidance step only, still no tick
    page.wait_for_function("() => document.querySelector('#context').textContent.includes('cats')")
    assert _top_seq(page) == paused_at + 1

    page.fill("#guidance", '{"no_such_field": 1}')
    page.click("form.guide button[type=submit]")
    page.wait_for_selector("#ack.error")
    assert page.inner_text("#ack").startswith("interrupt rejected:"), page.inner_text("#ack")

    page.click("button[data-action='resume']")
    resumed_at = _acked(page, "resume")
    page.wait_for_function(f"() => Number(document.querySelector('#steps li').dataset.seq) >= {resumed_at + 2}")
    assert "cats" in page.inner_text("#steps li .text").lower()

    page.click("button[data-action='destroy']")
    page.click("#confirm-ok")
    stopped_at = _acked(page, "destroy")
    page.wait_for_selector(".meta .badge.s-stopped")
    time.sleep(0.8)
    assert _top_seq(page) == stopped_at
    _shot(page, "session-after-destroy-1280")
    assert not page.errors, page.errors

    # The buttons went through the daemon's control API, and the workers' commit hints reached
    # the gateway through the supervisor.
    metrics = _metrics(world)
    assert metrics[("agentd_gateway_control_submits_total", ())] == 5  # pause, 2 guides, resume, destroy
    for kind in ("pause", "interrupt", "resume", "destroy"):
        assert metrics[("agentd_gateway_control_ops_total", (("kind", kind), ("outcome", "done")))] >= 1
    assert metrics[("agentd_gateway_control_ops_total", (("kind", "interrupt"), ("outcome", "rejected")))] == 1
    assert metrics[("agentd_gateway_commit_hints_total", ())] > 0


def _metrics(world: dict[str, Any]) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(_url(world, "/metrics"), timeout=5) as response:
        text = response.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_conversation_post_and_persona_reply(world: dict[str, Any]) -> None:
    page = _page(world)
    page.goto(_url(world, f"/ui/conversation/{world['cid']}"))
    page.wait_for_selector("#participants li b")
    page.fill("#author", "alice")
    page.fill("#message", "Who wants tea?")
    page.click("form.composer button[type=submit]")
    page.wait_for_selector("#messages li.r-user >> text=Who wants tea?")
    page.wait_for_selector("#messages li.r-agent", timeout=20_000)
    assert "Ada" in page.inner_text("#messages li.r-agent .who")
    _shot(page, "conversation-1280")
    assert not page.errors, page.errors


def test_fleet_operation_with_confirmation(world: dict[str, Any]) -> None:
    page = _page(world)
    page.goto(_url(world, "/ui/fleet"))
    targets = world["sids"][1:3]
    for sid in targets:
        page.check(f"tr[data-session='{sid}'] input[type=checkbox]")
    page.click("button[data-bulk='pause']")
    page.wait_for_selector("dialog#confirm[open]")
    _shot(page, "fleet-confirm-1280")
    page.click("#confirm-ok")
    page.wait_for_function("() => document.querySelector('.bulk-result').textContent.includes('2 acknowledged')")
    for sid in targets:
        page.wait_for_selector(f"tr[data-session='{sid}'] .badge.s-paused")
    page.click("#status-counts .chip.s-paused")
    page.wait_for_function("() => document.querySelectorAll('tbody tr[data-session]').length === 2")
    assert not page.errors, page.errors


def test_daemon_view(world: dict[str, Any]) -> None:
    page = _page(world)
    page.goto(_url(world, "/ui/daemon"))
    page.wait_for_selector("tr[data-role='worker']")
    page.wait_for_selector("tr[data-role='gateway']")
    assert "ready" in page.inner_text("tr[data-role='worker']")
    _shot(page, "daemon-1280")
    assert not page.errors, page.errors


def test_phone_width_screenshots(world: dict[str, Any]) -> None:
    page = _page(world, PHONE)
    sid = world["sids"][3]
    for name, path, ready in (
        ("fleet", "/ui/fleet", "tr[data-session]"),
        ("session", f"/ui/session/{sid}", "#steps li"),
        ("conversation", f"/ui/conversation/{world['cid']}", "#participants li b"),
        ("daemon", "/ui/daemon", "tr[data-role='worker']"),
    ):
        page.goto(_url(world, path))
        page.wait_for_selector(ready)
        _shot(page, f"{name}-phone")
        overflow = page.evaluate("() => document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 1, f"{name}: the page scrolls sideways by {overflow}px at {PHONE['width']}px"
    assert not page.errors, page.errors


class _Page(http.server.BaseHTTPRequestHandler):
    html = b""

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.end_headers()
        self.wfile.write(self.html)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def test_page_of_another_origin_cannot_open_a_websocket(world: dict[str, Any], tmp_path: Path) -> None:
    """Cross-site WebSocket hijacking: a page served from another port tries the gateway."""
    script = f"""
    <script>
    window.result = "pending";
    const ws = new WebSocket("ws://127.0.0.1:{world["port"]}/ws");
    ws.onopen = () => {{ window.result = "open"; ws.send(JSON.stringify({{op: "action", kind: "pause",
        session_id: "{world["sids"][3]}"}})); }};
    ws.onerror = () => {{ window.result = "refused"; }};
    </script>"""
    handler = type("Evil", (_Page,), {"html": script.encode()})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        page = _page(world)
        page.goto(f"http://127.0.0.1:{server.server_address[1]}/")
        page.wait_for_function("() => window.result !== 'pending'")
        assert page.evaluate("window.result") == "refused"
        # The console's own page on the gateway's origin opens one fine.
        page.goto(_url(world, "/ui/fleet"))
        page.wait_for_selector("#conn[data-state='live']")
    finally:
        server.shutdown()
        server.server_close()


def test_page_resumes_exactly_after_the_gateway_is_killed(world: dict[str, Any]) -> None:
    """kill -9 of the gateway: the supervisor restarts it, the page resubscribes with since."""
    page = _page(world)
    sid = world["sids"][3]
    page.goto(_url(world, f"/ui/session/{sid}"))
    page.wait_for_selector("#steps li")
    before = _top_seq(page)
    gateway = next(c for c in world["daemon"].status()["children"] if c["role"] == "gateway")
    os.kill(gateway["pid"], signal.SIGKILL)
    page.wait_for_selector("#conn[data-state='reconnecting'], #conn[data-state='connecting']")
    page.wait_for_selector("#conn[data-state='live']", timeout=30_000)
    page.wait_for_function(f"() => Number(document.querySelector('#steps li').dataset.seq) >= {before + 5}")
    seqs = [int(s) for s in page.eval_on_selector_all("#steps li", "(rows) => rows.map((r) => r.dataset.seq)")]
    assert seqs == list(range(seqs[0], seqs[0] - len(seqs), -1)), f"gaps or repeats: {seqs[:40]}"
    assert not page.errors, page.errors


def test_login_with_the_token_and_a_read_only_console(world: dict[str, Any], tmp_path: Path) -> None:
    """A standalone gateway with a token and control = false: login form, 401, cookie, no buttons."""
    port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "AGENTD_GATEWAY__PORT": str(port),
        "AGENTD_GATEWAY__TOKEN": "console-s3cret",
        "AGENTD_GATEWAY__CONTROL": "false",
    }
    log = (tmp_path / "gateway.log").open("ab")
    proc = subprocess.Popen(
        [sys.executable, "-m", "agentd", "--config", str(world["daemon"].config), "gateway"],
        env=env,
        stderr=log,
        start_new_session=True,
    )
    try:
        page = _page(world)
        deadline = time.monotonic() + 20
        while True:
            try:
                page.goto(f"http://127.0.0.1:{port}/ui/fleet")
                break
            except Exception:
                assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "gateway.log").read_text()
                time.sleep(0.2)
        page.wait_for_selector("#login-form")
        _shot(page, "login-1280")
        page.fill("#token", "wrong")
        page.click("#login-form button[type=submit]")
        page.wait_for_selector("#login-error:not([hidden])")
        assert page.inner_text("#login-error") == "Wrong token."
        page.fill("#token", "console-s3cret")
        page.click("#login-form button[type=submit]")
        page.wait_for_selector(f"tr[data-session='{world['sids'][3]}']")
        assert page.evaluate("() => document.cookie") == ""  # HttpOnly: scripts never see it
        assert "s3cret" not in page.url
        assert page.is_visible("#readonly") and page.is_visible("#logout")
        page.click(f"a[href='/ui/session/{world['sids'][3]}']")
        page.wait_for_selector("#steps li")
        assert page.is_disabled("button[data-action='pause']")
        _shot(page, "session-read-only-1280")
        page.reload()  # the cookie keeps the browser logged in
        page.wait_for_selector("#steps li")
        page.click("#logout")
        page.wait_for_selector("#login-form")
        assert not page.errors, page.errors
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        log.close()
