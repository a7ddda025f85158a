"""The dashboard's sidebar in a real browser (Debian's chromium driven by Playwright) against
the real API and UI servers: search, the chat list grouped by date and paged on scroll, and
export and import. Each test signs in as a user of its own, made with the real CLI.
Screenshots go to ``test-output/ui/``."""

from __future__ import annotations

import io
import json
import re
import sqlite3
import zipfile
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect

from runtime.default_model import GGUF_NAME
from tests.servers import ApiServer, UiServer
from tests.ui.conftest import CHROMIUM, SHOTS, running_servers
from tests.ui.test_dashboard import User, make_user, sign_in

CHAT_ID = re.compile(r"chat_id=(\w+)")
ROWS = ".chat-list button.chat"  # the chat list's rows (Playwright's CSS enters shadow roots)
# The browser's time zone in these tests: far from UTC (and from the servers' zone), so that
# grouping by the server's calendar instead of the browser's would show.
BROWSER_ZONE = "Pacific/Kiritimati"  # UTC+14

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="chromium is installed by deploy/local.sh test")


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory, models_dir: Path) -> Iterator[tuple[ApiServer, UiServer]]:
    with running_servers(tmp_path_factory.mktemp("sidebar-api"), models_dir) as both:
        yield both


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 800}, timezone_id=BROWSER_ZONE,
                                  accept_downloads=True)
    opened = context.new_page()
    yield opened
    context.close()


def _chat_id(page: Page) -> str:
    page.wait_for_url(CHAT_ID, timeout=30_000)
    match = CHAT_ID.search(page.url)
    assert match is not None
    return match.group(1)


def _new_chat(page: Page) -> str:
    before = page.url
    page.get_by_role("button", name="New chat", exact=True).first.click()
    page.wait_for_function("u => location.href !== u", arg=before, timeout=30_000)
    return _chat_id(page)


def _say(page: Page, api: ApiServer, user: User, chat: str, text: str) -> None:
    """Type a message into the open chat and wait for its (short) reply."""
    httpx.patch(f"{api.url}/chats/{chat}", json={"max_new_tokens": 4, "temperature": 0},
                headers=user.headers).raise_for_status()
    page.wait_for_timeout(300)  # the dashboard has drawn the chat it opened
    box = page.get_by_placeholder("Send a message")
    box.fill(text)
    box.press("Enter")
    expect(page.locator(".chat-feed-log").get_by_text("tokens/s").last).to_be_visible(timeout=90_000)


def _history(api: ApiServer, user: User, chat: str) -> list[dict[str, object]]:
    return httpx.get(f"{api.url}/history", params={"chat_id": chat}, headers=user.headers).json()["messages"]  # type: ignore[no-any-return]


def _set_updated_at(api: ApiServer, times: dict[str, datetime]) -> None:
    """Give chats another last-activity time, straight in the database (the API has no way to)."""
    with sqlite3.connect(api.env["LLMCHAT_DB_URL"]) as db:
        db.executemany('UPDATE "chats" SET "updated_at" = ? WHERE "id" = ?',
                       [(when.astimezone(UTC).isoformat(sep=" ", timespec="microseconds"), chat)
                        for chat, when in times.items()])


def _list_text(page: Page) -> list[str]:
    """The chat list's headings and rows, in order, as the browser shows them."""
    return [text.strip() for text in page.locator(".chat-list .chats > *").all_text_contents()]


def test_search_finds_a_word_typed_three_chats_ago(page: Page, servers: tuple[ApiServer, UiServer]) -> None:
    api, ui = servers
    sam = make_user(api, "sam")
    sign_in(page, ui, sam.name, sam.password)
    first = _chat_id(page)
    _say(page, api, sam, first, "Remember that my cat is called Quokkaberry.")
    for topic in ("the weather in Lisbon", "a recipe for bread", "the train timetable"):
        _say(page, api, sam, _new_chat(page), f"Tell me about {topic}.")
    third = _chat_id(page)
    expect(page.locator(ROWS)).to_have_count(4)

    page.keyboard.press("Control+k")  # the search box, from anywhere on the page
    search = page.get_by_placeholder("Search chats (Ctrl+K)")
    expect(search).to_be_focused()
    page.keyboard.type("quokkab", delay=40)  # results as you type: the start of a word finds it
    result = page.locator(".chat-list button.result")
    expect(result).to_have_count(1, timeout=15_000)
    expect(result.locator("mark")).to_have_text(re.compile(r"^Quokkaberry$", re.IGNORECASE))
    expect(result).to_contain_text("You: Remember that my cat is called")
    expect(page.locator(ROWS).first).to_be_hidden()  # the results stand in for the list
    page.screenshot(path=SHOTS / "sidebar-search.png")

    result.click()
    expect(page).to_have_url(re.compile(f"chat_id={first}"), timeout=30_000)
    assert _chat_id(page) != third
    expect(page.locator(".chat-feed-log").get_by_text("my cat is called Quokkaberry")).to_be_in_viewport(timeout=30_000)

    search.press("Escape")  # clears the search: the list again
    expect(search).to_have_value("")
    expect(page.locator(ROWS)).to_have_count(4, timeout=15_000)
    expect(result).to_have_count(0)
    expect(page.locator(".chat-list button.chat.current")).to_contain_text("Quokkaberry")

    search.fill("")
    search.press_sequentially("zanzibarian", delay=20)
    expect(page.locator(".chat-list").get_by_text("No chats match “zanzibarian”.")).to_be_visible(timeout=15_000)
    search.fill("")
    expect(page.locator(ROWS)).to_have_count(4, timeout=15_000)


