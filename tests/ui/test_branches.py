"""Edit and regenerate in a real browser, against the real API and UI servers and the default
model: editing a question and sending it again starts a branch, ‹ › switch between the
versions, and Regenerate keeps the earlier reply as a version too. Screenshots go to
``test-output/ui/``."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect

from tests.servers import ApiServer, UiServer
from tests.ui.conftest import CHROMIUM, SHOTS, running_servers
from tests.ui.test_dashboard import User, _chat_id, _new_chat, make_user, sign_in

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="chromium is installed by deploy/local.sh test")


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory, models_dir: Path) -> Iterator[tuple[ApiServer, UiServer]]:
    with running_servers(tmp_path_factory.mktemp("ui-branches"), models_dir) as both:
        yield both


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    opened = browser.new_page(viewport={"width": 1280, "height": 900})
    yield opened
    opened.close()


def _shown(api: ApiServer, user: User, chat: str) -> list[dict[str, Any]]:
    return list(httpx.get(f"{api.url}/history", params={"chat_id": chat}, headers=user.headers).json()["messages"])


def _replies_done(page: Page, count: int) -> None:
    expect(page.get_by_text("tokens/s")).to_have_count(count, timeout=90_000)


def test_edit_branch_switch_and_regenerate(page: Page, servers: tuple[ApiServer, UiServer]) -> None:
    api, ui = servers
    carol = make_user(api, "carol")
    sign_in(page, ui, carol.name, carol.password)
    _chat_id(page)
    chat = _new_chat(page)
    httpx.patch(f"{api.url}/chats/{chat}", json={"max_new_tokens": 12, "temperature": 0}, headers=carol.headers)
    page.get_by_role("button", name="Load", exact=True).click()
    expect(page.get_by_role("button", name="Unload", exact=True)).to_be_visible(timeout=60_000)
    box = page.get_by_placeholder("Send a message")
    box.fill("Name a colour.")
    box.press("Enter")
    _replies_done(page, 1)
    expect(page.locator(".version-count")).to_have_count(0)  # one version of everything so far

    # Edit the question: it goes into the box; sending it forks the chat there.
    page.locator(".message-edit button").first.click()
    expect(box).to_have_value("Name a colour.")
    expect(page.get_by_text("Editing an earlier message")).to_be_visible()
    box.fill("Name a fruit.")
    box.press("Enter")
    _replies_done(page, 1)
    expect(page.locator(".version-count").first).to_have_text("2/2", timeout=30_000)
    transcript = page.locator("#main")  # the sidebar keeps the chat's first question as its title
    expect(transcript.get_by_text("Name a fruit.", exact=True)).to_be_visible()
    expect(transcript.get_by_text("Name a colour.", exact=True)).to_have_count(0)
    shown = _shown(api, carol, chat)
    assert [m["text"] for m in shown][:1] == ["Name a fruit."] and len(shown[0]["siblings"]) == 2
    page.screenshot(path=SHOTS / "branch-edited.png")

    # ‹ goes back to the first version, with its own reply.
    page.locator(".version-previous button").first.click()
    expect(page.locator(".version-count").first).to_have_text("1/2", timeout=30_000)
    expect(transcript.get_by_text("Name a colour.", exact=True)).to_be_visible()
    expect(transcript.get_by_text("Name a fruit.", exact=True)).to_have_count(0)
    assert _shown(api, carol, chat)[0]["text"] == "Name a colour."
    page.reload()  # the branch shown is the chat's, not the page's
    expect(page.locator(".version-count").first).to_have_text("1/2", timeout=30_000)

    # Regenerate: a second version of the reply, the first kept.
    first_reply = _shown(api, carol, chat)[1]
    page.locator(".message-regenerate button").click()
    expect(page.locator(".version-count")).to_have_count(2, timeout=90_000)  # the question's and the reply's
    expect(page.locator(".version-count").last).to_have_text("2/2")
    _replies_done(page, 1)
    reply = _shown(api, carol, chat)[1]
    assert reply["id"] != first_reply["id"] and reply["siblings"] == [first_reply["id"], reply["id"]]
    page.screenshot(path=SHOTS / "branch-regenerated.png")
    page.locator(".version-previous button").last.click()
    expect(page.locator(".version-count").last).to_have_text("1/2", timeout=30_000)
    assert _shown(api, carol, chat)[1]["id"] == first_reply["id"]
    assert re.search(r"\d+ tokens", page.get_by_text("tokens/s").inner_text())
