"""Faults and load against the real server: a killed API, load/unload cycles, concurrency, metrics."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest
from httpx_sse import aconnect_sse, connect_sse

from tests.api.conftest import GGUF
from tests.servers import ApiServer, survivors

ENDLESS = "Continue: 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12,"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, models_dir: Path) -> Iterator[ApiServer]:
    running = ApiServer(tmp_path_factory.mktemp("faults"), models_dir, n_ctx="2048", max_queue="4")
    running.start(quiet=True)
    yield running
    assert not survivors(running.stop())


def test_killed_worker_ends_the_stream_with_an_error_event_within_a_second(server: ApiServer) -> None:
    http = httpx.Client(base_url=server.url, timeout=60, headers=server.headers)
    http.post("/chats", json={"chat_id": "sse-kill", "max_new_tokens": 1000, "temperature": 0})
    http.post("/load", json={"chat_id": "sse-kill", "model": GGUF, "device": "cpu"}).raise_for_status()
    worker = next(w["pid"] for w in http.get("/status").json()["workers"] if "sse-kill" in w["chats"])
    tokens, killed_at, error, waited = 0, 0.0, None, None
    with connect_sse(http, "POST", "/chat", json={"chat_id": "sse-kill", "message": ENDLESS, "stream": True}) as source:
        for sse in source.iter_sse():
            if sse.event == "token":
                tokens += 1
                if tokens == 5:
                    os.kill(worker, signal.SIGKILL)
                    killed_at = time.monotonic()
            elif sse.event == "error":
                waited = time.monotonic() - killed_at
                error = json.loads(sse.data)
    assert error is not None and error["status"] == 503 and waited is not None
    assert waited < 1.0, f"the stream ended {waited:.2f} s after the kill"
    last = http.get("/history", params={"chat_id": "sse-kill"}).json()["messages"][-1]
    assert last["status"] == "error" and last["text"].startswith("1, 2")
    assert http.get("/status").status_code == 200  # the API keeps serving
    assert http.post("/load", json={"chat_id": "sse-kill", "model": GGUF, "device": "cpu"}).status_code == 200
    http.post("/unload", json={"chat_id": "sse-kill"})


def test_killed_api_leaves_no_worker_and_loses_no_message(server: ApiServer) -> None:
    http = httpx.Client(base_url=server.url, timeout=60, headers=server.headers)
    http.post("/chats", json={"chat_id": "crash", "max_new_tokens": 1000, "temperature": 0})
    http.post("/load", json={"chat_id": "crash", "model": GGUF, "device": "cpu"}).raise_for_status()
    worker = next(w["pid"] for w in http.get("/status").json()["workers"] if "crash" in w["chats"])
    tokens = 0

    def stream() -> None:
        nonlocal tokens
        with contextlib.suppress(httpx.HTTPError), connect_sse(
            http, "POST", "/chat", json={"chat_id": "crash", "message": ENDLESS, "stream": True}
        ) as source:
            for sse in source.iter_sse():
                tokens += sse.event == "token"

    reader = threading.Thread(target=stream, daemon=True)
    reader.start()
    deadline = time.monotonic() + 30
    while tokens < 40 and time.monotonic() < deadline:  # long enough for a flush of the partial text
        time.sleep(0.05)
    time.sleep(1.2)
    assert server.process is not None
    os.kill(server.process.pid, signal.SIGKILL)
    server.process.wait()
    reader.join(5)
    assert not survivors({worker}, within_s=3), "the worker outlived the API"

    server.start(quiet=True)
    messages = httpx.get(f"{server.url}/history", params={"chat_id": "crash"}, headers=server.headers).json()["messages"]
    assert [m["sender"] for m in messages] == ["user", "assistant"]
    assert messages[0]["text"] == ENDLESS
    assert messages[1]["status"] == "error" and messages[1]["text"].startswith("1, 2, 3")
    assert "server stopped" in messages[1]["error"]


def test_fifty_load_unload_cycles_leak_nothing(server: ApiServer) -> None:
    assert server.process is not None
    api = psutil.Process(server.process.pid)
    http = httpx.Client(base_url=server.url, timeout=60, headers=server.headers)

    def cycle() -> int:
        http.post("/load", json={"chat_id": "cycles", "model": GGUF, "device": "cpu"}).raise_for_status()
        pid = http.get("/status").json()["workers"][0]["pid"]
        unloaded = http.post("/unload", json={"chat_id": "cycles"}).json()
        assert unloaded["process_exited"] is True
        return int(pid)

    for _ in range(5):  # warm up allocator, caches and the database
        cycle()
    before = api.memory_info().rss
    pids = {cycle() for _ in range(50)}
    grown_mb = (api.memory_info().rss - before) / 2**20
    assert len(pids) == 50 and not survivors(pids, within_s=2)
    assert http.get("/status").json()["workers"] == []
    print(f"API resident memory grew {grown_mb:.1f} MB over 50 load/unload cycles")
    assert grown_mb < 20, f"the API grew by {grown_mb:.1f} MB over 50 cycles"


def test_concurrent_streams_complete_or_get_a_clear_429(server: ApiServer) -> None:
    async def run() -> list[str]:
        async with httpx.AsyncClient(base_url=server.url, timeout=180, headers=server.headers) as http:
            for chat in range(4):
                await http.post("/chats", json={"chat_id": f"busy-{chat}", "max_new_tokens": 12, "temperature": 0})
                await http.post("/load", json={"chat_id": f"busy-{chat}", "model": GGUF, "device": "cpu"})
            done = asyncio.Event()

            async def stream(i: int) -> str:
                body = {"chat_id": f"busy-{i % 4}", "message": f"Say hello number {i}.", "stream": True}
                async with aconnect_sse(http, "POST", "/chat", json=body) as source:
                    if source.response.status_code != 200:
                        assert source.response.status_code == 429, source.response.status_code
                        assert int(source.response.headers["Retry-After"]) >= 1
                        return "429"
                    last = ""
                    async for sse in source.aiter_sse():
                        last = sse.event
                        if sse.event == "done":
                            assert json.loads(sse.data)["status"] == "complete"
                    return last

            async def read() -> int:
                reads = 0
                while not done.is_set():
                    for path, params in (("/chats", None), ("/history", {"chat_id": "busy-1"})):
                        response = await http.get(path, params=params)
                        assert response.status_code == 200, (path, response.status_code)
                        reads += 1
                return reads

            readers = [asyncio.create_task(read()) for _ in range(3)]
            outcomes = await asyncio.wait_for(asyncio.gather(*(stream(i) for i in range(32))), timeout=170)
            done.set()
            assert all(await asyncio.gather(*readers))
            return list(outcomes)

    outcomes = asyncio.run(run())
    assert set(outcomes) <= {"done", "429"}, outcomes
    assert outcomes.count("done") >= 4


def test_metrics_are_exposed_for_prometheus(server: ApiServer) -> None:
    text = httpx.get(f"{server.url}/metrics", headers=server.headers).text
    for name in ("llmchat_loaded_workers", "llmchat_queue_depth", "llmchat_worker_deaths_total",
                 "llmchat_tokens_generated_total", "llmchat_time_to_first_token_seconds_bucket",
                 "llmchat_tokens_per_second_bucket", "llmchat_load_seconds_bucket", "llmchat_replies_total",
                 "llmchat_running_sequences", "llmchat_parallel_slots", "llmchat_queue_wait_seconds_bucket",
                 "llmchat_batch_size_bucket"):
        assert name in text, name
    batches = [line for line in text.splitlines() if line.startswith("llmchat_batch_size_count{")]
    assert batches and float(batches[0].split()[-1]) > 0  # every reply that started was observed
    generated = [line for line in text.splitlines() if line.startswith("llmchat_tokens_generated_total{")]
    assert generated and float(generated[0].split()[-1]) > 0
