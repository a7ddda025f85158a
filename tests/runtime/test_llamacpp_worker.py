"""The real llama.cpp backend on the default GGUF, through spawned workers."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path

import psutil
import pytest

from runtime.default_model import GGUF_NAME
from runtime.errors import (
    BackendUnavailable,
    ContextOverflow,
    DeviceUnavailable,
    InvalidModelName,
    ModelLoadFailed,
    ModelNotLoaded,
    WorkerDied,
)
from runtime.manager import Runtime
from runtime.protocol import ChatMessage, GenerationParams, TokenChunk
from runtime.settings import RuntimeSettings
from tests.runtime.streams import collect

QUESTION = [ChatMessage("user", "What is the capital of France?")]
GREEDY = GenerationParams(max_new_tokens=40, temperature=0.0)
# Greedy decoding of this prompt runs to the token limit: long enough to interrupt.
ENDLESS = [ChatMessage("user", "Continue: 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12,")]
LONG = GenerationParams(max_new_tokens=400, temperature=0.0)


@pytest.fixture(scope="module")
async def runtime(runtime_settings: RuntimeSettings) -> AsyncIterator[Runtime]:
    rt = Runtime(runtime_settings)
    await rt.load("main", GGUF_NAME, "auto")  # loaded once for the module
    yield rt
    await rt.close()


def _children() -> set[int]:
    return {p.pid for p in psutil.Process().children(recursive=True)}


async def test_greedy_reply_is_real_and_ends_at_the_turn(runtime: Runtime) -> None:
    text, finished = await collect(runtime, "main", QUESTION, GREEDY)
    assert "Paris" in text
    assert "User:" not in text and not text.startswith(" ")
    assert finished.finish_reason == "stop"
    m = finished.metrics
    assert m.prompt_tokens == await runtime.count_tokens("main", QUESTION)
    assert 0 < m.completion_tokens < GREEDY.max_new_tokens
    assert 0 < m.time_to_first_token_s <= m.total_time_s
    assert m.tokens_per_s > 1


async def test_worker_reports_what_it_runs_on(runtime: Runtime) -> None:
    info = await runtime.holding("main")
    assert info is not None
    assert (info.running_on, info.key.backend, info.context_length) == ("cpu", "llama.cpp", 2048)
    assert info.load_time_s > 0 and psutil.pid_exists(info.pid)


async def test_max_new_tokens_and_stop_are_honoured(runtime: Runtime) -> None:
    _, finished = await collect(runtime, "main", QUESTION, GenerationParams(max_new_tokens=3, temperature=0))
    assert (finished.metrics.completion_tokens, finished.finish_reason) == (3, "length")
    text, finished = await collect(
        runtime, "main", QUESTION, GenerationParams(max_new_tokens=40, temperature=0, stop=("France",))
    )
    assert "France" not in text and finished.finish_reason == "stop"


async def test_abort_mid_stream_frees_the_worker(runtime: Runtime) -> None:
    started = time.perf_counter()
    chunks = 0
    async with contextlib.aclosing(runtime.generate("main", ENDLESS, LONG)) as events:
        async for event in events:
            chunks += isinstance(event, TokenChunk)
            if chunks == 3:
                break
    text, finished = await collect(runtime, "main", QUESTION, GREEDY)
    assert "Paris" in text
    # 400 tokens would take over 10 s here; the abort lets the next request run at once.
    assert time.perf_counter() - started < 6


async def test_two_holders_share_one_worker_until_both_release(runtime: Runtime) -> None:
    a = await runtime.load("a", GGUF_NAME, "cpu")
    b = await runtime.load("b", GGUF_NAME, "cpu")
    assert a.pid == b.pid and set(b.holders) == {"a", "b"}
    first = await runtime.unload("a")
    assert first is not None and not first.stopped and psutil.pid_exists(a.pid)
    second = await runtime.unload("b")
    assert second is not None and second.stopped and second.exited and second.exit_code == 0
    assert not psutil.pid_exists(a.pid)
    assert a.pid not in _children()


async def test_a_forced_unload_ends_the_worker_for_every_holder_and_says_why(runtime: Runtime) -> None:
    a = await runtime.load("forced-a", GGUF_NAME, "cpu")
    await runtime.load("forced-b", GGUF_NAME, "cpu")
    stream = asyncio.ensure_future(collect(runtime, "forced-a", ENDLESS, LONG))
    while (worker := await runtime.holding("forced-a")) is None or not worker.busy:
        await asyncio.sleep(0.01)
    result = await runtime.unload_worker(a.key, "unloaded by an administrator")
    assert result is not None and result.stopped and result.exited
    assert not psutil.pid_exists(a.pid)
    with pytest.raises(WorkerDied):
        await stream  # the reply it was generating ends with an error
    for holder in ("forced-a", "forced-b"):
        assert await runtime.holding(holder) is None
        assert await runtime.exit_reason(holder) == "unloaded by an administrator"
    assert await runtime.unload_worker(a.key, "again") is None


async def test_concurrent_loads_of_one_model_start_one_process(runtime: Runtime) -> None:
    infos = await asyncio.gather(*(runtime.load(f"c{i}", GGUF_NAME, "cpu") for i in range(3)))
    assert len({i.pid for i in infos}) == 1
    for i in range(3):
        await runtime.unload(f"c{i}")
    assert not psutil.pid_exists(infos[0].pid)


async def test_kill_mid_stream_fails_within_a_second_and_reload_works(runtime: Runtime) -> None:
    info = await runtime.load("victim", GGUF_NAME, "cpu")
    killed_at = 0.0
    with pytest.raises(WorkerDied):
        async for event in runtime.generate("victim", ENDLESS, LONG):
            if isinstance(event, TokenChunk) and not killed_at:
                os.kill(info.pid, signal.SIGKILL)
                killed_at = time.perf_counter()
    assert time.perf_counter() - killed_at < 1.0
    assert await runtime.holding("victim") is None
    with pytest.raises(ModelNotLoaded, match="killed by signal 9"):
        await runtime.count_tokens("victim", QUESTION)
    again = await runtime.load("victim", GGUF_NAME, "cpu")
    assert again.pid != info.pid
    text, _ = await collect(runtime, "victim", QUESTION, GREEDY)
    assert "Paris" in text
    await runtime.unload("victim")
    # The other worker never noticed.
    assert "Paris" in (await collect(runtime, "main", QUESTION, GREEDY))[0]


async def test_history_is_trimmed_to_the_context_window(runtime: Runtime) -> None:
    history = [ChatMessage("system", "You are terse.")]
    for i in range(40):
        history += [ChatMessage("user", f"Question {i}: " + "words " * 40), ChatMessage("assistant", "ok " * 20)]
    history.append(ChatMessage("user", "What is the capital of France?"))
    fitted = await runtime.fit("main", history, max_new_tokens=256)
    assert fitted.dropped > 0
    assert fitted.messages[0] == history[0] and fitted.messages[-1] == history[-1]
    assert fitted.messages[1].role == "user"
    assert fitted.prompt_tokens + 256 <= 2048
    assert fitted.prompt_tokens == await runtime.count_tokens("main", fitted.messages)
    bigger = [history[0], *history[1 + 2 * (fitted.dropped // 2 - 1) :]]
    assert await runtime.count_tokens("main", bigger) + 256 > 2048  # one pair more would not fit
    with pytest.raises(ContextOverflow):
        await runtime.fit("main", [ChatMessage("user", "word " * 3000)], max_new_tokens=256)


async def test_gpu_without_cuda_is_a_clear_error(runtime: Runtime) -> None:
    with pytest.raises(DeviceUnavailable, match="gpu"):
        await runtime.load("gpu-user", GGUF_NAME, "gpu")
    assert await runtime.holding("gpu-user") is None


async def test_bad_models_fail_cleanly(runtime: Runtime, tmp_path: Path) -> None:
    broken_dir = tmp_path / "models"
    broken_dir.mkdir()
    (broken_dir / "broken.gguf").write_bytes(b"GGUF" + os.urandom(4096))
    rt = Runtime(RuntimeSettings(models_dir=broken_dir))
    before = _children()
    with pytest.raises(ModelLoadFailed):
        await rt.load("x", "broken.gguf", "cpu")
    with pytest.raises(InvalidModelName):
        await rt.load("x", "../broken.gguf", "cpu")
    with pytest.raises(BackendUnavailable):
        await runtime.load("x", GGUF_NAME, "cpu", backend="transformers")
    await asyncio.sleep(0.2)
    assert _children() <= before
    await rt.close()


async def test_close_leaves_no_worker(runtime_settings: RuntimeSettings) -> None:
    rt = Runtime(runtime_settings)
    info = await rt.load("x", GGUF_NAME, "cpu")
    await rt.close()
    assert not psutil.pid_exists(info.pid)
