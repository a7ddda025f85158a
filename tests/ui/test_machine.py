"""The Machine page (``/machine``, ui/machine.py) in a real browser (Debian's chromium driven by
Playwright), against the real API and UI servers with accounts on, the default model, and a
sample a second: a user sees the loaded models but not who holds them, an administrator sees
who does, and the tokens/s figure gains points while a reply streams, without a reload.
Screenshots go to ``test-output/ui/``."""

from __future__ import annotations

import json
import math
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Page, ViewportSize, expect

from runtime.default_model import GGUF_NAME
from tests.servers import ApiServer, UiServer
from tests.ui.conftest import CHROMIUM, SHOTS, running_servers
from tests.ui.test_dashboard import User, _everything, make_user, sign_in

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="chromium is installed by deploy/local.sh test")
DESKTOP: ViewportSize = {"width": 1280, "height": 900}
NARROW: ViewportSize = {"width": 390, "height": 844}
TALL: ViewportSize = {"width": 1280, "height": 1400}
ENDLESS = "Continue: 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12,"  # greedy decoding runs to the token limit
# What the page's Bokeh document holds in a figure's source: one line per label.
LINES = """(name) => {
  for (const doc of (window.Bokeh ? window.Bokeh.documents : [])) {
    const source = doc.get_model_by_name(name);
    if (source) {
      return {labels: Array.from(source.data.label), ys: Array.from(source.data.ys, (y) => Array.from(y))};
    }
  }
  return null;
}"""


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory, models_dir: Path) -> Iterator[tuple[ApiServer, UiServer]]:
    with running_servers(tmp_path_factory.mktemp("machine-api"), models_dir, machine_sample_s="1") as both:
        yield both


@pytest.fixture(scope="module")
def ada(servers: tuple[ApiServer, UiServer]) -> User:
    return User("ada", *servers[0].add_user("ada", "admin"))


@pytest.fixture(scope="module")
def bob(servers: tuple[ApiServer, UiServer]) -> User:
    """A user who is not an administrator, whose chat holds the default model."""
    api = servers[0]
    user = make_user(api, "bob")
    httpx.post(f"{api.url}/chats", json={"chat_id": "bobs-chat", "title": "Bob's counting"},
               headers=user.headers).raise_for_status()
    httpx.post(f"{api.url}/load", json={"chat_id": "bobs-chat", "model": GGUF_NAME}, headers=user.headers,
               timeout=120).raise_for_status()
    return user


