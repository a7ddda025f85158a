"""Chat turns under concurrency and failure, against the fake runtime (API logic only).

What is checked is what a client sees and what the database keeps: one reply per chat at
a time, refused requests that store nothing, accepted ones that always store an answer row,
and stop signals that reach the reply they were meant for.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from typing import Any

import pytest
from quart.typing import TestAppProtocol as QuartTestApp
from quart.typing import TestClientProtocol as QuartClient

from api.app import create_app
from api.settings import ApiSettings
from runtime.builds import BuildState
from runtime.fake import FakeRuntime, fake_model
from tests.api.conftest import sse_events

MODEL = "fake.gguf"


@pytest.fixture(scope="module")
def fake() -> FakeRuntime:
    return FakeRuntime([fake_model(MODEL)], token_delay_s=0.02, reply_words=20)


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> ApiSettings:
    home = tmp_path_factory.mktemp("turns")
    return ApiSettings(models_dir=home / "models", db_path=home / "chat.sqlite3", logs_dir=home / "logs",
                       state_dir=home, max_message_chars=200)


@pytest.fixture(scope="module")
async def app(settings: ApiSettings, fake: FakeRuntime) -> AsyncIterator[QuartTestApp]:
    async with create_app(settings, runtime=fake).test_app() as running:
        yield running


@pytest.fixture(scope="module")
def client(app: QuartTestApp) -> QuartClient:
    return app.test_client()


@pytest.fixture(autouse=True)
def pace(fake: FakeRuntime) -> None:
    fake.token_delay_s, fake.reply_words, fake.max_queue = 0.02, 20, 8


def _rows(settings: ApiSettings, chat_id: str) -> list[tuple[str, str]]:
    with sqlite3.connect(settings.db_path) as db:
        return list(db.execute("select role, status from messages where chat_id = ? order by id", (chat_id,)))


async def _load(client: QuartClient, chat_id: str) -> None:
    response = await client.post("/load", json={"chat_id": chat_id, "model": MODEL})
    assert response.status_code == 200, await response.get_data()


async def test_twenty_concurrent_turns_on_one_chat_give_one_reply(
    client: QuartClient, fake: FakeRuntime, settings: ApiSettings
) -> None:
    await _load(client, "burst")
    before = fake.generations

    async def stop_the_running_reply() -> dict[str, Any]:
        for _ in range(200):
            if fake.workers()[0].busy:  # a reply is being generated
                answer = await (await client.post("/chats/burst/stop")).get_json()
                assert answer["stopped"]
                return dict(answer)
            await asyncio.sleep(0.005)
        raise AssertionError("no reply ever ran")

    *responses, stopped = await asyncio.gather(
        *(client.post("/chat", json={"chat_id": "burst", "message": f"question {i}"}) for i in range(20)),
        stop_the_running_reply(),
    )
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200] + [429] * 19
    refused = [r for r in responses if r.status_code == 429]
    assert all(int(r.headers["Retry-After"]) >= 1 for r in refused)
    assert (await refused[0].get_json())["error"] == "ChatBusy"
    answered = await next(r for r in responses if r.status_code == 200).get_json()
    assert answered["status"] == "stopped" and answered["id"] == stopped["message_id"]
    assert fake.generations - before == 1
    assert _rows(settings, "burst") == [("user", "complete"), ("assistant", "stopped")]


async def test_a_refused_request_stores_nothing(client: QuartClient, fake: FakeRuntime, settings: ApiSettings) -> None:
    # No model loaded: 409, and not even the chat is created.
    response = await client.post("/chat", json={"chat_id": "never", "message": "hello?"})
    assert response.status_code == 409
    assert (await client.get("/history?chat_id=never")).status_code == 404
    # An unknown model, by /load or by /chat?model=: 404, and no chat either.
    assert (await client.post("/load", json={"chat_id": "never", "model": "nope.gguf"})).status_code == 404
    assert (await client.post("/chat?model=nope.gguf", json={"chat_id": "never", "message": "hi"})).status_code == 404
    assert (await client.get("/chats/never")).status_code == 404
    # Too long: 413.
    await _load(client, "refusals")
    response = await client.post("/chat", json={"chat_id": "refusals", "message": "x" * 201})
    assert response.status_code == 413
    # Invalid: 422.
    response = await client.post("/chat", json={"chat_id": "refusals", "message": ""})
    assert response.status_code == 422
    # The model's queue is full: 429.
    fake.max_queue = 0
    response = await client.post("/chat", json={"chat_id": "refusals", "message": "anyone?"})
    assert response.status_code == 429 and (await response.get_json())["error"] == "Busy"
    assert _rows(settings, "refusals") == []
    fake.max_queue = 8
    ok = await client.post("/chat", json={"chat_id": "refusals", "message": "now?"})
    assert ok.status_code == 200
    assert _rows(settings, "refusals") == [("user", "complete"), ("assistant", "complete")]


async def test_a_dead_worker_refuses_with_409_and_says_why(
    client: QuartClient, fake: FakeRuntime, settings: ApiSettings
) -> None:
    await _load(client, "orphan")
    fake.kill(MODEL)
    response = await client.post("/chat", json={"chat_id": "orphan", "message": "still there?"})
    assert response.status_code == 409
    assert "killed" in (await response.get_json())["detail"]
    assert _rows(settings, "orphan") == []
    status = await (await client.get("/status?chat_id=orphan")).get_json()
    assert status["loaded"] is False and "killed" in status["reason"]


async def test_a_worker_dying_while_a_request_waits_keeps_the_503_and_stores_the_error(
    client: QuartClient, fake: FakeRuntime, settings: ApiSettings
) -> None:
    fake.reply_words = 200
    await _load(client, "first")
    await _load(client, "second")
    running = asyncio.ensure_future(client.post("/chat", json={"chat_id": "first", "message": "long one", "stream": True}))
    while not fake.workers() or not fake.workers()[0].busy:
        await asyncio.sleep(0.01)
    waiting = [
        asyncio.ensure_future(client.post("/chat", json={"chat_id": "second", "message": "queued", "stream": True})),
        asyncio.ensure_future(client.post("/v1/chat/completions", json={
            "model": MODEL, "messages": [{"role": "user", "content": "queued too"}], "stream": True})),
    ]
    await asyncio.sleep(0.05)  # both are in the queue now
    await _until_both_wait(fake)
    fake.kill(MODEL)
    first = await running
    events = sse_events(await first.get_data())
    assert [name for name, _ in events][-1] == "error" and events[-1][1]["status"] == 503
    second, openai = await asyncio.gather(*waiting)
    assert second.status_code == 503 and (await second.get_json())["error"] == "WorkerDied"
    assert openai.status_code == 503
    body = await openai.get_json()
    assert body["error"]["type"] == "WorkerDied" and body["error"]["code"] == 503
    assert _rows(settings, "first") == [("user", "complete"), ("assistant", "error")]
    assert _rows(settings, "second") == [("user", "complete"), ("assistant", "error")]


async def _until_both_wait(fake: FakeRuntime) -> None:
    for _ in range(100):
        if fake.workers() and fake.workers()[0].queued >= 2:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the requests never queued")


async def test_stop_before_the_first_token_stores_a_stopped_reply(
    client: QuartClient, fake: FakeRuntime, settings: ApiSettings
) -> None:
    fake.token_delay_s = 0.5
    await _load(client, "early")
    reply = asyncio.ensure_future(client.post("/chat", json={"chat_id": "early", "message": "slow", "stream": True}))
    for _ in range(100):
        if (await (await client.post("/chats/early/stop")).get_json())["stopped"]:
            break
        await asyncio.sleep(0.01)
    events = sse_events(await (await reply).get_data())
    assert [name for name, _ in events] == ["start", "done"]
    assert events[-1][1]["status"] == "stopped" and events[-1][1]["text"] == ""
    # A stop for a reply that has ended does not stop the next one.
    fake.token_delay_s = 0.05
    later = asyncio.ensure_future(client.post("/chat", json={"chat_id": "early", "message": "again"}))
    while not fake.workers()[0].busy:
        await asyncio.sleep(0.01)
    old = events[-1][1]["id"]
    assert (await (await client.post(f"/chats/early/stop?message_id={old}")).get_json())["stopped"] is False
    assert (await (await later).get_json())["status"] == "complete"
    assert _rows(settings, "early") == [("user", "complete"), ("assistant", "stopped"),
                                        ("user", "complete"), ("assistant", "complete")]


async def test_regenerate_refused_keeps_the_reply_it_would_replace(
    client: QuartClient, fake: FakeRuntime, settings: ApiSettings
) -> None:
    await _load(client, "regen")
    await client.post("/chat", json={"chat_id": "regen", "message": "hello"})
    fake.max_queue = 0
    response = await client.post("/chats/regen/regenerate", json={})
    assert response.status_code == 429
    assert _rows(settings, "regen") == [("user", "complete"), ("assistant", "complete")]
    fake.max_queue = 8
    again = await (await client.post("/chats/regen/regenerate", json={})).get_json()
    history = (await (await client.get("/history?chat_id=regen")).get_json())["messages"]
    assert [m["sender"] for m in history] == ["user", "assistant"] and history[1]["id"] == again["id"]


async def test_one_message_shape_in_history_json_and_stream(client: QuartClient) -> None:
    await _load(client, "shape")
    answer = await (await client.post("/chat", json={"chat_id": "shape", "message": "one"})).get_json()
    events = sse_events(await (await client.post("/chat", json={"chat_id": "shape", "message": "two", "stream": True})).get_data())
    history = (await (await client.get("/history?chat_id=shape")).get_json())["messages"]
    done = events[-1][1]
    assert answer["response"] == answer["text"]
    assert {k: v for k, v in answer.items() if k != "response"} == history[1]
    assert done == history[3]
    assert events[0][1]["message_id"] == done["id"]
    assert set(history[0]) == set(done)  # user messages have the same fields


async def test_the_schema_documents_the_stream_events(client: QuartClient) -> None:
    schema = await (await client.get("/openapi.json")).get_json()
    chat = schema["paths"]["/chat"]["post"]["responses"]["200"]["content"]
    events = chat["text/event-stream"]["x-events"]
    assert set(events) == {"start", "token", "done", "error"}
    for ref in events.values():
        assert ref["$ref"].rsplit("/", 1)[-1] in schema["components"]["schemas"]
    assert "ErrorBody" in schema["components"]["schemas"]


async def test_models_being_built_are_listed_as_preparing(client: QuartClient, fake: FakeRuntime) -> None:
    fake.building = [BuildState("gemma-3-270m-onnx", "building", "exporting", 1.0, 12.5, None),
                     BuildState("gemma-3-270m", "ready", "done", 1.0, 60.0, None)]
    listing = await (await client.get("/models")).get_json()
    fake.building = []
    assert [m["name"] for m in listing["models"]] == [MODEL]
    assert listing["preparing"] == [{"name": "gemma-3-270m-onnx", "state": "building", "step": "exporting",
                                     "elapsed_s": 12.5, "error": None}]


async def test_a_turn_whose_caller_goes_away_while_it_is_stored_still_gets_its_answer_row(
    app: QuartTestApp, client: QuartClient, settings: ApiSettings
) -> None:
    await _load(client, "vanish")
    conversations = app.app.extensions["llmchat"].conversations
    chatlog = conversations.chatlog
    written = asyncio.Event()

    class SlowLog:
        async def write(self, chat_id: str, line: str) -> None:
            written.set()
            await asyncio.sleep(0.5)  # the caller goes away while the question is being logged

    conversations.chatlog = SlowLog()
    try:
        turn = asyncio.ensure_future(conversations.start("vanish", "are you there?"))
        await written.wait()
        turn.cancel()
        with pytest.raises(asyncio.CancelledError):
            await turn
        for _ in range(100):
            if not conversations.answering("vanish"):
                break
            await asyncio.sleep(0.02)
    finally:
        conversations.chatlog = chatlog
    assert _rows(settings, "vanish") == [("user", "complete"), ("assistant", "stopped")]
    again = await client.post("/chat", json={"chat_id": "vanish", "message": "and now?"})
    assert again.status_code == 200


async def test_loading_another_model_while_a_reply_runs_is_refused(client: QuartClient, fake: FakeRuntime) -> None:
    fake.reply_words = 100
    await _load(client, "switch")
    running = asyncio.ensure_future(client.post("/chat", json={"chat_id": "switch", "message": "long"}))
    while not fake.workers() or not any(w.busy for w in fake.workers()):
        await asyncio.sleep(0.01)
    refused = await client.post("/load", json={"chat_id": "switch", "model": MODEL, "device": "cpu"})
    assert refused.status_code == 429 and (await refused.get_json())["error"] == "ChatBusy"
    assert (await (await running).get_json())["status"] == "complete"


async def test_a_failure_after_acceptance_names_the_stored_reply(client: QuartClient, fake: FakeRuntime) -> None:
    fake.reply_words, fake.token_delay_s = 200, 0.05
    await _load(client, "named")
    reply = asyncio.ensure_future(client.post("/chat", json={"chat_id": "named", "message": "go"}))
    while not fake.workers() or not fake.workers()[0].busy:
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.2)
    fake.kill(MODEL)
    failed = await reply
    body = await failed.get_json()
    assert failed.status_code == 503 and body["error"] == "WorkerDied"
    history = (await (await client.get("/history?chat_id=named")).get_json())["messages"]
    assert history[-1]["id"] == body["message_id"] and history[-1]["status"] == "error"
