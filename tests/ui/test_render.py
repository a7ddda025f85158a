"""Replies as they read in a real browser (Debian's chromium through Playwright) against the
real API and UI servers: highlighted code with a copy button per block, tables, and math
typeset by the MathJax that the dashboard itself serves (nothing comes from a CDN).

The default model will not write such a reply, so the test stores one: it makes the chat
through the API, then writes the messages into the API's SQLite file as the API would."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect

from tests.servers import ApiServer, UiServer
from tests.ui.conftest import CHROMIUM, SHOTS, running_servers
from tests.ui.test_dashboard import User, make_user, sign_in

QUESTION = "What is $\\int_0^1 x\\,dx$? Show it in Python."
CODE = 'def area(n: int) -> float:\n    """Midpoint sum of x over [0, 1]."""\n    return sum((i + 0.5) / n for i in range(n)) / n  # $$ stays code\n'
REPLY = f"""Here is the function, the integral and a table.

```python
{CODE}```

$$\\int_0^1 x\\,dx = \\frac{{1}}{{2}}$$

Inline too: $a_1 + b_1 < c$ and \\(e^{{i\\pi}} = -1\\); prices stay text: $5 or $10.

| n | area |
|---|------|
| 10 | 0.5 |
| 100 | 0.5 |
"""

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="chromium is installed by deploy/local.sh test")


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory, models_dir: Path) -> Iterator[tuple[ApiServer, UiServer]]:
    with running_servers(tmp_path_factory.mktemp("render-api"), models_dir) as both:
        yield both


@pytest.fixture(scope="module")
def reader(servers: tuple[ApiServer, UiServer]) -> User:
    return make_user(servers[0], "reader")


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 1000},
                                  permissions=["clipboard-read", "clipboard-write"])
    yield context.new_page()
    context.close()


def stored_chat(api: ApiServer, user: User, messages: list[tuple[str, str]]) -> str:
    """A chat of ``user``'s made through the API, with ``(role, text)`` messages written
    into the API's database, each following the one before (as the API stores them)."""
    chat_id = str(httpx.post(f"{api.url}/chats", json={"title": "Rendering"}, headers=user.headers)
                  .raise_for_status().json()["chat_id"])
    now = datetime.now(UTC).isoformat(sep=" ")
    connection = sqlite3.connect(api.env["LLMCHAT_DB_URL"])
    try:
        with connection:
            columns = {row[1] for row in connection.execute('PRAGMA table_info("messages")')}
            chat_columns = {row[1] for row in connection.execute('PRAGMA table_info("chats")')}
            previous: int | None = None
            for role, text in messages:
                row: dict[str, object] = {"chat_id": chat_id, "role": role, "text": text, "created_at": now,
                                          "status": "complete"}
                if role == "assistant":
                    row.update(completion_tokens=120, total_time_s=3.5, tokens_per_s=34.3)
                if "parent_id" in columns:
                    row["parent_id"] = previous
                names = ", ".join(f'"{name}"' for name in row)
                marks = ", ".join("?" for _ in row)
                previous = connection.execute(f'INSERT INTO "messages" ({names}) VALUES ({marks})',
                                              list(row.values())).lastrowid
            if "current_message_id" in chat_columns:
                connection.execute('UPDATE "chats" SET "current_message_id" = ? WHERE "id" = ?', (previous, chat_id))
    finally:
        connection.close()
    return chat_id


def test_a_reply_with_code_math_and_a_table(page: Page, servers: tuple[ApiServer, UiServer], reader: User) -> None:
    api, ui = servers
    chat = stored_chat(api, reader, [("user", QUESTION), ("assistant", REPLY)])
    served: list[str] = []
    page.on("request", lambda request: served.append(request.url))
    sign_in(page, ui, reader.name, reader.password)
    page.goto(f"{ui.url}/?chat_id={chat}")
    expect(page.get_by_text("Here is the function")).to_be_visible(timeout=30_000)

    # Code: highlighted by Pygments, under its language's name.
    block = page.locator(".code-block").first
    expect(block.locator(".code-lang")).to_have_text("python")
    expect(block.locator(".codehilite .k").first).to_have_text("def")
    expect(block.locator(".codehilite .nf").first).to_have_text("area")
    expect(block.locator(".codehilite .c1")).to_have_text("# $$ stays code")  # code, not math

    # Math: typeset as SVG, displayed and inline, in the reply and in the question.
    reply = page.locator(".markdown", has_text="Here is the function")
    expect(reply.locator('mjx-container[display="true"] svg')).to_have_count(1, timeout=30_000)
    expect(reply.locator('mjx-container:not([display="true"]) svg')).to_have_count(2)
    question = page.locator(".markdown", has_text="Show it in Python")
    expect(question.locator("mjx-container svg")).to_have_count(1)
    expect(reply.get_by_text("\\int")).to_have_count(0)
    expect(reply.get_by_text("prices stay text: $5 or $10.")).to_be_visible()

    # The table.
    expect(reply.locator("table th")).to_have_text(["n", "area"])
    expect(reply.locator("table tbody tr")).to_have_count(2)
    expect(page.get_by_text("120 tokens")).to_be_visible()  # the metrics line stays

    # MathJax came from the dashboard's own server (the template's web fonts and icons may try
    # a CDN: the page does without them).
    assert [url for url in served if "bokeh-mathjax" in url and url.startswith(ui.url)], served
    assert not [url for url in served if "mathjax" in url.lower() and not url.startswith(ui.url)], served

    # The block's copy button puts its code, and only that, into the clipboard.
    block.locator(".codehilite").hover()
    block.locator(".copybtn").click()
    page.wait_for_function("async (code) => (await navigator.clipboard.readText()) === code", arg=CODE)

    # Panel hides a message while it draws it (the page may draw the transcript twice).
    for drawn in (question.locator("mjx-container svg"), reply.locator('mjx-container[display="true"] svg'),
                  block.locator(".codehilite .k").first, page.get_by_text("120 tokens")):
        expect(drawn).to_be_visible()
    page.screenshot(path=SHOTS / "40-reply-rendering.png")
    top, bottom = question.bounding_box(), page.get_by_text("120 tokens").bounding_box()
    assert top is not None and bottom is not None
    page.screenshot(path=SHOTS / "40-reply-rendering-close-up.png", full_page=True, clip={  # docs/reply-rendering.png
        "x": max(top["x"] - 90, 0), "y": max(top["y"] - 40, 0), "width": 900,
        "height": bottom["y"] + bottom["height"] - top["y"] + 60})


def test_a_plain_reply_is_plain_markdown(page: Page, servers: tuple[ApiServer, UiServer], reader: User) -> None:
    api, ui = servers
    chat = stored_chat(api, reader, [("user", "Say something."), ("assistant", "Just **words**, and `a span`.")])
    sign_in(page, ui, reader.name, reader.password)
    page.goto(f"{ui.url}/?chat_id={chat}")
    expect(page.locator("strong", has_text="words")).to_be_visible(timeout=30_000)
    expect(page.locator("code", has_text="a span")).to_be_visible()
    expect(page.locator(".code-block")).to_have_count(0)
    expect(page.locator("mjx-container")).to_have_count(0)