def test_chats_are_grouped_by_date_in_compact_rows(browser: Browser, page: Page,
                                                     servers: tuple[ApiServer, UiServer]) -> None:
    api, ui = servers
    gina = make_user(api, "gina")
    titles = ["Fresh today", "From yesterday", "Earlier this week", "Long ago"]
    ids = {t: httpx.post(f"{api.url}/chats", json={"title": t}, headers=gina.headers).json()["chat_id"] for t in titles}
    now = datetime.now(ZoneInfo(BROWSER_ZONE))
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
    _set_updated_at(api, {ids["From yesterday"]: midnight - timedelta(hours=1),  # late yesterday, browser time
                          ids["Earlier this week"]: midnight - timedelta(days=3, hours=12),
                          ids["Long ago"]: midnight - timedelta(days=40)})

    sign_in(page, ui, gina.name, gina.password)
    expect(page.locator(ROWS)).to_have_count(4, timeout=30_000)
    assert _list_text(page) == ["Today", "Fresh today", "Yesterday", "From yesterday", "Previous 7 days",
                                "Earlier this week", "Older", "Long ago"]
    heights = [box["height"] for box in (r.bounding_box() for r in page.locator(ROWS).all()) if box is not None]
    assert heights and max(heights) <= 36, heights  # compact: about 32 px a chat, not 100
    expect(page.locator(".chat-list button.chat.current")).to_have_text("Fresh today")
    page.screenshot(path=SHOTS / "sidebar-groups.png")

    narrow = browser.new_context(viewport={"width": 390, "height": 844}, timezone_id=BROWSER_ZONE)
    phone = narrow.new_page()
    try:
        sign_in(phone, ui, gina.name, gina.password)
        _chat_id(phone)
        phone.locator("#sidebar-button").click()  # the template's menu button opens the drawer
        expect(phone.locator(ROWS).first).to_be_visible(timeout=30_000)
        phone.mouse.move(375, 600)  # off the menu button, whose tooltip would cover the header
        phone.wait_for_timeout(500)
        phone.screenshot(path=SHOTS / "sidebar-narrow.png")
        drawer = phone.locator("#sidebar").bounding_box()
        assert drawer is not None and drawer["x"] >= 0 and drawer["x"] + drawer["width"] <= 390, drawer
        for row in phone.locator(ROWS).all():  # rows fit the drawer (long titles are cut, not wider)
            box = row.bounding_box()
            assert box is not None and box["x"] + box["width"] <= drawer["x"] + drawer["width"], box
    finally:
        narrow.close()


def test_the_list_loads_more_on_scroll(page: Page, servers: tuple[ApiServer, UiServer]) -> None:
    api, ui = servers
    hank = make_user(api, "hank")
    with httpx.Client(base_url=api.url, headers=hank.headers) as client:
        for n in range(1, 131):
            client.post("/chats", json={"title": f"Chat {n:03}"}).raise_for_status()

    sign_in(page, ui, hank.name, hank.password)
    rows = page.locator(ROWS)
    expect(rows).to_have_count(50, timeout=30_000)  # the first page only
    expect(rows.first).to_have_text("Chat 130")
    page.wait_for_timeout(1000)
    expect(rows).to_have_count(50)  # nothing more until the list is scrolled

    rows.nth(5).hover()
    page.mouse.wheel(0, 3000)  # to the end of the first page (50 rows are about 1,700 px)
    expect(rows).to_have_count(100, timeout=15_000)
    page.wait_for_timeout(1000)
    expect(rows).to_have_count(100)  # one page per time the end is reached
    expect(page.locator(".chat-list").get_by_role("button", name="Chat 031", exact=True)).to_be_attached()

    more = page.get_by_role("button", name="Show more")
    expect(more).to_be_visible()
    more.click()
    expect(rows).to_have_count(130, timeout=15_000)
    expect(rows.last).to_have_text("Chat 001")
    expect(more).to_be_hidden()
    titles = [t.strip() for t in rows.all_inner_texts()]
    assert titles == [f"Chat {n:03}" for n in range(130, 0, -1)]  # newest first, none twice