def _fits(page: Page) -> bool:
    return bool(page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1"))


def _lines(page: Page, name: str) -> dict[str, list[float]]:
    """A figure's lines as the browser has them: label -> values (NaN where nothing was loaded)."""
    found = page.evaluate(LINES, name)
    return {} if found is None else dict(zip(found["labels"], found["ys"], strict=True))


def _open(page: Page, ui: UiServer) -> None:
    page.goto(f"{ui.url}/machine")
    expect(page.locator("table.machine-models")).to_contain_text(GGUF_NAME, timeout=30_000)


def test_a_user_sees_the_machine_but_not_who_holds_what(
    browser: Browser, servers: tuple[ApiServer, UiServer], ada: User, bob: User
) -> None:
    ui = servers[1]
    page = browser.new_page(viewport=DESKTOP)
    try:
        sign_in(page, ui, bob.name, bob.password)
        expect(page.get_by_role("link", name="Admin")).to_have_count(0)
        page.get_by_role("link", name="Machine").click()
        page.wait_for_url(f"{ui.url}/machine", timeout=30_000)
        table = page.locator("table.machine-models")
        expect(table).to_contain_text(GGUF_NAME, timeout=30_000)
        row = table.locator("tbody tr").filter(has_text=GGUF_NAME)
        expect(row).to_contain_text("llama.cpp")
        expect(row).to_contain_text("auto (runs on cpu)")
        expect(row).to_contain_text("MB RAM")
        expect(row).to_contain_text("0 of ")
        expect(page.get_by_role("columnheader", name="Memory")).to_be_visible()
        expect(page.get_by_role("columnheader", name="Held by")).to_have_count(0)
        expect(page.get_by_role("link", name="Chats")).to_be_visible()
        expect(page.get_by_role("link", name="Admin")).to_have_count(0)
        page.wait_for_function(f"() => ({LINES})('machine-memory') !== null", timeout=30_000)
        memory = _lines(page, "machine-memory")
        assert list(memory) == [f"{GGUF_NAME} (RAM)"] and memory[f"{GGUF_NAME} (RAM)"][-1] > 100
        expect(page.locator(".machine-memory-now")).to_contain_text(f"{GGUF_NAME} (RAM)")
        page.screenshot(path=SHOTS / "40-machine-user.png", full_page=True)
        everything = _everything(page)
        for hidden in ("bobs-chat", "Bob&#x27;s counting", "Bob's counting", "Held by", "tester", "ada"):
            assert not re.search(rf"\b{re.escape(hidden)}\b", everything), hidden  # for administrators only

        page.set_viewport_size(NARROW)
        # The header row is hidden on a phone: each cell says what it is.
        expect(row.locator(".label", has_text="Memory:")).to_be_visible()
        page.screenshot(path=SHOTS / "41-machine-user-narrow.png", full_page=True)
        assert _fits(page)
    finally:
        page.close()


def test_an_administrator_sees_who_holds_each_model(
    browser: Browser, servers: tuple[ApiServer, UiServer], ada: User, bob: User
) -> None:
    ui = servers[1]
    page = browser.new_page(viewport=NARROW)
    try:
        sign_in(page, ui, ada.name, ada.password)
        for link in ("Machine", "Admin"):  # both in the header of a phone-sized dashboard
            expect(page.get_by_role("link", name=link)).to_be_visible()
        page.screenshot(path=SHOTS / "46-machine-link-narrow.png")
        assert _fits(page), page.evaluate("document.documentElement.scrollWidth")
        page.get_by_role("link", name="Machine").click()
        page.wait_for_url(f"{ui.url}/machine", timeout=30_000)
        row = page.locator("table.machine-models tbody tr").filter(has_text=GGUF_NAME)
        expect(row.locator(".label", has_text="Held by:")).to_be_visible(timeout=30_000)
        holders = row.locator("ul.holders")
        expect(holders).to_contain_text("bob")
        expect(holders).to_contain_text("Bob's counting")
        page.screenshot(path=SHOTS / "42-machine-admin-narrow.png", full_page=True)
        assert _fits(page)
        page.set_viewport_size(DESKTOP)
        expect(page.get_by_role("columnheader", name="Held by")).to_be_visible()
        expect(page.get_by_role("link", name="Admin")).to_be_visible()
        page.screenshot(path=SHOTS / "43-machine-admin.png", full_page=True)
    finally:
        page.close()


class _Reply(threading.Thread):
    """A streamed /chat reply, read to its end in the background."""

    def __init__(self, api: ApiServer, chat_id: str) -> None:
        super().__init__(daemon=True)
        self.api, self.chat_id = api, chat_id
        self.first_token = threading.Event()
        self.finished = threading.Event()
        self.tokens = 0
        self.failure: BaseException | None = None

    def run(self) -> None:
        try:
            with httpx.stream("POST", f"{self.api.url}/chat", headers=self.api.headers, timeout=120,
                              json={"chat_id": self.chat_id, "message": ENDLESS, "stream": True}) as response:
                response.raise_for_status()
                event = ""
                for line in response.iter_lines():
                    if line.startswith("event: "):
                        event = line[len("event: "):]
                    elif line.startswith("data: ") and event == "token":
                        self.tokens += 1
                        self.first_token.set()
                    elif line.startswith("data: ") and event == "error":
                        raise AssertionError(json.loads(line[len("data: "):]))
        except BaseException as exc:  # noqa: BLE001 - the test thread reports it
            self.failure = exc
        finally:
            self.finished.set()


def _positive(values: list[float]) -> int:
    return sum(1 for v in values if not math.isnan(v) and v > 0)


def test_the_plot_gains_points_while_a_reply_streams(
    browser: Browser, servers: tuple[ApiServer, UiServer], ada: User
) -> None:
    api, ui = servers
    httpx.post(f"{api.url}/chats", json={"chat_id": "streaming", "max_new_tokens": 400, "temperature": 0},
               headers=api.headers).raise_for_status()
    httpx.post(f"{api.url}/load", json={"chat_id": "streaming", "model": GGUF_NAME}, headers=api.headers,
               timeout=120).raise_for_status()
    page = browser.new_page(viewport=DESKTOP)
    reply = _Reply(api, "streaming")
    try:
        sign_in(page, ui, ada.name, ada.password)
        _open(page, ui)
        page.wait_for_function(f"() => ({LINES})('machine-tokens') !== null", timeout=30_000)
        time.sleep(3)  # a few idle samples first: the line is there, and flat
        before = _lines(page, "machine-tokens")[GGUF_NAME]
        assert _positive(before) == 0, before  # nothing has streamed on this server yet
        url = page.url

        reply.start()
        assert reply.first_token.wait(120), reply.failure
        seen: list[float] = before
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not reply.finished.is_set():
            seen = _lines(page, "machine-tokens")[GGUF_NAME]
            if len(seen) > len(before) and _positive(seen) >= 2:
                break
            time.sleep(0.2)
        still_streaming = not reply.finished.is_set()
        assert len(seen) > len(before) and _positive(seen) >= 2, (before, seen, reply.failure)
        assert still_streaming, "the reply ended before the figure showed it"
        expect(page.locator(".machine-tokens-now")).to_contain_text("tokens/s")
        page.set_viewport_size(TALL)  # the three figures at once
        page.screenshot(path=SHOTS / "44-machine-streaming.png")
        assert page.url == url  # the same page, no reload

        # Stopped (no need to wait for the token limit): the samples after it say 0 tokens/s again.
        httpx.post(f"{api.url}/chats/streaming/stop", headers=api.headers).raise_for_status()
        assert reply.finished.wait(60)
        assert reply.failure is None, reply.failure
        deadline = time.monotonic() + 20
        after = _lines(page, "machine-tokens")[GGUF_NAME]
        while time.monotonic() < deadline and not (len(after) > len(seen) and after[-1] == 0):
            time.sleep(0.2)
            after = _lines(page, "machine-tokens")[GGUF_NAME]
        assert len(after) > len(seen) and after[-1] == 0, after[-5:]
        assert page.url == url
        page.screenshot(path=SHOTS / "45-machine-after-reply.png", full_page=True)
    finally:
        reply.join(60)
        page.close()
