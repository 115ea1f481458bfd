"""Fixtures of the browser suite: one fleet for the whole run (see fleet.py), headless Chromium
from the system's `chromium` package driven by Playwright (never a browser of its own), one
browser context per simulated client, every request URL the browser sent recorded, and a
screenshot of every open page of a failed test in `target/browser-tests/failures/`.

Run by `cargo test -p fleet-tests --test browser_suite` (and so by `scripts/test`), which passes
the binaries' directory in FLEETGATE_BIN_DIR.
"""

from __future__ import annotations

import os
import re
from itertools import count
from pathlib import Path

import pytest
from playwright.sync_api import sync_playwright

from fleet import ADMIN_TOKEN, Fleet

ROOT = Path(__file__).resolve().parents[2]
WORK = ROOT / "target" / "browser-tests"
FAILURES = WORK / "failures"
CHROMIUM = os.environ.get("FLEETGATE_TEST_CHROMIUM", "/usr/bin/chromium")
# Set by `scripts/screenshots`: the tests that show both pages at their best save them here.
SCREENSHOTS = os.environ.get("FLEETGATE_SCREENSHOTS_DIR")

# The fleet the suite runs against. Small limits, so that each behaviour is quick to reach: one
# slot fleet-wide (a second question waits in the queue), 3 chats per minute per address, and a
# breaker that opens after 2 upstream failures and stays open a minute.
FLEET_ENV = {
    "FLEETGATE_MAX_CONCURRENT_GLOBAL": "1",
    "FLEETGATE_MAX_CONCURRENT_PER_USER": "1",
    "FLEETGATE_CHAT_PER_IP_PER_MIN": "3",
    "FLEETGATE_FREE_DAILY_QUERIES": "5",
    "FLEETGATE_BREAKER_FAILURE_THRESHOLD": "2",
    "FLEETGATE_BREAKER_OPEN_MS": "60000",
}

_client_ip = count(10)


def pytest_runtest_makereport(item, call):
    if call.when == "call" and call.excinfo is not None:
        item.failed_call = True


@pytest.fixture(scope="session")
def fleet():
    bins = os.environ.get("FLEETGATE_BIN_DIR")
    if not bins:
        pytest.exit("FLEETGATE_BIN_DIR is not set: run `cargo test -p fleet-tests --test browser_suite`", 2)
    f = Fleet(Path(bins), WORK, replicas=2, env=FLEET_ENV)
    try:
        yield f.start()
    finally:
        f.stop()


@pytest.fixture(scope="session")
def browser():
    # Playwright gives every launch a fresh temporary profile (--user-data-dir) of its own.
    with sync_playwright() as p:
        b = p.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ],
        )
        try:
            yield b
        finally:
            b.close()


@pytest.fixture(scope="session")
def request_urls():
    """Every URL any page of the suite requested (the token check reads it)."""
    return []


@pytest.fixture(autouse=True)
def clean_fleet(fleet):
    """Each test starts with the simulator's defaults and every breaker closed."""
    fleet.sim_reset()
    fleet.admin_action("force-close-circuits")
    yield


@pytest.fixture
def client(browser, request, request_urls):
    """Opens browser contexts, one per simulated client (its own address and session storage);
    on a failed test, saves a screenshot of each of their pages."""
    opened = []

    def open_context(viewport=None, ip=None):
        ctx = browser.new_context(
            viewport=viewport or {"width": 1100, "height": 900},
            accept_downloads=True,
            extra_http_headers={"X-Forwarded-For": ip or f"198.51.100.{next(_client_ip)}"},
        )
        ctx.set_default_timeout(30_000)
        ctx.on("request", lambda r: request_urls.append(r.url))
        opened.append(ctx)
        return ctx

    yield open_context
    if getattr(request.node, "failed_call", False):
        FAILURES.mkdir(parents=True, exist_ok=True)
        name = re.sub(r"[^A-Za-z0-9_.-]", "_", request.node.name)
        n = 0
        for ctx in opened:
            for page in ctx.pages:
                n += 1
                try:
                    page.screenshot(path=str(FAILURES / f"{name}-{n}.png"), full_page=True)
                except Exception as e:  # a crashed page: say so, keep the other screenshots
                    print(f"no screenshot of page {n}: {e}")
        print(f"screenshots of the failed test in {FAILURES}")
    for ctx in opened:
        ctx.close()


@pytest.fixture
def admin_token():
    return ADMIN_TOKEN


def screenshot(page, name: str) -> None:
    """In screenshot mode, saves `page` as `<dir>/<name>.png` for the README."""
    if SCREENSHOTS:
        Path(SCREENSHOTS).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(SCREENSHOTS) / f"{name}.png"), full_page=True)
