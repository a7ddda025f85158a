"""The sidebar's bookkeeping without a browser: how pages of ``GET /chats`` merge into the
list (:class:`ui.sidebar.ChatSidebar`, against a fake of the API client's paging call), and
what of a search snippet may reach the page as markup (:func:`ui.sidebar.safe_snippet`)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, cast

from ui.client import ApiClient, ApiProblem
from ui.sidebar import PAGE, ChatSidebar, safe_snippet

START = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)


def chat(n: int, minutes: int | None = None, title: str | None = None) -> dict[str, Any]:
    when = (START + timedelta(minutes=n if minutes is None else minutes)).isoformat()
    return {"chat_id": f"c{n}", "title": title or f"Chat {n}", "model": None, "device": None, "backend": None,
            "loaded": False, "created_at": when, "updated_at": when, "message_count": 0}


class FakeApi:
    """``chat_page`` as the API answers it: newest first, ``limit`` at a time, over ``chats``."""

    def __init__(self, chats: list[dict[str, Any]]) -> None:
        self.chats = chats
        self.calls: list[tuple[int, str | None]] = []

    async def chat_page(self, limit: int = 50, cursor: str | None = None) -> dict[str, Any]:
        self.calls.append((limit, cursor))
        ordered = sorted(self.chats, key=lambda c: (c["updated_at"], c["chat_id"]), reverse=True)
        start = int(cursor) if cursor else 0
        page = ordered[start:start + limit]
        more = start + limit < len(ordered)
        return {"chats": page, "next_cursor": str(start + limit) if more else None}


def sidebar(api: FakeApi, problems: list[ApiProblem] | None = None) -> ChatSidebar:
    async def open_chat(chat_id: str, message_id: int | None) -> None:
        pass

    return ChatSidebar(cast(ApiClient, api), open_chat, lambda: "c3", (problems if problems is not None else []).append)


def titles(side: ChatSidebar) -> list[str]:
    return [row["title"] for row in side.rows.chats]


async def test_pages_add_up_and_a_refresh_merges_only_the_first() -> None:
    api = FakeApi([chat(n) for n in range(1, 121)])
    side = sidebar(api)
    await side.refresh()
    assert titles(side) == [f"Chat {n}" for n in range(120, 120 - PAGE, -1)]
    assert side.rows.more and side.show_more.visible and side.rows.current == "c3"

    await side.load_more()
    await side.load_more()
    assert titles(side) == [f"Chat {n}" for n in range(120, 0, -1)]
    assert not side.rows.more and not side.show_more.visible
    await side.load_more()  # nothing left: no request
    assert len(api.calls) == 3

    # A reply in an old chat, a new chat, and a deletion among the newest: the next refresh
    # (one request, the first page) shows all three and keeps the older pages.
    api.chats = [c for c in api.chats if c["chat_id"] != "c119"]
    api.chats[4] = chat(5, minutes=500, title="Chat 5, just answered")
    api.chats.append(chat(121))
    await side.refresh()
    assert len(api.calls) == 4
    shown = titles(side)
    assert shown[:3] == ["Chat 5, just answered", "Chat 121", "Chat 120"]
    assert "Chat 119" not in shown and "Chat 5" not in shown
    assert shown[-1] == "Chat 1" and len(shown) == 120
    assert side.newest() == "c5"


async def test_a_chat_deleted_deep_in_the_list_goes_at_once() -> None:
    api = FakeApi([chat(n) for n in range(1, 80)])
    side = sidebar(api)
    await side.refresh()
    await side.load_more()
    side.forget("c2")
    assert "Chat 2" not in titles(side) and len(titles(side)) == 78


async def test_an_empty_list_says_so() -> None:
    side = sidebar(FakeApi([]))
    await side.refresh()
    assert side.rows.chats == [] and side.rows.note == "No chats yet." and side.newest() is None


async def test_a_refused_page_is_shown_as_the_dashboard_shows_problems() -> None:
    class Refusing(FakeApi):
        async def chat_page(self, limit: int = 50, cursor: str | None = None) -> dict[str, Any]:
            raise ApiProblem("the API at http://x cannot be reached", None)

    problems: list[ApiProblem] = []
    side = sidebar(Refusing([]), problems)
    await side.refresh()
    assert [str(p) for p in problems] == ["the API at http://x cannot be reached"] and side.rows.chats == []


def test_a_snippet_keeps_its_marks_and_nothing_else() -> None:
    assert safe_snippet("a <mark>Quokka</mark>berry &amp; co") == "a <mark>Quokka</mark>berry &amp; co"
    assert safe_snippet("&lt;b&gt;bold&lt;/b&gt; <mark>x</mark>") == "&lt;b&gt;bold&lt;/b&gt; <mark>x</mark>"
    # Were the API ever to let markup through, it would still arrive as text.
    assert safe_snippet('<img src=x onerror="alert(1)"><mark>y</mark>') == \
        '&lt;img src=x onerror="alert(1)"&gt;<mark>y</mark>'
