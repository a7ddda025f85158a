"""The real server: Hypercorn on a loopback port, driven with httpx, httpx-sse and the openai client."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from httpx_sse import connect_sse
from openai import OpenAI

from tests.api.conftest import GGUF
from tests.servers import ApiServer, survivors

ENDLESS = "Continue: 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12,"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, models_dir: Path) -> Iterator[ApiServer]:
    running = ApiServer(tmp_path_factory.mktemp("server"), models_dir, n_ctx="2048")
    running.start()
    yield running
    running.stop()


def test_streaming_over_http(server: ApiServer) -> None:
    with httpx.Client(base_url=server.url, timeout=60, headers=server.headers) as http:
        assert http.post("/load", json={"chat_id": "http-1", "model": GGUF}).status_code == 200
        http.patch("/chats/http-1", json={"temperature": 0})
        tokens, done = [], None
        with connect_sse(http, "POST", "/chat", json={"chat_id": "http-1", "message": "What is the capital of France?", "stream": True}) as source:
            assert source.response.headers["content-type"].startswith("text/event-stream")
            for sse in source.iter_sse():
                if sse.event == "token":
                    tokens.append(json.loads(sse.data)["text"])
                elif sse.event == "done":
                    done = json.loads(sse.data)
        assert done is not None and done["status"] == "complete"
        assert "".join(tokens) == done["text"] and "Paris" in done["text"]


def test_client_disconnect_stops_generation_and_keeps_the_partial(server: ApiServer) -> None:
    with httpx.Client(base_url=server.url, timeout=60, headers=server.headers) as http:
        http.post("/chats", json={"chat_id": "http-2", "max_new_tokens": 500, "temperature": 0})
        http.post("/load", json={"chat_id": "http-2", "model": GGUF})
        received = 0
        with connect_sse(http, "POST", "/chat", json={"chat_id": "http-2", "message": ENDLESS, "stream": True}) as source:
            for sse in source.iter_sse():
                received += sse.event == "token"
                if received == 5:
                    break  # leaving the block closes the connection
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            last = http.get("/history", params={"chat_id": "http-2"}).json()["messages"][-1]
            if last["status"] != "streaming":
                break
            time.sleep(0.1)
        assert last["status"] == "stopped"
        assert last["text"].startswith("1") and last["tokens"] < 500
        # The worker (shared with a new chat) is free at once: 500 tokens would take 15 s or more.
        http.post("/chats", json={"chat_id": "http-2b", "max_new_tokens": 20, "temperature": 0})
        started = time.monotonic()
        answer = http.post(f"/chat?model={GGUF}", json={"chat_id": "http-2b", "message": "Capital of France?"}).json()
        assert answer["status"] == "complete" and time.monotonic() - started < 5


def test_official_openai_client(server: ApiServer) -> None:
    client = OpenAI(base_url=server.url + "/v1", api_key=server.key)
    assert GGUF in {m.id for m in client.models.list()}
    completion = client.chat.completions.create(
        model=GGUF, messages=[{"role": "user", "content": "What is the capital of France?"}], temperature=0, max_tokens=30
    )
    assert "Paris" in (completion.choices[0].message.content or "")
    assert completion.usage is not None and completion.usage.completion_tokens > 0
    assert completion.usage.total_tokens == completion.usage.prompt_tokens + completion.usage.completion_tokens
    stream = client.chat.completions.create(
        model=GGUF, messages=[{"role": "user", "content": "What is the capital of France?"}], temperature=0,
        max_tokens=30, stream=True, stream_options={"include_usage": True},
    )
    pieces, usage, finish = [], None, None
    for chunk in stream:
        if chunk.choices:
            pieces.append(chunk.choices[0].delta.content or "")
            finish = chunk.choices[0].finish_reason or finish
        if chunk.usage:
            usage = chunk.usage
    assert "".join(pieces) == completion.choices[0].message.content
    assert finish == "stop" and usage is not None and usage.completion_tokens == completion.usage.completion_tokens
    with pytest.raises(Exception) as missing:
        client.chat.completions.create(model="nope.gguf", messages=[{"role": "user", "content": "hi"}])
    assert getattr(missing.value, "status_code", None) == 404


def test_history_survives_a_restart_and_no_worker_outlives_the_server(server: ApiServer) -> None:
    before = httpx.get(server.url + "/history", params={"chat_id": "http-1"}, headers=server.headers).json()["messages"]
    assert len(before) == 2
    workers = server.stop()
    assert workers, "the earlier tests loaded models"
    assert not survivors(workers)
    server.start()
    after = httpx.get(server.url + "/history", params={"chat_id": "http-1"}, headers=server.headers).json()["messages"]
    assert after == before
    status = httpx.get(server.url + "/status", params={"chat_id": "http-1"}, headers=server.headers).json()
    assert status["loaded"] is False and status["model"] == GGUF
