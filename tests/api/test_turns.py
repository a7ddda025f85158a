"""Chat turns under concurrency and failure, against the fake runtime (API logic only).

What is checked is what a client sees and what the database keeps: one reply per chat at
a time, refused requests that store nothing, accepted ones that always store an answer row,
and stop signals that reach the reply they were meant for.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from quart.typing import TestAppProtocol as QuartTestApp
from quart.typing import TestClientProtocol as QuartClient

from api.app import create_app
from api.settings import ApiSettings
from api.store import User
from runtime.builds import BuildState
from runtime.errors import Busy
from runtime.fake import FakeRuntime, fake_model
from runtime.interface import WorkerInfo
from runtime.protocol import ChatMessage, GenerationParams
from tests.api.conftest import sse_events
from tests.auth import signed_in
from tests.databases import raw_rows

MODEL = "fake.gguf"


@pytest.fixture(scope="module")
def fake() -> FakeRuntime:
    return FakeRuntime([fake_model(MODEL), fake_model("two-slots.gguf")], token_delay_s=0.02, reply_words=20)


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory, db_url: str) -> ApiSettings:
    home = tmp_path_factory.mktemp("turns")
    return ApiSettings(models_dir=home / "models", db_url=db_url, logs_dir=home / "logs",
                       state_dir=home, max_message_chars=200)


@pytest.fixture(scope="module")
async def app(settings: ApiSettings, fake: FakeRuntime) -> AsyncIterator[QuartTestApp]:
    async with create_app(settings, runtime=fake).test_app() as running:
        yield running


@pytest.fixture(scope="module")
async def client(app: QuartTestApp) -> QuartClient:
    return await signed_in(app, "tester")


@pytest.fixture(autouse=True)
def pace(fake: FakeRuntime) -> None:
    fake.token_delay_s, fake.reply_words, fake.max_queue, fake.saturated = 0.02, 20, 8, False


async def _rows(settings: ApiSettings, chat_id: str) -> list[tuple[str, str]]:
    return await raw_rows(settings.db_url, "select role, status from messages where chat_id = ? order by id", [chat_id])


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
            if fake.generations > before:  # a reply is being generated (its row is stored)
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
    assert await _rows(settings, "burst") == [("user", "complete"), ("assistant", "stopped")]


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
    fake.saturated = True
    response = await client.post("/chat", json={"chat_id": "refusals", "message": "anyone?"})
    assert response.status_code == 429 and (await response.get_json())["error"] == "Busy"
    assert await _rows(settings, "refusals") == []
    fake.saturated = False
    ok = await client.post("/chat", json={"chat_id": "refusals", "message": "now?"})
    assert ok.status_code == 200
    assert await _rows(settings, "refusals") == [("user", "complete"), ("assistant", "complete")]


async def test_a_dead_worker_refuses_with_409_and_says_why(
    client: QuartClient, fake: FakeRuntime, settings: ApiSettings
) -> None:
    await _load(client, "orphan")
    fake.kill(MODEL)
    response = await client.post("/chat", json={"chat_id": "orphan", "message": "still there?"})
    assert response.status_code == 409
    assert "killed" in (await response.get_json())["detail"]
    assert await _rows(settings, "orphan") == []
    status = await (await client.get("/status?chat_id=orphan")).get_json()
    assert status["loaded"] is False and "killed" in status["reason"]


async def test_a_worker_dying_while_requests_wait_fails_each_and_stores_the_error(
    client: QuartClient, fake: FakeRuntime, settings: ApiSettings
) -> None:
    """A waiting non-streaming turn and a waiting /v1 request keep the 503; a waiting streamed
    turn has already said where it stands (``queued``), so its stream ends with the 503 error."""
    fake.reply_words = 200
    for chat_id in ("first", "second", "third"):
        await _load(client, chat_id)
    before = fake.generations
    running = asyncio.ensure_future(client.post("/chat", json={"chat_id": "first", "message": "long one", "stream": True}))
    while fake.generations == before:
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.1)  # its first tokens (one per 20 ms) are out: its stream has begun
    waiting = [
        asyncio.ensure_future(client.post("/chat", json={"chat_id": "second", "message": "queued"})),
        asyncio.ensure_future(client.post("/v1/chat/completions", json={
            "model": MODEL, "messages": [{"role": "user", "content": "queued too"}], "stream": True})),
        asyncio.ensure_future(client.post("/chat", json={"chat_id": "third", "message": "queued, streamed", "stream": True})),
    ]
    await _until_waiting(fake, 3)
    fake.kill(MODEL)
    first = await running
    events = sse_events(await first.get_data())
    assert [name for name, _ in events][-1] == "error" and events[-1][1]["status"] == 503
    second, openai, third = await asyncio.gather(*waiting)
    assert second.status_code == 503 and (await second.get_json())["error"] == "WorkerDied"
    assert openai.status_code == 503
    body = await openai.get_json()
    assert body["error"]["type"] == "WorkerDied" and body["error"]["code"] == 503
    streamed = sse_events(await third.get_data())
    names = [name for name, _ in streamed]
    assert names[:2] == ["start", "queued"] and names[-1] == "error"
    assert streamed[1][1]["position"] >= 1 and streamed[-1][1]["status"] == 503
    assert streamed[-1][1]["message_id"] == streamed[0][1]["message_id"]
    for chat_id in ("first", "second", "third"):
        assert await _rows(settings, chat_id) == [("user", "complete"), ("assistant", "error")]


async def _until_waiting(fake: FakeRuntime, count: int = 2) -> None:
    for _ in range(100):
        if (workers := await fake.workers()) and workers[0].queued >= count:
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
    while not (await fake.workers())[0].busy:
        await asyncio.sleep(0.01)
    old = events[-1][1]["id"]
    assert (await (await client.post(f"/chats/early/stop?message_id={old}")).get_json())["stopped"] is False
    assert (await (await later).get_json())["status"] == "complete"
    assert await _rows(settings, "early") == [("user", "complete"), ("assistant", "stopped"),
                                        ("user", "complete"), ("assistant", "complete")]


async def test_regenerate_refused_keeps_the_reply_it_would_replace(
    client: QuartClient, fake: FakeRuntime, settings: ApiSettings
) -> None:
    await _load(client, "regen")
    await client.post("/chat", json={"chat_id": "regen", "message": "hello"})
    fake.saturated = True
    response = await client.post("/chats/regen/regenerate", json={})
    assert response.status_code == 429
    assert await _rows(settings, "regen") == [("user", "complete"), ("assistant", "complete")]
    fake.saturated = False
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
    assert set(events) == {"start", "queued", "token", "done", "error"}
    for ref in events.values():
        assert ref["$ref"].rsplit("/", 1)[-1] in schema["components"]["schemas"]
    assert "ErrorBody" in schema["components"]["schemas"]


async def test_models_being_built_are_listed_as_preparing(client: QuartClient, fake: FakeRuntime) -> None:
    fake.building = [BuildState("gemma-3-270m-onnx", "building", "exporting", 1.0, 12.5, None),
                     BuildState("gemma-3-270m", "ready", "done", 1.0, 60.0, None)]
    listing = await (await client.get("/models")).get_json()
    fake.building = []
    assert [m["name"] for m in listing["models"]] == [MODEL, "two-slots.gguf"]
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
        owner = await User.get(name="tester")
        turn = asyncio.ensure_future(conversations.start("vanish", owner, "are you there?"))
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
    assert await _rows(settings, "vanish") == [("user", "complete"), ("assistant", "stopped")]
    again = await client.post("/chat", json={"chat_id": "vanish", "message": "and now?"})
    assert again.status_code == 200


async def test_loading_another_model_while_a_reply_runs_is_refused(client: QuartClient, fake: FakeRuntime) -> None:
    fake.reply_words = 100
    await _load(client, "switch")
    running = asyncio.ensure_future(client.post("/chat", json={"chat_id": "switch", "message": "long"}))
    while not (workers := await fake.workers()) or not any(w.busy for w in workers):
        await asyncio.sleep(0.01)
    refused = await client.post("/load", json={"chat_id": "switch", "model": MODEL, "device": "cpu"})
    assert refused.status_code == 429 and (await refused.get_json())["error"] == "ChatBusy"
    assert (await (await running).get_json())["status"] == "complete"


async def test_a_failure_after_acceptance_names_the_stored_reply(client: QuartClient, fake: FakeRuntime) -> None:
    fake.reply_words, fake.token_delay_s = 200, 0.05
    await _load(client, "named")
    reply = asyncio.ensure_future(client.post("/chat", json={"chat_id": "named", "message": "go"}))
    while not (workers := await fake.workers()) or not workers[0].busy:
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.2)
    fake.kill(MODEL)
    failed = await reply
    body = await failed.get_json()
    assert failed.status_code == 503 and body["error"] == "WorkerDied"
    history = (await (await client.get("/history?chat_id=named")).get_json())["messages"]
    assert history[-1]["id"] == body["message_id"] and history[-1]["status"] == "error"


async def test_waiting_turns_hear_their_place_move_up_and_can_be_stopped(
    client: QuartClient, fake: FakeRuntime, settings: ApiSettings
) -> None:
    """Two slots: two turns run at once, three wait and say where they stand; stopping the
    first in line lets the others move up; /status counts running and waiting replies."""
    fake.reply_words = 30
    chats = [f"line{i}" for i in range(5)]
    for chat_id in chats:
        response = await client.post("/load", json={"chat_id": chat_id, "model": "two-slots.gguf", "parallel": 2})
        assert response.status_code == 200
    before = fake.generations
    turns = []
    for chat_id in chats:
        turns.append(asyncio.ensure_future(
            client.post("/chat", json={"chat_id": chat_id, "message": "hello", "stream": True})
        ))

        async def placed(n: int = len(turns)) -> bool:
            return fake.generations - before + (await _worker(fake, "two-slots.gguf")).queued == n

        await _until(placed)
    worker = await _worker(fake, "two-slots.gguf")
    assert (worker.parallel, worker.running, worker.queued) == (2, 2, 3)
    status = await (await client.get("/status")).get_json()
    state = next(w for w in status["workers"] if w["model"] == "two-slots.gguf")
    assert (state["parallel"], state["running"], state["queued"]) == (2, 2, 3)
    stopped = await (await client.post("/chats/line2/stop")).get_json()  # first in line
    assert stopped["stopped"]
    results = [sse_events(await (await turn).get_data()) for turn in turns]
    for events in results[:2]:  # started at once: no queued event
        assert [name for name, _ in events if name != "token"] == ["start", "done"]
    assert [data["position"] for name, data in results[2] if name == "queued"] == [1]
    assert results[2][-1][0] == "done" and results[2][-1][1]["status"] == "stopped"
    for events, places in ((results[3], [2, 1, 0]), (results[4], [3, 2, 1, 0])):
        assert [data["position"] for name, data in events if name == "queued"] == places
        assert [data["ahead"] for name, data in events if name == "queued"] == [max(0, p - 1) for p in places]
        assert events[-1][0] == "done" and events[-1][1]["status"] == "complete"
    assert await _rows(settings, "line2") == [("user", "complete"), ("assistant", "stopped")]
    assert fake.generations - before == 4


async def test_one_chat_holds_one_place_on_a_model(client: QuartClient, fake: FakeRuntime) -> None:
    """A chat's turns are one at a time in the API, and a second request for the same session
    is refused by the runtime too (so no chat takes two slots while others wait)."""
    await _load(client, "single")
    first = fake.generate("single", [ChatMessage("user", "a")], GenerationParams(), session="single")
    assert (await anext(first)).position == 0
    second = fake.generate("single", [ChatMessage("user", "b")], GenerationParams(), session="single")
    with pytest.raises(Busy, match="already has a reply"):
        await anext(second)
    await first.aclose()
    third = fake.generate("single", [ChatMessage("user", "c")], GenerationParams(), session="single")
    assert (await anext(third)).position == 0
    await third.aclose()


async def _worker(fake: FakeRuntime, model: str) -> WorkerInfo:
    return next(w for w in await fake.workers() if w.key.model == model)


async def _until(condition: Callable[[], Awaitable[bool]]) -> None:
    for _ in range(300):
        if await condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the condition never held")
