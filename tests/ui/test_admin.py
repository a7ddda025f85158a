"""The admin view (``/admin``, ui/admin.py) and the API keys card (ui/keys.py) in a real
browser (Debian's chromium driven by Playwright), against the real API and UI servers with
accounts on: an administrator manages users and force-unloads another user's model, whose
open dashboard then says so by itself; a user who is not an administrator sees nothing of
it; a key made in the dashboard works against the API until it is revoked there.
Screenshots go to ``test-output/ui/``."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect

from runtime.default_model import GGUF_NAME
from tests.auth import bearer
from tests.servers import ApiServer, UiServer, survivors
from tests.ui.conftest import CHROMIUM, SHOTS
from tests.ui.test_dashboard import User, _chat_id, _everything, make_user, sign_in

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="chromium is installed by deploy/local.sh test")
DESKTOP = {"width": 1280, "height": 800}
NARROW = {"width": 390, "height": 844}


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory, models_dir: Path) -> Iterator[tuple[ApiServer, UiServer]]:
    api = ApiServer(tmp_path_factory.mktemp("admin-api"), models_dir)
    api.start(quiet=True)
    ui = UiServer(api.url)
    ui.start(quiet=True)
    yield api, ui
    ui.stop()
    assert not survivors(api.stop())


@pytest.fixture(scope="module")
def ada(servers: tuple[ApiServer, UiServer]) -> User:
    return User("ada", *servers[0].add_user("ada", "admin"))


@pytest.fixture(scope="module")
def bob(servers: tuple[ApiServer, UiServer]) -> User:
    return make_user(servers[0], "bob")


def _fits(page: Page) -> bool:
    return bool(page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1"))


def _said(page: Page, text: str, error: bool = False) -> None:
    """The admin page's result line (the API's own words, for a refusal) says ``text``."""
    expect(page.get_by_role("alert" if error else "status").filter(has_text=text)).to_be_visible(timeout=30_000)


def _login(api: ApiServer, name: str, password: str) -> int:
    return httpx.post(f"{api.url}/auth/login", json={"username": name, "password": password}).status_code


def test_an_administrator_manages_users_and_force_unloads_another_users_model(
    browser: Browser, servers: tuple[ApiServer, UiServer], ada: User, bob: User
) -> None:
    api, ui = servers
    # Bob's dashboard, in a browser of its own, with his chat's model loaded.
    bobs = browser.new_context(viewport=DESKTOP).new_page()
    admins = browser.new_context(viewport=DESKTOP).new_page()
    try:
        sign_in(bobs, ui, bob.name, bob.password)
        chat = _chat_id(bobs)
        httpx.patch(f"{api.url}/chats/{chat}", json={"title": "Bob's counting"}, headers=bob.headers).raise_for_status()
        expect(bobs.get_by_role("link", name="Admin")).to_have_count(0)  # not an administrator
        bobs.get_by_role("button", name="Load", exact=True).click()
        expect(bobs.get_by_role("button", name="Unload", exact=True)).to_be_visible(timeout=60_000)

        # Ada signs in and follows the header's Admin link.
        sign_in(admins, ui, ada.name, ada.password)
        _chat_id(admins)
        narrow = admins.context.new_page()  # the same sign-in, on a phone-sized window
        narrow.set_viewport_size(NARROW)
        narrow.goto(ui.url)
        expect(narrow.get_by_role("link", name="Admin")).to_be_visible(timeout=30_000)
        _chat_id(narrow)
        expect(narrow.get_by_role("button", name="Load", exact=True)).to_be_visible(timeout=30_000)
        narrow.screenshot(path=SHOTS / "19-admin-link-narrow.png")
        assert _fits(narrow)
        narrow.close()
        admins.get_by_role("link", name="Admin").click()
        admins.wait_for_url(re.compile(r"/admin$"), timeout=30_000)
        users = admins.locator("table.users")
        expect(users).to_contain_text("bob", timeout=30_000)
        for name in ("tester", "ada", "bob"):
            expect(users.locator("tr", has_text=name).first).to_be_visible()
        expect(users.locator("tr", has_text="bob")).to_contain_text("user")
        admins.screenshot(path=SHOTS / "20-admin-users.png", full_page=True)

        # Users: create one (its password shown once), refuse to disable herself, set a limit,
        # reset a password, disable.
        admins.get_by_label("New user's name").fill("erin")
        admins.get_by_role("button", name="Create user").click()
        created = admins.get_by_role("status").filter(has_text="Created erin")
        expect(created).to_be_visible(timeout=30_000)
        password = created.locator(".secret").inner_text().strip()
        assert _login(api, "erin", password) == 200
        expect(users).to_contain_text("erin")
        admins.screenshot(path=SHOTS / "21-admin-user-created.png", full_page=True)

        admins.get_by_label("User", exact=True).select_option("ada")
        expect(admins.get_by_role("button", name="Disable")).to_be_visible()
        admins.get_by_role("button", name="Disable").click()
        _said(admins, "you cannot disable yourself", error=True)  # the API's 409, in its words
        admins.screenshot(path=SHOTS / "22-admin-refused.png", full_page=True)

        admins.get_by_label("User", exact=True).select_option("erin")
        admins.get_by_label("Tokens a day").fill("5000")
        admins.get_by_role("button", name="Set limits").click()
        _said(admins, "Limits of erin set")
        erin = next(u for u in httpx.get(f"{api.url}/admin/users", headers=api.headers).json()["users"]
                    if u["name"] == "erin")
        assert erin["overrides"]["tokens_per_day"] == 5000 and erin["limits"]["tokens_per_day"] == 5000
        expect(users.locator("tr", has_text="erin")).to_contain_text("5,000")

        admins.get_by_role("button", name="Reset password").click()
        admins.get_by_role("button", name="Click again to reset").click()
        reset = admins.get_by_role("status").filter(has_text="New password for erin")
        expect(reset).to_be_visible(timeout=30_000)
        new_password = reset.locator(".secret").inner_text().strip()
        assert new_password != password and _login(api, "erin", new_password) == 200

        admins.get_by_role("button", name="Disable").click()
        _said(admins, "erin is disabled")
        expect(users.locator("tr", has_text="erin")).to_contain_text("disabled")
        assert _login(api, "erin", new_password) == 401

        # Machine: Bob's worker, held by his chat, force-unloaded.
        admins.get_by_text("Machine", exact=True).click()
        worker = admins.locator(".worker").filter(has_text=GGUF_NAME)
        expect(worker).to_be_visible(timeout=30_000)
        expect(worker.locator("ul.holders")).to_contain_text("bob")
        expect(worker.locator("ul.holders")).to_contain_text("Bob's counting")
        expect(worker).to_contain_text("llama.cpp")
        expect(worker).to_contain_text(re.compile(r"\d+ waiting, \d+ running of \d+ at once"))
        admins.screenshot(path=SHOTS / "23-admin-machine.png", full_page=True)
        admins.set_viewport_size(NARROW)
        admins.screenshot(path=SHOTS / "24-admin-machine-narrow.png", full_page=True)
        assert _fits(admins)
        admins.set_viewport_size(DESKTOP)

        admins.get_by_role("button", name="Force unload").click()
        forced_at = time.monotonic()
        _said(admins, f"Unloaded {GGUF_NAME}")
        expect(admins.get_by_text("No model is loaded.")).to_be_visible(timeout=30_000)

        # Bob's open dashboard says so by itself, with the reason, within seconds.
        expect(bobs.get_by_text("unloaded by an administrator")).to_be_visible(timeout=15_000)
        took = time.monotonic() - forced_at
        expect(bobs.get_by_role("button", name="Load", exact=True)).to_be_visible()
        expect(bobs.get_by_role("button", name=re.compile(r"^Bob's counting$"))).to_be_visible(timeout=15_000)  # no ● mark
        bobs.screenshot(path=SHOTS / "25-force-unloaded.png")
        assert took < 10, took
        status = httpx.get(f"{api.url}/status", params={"chat_id": chat}, headers=bob.headers).json()
        assert status["loaded"] is False and status["reason"] == "unloaded by an administrator"

        # Audit log: the force-unload and the account changes, newest first.
        admins.get_by_text("Audit log", exact=True).click()
        audit = admins.locator("table.audit")
        expect(audit).to_contain_text("force_unload", timeout=30_000)
        rows = audit.locator("tbody tr")
        expect(rows.first).to_contain_text("force_unload")
        for action in ("user_created", "password_reset", "user_updated", "sign_in"):
            expect(audit).to_contain_text(action)
        admins.screenshot(path=SHOTS / "26-admin-audit.png", full_page=True)
        admins.set_viewport_size(NARROW)
        admins.get_by_text("Users", exact=True).click()
        expect(users).to_contain_text("erin", timeout=30_000)
        admins.screenshot(path=SHOTS / "27-admin-users-narrow.png", full_page=True)
        assert _fits(admins)
    finally:
        bobs.context.close()
        admins.context.close()


def test_the_audit_log_pages_to_older_entries(
    browser: Browser, servers: tuple[ApiServer, UiServer], ada: User
) -> None:
    api, ui = servers
    for i in range(60):  # more than a page of entries: each key made is audited
        httpx.post(f"{api.url}/auth/keys", json={"name": f"key {i}"}, headers=api.headers).raise_for_status()
    page = browser.new_page(viewport=DESKTOP)
    try:
        sign_in(page, ui, ada.name, ada.password)
        page.goto(f"{ui.url}/admin")
        page.get_by_text("Audit log", exact=True).click()
        audit = page.locator("table.audit")
        expect(audit.locator("tbody tr")).to_have_count(50, timeout=30_000)
        first, last = audit.locator("tbody tr").first, audit.locator("tbody tr").last
        newest, oldest_shown = int(first.get_attribute("data-id") or 0), int(last.get_attribute("data-id") or 0)
        expect(page.get_by_role("button", name="Newest")).to_be_disabled()
        page.get_by_role("button", name="Older").click()
        expect(first).to_have_attribute("data-id", str(oldest_shown - 1), timeout=30_000)  # the next older one
        expect(page.get_by_role("button", name="Newest")).to_be_enabled()
        page.screenshot(path=SHOTS / "31-admin-audit-older.png", full_page=True)
        page.get_by_role("button", name="Newest").click()
        expect(first).to_have_attribute("data-id", str(newest), timeout=30_000)
    finally:
        page.close()


def test_someone_who_is_not_an_administrator_sees_nothing_of_it(
    browser: Browser, servers: tuple[ApiServer, UiServer], ada: User, bob: User
) -> None:
    api, ui = servers
    page = browser.new_page(viewport=DESKTOP)
    try:
        sign_in(page, ui, bob.name, bob.password)
        _chat_id(page)
        expect(page.get_by_role("link", name="Admin")).to_have_count(0)
        page.goto(f"{ui.url}/admin")
        expect(page.get_by_text("This page is for administrators")).to_be_visible(timeout=30_000)
        page.screenshot(path=SHOTS / "28-admin-refused-to-a-user.png")
        everything = _everything(page)
        for other in ("ada", "tester"):  # other accounts' names
            assert not re.search(rf"\b{other}\b", everything), other
        for admin_only in ("Force unload", "Audit log", "Create user", "Change a user", "Reset password"):
            assert admin_only not in everything, admin_only
        assert httpx.get(f"{api.url}/admin/users", headers=bob.headers).status_code == 403
    finally:
        page.close()


def test_api_keys_made_in_the_dashboard(browser: Browser, servers: tuple[ApiServer, UiServer]) -> None:
    api, ui = servers
    carol = make_user(api, "carol")
    page = browser.new_page(viewport=DESKTOP)
    try:
        sign_in(page, ui, carol.name, carol.password)
        _chat_id(page)
        page.get_by_text("Your API keys").click()
        expect(page.locator(".key-row").filter(has_text="tests")).to_be_visible(timeout=30_000)  # the CLI made it
        page.get_by_label("Key name").fill("laptop")
        page.get_by_role("button", name="Create key").click()
        shown = page.locator("code.new-key")
        expect(shown).to_be_visible(timeout=30_000)
        expect(page.get_by_text("it is not shown again")).to_be_visible()
        key = shown.inner_text().strip()
        row = page.locator(".key-row").filter(has_text="laptop")
        expect(row).to_contain_text("last used never")
        page.screenshot(path=SHOTS / "29-api-key-created.png")

        me = httpx.get(f"{api.url}/auth/me", headers=bearer(key))
        assert me.status_code == 200 and me.json()["name"] == "carol" and me.json()["via"] == "key"
        assert httpx.get(f"{api.url}/chats", headers=bearer(key)).status_code == 200

        page.set_viewport_size(NARROW)
        page.locator("#sidebar-button").click()
        expect(row).to_be_visible()
        page.screenshot(path=SHOTS / "30-api-keys-narrow.png")
        assert _fits(page)
        page.locator("#sidebar-button").click()  # folded again: on a wide window the sidebar shows
        page.set_viewport_size(DESKTOP)

        row.get_by_role("button", name="Revoke").click()
        row.get_by_role("button", name="Sure?").click()
        expect(row).to_have_count(0, timeout=30_000)
        assert httpx.get(f"{api.url}/auth/me", headers=bearer(key)).status_code == 401
        assert key not in _everything(page)  # shown once: gone after the revoke
    finally:
        page.close()


def test_local_mode_links_the_admin_view(browser: Browser, tmp_path: Path) -> None:
    # One user, no sign-in, and that user is the administrator.
    (tmp_path / "models").mkdir()
    api = ApiServer(tmp_path, tmp_path / "models", auth="off")
    ui = UiServer(api.url, auth="off")
    page = browser.new_page(viewport=DESKTOP)
    try:
        api.start(quiet=True)
        ui.start(quiet=True)
        page.goto(ui.url)
        _chat_id(page)
        page.get_by_role("link", name="Admin").click()
        expect(page.locator("table.users")).to_contain_text("admin", timeout=30_000)
        expect(page.get_by_role("button", name="Sign out")).to_have_count(0)
        expect(page.get_by_text("Your API keys")).to_have_count(0)
    finally:
        page.close()
        ui.stop()
        api.stop()
