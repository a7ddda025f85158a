"""The dashboard in a real browser (Debian's chromium driven by Playwright) against the real
API and UI servers on loopback ports, with accounts on and the default model. Each test
signs in (:func:`sign_in`) as a user made with the real CLI. Screenshots go to
``test-output/ui/``."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect

from runtime.builds import BuildRecorder
from runtime.default_model import GGUF_NAME
from tests.auth import bearer
from tests.servers import ApiServer, UiServer, survivors
from tests.ui.conftest import CHROMIUM, SHOTS
from ui.auth import COOKIE

ENDLESS = "Continue: 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12,"
COUNTING = re.compile(r"^\d+, \d+, \d+, \d+")
CHAT_ID = re.compile(r"chat_id=(\w+)")
LIMIT = 2000  # the API's longest message in these tests

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="chromium is installed by deploy/local.sh test")


@dataclass
class User:
    name: str
    password: str
    key: str  # an API key of the user's, for the test's own calls to the API

    @property
    def headers(self) -> dict[str, str]:
        return bearer(self.key)


def make_user(api: ApiServer, name: str) -> User:
    return User(name, *api.add_user(name))


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory, models_dir: Path) -> Iterator[tuple[ApiServer, UiServer]]:
    api = ApiServer(tmp_path_factory.mktemp("ui-api"), models_dir, max_message_chars=str(LIMIT))
    api.start(quiet=True)
    ui = UiServer(api.url)
    ui.start(quiet=True)
    yield api, ui
    ui.stop()
    assert not survivors(api.stop())


@pytest.fixture(scope="module")
def alice(servers: tuple[ApiServer, UiServer]) -> User:
    return make_user(servers[0], "alice")


@pytest.fixture(scope="module")
def bob(servers: tuple[ApiServer, UiServer]) -> User:
    return make_user(servers[0], "bob")


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    opened = browser.new_page(viewport={"width": 1280, "height": 800})
    yield opened
    opened.close()


def sign_in(page: Page, ui: UiServer, name: str, password: str) -> None:
    """Sign in on the dashboard's sign-in page; the dashboard then opens."""
    page.goto(f"{ui.url}/login")
    page.get_by_label("User name").fill(name)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(lambda url: "/login" not in url, timeout=30_000)
    expect(page.get_by_text(f"Signed in as {name}")).to_be_visible(timeout=30_000)


def _session_token(page: Page) -> str:
    return next(c["value"] for c in page.context.cookies() if c["name"] == COOKIE)


def _everything(page: Page) -> str:
    """The page's HTML with that of every shadow root in it (Panel draws into shadow roots,
    which ``page.content()`` leaves out)."""
    return str(page.evaluate("""() => {
        const parts = [];
        const walk = (root) => {
            parts.push(root.innerHTML);
            root.querySelectorAll("*").forEach((el) => { if (el.shadowRoot) walk(el.shadowRoot); });
        };
        walk(document.documentElement);
        return parts.join("\\n");
    }"""))


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
    page.screenshot(path=SHOTS / "never-finished.png")
    raise AssertionError("the reply never finished")


