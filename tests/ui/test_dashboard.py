"""The dashboard in a real browser (Debian's chromium driven by Playwright) against the real
API and UI servers on loopback ports, with the default model. Screenshots go to
``test-output/ui/``."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from runtime.builds import BuildRecorder
from runtime.default_model import GGUF_NAME
from runtime.settings import PROJECT_ROOT
from tests.servers import ApiServer, UiServer, survivors

SHOTS = PROJECT_ROOT / "test-output" / "ui"
CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]
ENDLESS = "Continue: 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12,"
COUNTING = re.compile(r"^\d+, \d+, \d+, \d+")
CHAT_ID = re.compile(r"chat_id=(\w+)")
LIMIT = 2000  # the API's longest message in these tests

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="chromium is installed by deploy/local.sh test")


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory, models_dir: Path) -> Iterator[tuple[ApiServer, UiServer]]:
    # Local mode: the dashboard does not sign in yet (issue 12, a later slice).
    api = ApiServer(tmp_path_factory.mktemp("ui-api"), models_dir, auth="off", max_message_chars=str(LIMIT))
    api.start(quiet=True)
    ui = UiServer(api.url)
    ui.start(quiet=True)
    yield api, ui
    ui.stop()
    assert not survivors(api.stop())


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    opened = browser.new_page(viewport={"width": 1280, "height": 800})
    yield opened
    opened.close()


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


def _reply_lengths_while_streaming(page: Page, timeout_s: float = 60) -> list[int]:
    lengths: list[int] = []
    reply = page.get_by_text(COUNTING)  # the prompt starts with "Continue:", so only the reply matches
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if reply.count():
            lengths.append(len(reply.last.inner_text()))
        if page.get_by_text("tokens/s").count():
            return lengths
        time.sleep(0.1)
    raise AssertionError("the reply never finished")


def test_chat_flow_in_the_browser(page: Page, servers: tuple[ApiServer, UiServer]) -> None:
    api, ui = servers
    page.goto(ui.url)
    first = _chat_id(page)  # a fresh UI opens a new chat and puts its id in the URL
    page.screenshot(path=SHOTS / "01-new-chat.png")

    # Per-chat settings through the settings card.
    page.get_by_text("Chat settings").click()
    page.get_by_label("System prompt").fill("You count numbers.")
    page.get_by_role("button", name="Save settings").click()
    expect(page.get_by_text("Settings saved")).to_be_visible(timeout=10_000)
    assert httpx.get(f"{api.url}/chats/{first}").json()["system_prompt"] == "You count numbers."
    httpx.patch(f"{api.url}/chats/{first}", json={"max_new_tokens": 96, "temperature": 0})

    # Load: the toggle shows the loading state, then the load time.
    page.get_by_role("button", name="Load", exact=True).click()
    expect(page.get_by_role("button", name="Unload", exact=True)).to_be_visible(timeout=60_000)
    expect(page.get_by_text(re.compile(r"Loaded .* in \d+\.\d+ s"))).to_be_visible()
    assert httpx.get(f"{api.url}/status", params={"chat_id": first}).json()["loaded"] is True

    # Send: the reply streams in, then its tokens, time and tokens/s appear.
    box = page.get_by_placeholder("Send a message")
    box.fill(ENDLESS)
    box.press("Enter")
    lengths = _reply_lengths_while_streaming(page)
    assert len(set(lengths)) >= 3 and lengths == sorted(lengths), lengths
    footer = page.get_by_text("tokens/s").last.inner_text()
    assert re.search(r"96 tokens · \d+\.\d+ s · \d+\.\d tokens/s", footer), footer
    expect(page.get_by_text(re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d")).first).to_be_visible()
    page.screenshot(path=SHOTS / "02-reply.png")

    # Hard refresh keeps the chat, its history and the real loaded state.
    page.reload()
    assert _chat_id(page) == first
    expect(page.get_by_text("tokens/s").last).to_be_visible(timeout=30_000)
    expect(page.get_by_text(ENDLESS).first).to_be_visible()
    expect(page.get_by_role("button", name="Unload", exact=True)).to_be_visible()
    page.screenshot(path=SHOTS / "03-after-reload.png")

    # Unload: the toggle changes back and the process is gone.
    page.get_by_role("button", name="Unload", exact=True).click()
    expect(page.get_by_role("button", name="Load", exact=True)).to_be_visible(timeout=30_000)
    expect(page.get_by_text("process has exited")).to_be_visible()
    assert httpx.get(f"{api.url}/status", params={"chat_id": first}).json()["loaded"] is False

    # A second chat, then back to the first one from the sidebar.
    second = _new_chat(page)
    assert second != first
    expect(page.get_by_text("tokens/s")).to_have_count(0)
    expect(page.get_by_role("button", name="New chat", exact=True)).to_have_count(2)  # the list shows it
    page.get_by_role("button", name=re.compile(r"^(● )?Continue: 1, 2")).click()
    expect(page).to_have_url(re.compile(first), timeout=30_000)
    expect(page.get_by_text("tokens/s").last).to_be_visible(timeout=30_000)
    page.screenshot(path=SHOTS / "04-two-chats.png")


def test_stop_keeps_the_partial_reply(page: Page, servers: tuple[ApiServer, UiServer]) -> None:
    api, ui = servers
    page.goto(ui.url)
    _chat_id(page)
    chat = _new_chat(page)
    httpx.patch(f"{api.url}/chats/{chat}", json={"max_new_tokens": 2000, "temperature": 0})
    page.get_by_role("button", name="Load", exact=True).click()
    expect(page.get_by_role("button", name="Unload", exact=True)).to_be_visible(timeout=60_000)
    box = page.get_by_placeholder("Send a message")
    box.fill(ENDLESS)
    box.press("Enter")
    expect(page.get_by_text(COUNTING)).to_be_visible(timeout=30_000)
    page.get_by_role("button", name="Stop").click()
    expect(page.get_by_text(re.compile(r"tokens/s.*stopped"))).to_be_visible(timeout=30_000)
    last = httpx.get(f"{api.url}/history", params={"chat_id": chat}).json()["messages"][-1]
    assert last["status"] == "stopped" and 0 < last["tokens"] < 2000
    page.screenshot(path=SHOTS / "05-stopped.png")


def test_a_refused_message_goes_back_into_the_box(page: Page, servers: tuple[ApiServer, UiServer]) -> None:
    api, ui = servers
    page.goto(ui.url)
    _chat_id(page)
    chat = _new_chat(page)
    too_long = "word " * (LIMIT // 5 + 1)
    box = page.get_by_placeholder("Send a message")
    box.fill(too_long)
    box.press("Enter")
    expect(page.get_by_text("it is back in the message box")).to_be_visible(timeout=60_000)
    expect(box).to_have_value(too_long)
    expect(page.get_by_text(too_long.strip()[:40])).to_have_count(0)  # not in the transcript
    assert httpx.get(f"{api.url}/history", params={"chat_id": chat}).json()["messages"] == []
    page.screenshot(path=SHOTS / "09-refused.png")


def test_unknown_chat_id_offers_a_new_chat(page: Page, servers: tuple[ApiServer, UiServer]) -> None:
    _, ui = servers
    page.goto(f"{ui.url}/?chat_id=no-such-chat")
    expect(page.get_by_text("There is no chat with id")).to_be_visible(timeout=30_000)
    page.screenshot(path=SHOTS / "06-unknown-chat.png")
    page.get_by_role("button", name="Start a new chat").click()
    page.wait_for_function("() => !location.href.includes('no-such-chat')", timeout=30_000)
    expect(page.get_by_text("There is no chat with id")).to_be_hidden()


def test_narrow_window_stays_readable(browser: Browser, servers: tuple[ApiServer, UiServer]) -> None:
    _, ui = servers
    narrow = browser.new_page(viewport={"width": 390, "height": 844})
    try:
        narrow.goto(ui.url)
        _chat_id(narrow)
        expect(narrow.get_by_role("button", name="Load", exact=True)).to_be_visible(timeout=30_000)
        narrow.screenshot(path=SHOTS / "07-narrow.png", full_page=True)
        assert narrow.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")
    finally:
        narrow.close()


def test_empty_models_folder_says_what_to_do(browser: Browser, tmp_path: Path) -> None:
    (tmp_path / "empty-models").mkdir()
    api = ApiServer(tmp_path, tmp_path / "empty-models", auth="off")
    api.start(quiet=True)
    ui = UiServer(api.url)
    ui.start(quiet=True)
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    try:
        page.goto(ui.url)
        expect(page.get_by_text("No models found")).to_be_visible(timeout=30_000)
        expect(page.get_by_text(".gguf").first).to_be_visible()
        page.screenshot(path=SHOTS / "08-no-models.png")

        # A background build (this test process plays the builder) shows while it runs.
        builds = BuildRecorder(tmp_path / "empty-models", ["gemma-3-270m", "gemma-3-270m-onnx"])
        builds.building("gemma-3-270m", "dequantising the GGUF")
        page.reload()
        expect(page.get_by_text("Being prepared in the background")).to_be_visible(timeout=30_000)
        expect(page.get_by_text(re.compile(r"gemma-3-270m: building \(dequantising the GGUF"))).to_be_visible()
        expect(page.get_by_text(re.compile(r"gemma-3-270m-onnx: queued"))).to_be_visible()
        expect(page.get_by_text("No models found")).to_be_hidden()
        page.screenshot(path=SHOTS / "10-preparing.png")
        builds.failed("gemma-3-270m", "out of disk space")  # the page looks again by itself
        expect(page.get_by_text(re.compile(r"failed .*out of disk space"))).to_be_visible(timeout=15_000)
    finally:
        page.close()
        ui.stop()
        api.stop()


def test_default_model_is_offered(servers: tuple[ApiServer, UiServer]) -> None:
    api, _ = servers
    assert GGUF_NAME in {m["name"] for m in httpx.get(f"{api.url}/models").json()["models"]}
