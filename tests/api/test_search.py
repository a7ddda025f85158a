"""``GET /search`` against the real SQLite FTS5 index (the fake runtime answers): words in older
chats and in titles, prefixes, case and diacritics, escaped snippets, hostile queries, other
users' chats, and an index that follows every write of messages and titles."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

import pytest
from quart.typing import TestAppProtocol as QuartTestApp
from quart.typing import TestClientProtocol as QuartClient

from api.app import create_app
from api.search import MAX_TERMS
from api.settings import ApiSettings
from api.store import Message
from runtime.fake import FakeRuntime, fake_model
from tests.auth import signed_in

MODEL = "fake.gguf"


@pytest.fixture(scope="module")
async def app(tmp_path_factory: pytest.TempPathFactory, db_url: str) -> AsyncIterator[QuartTestApp]:
    home = tmp_path_factory.mktemp("search")
    settings = ApiSettings(models_dir=home / "models", db_url=db_url, logs_dir=home / "logs",
                           state_dir=home)
    async with create_app(settings, runtime=FakeRuntime([fake_model(MODEL)], reply_words=4)).test_app() as running:
        yield running


@pytest.fixture(scope="module")
async def alice(app: QuartTestApp) -> QuartClient:
    return await signed_in(app, "alice", "user")


@pytest.fixture(scope="module")
async def bob(app: QuartTestApp) -> QuartClient:
    return await signed_in(app, "bob", "user")


async def _say(client: QuartClient, chat_id: str, text: str, **extra: Any) -> dict[str, Any]:
    response = await client.post(f"/chat?model={MODEL}", json={"chat_id": chat_id, "message": text, **extra})
    assert response.status_code == 200, await response.get_data()
    return dict(await response.get_json())


async def _question_id(client: QuartClient, chat_id: str) -> int:
    history = await (await client.get(f"/history?chat_id={chat_id}")).get_json()
    return int(next(m["id"] for m in reversed(history["messages"]) if m["sender"] == "user"))


async def _search(client: QuartClient, q: str, limit: int | None = None) -> list[dict[str, Any]]:
    response = await client.get(f"/search?q={quote(q)}" + (f"&limit={limit}" if limit else ""))
    assert response.status_code == 200, await response.get_data()
    body = await response.get_json()
    assert body["query"] == q
    return list(body["results"])


async def test_finds_a_word_typed_chats_ago_with_the_match_marked(alice: QuartClient) -> None:
    await _say(alice, "paris", "How tall is the Eiffel tower in Paris?")
    asked = await _question_id(alice, "paris")
    for n in range(3):
        await _say(alice, f"later-{n}", f"Something else entirely, number {n}")
    results = await _search(alice, "eiffel")
    assert len(results) == 1
    (hit,) = results
    assert (hit["chat_id"], hit["message_id"], hit["sender"]) == ("paris", asked, "user")
    assert hit["title"] == "How tall is the Eiffel tower in Paris?"  # an untitled chat: its first message
    assert hit["snippet"] == "How tall is the <mark>Eiffel</mark> tower in Paris?"
    assert hit["timestamp"].endswith("+00:00")
    # Replies are found too.
    assert {(h["chat_id"], h["sender"]) for h in await _search(alice, "word3")} >= {("paris", "assistant")}


async def test_finds_titles_and_a_chat_without_one_by_its_messages(alice: QuartClient) -> None:
    await _say(alice, "trip", "Which trains go to Lyon?")
    assert (await alice.patch("/chats/trip", json={"title": "Holiday planning"})).status_code == 200
    results = await _search(alice, "holiday")
    assert results == [{"chat_id": "trip", "title": "Holiday planning", "message_id": None, "sender": None,
                        "snippet": "<mark>Holiday</mark> planning", "timestamp": None}]
    # The messages of a titled chat are found as well, under its title.
    (hit,) = await _search(alice, "lyon")
    assert (hit["chat_id"], hit["title"], hit["sender"]) == ("trip", "Holiday planning", "user")


async def test_each_term_is_a_prefix_and_every_term_must_match(alice: QuartClient) -> None:
    await _say(alice, "config", "Configuring Python logging handlers")
    assert [h["chat_id"] for h in await _search(alice, "conf pyth")] == ["config"]
    assert [h["chat_id"] for h in await _search(alice, "LOGG")] == ["config"]
    assert await _search(alice, "configuring ruby") == []  # ANDed
    assert await _search(alice, "onfiguring") == []  # a prefix, not a substring
    (hit,) = await _search(alice, "hand")
    assert hit["snippet"] == "Configuring Python logging <mark>handlers</mark>"


async def test_case_and_diacritics_do_not_matter(alice: QuartClient) -> None:
    await _say(alice, "dessert", "Une crème brûlée à Montréal, s'il vous plaît")
    for query in ("creme brulee", "CRÈME BRÛLÉE", "montreal", "MONTRÉAL", "Montre", "plait", "Crême"):
        assert [h["chat_id"] for h in await _search(alice, query)] == ["dessert"], query
    await _say(alice, "naive", "a naive approach")
    assert [h["chat_id"] for h in await _search(alice, "naïve")] == ["naive"]


async def test_snippets_are_escaped_html_with_only_mark_tags(alice: QuartClient) -> None:
    text = 'See <script>alert("xss")</script> & <b onclick=x>bold</b> \ue000 \ue001 \u2063 marker'
    await _say(alice, "html", text)
    (hit,) = await _search(alice, "alert")
    snippet = hit["snippet"]
    assert set(re.findall(r"<[^>]*>", snippet)) == {"<mark>", "</mark>"}
    assert "&lt;script&gt;<mark>alert</mark>(&quot;xss&quot;)&lt;/script&gt;" in snippet
    assert "&amp; &lt;b onclick=x&gt;bold&lt;/b&gt;" in snippet
    (hit,) = await _search(alice, "marker")
    assert hit["snippet"].count("<mark>") == 1 and "\ue000" in hit["snippet"]  # stored text stays text
    # A long message: the snippet is the text around the match, cut with an ellipsis.
    await _say(alice, "long", " ".join(f"filler{n}" for n in range(200)) + " needle " + "tail " * 200)
    (hit,) = await _search(alice, "needle")
    assert "<mark>needle</mark>" in hit["snippet"] and "…" in hit["snippet"] and len(hit["snippet"]) < 400


HOSTILE = [
    '"', '""', '"unclosed', "'", "*", "**", "-", "-word", "(", ")", "()", "(a OR b", "AND", "OR", "NOT", "NEAR",
    "a AND", "AND OR NOT", "x NEAR/2 y", "NEAR(a b, 3)", "{text}:x", "text:x", "col:", "^start", "a + b", "a - b",
    "\\", "%", "%%", "_", "'; DROP TABLE messages; --", "\" OR 1=1 --", "*" * 100, "a" * 500,
    "🙂", "\u0301", "\u200b", "\ufeff", "\ue000", "x\ty", "a\nb", "ünïcödé*", "中文", "rowid", "messages_fts",
    " ".join(["w"] * MAX_TERMS), " ".join(["w"] * (MAX_TERMS + 1)),
]


@pytest.mark.parametrize("query", HOSTILE)
async def test_hostile_queries_answer_200_or_400_never_500(alice: QuartClient, query: str) -> None:
    response = await alice.get(f"/search?q={quote(query)}")
    assert response.status_code in (200, 400), (response.status_code, await response.get_data())
    body = await response.get_json()
    if response.status_code == 400:
        assert body["error"] == "MalformedRequest" and body["detail"].startswith("q:")
    else:
        assert body["query"] == query


async def test_operator_words_are_searched_as_words(alice: QuartClient) -> None:
    await _say(alice, "music", "rock and roll, NOT jazz, near the stage")
    for query in ("and roll", "AND", "not jazz", "NEAR stage", '"rock" -roll', "rock*", "(rock)"):
        assert [h["chat_id"] for h in await _search(alice, query)] == ["music"], query


async def test_query_and_limit_bounds(alice: QuartClient) -> None:
    assert (await alice.get("/search?q=")).status_code == 422
    assert (await alice.get("/search")).status_code == 422
    assert (await alice.get(f"/search?q={'a' * 501}")).status_code == 422
    undecodable = await alice.get("/search?q=%FF%FEab")  # bytes that are no UTF-8
    assert undecodable.status_code == 400 and "not UTF-8" in (await undecodable.get_json())["detail"]
    for bad in (0, 51):
        assert (await alice.get(f"/search?q=word&limit={bad}")).status_code == 422
    for n in range(22):
        await _say(alice, f"bulk-{n}", f"filler message {n}")
    assert len(await _search(alice, "word", limit=2)) == 2  # every reply is word0 word1 word2 word3
    assert len(await _search(alice, "word")) == 20  # the default
    assert 20 < len(await _search(alice, "word", limit=50)) <= 50


async def test_equally_relevant_matches_come_newest_first(alice: QuartClient) -> None:
    for n in range(3):
        await _say(alice, f"same-{n}", "identical zebra question")
    assert [h["chat_id"] for h in await _search(alice, "zebra")] == ["same-2", "same-1", "same-0"]


async def test_other_users_chats_never_appear(alice: QuartClient, bob: QuartClient) -> None:
    await _say(bob, "bob-secret", "Bob's private eiffel plans")
    assert (await bob.patch("/chats/bob-secret", json={"title": "Eiffel secrets"})).status_code == 200
    bobs = await _search(bob, "eiffel")
    assert {h["chat_id"] for h in bobs} == {"bob-secret"} and len(bobs) == 2  # his message and his title
    assert {h["chat_id"] for h in await _search(alice, "eiffel")} == {"paris"}
    assert await _search(alice, "private") == [] and await _search(alice, "secrets") == []


async def test_the_index_follows_edits_renames_and_deletes(alice: QuartClient) -> None:
    await _say(alice, "edits", "My favourite colour is turquoise")
    asked = await _question_id(alice, "edits")
    # Edit and resend: the new question is found, and the old one too (it stays as a branch).
    await _say(alice, "edits", "My favourite colour is vermilion", edit_of=asked)
    assert [(h["chat_id"], h["message_id"]) for h in await _search(alice, "turquoise")] == [("edits", asked)]
    (new,) = await _search(alice, "vermilion")
    assert new["message_id"] != asked

    # A stored text that changes (as a streamed reply's does) is indexed as it is now.
    await Message.filter(id=asked).update(text="My favourite colour was ochre")
    assert await _search(alice, "turquoise") == []
    assert [h["message_id"] for h in await _search(alice, "ochre")] == [asked]

    # Titles: renamed, then cleared.
    await alice.patch("/chats/edits", json={"title": "Colours galore"})
    assert [h["message_id"] for h in await _search(alice, "galore")] == [None]
    await alice.patch("/chats/edits", json={"title": "Paint shop"})
    assert await _search(alice, "galore") == []
    assert [h["title"] for h in await _search(alice, "paint")] == ["Paint shop"]
    await alice.patch("/chats/edits", json={"title": " "})
    assert await _search(alice, "paint") == []
    assert {h["title"] for h in await _search(alice, "vermilion")} == {"My favourite colour was ochre"}

    # A deleted chat: nothing of it is found.
    await alice.patch("/chats/edits", json={"title": "Doomed"})
    assert (await alice.delete("/chats/edits")).status_code == 200
    for query in ("doomed", "vermilion", "ochre", "favourite"):
        assert await _search(alice, query) == [], query