def test_chat_flow_in_the_browser(page: Page, servers: tuple[ApiServer, UiServer], alice: User) -> None:
    api, ui = servers
    sign_in(page, ui, alice.name, alice.password)
    first = _chat_id(page)  # a fresh UI opens a new chat and puts its id in the URL
    page.screenshot(path=SHOTS / "01-new-chat.png")

    # Per-chat settings through the settings card.
    page.get_by_text("Chat settings").click()
    page.get_by_label("System prompt").fill("You count numbers.")
    page.get_by_role("button", name="Save settings").click()
    expect(page.get_by_text("Settings saved")).to_be_visible(timeout=10_000)
    assert httpx.get(f"{api.url}/chats/{first}", headers=alice.headers).json()["system_prompt"] == "You count numbers."
    httpx.patch(f"{api.url}/chats/{first}", json={"max_new_tokens": 96, "temperature": 0}, headers=alice.headers)

    # Load: the toggle shows the loading state, then the load time.
    page.get_by_role("button", name="Load", exact=True).click()
    expect(page.get_by_role("button", name="Unload", exact=True)).to_be_visible(timeout=60_000)
    expect(page.get_by_text(re.compile(r"Loaded .* in \d+\.\d+ s"))).to_be_visible()
    assert httpx.get(f"{api.url}/status", params={"chat_id": first}, headers=alice.headers).json()["loaded"] is True

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
    assert httpx.get(f"{api.url}/status", params={"chat_id": first}, headers=alice.headers).json()["loaded"] is False

    # A second chat, then back to the first one from the sidebar.
    second = _new_chat(page)
    assert second != first
    expect(page.get_by_text("tokens/s")).to_have_count(0)
    expect(page.get_by_role("button", name="New chat", exact=True)).to_have_count(2)  # the list shows it
    page.get_by_role("button", name=re.compile(r"^(● )?Continue: 1, 2")).click()
    expect(page).to_have_url(re.compile(first), timeout=30_000)
    expect(page.get_by_text("tokens/s").last).to_be_visible(timeout=30_000)
    page.screenshot(path=SHOTS / "04-two-chats.png")


def test_stop_keeps_the_partial_reply(page: Page, servers: tuple[ApiServer, UiServer], alice: User) -> None:
    api, ui = servers
    sign_in(page, ui, alice.name, alice.password)
    _chat_id(page)
    chat = _new_chat(page)
    httpx.patch(f"{api.url}/chats/{chat}", json={"max_new_tokens": 2000, "temperature": 0}, headers=alice.headers)
    page.get_by_role("button", name="Load", exact=True).click()
    expect(page.get_by_role("button", name="Unload", exact=True)).to_be_visible(timeout=60_000)
    box = page.get_by_placeholder("Send a message")
    box.fill(ENDLESS)
    box.press("Enter")
    expect(page.get_by_text(COUNTING)).to_be_visible(timeout=30_000)
    page.get_by_role("button", name="Stop").click()
    expect(page.get_by_text(re.compile(r"tokens/s.*stopped"))).to_be_visible(timeout=30_000)
    last = httpx.get(f"{api.url}/history", params={"chat_id": chat}, headers=alice.headers).json()["messages"][-1]
    assert last["status"] == "stopped" and 0 < last["tokens"] < 2000
    page.screenshot(path=SHOTS / "05-stopped.png")


