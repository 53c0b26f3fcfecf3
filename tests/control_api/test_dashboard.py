"""The dashboard end to end: the control API served by uvicorn on loopback over a real store and the
real MLflow registry, a rollout driven by a real controller, and headless Chromium (Debian's, driven
by Playwright) signing in, watching the rollout change live, pausing it, and seeing what a viewer
may not do. Also the dashboard's own routes (whoami, report.html, the static pages) without a browser."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from modelcanary.api.app import create_api
from modelcanary.controller.operations import start_rollout
from modelcanary.domain.access import Role

from .api_support import Api
from .rollout_story import story_spec

CHROMIUM = os.environ.get("MODELCANARY_CHROMIUM", "/usr/bin/chromium")
UI_TIMEOUT_MS = 15_000  # how long the page may take to show a change: a bound for a slow machine, not a goal


# -- the routes, without a browser ----------------------------------------------------------------


def test_whoami_names_the_caller(api: Api) -> None:
    api.token("fraud-team", Role.OPERATOR, endpoints=["fraud"])
    assert api.call("fraud-team", "GET", "/api/v1/whoami").json() == {
        "name": "fraud-team",
        "role": "operator",
        "endpoints": ["fraud"],
    }
    assert api.call("viewer", "GET", "/api/v1/whoami").json()["endpoints"] is None
    refused = api.call(None, "GET", "/api/v1/whoami")
    assert refused.status_code == 401
    assert refused.headers["content-type"] == "application/problem+json"


def test_the_report_json_carries_each_variants_numbers(api: Api, story: Any) -> None:
    body = api.call("viewer", "GET", f"/api/v1/rollouts/{story.rollout_id}/report").json()
    candidate = body["variants"]["candidate"]
    assert (candidate["requests"], candidate["errors"], candidate["labels"]) == (20, 0, 10)
    assert candidate["error_rate"] == 0.0
    assert set(candidate["latency_ms"]) == {"p50", "p90", "p95", "p99"}
    assert 0 < candidate["latency_ms"]["p50"] < candidate["latency_ms"]["p99"]
    assert body["requests"] == {"baseline": 1000, "candidate": 20}  # the contract's keys stay


def test_the_report_page_is_served_behind_auth_and_scoped(api: Api, story: Any) -> None:
    path = f"/api/v1/rollouts/{story.rollout_id}/report.html"
    page = api.call("viewer", "GET", path)
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert "Rollout fraud-v2 <small" in page.text and story.rollout_id in page.text
    assert api.call(None, "GET", path).status_code == 401
    api.token("churn-team", Role.VIEWER, endpoints=["churn"])
    hidden = api.call("churn-team", "GET", path)
    assert hidden.status_code == 404  # another endpoint's rollout does not exist for this token
    assert hidden.json()["detail"] == f"no rollout {story.rollout_id!r}"
    assert api.call("viewer", "GET", "/api/v1/rollouts/nope/report.html").status_code == 404


def test_a_token_limited_to_endpoints_reads_in_the_report_only_whether_the_chain_holds(api: Api, story: Any) -> None:
    """The chain's length (and where it broke) is the whole log's: a token limited to endpoints
    reads its verdict only."""
    path = f"/api/v1/rollouts/{story.rollout_id}/report.html"
    whole = api.call("viewer", "GET", path).text
    assert re.search(r"Audit chain verified: \d+ events, no broken link", whole)
    api.token("fraud-team", Role.VIEWER, endpoints=["fraud"])
    scoped = api.call("fraud-team", "GET", path)
    assert scoped.status_code == 200
    assert "Audit chain verified: no broken link." in scoped.text
    assert not re.search(r"\d+ events", scoped.text)


def test_the_static_pages_hold_no_data_and_load_nothing_from_elsewhere(api: Api) -> None:
    index = api.call(None, "GET", "/ui/")  # no token needed: nothing in them is anyone's data
    assert index.status_code == 200 and "<title>modelcanary</title>" in index.text
    assert "default-src 'self'" in index.headers["content-security-policy"]
    for name in ("app.js", "style.css"):
        asset = api.call(None, "GET", f"/ui/{name}")
        assert asset.status_code == 200
        assert not re.search(r"(src|href)=[\"']?https?:", asset.text)
    assert not re.search(r"https?://", index.text)
    assert "/api/v1/whoami" not in index.text  # the page asks the API, with the token the person gives


def test_the_dashboards_routes_are_in_the_schema(api: Api) -> None:
    paths = api.call("viewer", "GET", "/api/v1/openapi.json").json()["paths"]
    assert "/api/v1/whoami" in paths and "/api/v1/rollouts/{rollout_id}/report.html" in paths


# -- in a real browser ----------------------------------------------------------------------------


class Server:
    """The control API on a real uvicorn on loopback, in a thread of its own."""

    def __init__(self, app: Any) -> None:
        import uvicorn

        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
        self.thread = threading.Thread(target=lambda: asyncio.run(self.server.serve(sockets=[sock])), daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert self.thread.is_alive() and time.monotonic() < deadline, "the control API did not start"
            time.sleep(0.01)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


@pytest.fixture
def browser() -> Iterator[Any]:
    """Debian's Chromium, headless. Missing, the browser tests skip, unless
    ``MODELCANARY_REQUIRE_BROWSER`` is set (as ``.ci/run`` does): then they fail."""
    required = bool(os.environ.get("MODELCANARY_REQUIRE_BROWSER"))
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as exc:
        if required:
            pytest.fail(f"MODELCANARY_REQUIRE_BROWSER is set but Playwright is missing: {exc}")
        pytest.skip("Playwright is not installed (pip install 'modelcanary[test]')")
    if not (os.path.exists(CHROMIUM) or shutil.which(CHROMIUM)):
        if required:
            pytest.fail(f"MODELCANARY_REQUIRE_BROWSER is set but there is no Chromium at {CHROMIUM}")
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium, or set MODELCANARY_CHROMIUM)")
    with sync_playwright() as playwright:
        # never a downloaded browser: the system's, at a known path
        found = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            yield found
        finally:
            found.close()


def _sign_in(page: Any, url: str, secret: str) -> None:
    from playwright.sync_api import expect

    page.goto(f"{url}/ui/")
    page.fill("#token", secret)
    page.click("#login button[type=submit]")
    expect(page.locator("#who")).not_to_be_empty(timeout=UI_TIMEOUT_MS)


def test_the_dashboard_in_a_real_browser(browser: Any, story: Any, registry: Any, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    store = story.store
    _, carol = store.create_token(name="carol", role=Role.APPROVER, endpoints=None, actor="test")
    _, victor = store.create_token(name="victor", role=Role.VIEWER, endpoints=None, actor="test")
    server = Server(create_api(store, registry))
    errors: list[str] = []
    try:
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.set_default_timeout(UI_TIMEOUT_MS)

        # a cookie an earlier release left (the token, readable by every service on the host) is dropped
        page.context.add_cookies([{"name": "mc_token", "value": carol, "url": server.url}])

        # a wrong token is refused and the form stays
        page.goto(f"{server.url}/ui/")
        page.fill("#token", "mc_not-a-token")
        page.click("#login button[type=submit]")
        expect(page.locator("#login-error")).to_contain_text("refused this token")

        # the list, with the rollout's phase
        _sign_in(page, server.url, carol)
        expect(page.locator("#who")).to_have_text("carol (approver, every endpoint)")
        # the token is in this tab's sessionStorage and nowhere a browser would send it by itself
        assert page.context.cookies() == []
        assert page.evaluate("document.cookie") == ""
        row = page.locator(f'tr.rollout[data-id="{story.rollout_id}"]')
        expect(row.locator(".phase")).to_have_text("canary")
        expect(row).to_contain_text("10%")

        # the rollout's page, with every part drawn from the report
        row.locator("a").click()
        expect(page).to_have_url(re.compile(f"#/rollouts/{story.rollout_id}$"))
        expect(page.locator("#weight")).to_have_text("10%")
        expect(page.locator('tr.variant[data-variant="candidate"]')).to_contain_text("20")
        expect(page.locator("tr.metric")).to_have_count(3)
        expect(page.locator("g.evidence")).to_have_count(4)  # three metrics and their weighted mean
        expect(page.locator("#threshold")).to_have_count(1)
        expect(page.locator("#evidence-chart")).to_contain_text("1/alpha = 22.22")
        expect(page.locator("tr.quality")).to_contain_text("on 10")  # the candidate's labels
        expect(page.locator("#weight-line")).to_have_count(1)
        expect(page.locator("tr.audit")).to_have_count(2)  # created by alice, entered by the controller
        expect(page.locator("#audit")).to_contain_text("token:alice")
        # what an approver may do to a running rollout, and nothing that does not fit its phase
        expect(page.locator("#actions button")).to_have_text(["promote", "pause", "abort"])

        # the controller advances: the page follows without a reload
        story.to_second_step()
        expect(page.locator("#weight")).to_have_text("50%")
        expect(page.locator("#step")).to_have_text("2")
        expect(page.locator("tr.transition").first).to_contain_text("step 2 of 2: candidate at 50% (step 1 passed)")

        # pause from the page: the decision log names carol
        page.fill("#reason-input", "looking at a latency alert")
        page.click("#action-pause")
        latest = page.locator("tr.transition").first
        expect(latest.locator(".actor")).to_have_text("token:carol")
        expect(latest).to_contain_text("paused by token:carol: looking at a latency alert")
        expect(page.locator(".phase")).to_have_text("canary (paused)")
        expect(page.locator("#actions button")).to_have_text(["promote", "resume", "abort"])
        expect(page.locator("tr.audit").first).to_contain_text("token:carol")
        state = store.get(story.rollout_id)[0]
        assert state.paused and state.reason == "paused by token:carol: looking at a latency alert"

        shot = tmp_path / "dashboard.png"
        page.screenshot(path=str(shot), full_page=True)
        assert shot.stat().st_size > 10_000
        if os.environ.get("MODELCANARY_DASHBOARD_SCREENSHOT"):  # to refresh docs/img/dashboard.png
            shutil.copy(shot, os.environ["MODELCANARY_DASHBOARD_SCREENSHOT"])

        # the post-mortem report, fetched with the token and saved as a file
        with page.expect_download() as download:
            page.click("#download-report")
        assert download.value.suggested_filename == f"{story.rollout_id}.html"
        saved = Path(download.value.path()).read_text()
        assert "<b>CANARY (paused)</b>" in saved and "paused by token:carol" in saved
        assert page.context.cookies() == []

        # a revoked token sends the person back to the form, which says why
        store.revoke_token("carol", actor="test")
        expect(page.locator("#login-error")).to_contain_text("refused this token")
        assert page.evaluate("sessionStorage.getItem('modelcanary.token')") is None

        # a viewer, in a tab of its own, sees everything but may do nothing
        viewer = browser.new_page()
        viewer.on("pageerror", lambda error: errors.append(str(error)))
        viewer.set_default_timeout(UI_TIMEOUT_MS)
        _sign_in(viewer, server.url, victor)
        viewer.locator(f'tr.rollout[data-id="{story.rollout_id}"] a').click()
        expect(viewer.locator("#weight")).to_have_text("50%")
        expect(viewer.locator("tr.transition").first).to_contain_text("paused by token:carol")
        assert viewer.locator("#actions").count() == 0
        assert viewer.locator("button[data-command]").count() == 0
        # a tab of its own has no token until the person signs in there
        other = browser.new_page()
        other.goto(f"{server.url}/ui/")
        expect(other.locator("#login")).to_have_count(1)
    finally:
        server.stop()
    assert errors == []


def _signed_in(browser: Any, url: str, secret: str, errors: list[str]) -> Any:
    page = browser.new_page()
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.set_default_timeout(UI_TIMEOUT_MS)
    _sign_in(page, url, secret)
    return page


def test_a_missing_rollout_says_so_and_is_not_polled_in_a_real_browser(browser: Any, story: Any, registry: Any) -> None:
    """A rollout that is not there (or not this token's) says so before any successful load, and is
    asked for once, not polled for ever."""
    from playwright.sync_api import expect

    store = story.store
    _, fraud_team = store.create_token(name="fraud-team", role=Role.VIEWER, endpoints=["fraud"], actor="test")
    hidden = start_rollout(store, registry, story_spec("churn"), source="churn.yaml", actor="test").id
    server = Server(create_api(store, registry))
    errors: list[str] = []
    asked: list[str] = []
    try:
        page = _signed_in(browser, server.url, fraud_team, errors)
        page.on("request", lambda request: asked.append(request.url) if "/report" in request.url else None)
        for missing in ("no-such-rollout", hidden):
            asked.clear()
            page.goto(f"{server.url}/ui/#/rollouts/{missing}")
            expect(page.locator("#status")).to_have_text(
                f"No rollout {missing} (no such rollout, or not visible to this token).", timeout=UI_TIMEOUT_MS
            )
            page.wait_for_timeout(3000)  # three polls' worth: none comes
            assert asked == [f"{server.url}/api/v1/rollouts/{missing}/report"]
            expect(page.locator("#head")).to_have_count(0)
    finally:
        server.stop()
    assert errors == []


def test_a_malformed_link_says_so_in_a_real_browser(browser: Any, story: Any, registry: Any) -> None:
    """A link whose rollout id is not even well-formed percent-encoding replaces the page shown with
    a message, and throws nothing."""
    from playwright.sync_api import expect

    _, victor = story.store.create_token(name="victor", role=Role.VIEWER, endpoints=None, actor="test")
    server = Server(create_api(story.store, registry))
    errors: list[str] = []
    try:
        page = _signed_in(browser, server.url, victor, errors)
        page.goto(f"{server.url}/ui/#/rollouts/{story.rollout_id}")
        expect(page.locator("#weight")).to_have_text("10%", timeout=UI_TIMEOUT_MS)
        page.goto(f"{server.url}/ui/#/rollouts/%E0")
        expect(page.locator("#status")).to_have_text("Bad link: this is no rollout's address.", timeout=UI_TIMEOUT_MS)
        expect(page.locator("#head")).to_have_count(0)
        page.goto(f"{server.url}/ui/#/")  # and the next link works
        expect(page.locator(f'tr.rollout[data-id="{story.rollout_id}"]')).to_have_count(1, timeout=UI_TIMEOUT_MS)
    finally:
        server.stop()
    assert errors == []
