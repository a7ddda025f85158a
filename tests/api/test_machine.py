"""``GET /machine`` and its sampler (api/machine.py): the real default model, sampled every second.

What a client sees: every signed-in user gets the loaded models and the sampled series, only
administrators get who holds each worker; the series gain a point a second, count the tokens
a reply streamed, and show a request waiting for a slot. The sampler itself is checked on the
fake runtime: its window is bounded and a CUDA worker's memory is asked of NVML.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from quart.typing import TestAppProtocol as QuartTestApp
from quart.typing import TestClientProtocol as QuartClient

from api.machine import Sampler, memory_kind, worker_memory_mb
from api.metrics import Metrics
from api.settings import ApiSettings
from runtime import gpu
from runtime.fake import FakeRuntime
from runtime.interface import WorkerInfo, WorkerKey
from tests.api.conftest import GGUF, sse_events
from tests.auth import signed_in

SAMPLE_S = 1.0
ENDLESS = "Continue: 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12,"  # greedy decoding runs to the token limit


@pytest.fixture(scope="module")
def api_settings(tmp_path_factory: pytest.TempPathFactory, models_dir: Path) -> ApiSettings:
    home = tmp_path_factory.mktemp("machine")
    return ApiSettings(models_dir=models_dir, db_path=home / "chat.sqlite3", logs_dir=home / "logs", state_dir=home,
                       n_ctx=1024,
                       default_temperature=0.0, default_max_new_tokens=48, machine_sample_s=SAMPLE_S)


@pytest.fixture(scope="module")
async def user(test_app: QuartTestApp) -> QuartClient:
    """Signed in as ``uma``, who is not an administrator."""
    return await signed_in(test_app, "uma", "user")


@pytest.fixture(scope="module")
async def loaded(client: QuartClient) -> str:
    """The administrator's chat ``held``, titled, holding the default model."""
    response = await client.post("/chats", json={"chat_id": "held", "title": "Tester's chat"})
    assert response.status_code == 201, await response.get_data()
    response = await client.post("/load", json={"chat_id": "held", "model": GGUF})
    assert response.status_code == 200, await response.get_data()
    return "held"


async def _machine(client: QuartClient) -> dict[str, Any]:
    response = await client.get("/machine")
    assert response.status_code == 200, await response.get_data()
    body: dict[str, Any] = await response.get_json()
    return body