def test_a_refused_message_goes_back_into_the_box(page: Page, servers: tuple[ApiServer, UiServer], alice: User) -> None:
    api, ui = servers
    sign_in(page, ui, alice.name, alice.password)
    _chat_id(page)
    chat = _new_chat(page)
    too_long = "word " * (LIMIT // 5 + 1)
    box = page.get_by_placeholder("Send a message")
    box.fill(too_long)
    box.press("Enter")
    expect(page.get_by_text("it is back in the message box")).to_be_visible(timeout=60_000)
    expect(box).to_have_value(too_long)
    expect(page.get_by_text(too_long.strip()[:40])).to_have_count(0)  # not in the transcript
    assert httpx.get(f"{api.url}/history", params={"chat_id": chat}, headers=alice.headers).json()["messages"] == []
    page.screenshot(path=SHOTS / "09-refused.png")


def test_unknown_chat_id_offers_a_new_chat(page: Page, servers: tuple[ApiServer, UiServer], alice: User) -> None:
    _, ui = servers
    sign_in(page, ui, alice.name, alice.password)
    page.goto(f"{ui.url}/?chat_id=no-such-chat")
    expect(page.get_by_text("There is no chat with id")).to_be_visible(timeout=30_000)
    page.screenshot(path=SHOTS / "06-unknown-chat.png")
    page.get_by_role("button", name="Start a new chat").click()
    page.wait_for_function("() => !location.href.includes('no-such-chat')", timeout=30_000)
    expect(page.get_by_text("There is no chat with id")).to_be_hidden()


def test_narrow_window_stays_readable(browser: Browser, servers: tuple[ApiServer, UiServer], alice: User) -> None:
    _, ui = servers
    narrow = browser.new_page(viewport={"width": 390, "height": 844})
    try:
        narrow.goto(f"{ui.url}/login")
        narrow.screenshot(path=SHOTS / "07-narrow-sign-in.png", full_page=True)
        assert narrow.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")
        sign_in(narrow, ui, alice.name, alice.password)
        _chat_id(narrow)
        expect(narrow.get_by_role("button", name="Load", exact=True)).to_be_visible(timeout=30_000)
        narrow.screenshot(path=SHOTS / "07-narrow.png", full_page=True)
        assert narrow.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")
    finally:
        narrow.close()


def test_empty_models_folder_says_what_to_do(browser: Browser, tmp_path: Path) -> None:
    (tmp_path / "empty-models").mkdir()
    api = ApiServer(tmp_path, tmp_path / "empty-models")
    api.start(quiet=True)
    ui = UiServer(api.url)
    ui.start(quiet=True)
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    try:
        user = make_user(api, "carol")
        sign_in(page, ui, user.name, user.password)
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
    assert GGUF_NAME in {m["name"] for m in httpx.get(f"{api.url}/models", headers=api.headers).json()["models"]}


# Signing in


def test_sign_in_chat_sign_out(page: Page, servers: tuple[ApiServer, UiServer], alice: User) -> None:
    api, ui = servers
    page.goto(f"{ui.url}/?chat_id=anything")  # not signed in: the sign-in page, which comes back here
    expect(page).to_have_url(re.compile(r"/login\?next="))
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    page.screenshot(path=SHOTS / "11-sign-in.png")

    page.get_by_label("User name").fill(alice.name)
    page.get_by_label("Password").fill("not the password")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_have_text("Wrong user name or password.")
    expect(page.get_by_label("User name")).to_have_value(alice.name)
    page.screenshot(path=SHOTS / "12-wrong-password.png")

    sign_in(page, ui, alice.name, alice.password)
    token = _session_token(page)
    cookie = next(c for c in page.context.cookies() if c["name"] == COOKIE)
    assert cookie["httpOnly"] and cookie["sameSite"] == "Lax" and not cookie["secure"]
    assert token not in page.evaluate("document.cookie")
    _chat_id(page)
    chat = _new_chat(page)
    httpx.patch(f"{api.url}/chats/{chat}", json={"max_new_tokens": 8, "temperature": 0}, headers=alice.headers)
    box = page.get_by_placeholder("Send a message")
    box.fill("Say hello.")
    box.press("Enter")
    expect(page.get_by_text("tokens/s").last).to_be_visible(timeout=90_000)
    assert [m["sender"] for m in httpx.get(f"{api.url}/history", params={"chat_id": chat},
                                           headers=alice.headers).json()["messages"]] == ["user", "assistant"]
    page.reload()  # the session survives a reload
    expect(page.get_by_text("tokens/s").last).to_be_visible(timeout=30_000)
    expect(page.get_by_text(f"Signed in as {alice.name}")).to_be_visible()
    expect(page.get_by_role("button", name=re.compile(r"^(● )?Say hello\.$"))).to_be_visible(timeout=30_000)
    # Bokeh's page token (in the page, readable by its scripts) carries no cookie and no Authorization.
    assert token not in page.content() and token not in _everything(page)
    page.screenshot(path=SHOTS / "13-signed-in.png")

    page.get_by_role("button", name="Sign out").click()
    expect(page).to_have_url(re.compile(r"/login"), timeout=30_000)
    expect(page.get_by_role("status")).to_have_text("You are signed out.")
    page.screenshot(path=SHOTS / "14-signed-out.png")
    assert httpx.get(f"{api.url}/auth/me", headers=bearer(token)).status_code == 401  # ended at the API too
    assert COOKIE not in {c["name"] for c in page.context.cookies()}
    page.reload()
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    page.goto(f"{ui.url}/?chat_id={chat}")
    expect(page).to_have_url(re.compile(r"/login\?next="))
    expect(page.get_by_text("Say hello.")).to_have_count(0)


def test_another_users_chat_link_shows_nothing_of_it(
    page: Page, servers: tuple[ApiServer, UiServer], alice: User, bob: User
) -> None:
    api, ui = servers
    with httpx.Client(base_url=api.url, headers=alice.headers, timeout=120) as client:
        chat = client.post("/chats", json={"title": "Alice's swordfish plans", "max_new_tokens": 4}).json()["chat_id"]
        client.post("/chat", params={"model": GGUF_NAME, "device": "cpu"},
                    json={"chat_id": chat, "message": "The password is swordfish."}).raise_for_status()
        client.post("/unload", json={"chat_id": chat}).raise_for_status()

    with httpx.Client(base_url=api.url, headers=bob.headers, timeout=120) as client:
        client.post("/chats", json={"title": "Bob's own notes"}).raise_for_status()

    sign_in(page, ui, bob.name, bob.password)
    _chat_id(page)
    page.goto(f"{ui.url}/?chat_id={chat}")  # the link Alice would share
    expect(page.get_by_text("There is no chat with id")).to_be_visible(timeout=30_000)
    expect(page.get_by_role("button", name="Bob's own notes")).to_be_visible()  # Bob's own chats are listed
    page.screenshot(path=SHOTS / "15-other-users-chat.png")
    expect(page.get_by_text("swordfish")).to_have_count(0)
    assert "swordfish" not in _everything(page)
    history = httpx.get(f"{api.url}/history", params={"chat_id": chat}, headers=alice.headers).json()["messages"]
    assert len(history) == 2 and "swordfish" in history[0]["text"]  # Alice's chat is untouched


def test_a_disabled_user_lands_on_the_sign_in_page(browser: Browser, servers: tuple[ApiServer, UiServer]) -> None:
    api, ui = servers
    dave = make_user(api, "dave")
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    try:
        sign_in(page, ui, dave.name, dave.password)
        _chat_id(page)
        subprocess.run([sys.executable, "-m", "api.users", "disable", dave.name], env=api.env, check=True,
                       capture_output=True)
        page.get_by_role("button", name="New chat", exact=True).first.click()  # the API answers 401
        expect(page.get_by_role("heading", name="Sign in")).to_be_visible(timeout=30_000)
        expect(page.get_by_role("status")).to_have_text("Your session has ended; sign in again.")
        page.screenshot(path=SHOTS / "16-session-ended.png")
    finally:
        page.close()


def test_too_many_failed_sign_ins(browser: Browser, tmp_path: Path) -> None:
    # Servers of its own: the API counts the failures against the dashboard's address too.
    (tmp_path / "models").mkdir()
    api = ApiServer(tmp_path, tmp_path / "models")
    ui = UiServer(api.url)
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    try:
        api.start(quiet=True)
        ui.start(quiet=True)
        page.goto(f"{ui.url}/login")
        for _ in range(5):
            page.get_by_label("User name").fill("mallory")
            page.get_by_label("Password").fill("guess guess")
            with page.expect_navigation():
                page.get_by_role("button", name="Sign in").click()
            expect(page.get_by_role("alert")).to_have_text("Wrong user name or password.")
        page.get_by_label("Password").fill("guess guess")
        with page.expect_navigation():
            page.get_by_role("button", name="Sign in").click()
        expect(page.get_by_role("alert")).to_have_text(re.compile(r"^Too many failed sign-ins; try again in \d+ s\.$"))
        page.screenshot(path=SHOTS / "17-too-many.png")
    finally:
        page.close()
        ui.stop()
        api.stop()


def test_local_mode_needs_no_sign_in(browser: Browser, tmp_path: Path) -> None:
    (tmp_path / "models").mkdir()
    api = ApiServer(tmp_path, tmp_path / "models", auth="off")
    ui = UiServer(api.url, auth="off")
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    try:
        api.start(quiet=True)
        ui.start(quiet=True)
        page.goto(ui.url)
        chat = _chat_id(page)  # straight to a new chat: no sign-in page
        expect(page.get_by_role("button", name="New chat", exact=True)).to_have_count(2)
        expect(page.get_by_role("button", name="Sign out")).to_have_count(0)
        assert httpx.get(f"{api.url}/chats/{chat}").status_code == 200  # the API's local user has it
        assert httpx.get(f"{ui.url}/login").status_code == 404
    finally:
        page.close()
        ui.stop()
        api.stop()
