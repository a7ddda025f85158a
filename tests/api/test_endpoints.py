"""Every endpoint through Quart's test client, with the real default model generating."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3

import psutil
from quart.typing import TestClientProtocol as QuartClient

from api.settings import ApiSettings
from tests.api.conftest import GGUF, sse_events

# Greedy decoding of this prompt runs to the token limit, so a reply is still going after seconds.
ENDLESS = "Continue: 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12,"


async def test_models_lists_the_default_models(client: QuartClient) -> None:
    response = await client.get("/models")
    assert response.status_code == 200
    models = {m["name"]: m for m in (await response.get_json())["models"]}
    assert models[GGUF]["backend"] == "llama.cpp" and models[GGUF]["context_length"] == 32768
    assert models["gemma-3-270m"]["backend"] == "transformers"


async def test_original_api_flow_load_chat_history_status_unload(client: QuartClient, api_settings: ApiSettings) -> None:
    load = await client.post("/load", json={"chat_id": "first-1", "model": GGUF, "device": "cpu"})
    assert load.status_code == 200, await load.get_data()
    body = await load.get_json()
    assert {"status", "chat_id", "model", "device", "load_time_s"} <= body.keys()
    assert (body["status"], body["running_on"], body["context_length"]) == ("loaded", "cpu", 1024)

    status = await (await client.get("/status?chat_id=first-1")).get_json()
    assert status["loaded"] and status["model"] == GGUF and status["device"] == "cpu"

    reply = await client.post("/chat", json={"chat_id": "first-1", "message": "What is the capital of France?"})
    assert reply.status_code == 200
    answer = await reply.get_json()
    assert "Paris" in answer["response"]
    assert answer["tokens"] > 0 and answer["time_s"] > 0 and answer["tps"] > 0
    assert answer["status"] == "complete" and answer["dropped_messages"] == 0

    history = (await (await client.get("/history?chat_id=first-1")).get_json())["messages"]
    assert [(m["sender"], m["status"]) for m in history] == [("user", "complete"), ("assistant", "complete")]
    assert history[1]["text"] == answer["response"] and history[1]["tokens"] == answer["tokens"]
    assert history[1]["model"] == GGUF and history[1]["timestamp"]

    chats = (await (await client.get("/chats")).get_json())["chats"]
    listed = next(c for c in chats if c["chat_id"] == "first-1")
    assert listed["title"] == "What is the capital of France?" and listed["loaded"]

    worker_pid = (await (await client.get("/status")).get_json())["workers"][0]["pid"]
    unload = await (await client.post("/unload", json={"chat_id": "first-1", "model": GGUF, "device": "cpu"})).get_json()
    assert unload["status"] == "unloaded" and unload["process_exited"] is True
    assert unload["freed_mb"] > 100  # the worker's resident memory, given back
    assert not psutil.pid_exists(worker_pid)
    status = await (await client.get("/status?chat_id=first-1")).get_json()
    assert not status["loaded"] and status["model"] == GGUF  # the choice is remembered
    log = (api_settings.logs_dir / "chats" / "first-1.log").read_text(encoding="utf-8")
    assert "user: What is the capital of France?" in log and "assistant [complete" in log


async def test_chat_streams_server_sent_events(client: QuartClient) -> None:
    response = await client.post(
        "/chat?model=" + GGUF, json={"chat_id": "stream-1", "message": "What is the capital of France?", "stream": True}
    )
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/event-stream")
    events = sse_events(await response.get_data())
    names = [name for name, _ in events]
    assert names[0] == "start" and names[-1] == "done" and names.count("token") >= 2
    text = "".join(data["text"] for name, data in events if name == "token")
    done = events[-1][1]
    assert done["text"] == text and "Paris" in text
    assert done["status"] == "complete" and done["tokens"] > 0 and done["tps"] > 0
    history = (await (await client.get("/history?chat_id=stream-1")).get_json())["messages"]
    assert history[-1] == done and history[-1]["text"] == text


async def test_accept_header_also_selects_streaming(client: QuartClient) -> None:
    response = await client.post(
        "/chat?model=" + GGUF, json={"chat_id": "stream-2", "message": "Hi"}, headers={"Accept": "text/event-stream"}
    )
    assert sse_events(await response.get_data())[-1][0] == "done"


async def test_no_model_loaded_is_a_409_that_stores_nothing(client: QuartClient) -> None:
    response = await client.post("/chat", json={"chat_id": "no-model", "message": "Is anyone there?"})
    assert response.status_code == 409
    assert "load" in (await response.get_json())["detail"]
    assert (await client.get("/history?chat_id=no-model")).status_code == 404  # not even the chat
    # Loading and sending again answers it.
    await client.post("/load", json={"chat_id": "no-model", "model": GGUF})
    again = await client.post("/chat", json={"chat_id": "no-model", "message": "Is anyone there?"})
    assert again.status_code == 200 and (await again.get_json())["status"] == "complete"
    history = (await (await client.get("/history?chat_id=no-model")).get_json())["messages"]
    assert [(m["sender"], m["status"]) for m in history] == [("user", "complete"), ("assistant", "complete")]


async def test_chat_management(client: QuartClient, api_settings: ApiSettings) -> None:
    created = await client.post(
        "/chats", json={"title": "Geography", "system_prompt": "Answer in one sentence.", "temperature": 0}
    )
    assert created.status_code == 201
    chat = await created.get_json()
    chat_id = chat["chat_id"]
    assert (chat["title"], chat["system_prompt"], chat["temperature"]) == ("Geography", "Answer in one sentence.", 0)
    renamed = await (await client.patch(f"/chats/{chat_id}", json={"title": "Capitals", "max_new_tokens": 20})).get_json()
    assert renamed["title"] == "Capitals" and renamed["max_new_tokens"] == 20

    first = await (await client.post(f"/chat?model={GGUF}", json={"chat_id": chat_id, "message": "Capital of Italy?"})).get_json()
    assert first["tokens"] <= 20
    regenerated = await (await client.post(f"/chats/{chat_id}/regenerate", json={})).get_json()
    history = (await (await client.get(f"/history?chat_id={chat_id}")).get_json())["messages"]
    assert [m["sender"] for m in history] == ["user", "assistant"]
    assert history[1]["id"] == regenerated["id"] != first["id"]

    log_file = api_settings.logs_dir / "chats" / f"{chat_id}.log"
    assert log_file.exists()
    deleted = await client.delete(f"/chats/{chat_id}")
    assert deleted.status_code == 200
    assert (await client.get(f"/history?chat_id={chat_id}")).status_code == 404
    assert not log_file.exists()
    with sqlite3.connect(api_settings.db_url) as db:
        assert db.execute("select count(*) from messages where chat_id = ?", (chat_id,)).fetchone()[0] == 0


async def test_stop_keeps_the_partial_reply(client: QuartClient) -> None:
    await client.post("/chats", json={"chat_id": "stopper", "max_new_tokens": 400, "temperature": 0})
    await client.post("/load", json={"chat_id": "stopper", "model": GGUF})

    async def stop_soon() -> dict[str, object]:
        for _ in range(100):
            await asyncio.sleep(0.1)
            result = await (await client.post("/chats/stopper/stop")).get_json()
            if result["stopped"]:
                return result
        raise AssertionError("the reply never started")

    reply, stopped = await asyncio.gather(
        client.post("/chat", json={"chat_id": "stopper", "message": ENDLESS}), stop_soon()
    )
    answer = await reply.get_json()
    assert stopped["stopped"] and answer["status"] == "stopped"
    assert answer["tokens"] < 400
    history = (await (await client.get("/history?chat_id=stopper")).get_json())["messages"]
    assert history[-1]["status"] == "stopped" and history[-1]["text"] == answer["response"]


async def test_history_is_trimmed_to_fit_the_context(client: QuartClient) -> None:
    await client.post("/chats", json={"chat_id": "long", "max_new_tokens": 16})
    await client.post("/load", json={"chat_id": "long", "model": GGUF})
    for i in range(6):
        await client.post("/chat", json={"chat_id": "long", "message": f"Note {i}: " + "blah " * 300})
    answer = await (await client.post("/chat", json={"chat_id": "long", "message": "Done?"})).get_json()
    assert answer["status"] == "complete" and answer["dropped_messages"] > 0
    assert answer["prompt_tokens"] + 16 <= 1024


async def test_dead_worker_mid_reply_is_a_503_and_the_partial_is_kept(client: QuartClient) -> None:
    await client.post("/chats", json={"chat_id": "doomed", "max_new_tokens": 400, "temperature": 0})
    loaded = await (await client.post("/load", json={"chat_id": "doomed", "model": GGUF, "device": "cpu"})).get_json()
    pid = next(w["pid"] for w in (await (await client.get("/status")).get_json())["workers"] if "doomed" in w["chats"])

    async def kill_soon() -> None:
        await asyncio.sleep(1.0)
        os.kill(pid, signal.SIGKILL)

    reply, _ = await asyncio.gather(
        client.post("/chat", json={"chat_id": "doomed", "message": ENDLESS}), kill_soon()
    )
    assert loaded["status"] == "loaded"
    assert reply.status_code == 503
    assert "killed by signal 9" in (await reply.get_json())["detail"]
    history = (await (await client.get("/history?chat_id=doomed")).get_json())["messages"]
    assert history[-1]["status"] == "error" and history[-1]["sender"] == "assistant"
    status = await (await client.get("/status?chat_id=doomed")).get_json()
    assert not status["loaded"] and "killed" in status["reason"]
    # The API keeps serving, and loading again works.
    again = await client.post("/load", json={"chat_id": "doomed", "model": GGUF, "device": "cpu"})
    assert again.status_code == 200


async def test_bad_input_gets_clear_errors_and_never_500(client: QuartClient) -> None:
    cases = [
        (client.post("/chat", data="{not json", headers={"Content-Type": "application/json"}), 400),
        (client.post("/chat", json={"chat_id": "x", "message": 42}), 422),
        (client.post("/chat", json={"chat_id": "x"}), 422),
        (client.post("/chat", json={"chat_id": "bad id!", "message": "hi"}), 422),
        (client.post("/chat", json={"chat_id": "x", "message": "hi", "surprise": 1}), 422),
        (client.post("/chat", json={"chat_id": "big", "message": "a" * 4001}), 413),
        (client.post("/chat", json={"chat_id": "huge", "message": "a" * 200_000}), 413),
        (client.get("/history?chat_id=nobody"), 404),
        (client.get("/history"), 422),
        (client.get("/status?chat_id=nobody"), 404),
        (client.post("/unload", json={"chat_id": "nobody"}), 404),
        (client.post("/load", json={"chat_id": "t", "model": "../../etc/passwd"}), 400),
        (client.post("/load", json={"chat_id": "t", "model": "/etc/passwd"}), 400),
        (client.post("/load", json={"chat_id": "t", "model": "no-such-model.gguf"}), 404),
        (client.post("/load", json={"chat_id": "t", "model": GGUF, "device": "tpu"}), 422),
        (client.post("/load", json={"chat_id": "t", "model": GGUF, "device": "gpu"}), 422),
        (client.patch("/chats/nobody", json={"title": "x"}), 404),
        (client.patch("/chats/t", json={"temperature": 9}), 422),
        (client.delete("/chats/nobody"), 404),
        (client.post("/chats/nobody/regenerate", json={}), 404),
        (client.get("/no/such/route"), 404),
    ]
    # Path ids longer than any stored id (found by schemathesis: the ORM rejected them with a 500).
    too_long = "\u03a9" * 65
    cases += [
        (client.get(f"/chats/{too_long}"), 404),
        (client.patch(f"/chats/{too_long}", json={"title": "x"}), 404),
        (client.delete(f"/chats/{too_long}"), 404),
        (client.post(f"/chats/{too_long}/stop"), 404),
        (client.post(f"/chats/{too_long}/regenerate", json={}), 404),
    ]
    for request, expected in cases:
        response = await request
        body = await response.get_json()
        assert response.status_code == expected, (expected, body)
        assert body["detail"] and body["status"] == expected
    # Rejected before anything was stored (the client still has its text): no chat was created.
    assert (await client.get("/history?chat_id=big")).status_code == 404


async def test_openapi_and_docs(client: QuartClient) -> None:
    spec = await (await client.get("/openapi.json")).get_json()
    for path in ("/status", "/chats", "/history", "/load", "/unload", "/chat", "/models", "/v1/chat/completions"):
        assert path in spec["paths"]
    text = str(spec)  # request bodies are inlined, responses are under components
    for schema in ("LoadRequest", "UnloadRequest", "ChatRequest", "ChatResponse", "StatusResponse", "ChatMeta"):
        assert f"'title': '{schema}'" in text or schema in spec["components"]["schemas"], schema
    load_body = spec["paths"]["/load"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert {"chat_id", "model", "device"} <= set(load_body.get("properties", {})) or "$ref" in load_body
    assert (await client.get("/docs")).status_code == 200
