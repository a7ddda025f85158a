"""An axe-core check (axe-playwright-python, axe bundled: nothing fetched) of the main pages in
a real browser: sign-in, the dashboard with a reply, search results and the chat being
edited, the Machine page and the admin view. None may have a serious or critical
violation. Real API and UI servers, the default model."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from axe_playwright_python.sync_playwright import Axe
from playwright.sync_api import Browser, Page, expect

from tests.servers import ApiServer, UiServer
from tests.ui.conftest import CHROMIUM, SHOTS, running_servers
from tests.ui.test_dashboard import User, _chat_id, make_user, sign_in

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="chromium is installed by deploy/local.sh test")
BLOCKING = ("serious", "critical")


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory, models_dir: Path) -> Iterator[tuple[ApiServer, UiServer]]:
    with running_servers(tmp_path_factory.mktemp("ui-axe"), models_dir) as both:
        yield both


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    opened = browser.new_page(viewport={"width": 1280, "height": 900})
    yield opened
    opened.close()


def _blocking(page: Page, name: str) -> list[str]:
    """What axe finds serious or critical on the page as it is now (the full report is kept
    in test-output/ui/axe-<name>.json)."""
    results = Axe().run(page)
    (SHOTS / f"axe-{name}.json").write_text(json.dumps(results.response["violations"], indent=1))
    found: list[dict[str, Any]] = results.response["violations"]
    return [f"{name}: {v['id']} ({v['impact']}) {v['help']}: {[n['target'] for n in v['nodes']][:5]}"
            for v in found if v["impact"] in BLOCKING]


def test_main_pages_have_no_serious_violations(page: Page, servers: tuple[ApiServer, UiServer]) -> None:
    api, ui = servers
    problems: list[str] = []
    page.goto(f"{ui.url}/login")
    expect(page.get_by_label("User name")).to_be_visible(timeout=30_000)
    problems += _blocking(page, "sign-in")

    fay: User = make_user(api, "fay")
    sign_in(page, ui, fay.name, fay.password)
    chat = _chat_id(page)
    httpx.patch(f"{api.url}/chats/{chat}", json={"max_new_tokens": 8, "temperature": 0}, headers=fay.headers)
    page.get_by_role("button", name="Load", exact=True).click()
    expect(page.get_by_role("button", name="Unload", exact=True)).to_be_visible(timeout=60_000)
    box = page.get_by_placeholder("Send a message")
    box.fill("Say hello to the accessibility checker.")
    box.press("Enter")
    expect(page.get_by_text("tokens/s")).to_be_visible(timeout=90_000)
    problems += _blocking(page, "dashboard")

    page.locator(".message-edit button").first.click()
    expect(page.get_by_text("Editing an earlier message")).to_be_visible()
    page.get_by_placeholder("Search chats").fill("accessibility")
    expect(page.locator("mark").first).to_be_visible(timeout=30_000)
    page.screenshot(path=SHOTS / "axe-dashboard.png")
    problems += _blocking(page, "dashboard-search-edit")

    page.goto(f"{ui.url}/machine")
    expect(page.get_by_text("Loaded models")).to_be_visible(timeout=30_000)
    problems += _blocking(page, "machine")

    ada = User("ada", *api.add_user("ada", "admin"))
    page.context.clear_cookies()
    sign_in(page, ui, ada.name, ada.password)
    page.goto(f"{ui.url}/admin")
    expect(page.get_by_text("fay", exact=True).first).to_be_visible(timeout=30_000)
    problems += _blocking(page, "admin")
    assert not problems, "\n".join(problems)