async def _until(check: Callable[[], Awaitable[bool]], timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while not await check():
        assert time.monotonic() < deadline, "never happened"
        await asyncio.sleep(0.2)


def _worker(body: dict[str, Any], device: str = "auto") -> dict[str, Any]:
    return next(m for m in body["models"] if m["model"] == GGUF and m["device"] == device)


async def test_the_route_is_documented_and_needs_a_sign_in(test_app: QuartTestApp) -> None:
    anonymous = test_app.test_client()
    assert (await anonymous.get("/machine")).status_code == 401
    document = await (await anonymous.get("/openapi.json")).get_json()
    operation = document["paths"]["/machine"]["get"]
    assert operation["summary"].startswith("The shared machine")
    assert "administrators also see who holds each worker" in " ".join(operation["description"].split())
    schema = operation["responses"]["200"]["content"]["application/json"]["schema"]
    assert schema["title"] == "MachineOut" and schema["required"] == ["at", "models", "series"]
    components = document["components"]["schemas"]
    assert {"memory_mb", "memory_kind", "running", "queued", "idle_unload_in_s", "holders"} <= (
        components["MachineModel"]["properties"].keys())
    assert {"timestamps", "tokens_per_s", "workers", "queued"} <= components["MachineSeries"]["properties"].keys()


async def test_everyone_sees_the_models_and_only_administrators_who_holds_them(
    client: QuartClient, user: QuartClient, loaded: str
) -> None:
    started = time.perf_counter()
    mine = await _machine(user)
    took_ms = (time.perf_counter() - started) * 1000
    model = _worker(mine)
    assert (model["backend"], model["running_on"], model["memory_kind"]) == ("llama.cpp", "cpu", "RAM")
    assert model["memory_mb"] > 100  # the worker process's resident memory, measured
    assert (model["running"], model["queued"], model["parallel"]) == (0, 0, model["parallel"])
    assert model["parallel"] >= 1 and model["idle_unload_s"] >= 0
    assert model["holders"] is None
    assert loaded not in str(mine) and "tester" not in str(mine)  # neither the chat nor its owner
    admins = _worker(await _machine(client))
    assert admins["holders"] == [{"user": "tester", "chat_id": loaded, "title": "Tester's chat"}]
    assert {k: v for k, v in admins.items() if k not in ("holders", "idle_s", "idle_unload_in_s")} == {
        k: v for k, v in model.items() if k not in ("holders", "idle_s", "idle_unload_in_s")}
    assert took_ms < 500, took_ms


async def test_the_series_gain_a_point_each_interval(user: QuartClient, loaded: str) -> None:
    before = (await _machine(user))["series"]
    await asyncio.sleep(3.2 * SAMPLE_S)
    after = (await _machine(user))["series"]
    assert after["interval_s"] == SAMPLE_S and after["window_s"] == 900
    gained = len(after["timestamps"]) - len(before["timestamps"])
    assert 2 <= gained <= 4, gained
    times = after["timestamps"]
    assert times == sorted(times) and all(0.5 < b - a < 2.5 for a, b in zip(times[-3:], times[-2:]))
    for name in ("queued", "running"):
        assert len(after[name]) == len(times)
    worker = next(w for w in after["workers"] if w["model"] == GGUF and w["device"] == "auto")
    assert worker["memory_kind"] == "RAM" and len(worker["memory_mb"]) == len(times)
    assert all(mb is not None and mb > 100 for mb in worker["memory_mb"][-3:])


async def test_tokens_per_second_count_the_tokens_of_a_reply(client: QuartClient, loaded: str) -> None:
    reply = await client.post("/chat", json={"chat_id": loaded, "message": ENDLESS})
    assert reply.status_code == 200, await reply.get_data()
    answer = await reply.get_json()
    finished_at = time.time()

    async def sampled_after_the_reply() -> bool:
        return bool((await _machine(client))["series"]["timestamps"][-1] > finished_at + 0.05)

    await _until(sampled_after_the_reply)
    series = (await _machine(client))["series"]
    rates = next(r["values"] for r in series["tokens_per_s"] if r["model"] == GGUF)
    assert len(rates) == len(series["timestamps"])
    assert max(r for r in rates if r is not None) > 0
    times = series["timestamps"]
    streamed = sum((r or 0) * (b - a) for r, a, b in zip(rates[1:], times, times[1:]))
    assert abs(streamed - answer["tokens"]) <= 0.1 * answer["tokens"] + 2, (streamed, answer["tokens"])


async def test_a_request_waiting_for_a_slot_shows_in_the_queue_series(client: QuartClient) -> None:
    # A worker of its own (device cpu), one reply at a time; two chats ask at once.
    for chat in ("first-in-line", "second-in-line"):
        assert (await client.post("/chats", json={"chat_id": chat, "max_new_tokens": 96})).status_code == 201
        load = await client.post("/load", json={"chat_id": chat, "model": GGUF, "device": "cpu", "parallel": 1})
        assert load.status_code == 200, await load.get_data()
    started = time.time()
    first, second = await asyncio.gather(*(
        client.post("/chat", json={"chat_id": chat, "message": ENDLESS, "stream": True})
        for chat in ("first-in-line", "second-in-line")))
    events = sse_events(await first.get_data(as_text=False)) + sse_events(await second.get_data(as_text=False))
    assert any(name == "queued" and data["position"] == 1 for name, data in events)  # one of them did wait
    series = (await _machine(client))["series"]
    during = [i for i, t in enumerate(series["timestamps"]) if t >= started]
    assert max(series["queued"][i] for i in during) == 1
    cpu = next(w for w in series["workers"] if w["model"] == GGUF and w["device"] == "cpu")
    assert max(cpu["queued"][i] or 0 for i in during) == 1
    shared = next(w for w in series["workers"] if w["model"] == GGUF and w["device"] == "auto")
    assert all((shared["queued"][i] or 0) == 0 for i in during)
    assert _worker(await _machine(client), "cpu")["parallel"] == 1
    for chat in ("first-in-line", "second-in-line"):
        assert (await client.post("/unload", json={"chat_id": chat})).status_code == 200


async def test_an_idle_worker_says_when_it_will_be_unloaded(client: QuartClient) -> None:
    assert (await client.post("/chats", json={"chat_id": "soon-idle"})).status_code == 201
    load = await client.post("/load", json={"chat_id": "soon-idle", "model": GGUF, "device": "cpu",
                                            "idle_unload_s": 600})
    assert load.status_code == 200, await load.get_data()
    model = _worker(await _machine(client), "cpu")
    assert model["idle_unload_s"] == 600
    assert model["idle_unload_in_s"] is not None and 590 < model["idle_unload_in_s"] <= 600
    assert (await client.post("/unload", json={"chat_id": "soon-idle"})).status_code == 200


# The sampler on its own, with the fake runtime


async def test_the_window_is_bounded_and_tokens_per_second_are_differences() -> None:
    fake = FakeRuntime()
    await fake.load("chat", "fake.gguf")
    metrics = Metrics(fake)
    sampler = Sampler(fake, metrics, interval_s=1.0, window_s=3.0)
    for _ in range(10):
        await sampler.sample()
    assert len(sampler.samples) == 4 and len(sampler.recent()) == 4
    for _ in range(30):
        metrics.observe_token("fake.gguf")
    began = time.monotonic()
    await asyncio.sleep(0.5)
    taken = await sampler.sample()
    elapsed = time.monotonic() - began
    assert 30 / (elapsed + 0.1) <= taken.tokens_per_s["fake.gguf"] <= 30 / 0.5
    assert (await sampler.sample()).tokens_per_s["fake.gguf"] == 0  # nothing since
    assert taken.workers[0].memory_mb is None  # the fake's pids are no processes
    await fake.close()


async def test_the_sampler_runs_in_the_background_until_stopped() -> None:
    fake = FakeRuntime()
    sampler = Sampler(fake, Metrics(fake), interval_s=0.5).start()
    await asyncio.sleep(1.2)
    await sampler.stop()
    count = len(sampler.samples)
    assert 2 <= count <= 4, count
    await asyncio.sleep(0.7)
    assert len(sampler.samples) == count


def _worker_info(running_on: str, pid: int) -> WorkerInfo:
    return WorkerInfo(key=WorkerKey("m", "gpu", "transformers"), pid=pid, running_on=running_on,  # type: ignore[arg-type]
                      context_length=1, load_time_s=0, has_chat_template=True, holders=(), busy=False)


def test_a_cuda_worker_is_measured_in_gpu_memory_through_nvml() -> None:
    on_gpu = _worker_info("cuda", os.getpid())
    assert memory_kind(on_gpu) == "VRAM"
    measured = worker_memory_mb(on_gpu)
    if gpu.device_count() == 0:
        assert measured is None  # no NVML here: unknown, never the process's RAM
    else:
        assert measured == 0  # NVML answers, and this process holds no GPU memory
    on_cpu = _worker_info("cpu", os.getpid())
    assert memory_kind(on_cpu) == "RAM" and (worker_memory_mb(on_cpu) or 0) > 10
