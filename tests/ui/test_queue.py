"""Waiting for a slot, in a real browser: with the model busy (one slot, LLMCHAT_PARALLEL=1)
a second chat's reply says where it stands in line, then streams; Stop takes it out of the
line. Real API and UI servers, the default model."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect

from runtime.default_model import GGUF_NAME
from tests.servers import ApiServer, UiServer
from tests.ui.conftest import CHROMIUM, SHOTS, running_servers
from tests.ui.test_dashboard import ENDLESS, User, _chat_id, _new_chat, make_user, sign_in

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="chromium is installed by deploy/local.sh test")


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory, models_dir: Path) -> Iterator[tuple[ApiServer, UiServer]]:
    with running_servers(tmp_path_factory.mktemp("ui-queue"), models_dir, parallel="1") as both:
        yield both


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    opened = browser.new_page(viewport={"width": 1280, "height": 900})
    yield opened
    opened.close()


def _busy(api: ApiServer, user: User, tokens: int) -> tuple[threading.Thread, str]:
    """Another chat of the user's, answering a long reply on the one slot (in a thread)."""
    chat = httpx.post(f"{api.url}/chats", json={"max_new_tokens": tokens, "temperature": 0}, headers=user.headers).json()
    loaded = httpx.post(f"{api.url}/load", json={"chat_id": chat["chat_id"], "model": GGUF_NAME},
                        headers=user.headers, timeout=120)
    assert loaded.status_code == 200, loaded.text
    started = threading.Event()

    def answer() -> None:
        with httpx.stream("POST", f"{api.url}/chat", json={"chat_id": chat["chat_id"], "message": ENDLESS, "stream": True},
                          headers=user.headers, timeout=300) as response:
            for line in response.iter_lines():
                if line.startswith("event: token"):
                    started.set()
        started.set()

    worker = threading.Thread(target=answer, daemon=True)
    worker.start()
    assert started.wait(60), "the long reply never started"
    return worker, chat["chat_id"]


def test_a_waiting_reply_shows_its_place_then_streams(page: Page, servers: tuple[ApiServer, UiServer]) -> None:
    api, ui = servers
    dana = make_user(api, "dana")
    sign_in(page, ui, dana.name, dana.password)
    _chat_id(page)
    chat = _new_chat(page)
    httpx.patch(f"{api.url}/chats/{chat}", json={"max_new_tokens": 8, "temperature": 0}, headers=dana.headers)
    page.get_by_role("button", name="Load", exact=True).click()
    expect(page.get_by_role("button", name="Unload", exact=True)).to_be_visible(timeout=60_000)

    long_reply, _ = _busy(api, dana, 48)
    box = page.get_by_placeholder("Send a message")
    box.fill("Say hello.")
    box.press("Enter")
    expect(page.get_by_text("Waiting for the model (next in line)")).to_be_visible(timeout=30_000)
    page.screenshot(path=SHOTS / "queue-waiting.png")
    assert long_reply.is_alive()  # it waits because the slot is taken, not because anything failed
    expect(page.get_by_text("tokens/s")).to_be_visible(timeout=120_000)  # then its own reply streams and ends
    expect(page.get_by_text("Waiting for the model")).to_have_count(0)
    long_reply.join(120)

    # Stop while in line: the request leaves the line; the running reply goes on.
    long_reply, busy_chat = _busy(api, dana, 400)
    box.fill("Say goodbye.")
    box.press("Enter")
    expect(page.get_by_text("Waiting for the model (next in line)")).to_be_visible(timeout=30_000)
    page.get_by_role("button", name="Stop").click()
    expect(page.get_by_text(re.compile(r"stopped"))).to_be_visible(timeout=30_000)
    last = httpx.get(f"{api.url}/history", params={"chat_id": chat}, headers=dana.headers).json()["messages"][-1]
    assert last["status"] == "stopped" and last["tokens"] == 0
    workers = httpx.get(f"{api.url}/status", headers=dana.headers).json()["workers"]
    assert workers[0]["queued"] == 0 and workers[0]["running"] == 1
    assert long_reply.is_alive()
    httpx.post(f"{api.url}/chats/{busy_chat}/stop", headers=dana.headers)
    long_reply.join(30)
    assert not long_reply.is_alive()
