"""The sidebar with many chats: how soon the newest chat is listed once the dashboard opens.

    python -m tests.benchmarks.bench_sidebar [--chats 10000] [--runs 3]

Starts the real API once to make the database and the users (``many``, ``none``), stops it,
writes the chats of ``many`` straight into SQLite (one ``executemany``), and starts the API
and the dashboard again on loopback ports with a throw-away database. Then, in Debian's
chromium (as the browser tests drive it), signed in, it opens the dashboard and measures
from the navigation to the newest chat's title shown in the sidebar, side by side with the
same page for ``none``, who has no chats (the dashboard makes one, and lists it): the
page's own time, whatever the number of chats. It also times ``GET /chats`` pages, the
first and one deep in the list. Prints one JSON object.

Goals (issue 13): with 10,000 chats the newest listed within 2 s of opening the page, and
a page of ``/chats`` in under 50 ms. Before paging, with 5,000 chats, the newest chat took
64.5 s to appear (a widget per chat, and every chat fetched).
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import statistics
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
from playwright.sync_api import Browser, BrowserContext, sync_playwright

from tests.servers import ApiServer, UiServer
from tests.ui.conftest import CHROMIUM, FLAGS

ROWS = ".chat-list button.chat"
SEARCH_PLACEHOLDER = "Search chats (Ctrl+K)"
NEWEST = "The newest of many chats"


def add_chats(db_path: Path, owner: str, count: int) -> None:
    """``count`` chats of ``owner``, one every minute up to now, the last titled NEWEST."""
    now = datetime.now(UTC)
    with sqlite3.connect(db_path) as db:
        (owner_id,) = db.execute('SELECT "id" FROM "users" WHERE "name" = ?', (owner,)).fetchone()
        rows = []
        for n in range(count):
            when = (now - timedelta(minutes=count - 1 - n)).isoformat(sep=" ", timespec="microseconds")
            title = NEWEST if n == count - 1 else f"Chat number {n + 1}"
            rows.append((uuid.uuid4().hex, title, when, when, "", 0.7, 0.95, 256, owner_id))
        db.executemany(
            'INSERT INTO "chats" ("id", "title", "created_at", "updated_at", "system_prompt", "temperature", '
            '"top_p", "max_new_tokens", "owner_id") VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)', rows)


def signed_in_context(browser: Browser, ui: UiServer, name: str, password: str) -> BrowserContext:
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    page.goto(f"{ui.url}/login")
    page.get_by_label("User name").fill(name)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(lambda url: "/login" not in url, timeout=60_000)
    page.close()
    return context


def time_to_listed(context: BrowserContext, ui: UiServer, title: str,
                   screenshot: Path | None = None) -> tuple[float, float]:
    """Seconds from opening the dashboard to its first drawing (the search box shown), and
    to ``title`` shown in the sidebar's list. ``wait_for`` looks on every animation frame
    (``expect`` backs off to a second between looks)."""
    page = context.new_page()
    try:
        started = time.perf_counter()
        page.goto(ui.url, wait_until="commit")
        page.get_by_placeholder(SEARCH_PLACEHOLDER).wait_for(state="visible", timeout=120_000)
        drawn = time.perf_counter() - started
        page.locator(ROWS).filter(has_text=title).first.wait_for(state="visible", timeout=120_000)
        listed = time.perf_counter() - started
        if screenshot is not None:
            page.screenshot(path=screenshot)
        return drawn, listed
    finally:
        page.close()


def time_pages(api: ApiServer, key: str, runs: int = 20) -> dict[str, float]:
    """Median milliseconds of ``GET /chats?limit=50``: the first page, and the 100th."""
    with httpx.Client(base_url=api.url, headers={"Authorization": f"Bearer {key}"}, timeout=60) as http:
        cursor = None
        for _ in range(99):
            cursor = http.get("/chats", params={"limit": 50, **({"cursor": cursor} if cursor else {})}).json()["next_cursor"]
        found: dict[str, float] = {}
        for name, params in (("first_page_ms", {"limit": 50}), ("page_100_ms", {"limit": 50, "cursor": cursor})):
            times = []
            for _ in range(runs):
                started = time.perf_counter()
                http.get("/chats", params=params).raise_for_status()
                times.append((time.perf_counter() - started) * 1000)
            found[name] = round(statistics.median(times), 1)
        return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chats", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--screenshot", type=Path, default=None, help="where to save the page with many chats")
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="llmchat-bench-sidebar-"))
    (home / "models").mkdir()
    api = ApiServer(home, home / "models")
    api.start(quiet=True)  # the schema, and the administrator ``tester``
    many_password, many_key = api.add_user("many")
    none_password, _ = api.add_user("none")
    api.stop()
    started = time.perf_counter()
    add_chats(home / "chat.sqlite3", "many", args.chats)
    insert_s = time.perf_counter() - started

    api.start(quiet=True)
    ui = UiServer(api.url)
    ui.start(quiet=True)
    try:
        pages = time_pages(api, many_key) if args.chats >= 5000 else {}
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
            many = signed_in_context(browser, ui, "many", many_password)
            none = signed_in_context(browser, ui, "none", none_password)
            time_to_listed(many, ui, NEWEST)  # once unmeasured: the browser's cache holds the page's scripts
            with_chats, without = [], []
            for run in range(args.runs):  # alternating, so that a busy moment hits both alike
                shot = args.screenshot if run == args.runs - 1 else None
                with_chats.append(time_to_listed(many, ui, NEWEST, shot))
                without.append(time_to_listed(none, ui, "New chat"))
            browser.close()
    finally:
        ui.stop()
        api.stop()
    newest = statistics.median(listed for _, listed in with_chats)
    alone = statistics.median(listed for _, listed in without)
    result = {
        "chats": args.chats,
        "insert_s": round(insert_s, 2),
        "newest_listed_s": [round(listed, 2) for _, listed in with_chats],
        "no_chats_listed_s": [round(listed, 2) for _, listed in without],
        "page_drawn_s": [round(drawn, 2) for drawn, _ in with_chats + without],
        "median_newest_listed_s": round(newest, 2),
        "median_no_chats_listed_s": round(alone, 2),
        "ratio": round(newest / alone, 2),
        "median_listed_after_drawn_s": round(statistics.median(listed - drawn for drawn, listed in with_chats), 3),
        "goal_s": 2.0,
        "load_average": [round(x, 1) for x in os.getloadavg()],
        **pages,
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
