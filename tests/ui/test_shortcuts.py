"""The keyboard shortcuts and the draft's token count in a real browser (Debian's chromium
through Playwright) against the real API and UI servers, with the default model."""

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
from tests.ui.test_dashboard import COUNTING, ENDLESS, User, make_user, sign_in

CHAT_ID = re.compile(r"chat_id=(\w+)")
TOKENS = re.compile(r"^([\d,]+) / ([\d,]+) tokens$")

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="chromium is installed by deploy/local.sh test")


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory, models_dir: Path) -> Iterator[tuple[ApiServer, UiServer]]:
    with running_servers(tmp_path_factory.mktemp("shortcuts-api"), models_dir) as both:
        yield both


@pytest.fixture(scope="module")
def typist(servers: tuple[ApiServer, UiServer]) -> User:
    return make_user(servers[0], "typist")


@pytest.fixture
def page(browser: Browser, servers: tuple[ApiServer, UiServer], typist: User) -> Iterator[Page]:
    """Signed in as the typist, in a new chat (no model loaded for it)."""
    opened = browser.new_page(viewport={"width": 1280, "height": 800})
    sign_in(opened, servers[1], typist.name, typist.password)
    opened.wait_for_url(CHAT_ID, timeout=30_000)
    new_chat(opened)
    yield opened
    opened.close()


def chat_id(page: Page) -> str:
    match = CHAT_ID.search(page.url)
    assert match is not None, page.url
    return match.group(1)


def focused(page: Page) -> dict[str, Any] | None:
    """The element with the keyboard focus, looking into the shadow roots Panel draws in."""
    found: dict[str, Any] | None = page.evaluate("""() => {
        let el = document.activeElement
        while (el && el.shadowRoot && el.shadowRoot.activeElement) el = el.shadowRoot.activeElement
        return el && el !== document.body ? {tag: el.tagName, placeholder: el.getAttribute("placeholder")} : null
    }""")
    return found


def history(api: ApiServer, user: User, chat: str) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = httpx.get(f"{api.url}/history", params={"chat_id": chat},
                                               headers=user.headers).json()["messages"]
    return messages


def new_chat(page: Page) -> str:
    before = chat_id(page)
    page.get_by_role("button", name="New chat", exact=True).first.click()
    page.wait_for_url(lambda url: CHAT_ID.search(url) is not None and before not in url, timeout=30_000)
    return chat_id(page)


def load(page: Page) -> None:
    page.get_by_role("button", name="Load", exact=True).click()
    expect(page.get_by_role("button", name="Unload", exact=True)).to_be_visible(timeout=60_000)


def test_ctrl_shift_o_opens_a_new_chat(page: Page, servers: tuple[ApiServer, UiServer], typist: User) -> None:
    api, _ = servers
    first = chat_id(page)
    page.keyboard.press("Control+Shift+O")
    page.wait_for_url(lambda url: CHAT_ID.search(url) is not None and first not in url, timeout=30_000)
    second = chat_id(page)
    assert httpx.get(f"{api.url}/chats/{second}", headers=typist.headers).status_code == 200
    assert focused(page) == {"tag": "TEXTAREA", "placeholder": "Send a message (Shift+Enter: new line)"}


def test_ctrl_k_goes_to_the_chat_search(page: Page) -> None:
    page.keyboard.press("Control+K")
    box = focused(page)
    assert box is not None and box["tag"] == "INPUT" and "Search" in str(box["placeholder"]), box


def test_enter_sends_and_shift_enter_starts_a_line(page: Page, servers: tuple[ApiServer, UiServer], typist: User) -> None:
    api, _ = servers
    chat = chat_id(page)
    httpx.patch(f"{api.url}/chats/{chat}", json={"max_new_tokens": 8, "temperature": 0}, headers=typist.headers)
    box = page.get_by_placeholder("Send a message")
    box.click()
    box.press_sequentially("first line")
    box.press("Shift+Enter")
    box.press_sequentially("second line")
    expect(box).to_have_value("first line\nsecond line")
    assert history(api, typist, chat) == []  # Shift+Enter sent nothing

    box.press("Enter")
    expect(box).to_have_value("")
    expect(page.get_by_text("tokens/s").last).to_be_visible(timeout=90_000)
    question = history(api, typist, chat)[0]
    assert (question["sender"], question["text"]) == ("user", "first line\nsecond line")


def test_escape_stops_the_reply(page: Page, servers: tuple[ApiServer, UiServer], typist: User) -> None:
    api, _ = servers
    chat = chat_id(page)
    httpx.patch(f"{api.url}/chats/{chat}", json={"max_new_tokens": 2000, "temperature": 0}, headers=typist.headers)
    load(page)
    box = page.get_by_placeholder("Send a message")
    box.fill(ENDLESS)
    box.press("Enter")
    expect(page.get_by_text(COUNTING)).to_be_visible(timeout=30_000)
    page.keyboard.press("Escape")
    expect(page.get_by_text(re.compile(r"tokens/s.*stopped"))).to_be_visible(timeout=30_000)
    last = history(api, typist, chat)[-1]
    assert last["status"] == "stopped" and 0 < last["tokens"] < 2000
    page.screenshot(path=SHOTS / "41-stopped-with-esc.png")


def test_the_draft_counted_against_the_context(page: Page, servers: tuple[ApiServer, UiServer], typist: User) -> None:
    api, _ = servers
    chat = chat_id(page)
    counter = page.locator(".draft-tokens")
    box = page.get_by_placeholder("Send a message")
    box.press_sequentially("How many tokens")
    expect(counter).to_have_text("no token count: the model is not loaded", timeout=30_000)

    load(page)  # the counter counts again by itself
    draft = "How many tokens does this draft take?"
    box.press_sequentially(" does this draft take?")
    expected = httpx.post(f"{api.url}/tokens", json={"chat_id": chat, "text": draft}, headers=typist.headers).json()
    expect(counter).to_have_text(f"{expected['tokens']:,} / {expected['context_length']:,} tokens", timeout=30_000)
    match = TOKENS.match(counter.inner_text())
    assert match is not None and 0 < int(match[1].replace(",", "")) < int(match[2].replace(",", ""))
    expect(counter).not_to_have_class(re.compile(r"\bover\b"))
    page.screenshot(path=SHOTS / "42-draft-tokens.png")

    box.fill("")
    expect(counter).to_have_count(0)