def test_export_then_import_gives_the_same_chat(page: Page, servers: tuple[ApiServer, UiServer],
                                               tmp_path: Path) -> None:
    api, ui = servers
    ivy = make_user(api, "ivy")
    with httpx.Client(base_url=api.url, headers=ivy.headers, timeout=120) as client:
        chat = client.post("/chats", json={"title": "Ivy's garden", "max_new_tokens": 6, "temperature": 0}).json()["chat_id"]
        for text in ("Which roses climb well?", "And which ones smell the best?"):
            client.post("/chat", params={"model": GGUF_NAME, "device": "cpu"},
                        json={"chat_id": chat, "message": text}).raise_for_status()
        client.post("/unload", json={"chat_id": chat}).raise_for_status()
    original = _history(api, ivy, chat)

    sign_in(page, ui, ivy.name, ivy.password)
    page.goto(f"{ui.url}/?chat_id={chat}")
    expect(page.locator(".chat-feed-log").get_by_text("Which roses climb well?")).to_be_visible(timeout=30_000)
    page.get_by_text("Export / import").click()

    with page.expect_download(timeout=30_000) as markdown:
        page.get_by_role("button", name="Markdown").click()
    text = Path(markdown.value.path()).read_text()
    assert markdown.value.suggested_filename.endswith(".md")
    assert "Ivy's garden" in text and "Which roses climb well?" in text and "And which ones smell the best?" in text

    with page.expect_download(timeout=30_000) as everything:
        page.get_by_role("button", name="All chats (.zip)").click()
    with zipfile.ZipFile(io.BytesIO(Path(everything.value.path()).read_bytes())) as archive:
        assert "chats.json" in archive.namelist()
        assert [c["title"] for c in json.loads(archive.read("chats.json"))["chats"]] == ["Ivy's garden"]

    with page.expect_download(timeout=30_000) as exported:
        page.get_by_role("button", name="JSON", exact=True).click()
    saved = tmp_path / exported.value.suggested_filename
    exported.value.save_as(saved)
    assert saved.suffix == ".json"

    page.locator(".chat-import input[type=file]").set_input_files(saved)
    expect(page.locator(".import-result")).to_contain_text("Imported 1 chat: “Ivy's garden”.", timeout=30_000)
    page.wait_for_function("c => !location.href.includes(c)", arg=chat, timeout=30_000)  # it opens
    copy = _chat_id(page)
    assert copy != chat
    expect(page.locator(".chat-feed-log").get_by_text("And which ones smell the best?")).to_be_visible(timeout=30_000)
    page.screenshot(path=SHOTS / "sidebar-imported.png")

    imported = _history(api, ivy, copy)
    assert [(m["sender"], m["text"], m["status"], m.get("model")) for m in imported] == \
           [(m["sender"], m["text"], m["status"], m.get("model")) for m in original]
    titles = [c["title"] for c in httpx.get(f"{api.url}/chats", headers=ivy.headers).json()["chats"]]
    assert sorted(titles) == ["Ivy's garden", "Ivy's garden"]


def test_a_malformed_import_says_what_is_wrong(page: Page, servers: tuple[ApiServer, UiServer]) -> None:
    api, ui = servers
    jo = make_user(api, "jo")
    bad = json.dumps({"format": "llmchat.chats", "version": 1, "chats": [{"title": "No messages field"}]}).encode()
    not_json = b"my shopping list"
    details = []
    for body in (bad, not_json):
        refused = httpx.post(f"{api.url}/chats/import", content=body,
                             headers={**jo.headers, "Content-Type": "application/json"})
        assert refused.status_code == 400
        details.append(refused.json()["detail"])
    assert details[0] != details[1]

    sign_in(page, ui, jo.name, jo.password)
    _chat_id(page)
    page.get_by_text("Export / import").click()
    upload = page.locator(".chat-import input[type=file]")
    upload.set_input_files({"name": "broken.json", "mimeType": "application/json", "buffer": bad})
    note = page.locator(".import-result")
    expect(note).to_contain_text(f"Import refused: {details[0]}", timeout=30_000)
    page.screenshot(path=SHOTS / "sidebar-import-refused.png")

    upload.set_input_files({"name": "notes.json", "mimeType": "application/json", "buffer": not_json})
    expect(note).to_contain_text(f"Import refused: {details[1]}", timeout=30_000)
    assert [c["title"] for c in httpx.get(f"{api.url}/chats", headers=jo.headers).json()["chats"]] == ["New chat"]
