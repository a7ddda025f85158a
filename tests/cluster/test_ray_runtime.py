"""The Ray runtime on a real two-node cluster with the real default GGUF: placement, streaming,
stop, a worker's death, unload with its proof, a models folder that differs on a node, a load
that fits nowhere. This test process is one API replica (a Ray driver)."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from runtime.errors import InsufficientMemory, ModelFilesMismatch, ModelNotLoaded, WorkerDied
from runtime.interface import Queued, WorkerKey
from runtime.manager import Runtime
from runtime.protocol import ChatMessage, Finished, GenerationParams, TokenChunk
from runtime.ray_runtime import RayRuntime
from runtime.settings import RuntimeSettings
from runtime.supervisor import pid_running
from tests.cluster.conftest import TWIN
from tests.ray_cluster import RayCluster, worker_actors

GGUF = "gemma-3-270m-q4_k_m.gguf"
QUESTION = (ChatMessage("user", "Count from one to twenty in words: one, two,"),)
GREEDY = GenerationParams(max_new_tokens=24, temperature=0.0)
LONG = GenerationParams(max_new_tokens=400, temperature=0.0)


def settings_for(cluster: RayCluster, models: Path, **more: object) -> RuntimeSettings:
    chosen: dict[str, object] = {"models_dir": models, "n_ctx": 1024, "n_threads": 1, "parallel": 2, "runtime": "ray",
                                 "ray_address": cluster.address, "ray_prefer_resource": "node_b", **more}
    return RuntimeSettings(**chosen)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
async def runtime(ray_cluster: RayCluster, ray_models: tuple[Path, Path]) -> AsyncIterator[RayRuntime]:
    connected = await RayRuntime.connect(settings_for(ray_cluster, ray_models[0]))
    yield connected
    for info in await connected.workers():
        await connected.unload_worker(info.key, "the test module ended")
    await connected.close()


async def _reply(runtime: RayRuntime | Runtime, holder: str, params: GenerationParams = GREEDY) -> str:
    text = []
    async for event in runtime.generate(holder, QUESTION, params, session=holder):
        if isinstance(event, TokenChunk):
            text.append(event.text)
    return "".join(text)


def test_the_default_model_is_the_gguf() -> None:
    from runtime.default_model import GGUF_NAME

    assert GGUF == GGUF_NAME


async def test_a_worker_lands_on_the_preferred_node_and_streams_what_a_local_worker_streams(
    runtime: RayRuntime, ray_models: tuple[Path, Path], tmp_path: Path
) -> None:
    info = await runtime.load("chat-a", GGUF, device="cpu")
    assert info.node and info.running_on == "cpu" and info.holders == ("chat-a",)
    assert _node_of(info.key) == _node_with("node_b")  # LLMCHAT_RAY_PREFER_RESOURCE
    assert (await runtime.workers())[0].pid == info.pid
    over_ray = await _reply(runtime, "chat-a")
    local = Runtime(RuntimeSettings(models_dir=ray_models[0], n_ctx=1024, n_threads=1, parallel=2,
                                    state_dir=tmp_path))
    try:
        await local.load("chat-a", GGUF, device="cpu")
        assert over_ray == await _reply(local, "chat-a") and len(over_ray) > 10
    finally:
        await local.close()
    # A second holder shares the worker; the events carry a position, tokens, then the end.
    assert (await runtime.load("chat-b", GGUF, device="cpu")).pid == info.pid
    events = [e async for e in runtime.generate("chat-b", QUESTION, GREEDY, session="chat-b")]
    assert isinstance(events[0], Queued) and isinstance(events[-1], Finished)
    assert await runtime.count_tokens("chat-b", QUESTION) == events[-1].metrics.prompt_tokens
    fitted = await runtime.fit("chat-b", QUESTION, 32)
    assert fitted.messages == QUESTION and fitted.dropped == 0


def _node_with(resource: str) -> str:
    import ray

    return str(next(n["NodeID"] for n in ray.nodes() if n["Alive"] and resource in n["Resources"]))


def _node_of(key: WorkerKey) -> str:
    alive = [a for a in worker_actors(key.model, key.requested_device, key.backend) if a.state == "ALIVE"]
    assert len(alive) == 1, alive
    return str(alive[0].node_id)


async def test_stopping_a_stream_frees_its_slot_at_once(runtime: RayRuntime) -> None:
    await runtime.load("chat-stop", GGUF, device="cpu")
    stream = runtime.generate("chat-stop", QUESTION, LONG, session="chat-stop")
    async for event in stream:
        if isinstance(event, TokenChunk):
            break
    stopped = time.monotonic()
    await stream.aclose()
    while (await runtime.holding("chat-stop")).running:  # type: ignore[union-attr]
        assert time.monotonic() - stopped < 2.0, "the aborted reply kept its slot"
        await asyncio.sleep(0.05)
    assert len(await _reply(runtime, "chat-stop")) > 10  # the same chat goes on


async def test_a_killed_worker_ends_its_stream_with_an_error_within_a_second(runtime: RayRuntime) -> None:
    info = await runtime.load("chat-kill", GGUF, device="cpu")
    await runtime.unload("chat-a")
    await runtime.unload("chat-b")
    await runtime.unload("chat-stop")
    stream = runtime.generate("chat-kill", QUESTION, LONG, session="chat-kill")
    async for event in stream:
        if isinstance(event, TokenChunk):
            break
    killed = time.monotonic()
    os.kill(info.pid, signal.SIGKILL)
    with pytest.raises(WorkerDied):
        async for _ in stream:
            pass
    assert time.monotonic() - killed < 1.0
    deadline = time.monotonic() + 5
    while await runtime.holding("chat-kill") is not None and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert await runtime.holding("chat-kill") is None
    reason = await runtime.exit_reason("chat-kill")
    assert reason is not None and f"pid {info.pid}" in reason and "died" in reason
    with pytest.raises(ModelNotLoaded, match="died"):
        await runtime.count_tokens("chat-kill", QUESTION)
    assert await runtime.worker_deaths() >= 1


async def test_unload_kills_the_actor_and_proves_it(runtime: RayRuntime) -> None:
    info = await runtime.load("chat-unload", GGUF, device="cpu")
    result = await runtime.unload("chat-unload")
    assert result is not None and result.stopped and result.exited and result.pid == info.pid
    assert not pid_running(info.pid)
    states = {a.state for a in worker_actors(info.key.model, info.key.requested_device, info.key.backend)}
    assert states == {"DEAD"}, states
    assert await runtime.holding("chat-unload") is None


async def test_a_model_whose_files_differ_on_the_chosen_node_is_refused(runtime: RayRuntime) -> None:
    with pytest.raises(ModelFilesMismatch, match="differs on node .*copy the same files to every node"):
        await runtime.load("chat-twin", TWIN, device="cpu")
    assert await runtime.holding("chat-twin") is None


async def test_a_load_that_fits_nowhere_is_refused_with_the_numbers_per_node(
    ray_cluster: RayCluster, ray_models: tuple[Path, Path]
) -> None:
    greedy = await RayRuntime.connect(settings_for(ray_cluster, ray_models[0], memory_headroom_mb=10_000_000))
    try:
        with pytest.raises(InsufficientMemory) as refused:
            await greedy.load("chat-huge", GGUF, device="cpu")
        nodes = re.findall(r"node [\d.]+ \((\w{8})\): [\d,]+ MB free", str(refused.value))
        assert sorted(nodes) == sorted(n[:8] for n in (_node_with("node_a"), _node_with("node_b"))), refused.value
        assert "10,000,000 MB is kept in reserve on each" in str(refused.value)
    finally:
        await greedy.close()


async def test_the_least_recently_used_idle_worker_makes_room_when_every_node_is_full(
    ray_cluster: RayCluster, ray_models: tuple[Path, Path]
) -> None:
    """One model per node (LLMCHAT_MAX_WORKERS=1): a third model evicts the oldest idle worker,
    wherever it runs, and its holder learns why."""
    capped = await RayRuntime.connect(settings_for(ray_cluster, ray_models[0], max_workers=1,
                                                   ray_prefer_resource="node_a"))
    try:
        first = await capped.load("lru-1", GGUF, device="cpu")
        await asyncio.sleep(0.5)
        second = await capped.load("lru-2", GGUF, device="auto")  # another worker: the head is full
        assert _node_of(first.key) == _node_with("node_a") and _node_of(second.key) == _node_with("node_b")
        third = await capped.load("lru-3", TWIN, device="cpu")
        assert _node_of(third.key) == _node_with("node_a")  # where the least recently used one was
        assert await capped.holding("lru-1") is None and await capped.holding("lru-2") is not None
        assert await capped.exit_reason("lru-1") == f"unloaded to make room for {TWIN}"
        assert not pid_running(first.pid)
    finally:
        for info in await capped.workers():
            await capped.unload_worker(info.key, "the test ended")
        await capped.close()
