"""Chats as trees, against the fake runtime: an edited question and a regenerated reply keep
what they replace as a sibling, /history shows one branch (or the whole tree), a branch can
be switched to, and the model reads only the branch it answers on."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from quart.typing import TestAppProtocol as QuartTestApp
from quart.typing import TestClientProtocol as QuartClient

from api.app import create_app
from api.settings import ApiSettings
from runtime.fake import FakeRuntime, fake_model
from tests.api.conftest import sse_events
from tests.auth import signed_in

MODEL = "fake.gguf"


@pytest.fixture(scope="module")
def fake() -> FakeRuntime:
    return FakeRuntime([fake_model(MODEL)], reply_words=3)


@pytest.fixture(scope="module")
async def app(
    tmp_path_factory: pytest.TempPathFactory, fake: FakeRuntime, db_url: str
) -> AsyncIterator[QuartTestApp]:
    home = tmp_path_factory.mktemp("branches")
    settings = ApiSettings(models_dir=home / "models", db_url=db_url, logs_dir=home / "logs",
                           state_dir=home)
    async with create_app(settings, runtime=fake).test_app() as running:
        yield running


@pytest.fixture(scope="module")
async def client(app: QuartTestApp) -> QuartClient:
    return await signed_in(app, "tester")


async def _say(client: QuartClient, chat_id: str, text: str, **extra: Any) -> dict[str, Any]:
    response = await client.post(f"/chat?model={MODEL}", json={"chat_id": chat_id, "message": text, **extra})
    assert response.status_code == 200, await response.get_data()
    return dict(await response.get_json())


async def _history(client: QuartClient, chat_id: str, tree: bool = False) -> dict[str, Any]:
    response = await client.get(f"/history?chat_id={chat_id}{'&tree=true' if tree else ''}")
    assert response.status_code == 200
    return dict(await response.get_json())


def _texts(history: dict[str, Any]) -> list[str]:
    return [m["text"] for m in history["messages"]]


async def test_edit_and_resend_keeps_the_old_continuation_as_a_branch(client: QuartClient, fake: FakeRuntime) -> None:
    await _say(client, "edit", "first question")
    asked = await _say(client, "edit", "second question")
    await _say(client, "edit", "third question")
    shown = await _history(client, "edit")
    second = shown["messages"][2]
    assert second["text"] == "second question" and second["siblings"] == [second["id"]]

    edited = await _say(client, "edit", "second, better", edit_of=second["id"])
    shown = await _history(client, "edit")
    assert _texts(shown) == ["first question", "word0 word1 word2", "second, better", "word0 word1 word2"]
    new_question = shown["messages"][2]
    assert new_question["siblings"] == [second["id"], new_question["id"]]
    assert new_question["parent_id"] == second["parent_id"] == shown["messages"][1]["id"]
    assert shown["current_message_id"] == edited["id"] == shown["messages"][-1]["id"]
    # The model read the branch up to the edited question's parent, then the new text.
    assert [m.content for m in fake.last_prompt] == ["first question", "word0 word1 word2", "second, better"]

    # Switching back to the first version shows its newest continuation, the third question included.
    back = await client.post("/chats/edit/branch", json={"message_id": second["id"]})
    assert back.status_code == 200
    assert _texts(await back.get_json()) == [
        "first question", "word0 word1 word2", "second question", "word0 word1 word2",
        "third question", "word0 word1 word2",
    ]
    assert _texts(await _history(client, "edit")) == _texts(await back.get_json())
    # A message sent now follows the branch shown.
    await _say(client, "edit", "fourth question")
    assert [m.content for m in fake.last_prompt][-3:] == ["third question", "word0 word1 word2", "fourth question"]
    tree = await _history(client, "edit", tree=True)
    assert len(tree["messages"]) == 10
    assert [m["id"] for m in tree["messages"]] == sorted(m["id"] for m in tree["messages"])
    assert asked["id"] in {m["id"] for m in tree["messages"]}


async def test_regenerate_keeps_the_previous_reply_as_a_sibling(client: QuartClient, fake: FakeRuntime) -> None:
    first = await _say(client, "regen", "hello")
    fake.reply_words = 2
    try:
        again = await (await client.post("/chats/regen/regenerate", json={})).get_json()
    finally:
        fake.reply_words = 3
    assert again["siblings"] == [first["id"], again["id"]]
    shown = await _history(client, "regen")
    assert _texts(shown) == ["hello", "word0 word1"]
    assert shown["messages"][1]["siblings"] == [first["id"], again["id"]]
    # Regenerating a named older reply adds a third version; the model reads only the question.
    third = await (await client.post("/chats/regen/regenerate", json={"message_id": first["id"]})).get_json()
    assert third["siblings"] == [first["id"], again["id"], third["id"]]
    assert [m.content for m in fake.last_prompt] == ["hello"]
    back = await (await client.post("/chats/regen/branch", json={"message_id": first["id"]})).get_json()
    assert back["messages"][1]["id"] == first["id"] and back["current_message_id"] == first["id"]


async def test_streamed_done_event_carries_the_siblings(client: QuartClient) -> None:
    await _say(client, "streamed", "hi")
    body = await (await client.post("/chats/streamed/regenerate", json={"stream": True})).get_data()
    done = sse_events(body)[-1]
    assert done[0] == "done" and len(done[1]["siblings"]) == 2
    assert done[1] == (await _history(client, "streamed"))["messages"][1]


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/chat", {"chat_id": "wrong", "message": "x", "edit_of": 999999}),
        ("/chats/wrong/regenerate", {"message_id": 999999}),
        ("/chats/wrong/branch", {"message_id": 999999}),
    ],
)
async def test_unknown_messages_are_404_and_store_nothing(client: QuartClient, path: str, body: dict[str, Any]) -> None:
    if not (await client.get("/history?chat_id=wrong")).status_code == 200:
        await _say(client, "wrong", "a question")
    before = await _history(client, "wrong", tree=True)
    response = await client.post(path, json=body)
    assert response.status_code == 404
    assert "999999" in (await response.get_json())["detail"]
    assert await _history(client, "wrong", tree=True) == before


async def test_edit_of_a_reply_or_regenerate_of_a_question_is_refused(client: QuartClient) -> None:
    await _say(client, "kinds", "a question")
    question, reply = (await _history(client, "kinds"))["messages"]
    assert (await client.post("/chat", json={"chat_id": "kinds", "message": "x", "edit_of": reply["id"]})).status_code == 404
    refused = await client.post("/chats/kinds/regenerate", json={"message_id": question["id"]})
    assert refused.status_code == 404
    assert len((await _history(client, "kinds", tree=True))["messages"]) == 2


async def test_another_users_messages_cannot_be_branched_to(app: QuartTestApp, client: QuartClient) -> None:
    await _say(client, "mine", "private")
    mine = (await _history(client, "mine"))["messages"][0]["id"]
    other = await signed_in(app, "other", role="user")
    await other.post("/load", json={"chat_id": "theirs", "model": MODEL})
    response = await other.post("/chats/theirs/branch", json={"message_id": mine})
    assert response.status_code == 404
    assert (await other.post("/chats/mine/branch", json={"message_id": mine})).status_code == 404


async def test_token_count_of_a_draft(client: QuartClient) -> None:
    await _say(client, "count", "hello")
    counted = await client.post("/tokens", json={"chat_id": "count", "text": "one two three"})
    assert counted.status_code == 200
    body = await counted.get_json()
    assert body == {"tokens": 3, "context_length": 2048}  # the fake counts words; the text alone
    await client.post("/unload", json={"chat_id": "count"})
    assert (await client.post("/tokens", json={"chat_id": "count", "text": "x"})).status_code == 409
    assert (await client.post("/tokens", json={"chat_id": "nobody", "text": "x"})).status_code == 404
