"""The browser the dashboard tests drive: Debian's chromium through Playwright, one per test module."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, sync_playwright

from runtime.settings import PROJECT_ROOT
from tests.servers import ApiServer, UiServer, survivors

SHOTS = PROJECT_ROOT / "test-output" / "ui"
CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield launched
        launched.close()


@contextlib.contextmanager
def running_servers(home: Path, models_dir: Path, **settings: str) -> Iterator[tuple[ApiServer, UiServer]]:
    """The real API (accounts on, ``settings`` as LLMCHAT_* variables) and the dashboard in
    front of it, on loopback ports; afterwards, no process either of them started is left."""
    api = ApiServer(home, models_dir, **settings)
    api.start(quiet=True)
    ui = UiServer(api.url)
    ui.start(quiet=True)
    try:
        yield api, ui
    finally:
        ui.stop()
        assert not survivors(api.stop())
