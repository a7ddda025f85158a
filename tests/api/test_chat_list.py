"""Paging ``GET /chats``: newest first by (updated_at, id), a cursor that walks every chat once
even when many share a time, bounded limits, a refused bad cursor, only the caller's chats,
and a page read through the index on chats(owner_id, updated_at)."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from quart.typing import TestAppProtocol as QuartTestApp
from quart.typing import TestClientProtocol as QuartClient

from api.app import create_app
from api.chat_pages import decode_cursor, page_query
from api.database import dialect_of, stored_time
from api.settings import ApiSettings
from api.store import User
from runtime.fake import FakeRuntime, fake_model
from tests.auth import signed_in
from tests.databases import raw_write

MODEL = "fake.gguf"


@pytest.fixture(scope="module")
async def app(tmp_path_factory: pytest.TempPathFactory, db_url: str) -> AsyncIterator[QuartTestApp]:
    home = tmp_path_factory.mktemp("chat-list")
    settings = ApiSettings(models_dir=home / "models", db_url=db_url, logs_dir=home / "logs", state_dir=home)
    async with create_app(settings, runtime=FakeRuntime([fake_model(MODEL)])).test_app() as running:
        yield running


@pytest.fixture(scope="module")
async def alice(app: QuartTestApp) -> QuartClient:
    return await signed_in(app, "alice", "user")


@pytest.fixture(scope="module")
async def bob(app: QuartTestApp) -> QuartClient:
    return await signed_in(app, "bob", "user")


async def _create(client: QuartClient, chat_id: str) -> None:
    response = await client.post("/chats", json={"chat_id": chat_id, "title": f"Chat {chat_id}"})
    assert response.status_code == 201, await response.get_data()


async def _set_times(db_url: str, times: dict[str, datetime]) -> None:
    """Stored as the ORM stores them, from a second connection as another writer would."""
    dialect = dialect_of(db_url)
    await raw_write(db_url, 'UPDATE chats SET updated_at = ? WHERE id = ?',
                    [(stored_time(when, dialect), chat_id) for chat_id, when in times.items()])


async def _page(client: QuartClient, query: str) -> dict[str, Any]:
    response = await client.get(f"/chats?{query}")
    assert response.status_code == 200, await response.get_data()
    return dict(await response.get_json())


async def _walk(client: QuartClient, limit: int) -> list[list[str]]:
    pages: list[list[str]] = []
    body = await _page(client, f"limit={limit}")
    while True:
        pages.append([c["chat_id"] for c in body["chats"]])
        if body["next_cursor"] is None:
            return pages
        assert len(pages) < 100
        body = await _page(client, f"limit={limit}&cursor={body['next_cursor']}")


async def test_pages_walk_every_chat_once_newest_first_with_equal_times(alice: QuartClient, db_url: str) -> None:
    base = datetime(2026, 3, 1, 12, tzinfo=UTC)
    times = {
        "a1": base, "a2": base, "a3": base, "a4": base,  # one time shared by four chats: ties broken by id
        "b1": base + timedelta(hours=1), "b2": base + timedelta(hours=1),
        "c1": base - timedelta(days=40), "d1": base + timedelta(microseconds=1), "e1": base + timedelta(days=3),
    }
    for chat_id in times:
        await _create(alice, chat_id)
    await _set_times(db_url, times)
    expected = [c for c, _ in sorted(times.items(), key=lambda item: (item[1], item[0]), reverse=True)]
    assert expected[:4] == ["e1", "b2", "b1", "d1"]

    for limit in (1, 2, 3, 4, 200):
        pages = await _walk(alice, limit)
        assert [c for page in pages for c in page] == expected, limit
        assert all(len(page) == limit for page in pages[:-1]) and 0 < len(pages[-1]) <= limit
    pages = await _walk(alice, len(expected))  # exactly one full page: no empty page after it
    assert pages == [expected]

    body = await _page(alice, "limit=3")
    assert [c["updated_at"] for c in body["chats"]] == [times[c].isoformat() for c in ("e1", "b2", "b1")]
    assert body["chats"][0]["title"] == "Chat e1"


async def test_a_chat_active_between_two_pages_moves_to_the_top_without_breaking_the_walk(
    bob: QuartClient, db_url: str
) -> None:
    base = datetime(2026, 5, 1, tzinfo=UTC)
    times = {f"bob{i}": base + timedelta(minutes=i) for i in range(6)}
    for chat_id in times:
        await _create(bob, chat_id)
    await _set_times(db_url, times)
    first = await _page(bob, "limit=3")
    assert [c["chat_id"] for c in first["chats"]] == ["bob5", "bob4", "bob3"]
    await _set_times(db_url, {"bob0": base + timedelta(days=1)})  # a reply in the oldest chat
    rest = await _page(bob, f"limit=3&cursor={first['next_cursor']}")
    assert [c["chat_id"] for c in rest["chats"]] == ["bob2", "bob1"] and rest["next_cursor"] is None
    assert [c["chat_id"] for c in (await _page(bob, "limit=1"))["chats"]] == ["bob0"]


async def test_limit_defaults_to_50_and_is_bounded(app: QuartTestApp) -> None:
    carol = await signed_in(app, "carol", "user")
    for n in range(52):
        await _create(carol, f"carol-{n:02d}")
    first = await _page(carol, "")
    assert len(first["chats"]) == 50 and first["next_cursor"] is not None
    second = await _page(carol, f"cursor={first['next_cursor']}")
    assert len(second["chats"]) == 2 and second["next_cursor"] is None
    assert {c["chat_id"] for c in first["chats"] + second["chats"]} == {f"carol-{n:02d}" for n in range(52)}
    assert len((await _page(carol, "limit=200"))["chats"]) == 52
    for bad in ("limit=0", "limit=201", "limit=-1", "limit=ten", "limit=1.5"):
        response = await carol.get(f"/chats?{bad}")
        assert response.status_code == 422, bad


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


@pytest.mark.parametrize("cursor", [
    "abc", "!!!!", "a" * 500, _b64(b"not json"), _b64(b"{}"), _b64(b'["2026-01-01T00:00:00+00:00"]'),
    _b64(b'["yesterday", "chat"]'), _b64(b'["2026-01-01T00:00:00", "chat"]'),  # no time zone
    _b64(b'["2026-01-01T00:00:00+00:00", 7]'), _b64(b'["2026-01-01T00:00:00+00:00", ""]'),
    _b64(b'[1, 2, 3]'), _b64("é".encode("latin-1")),
])
async def test_a_malformed_cursor_is_a_400_that_says_so(alice: QuartClient, cursor: str) -> None:
    response = await alice.get(f"/chats?cursor={cursor}")
    assert response.status_code == 400, await response.get_data()
    body = await response.get_json()
    assert body["error"] == "MalformedRequest" and body["detail"].startswith("cursor:")


async def test_only_your_own_chats_are_listed(app: QuartTestApp, alice: QuartClient) -> None:
    dave = await signed_in(app, "dave", "user")
    await _create(dave, "dave-only")
    alices = [c for page in await _walk(alice, 50) for c in page]
    daves = [c for page in await _walk(dave, 50) for c in page]
    assert daves == ["dave-only"] and "dave-only" not in alices
    # Another user's cursor is only a position (in March, before dave's chat): it shows nothing of its owner's.
    cursor = (await _page(alice, "limit=1"))["next_cursor"]
    assert (await _page(dave, f"cursor={cursor}"))["chats"] == []


async def test_a_page_is_read_through_the_owner_and_time_index(app: QuartTestApp, db_url: str) -> None:
    owner = await User.get(name="alice")
    uses_index = {"sqlite": "USING INDEX idx_chats_owner", "postgres": '"Index Name": "idx_chats_owner'}
    for after in (None, decode_cursor(_b64(b'["2026-03-01T12:00:00+00:00", "a3"]'))):
        plan = " | ".join(str(tuple(row)) for row in await page_query(owner.id, 51, after).explain())
        assert uses_index[dialect_of(db_url)] in plan, plan
        assert "SCAN chats" not in plan and "TEMP B-TREE FOR ORDER BY" not in plan, plan
