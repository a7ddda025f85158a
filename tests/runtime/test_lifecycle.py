"""Idle unload, admission (memory and worker cap), bounded queues and orphan reaping."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from runtime.default_model import GGUF_NAME
from runtime.errors import Busy, InsufficientMemory, TooManyModels
from runtime.interface import Queued
from runtime.manager import Runtime
from runtime.placement import duration, idle_reason
from runtime.protocol import ChatMessage, Finished, GenerationParams
from runtime.settings import RuntimeSettings

ENDLESS = [ChatMessage("user", "Continue: 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12,")]


def test_durations_read_like_a_person_wrote_them() -> None:
    assert [duration(s) for s in (0.4, 1, 59, 60, 90, 1800, 3600, 5400)] == [
        "0 s", "1 s", "59 s", "1 min", "1 min 30 s", "30 min", "1 h", "1 h 30 min"]
    assert idle_reason(1800) == "unloaded after 30 min without use"


def _settings(base: RuntimeSettings, tmp_path: Path, **changes: object) -> RuntimeSettings:
    return base.model_copy(update={"state_dir": tmp_path, **changes})


async def test_idle_worker_is_unloaded_with_a_reason(runtime_settings: RuntimeSettings, tmp_path: Path) -> None:
    rt = Runtime(_settings(runtime_settings, tmp_path))
    try:
        # The worker that is never unloaded first: the idle check then sleeps its longest, and must
        # wake for the shorter limit of the one loaded next.
        kept = await rt.load("forever", GGUF_NAME, "auto", idle_unload_s=0)
        short = await rt.load("brief", GGUF_NAME, "cpu", idle_unload_s=1.0)
        assert short.idle_unload_s == 1.0 and kept.idle_unload_s == 0
        deadline = time.monotonic() + 6
        while await rt.holding("brief") is not None and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        assert await rt.holding("brief") is None
        assert not psutil.pid_exists(short.pid)  # the books change only once the process is gone
        assert await rt.exit_reason("brief") == "unloaded after 1 s without use"
        assert await rt.holding("forever") is not None  # 0 means never
        assert await rt.worker_deaths() == 0
    finally:
        await rt.close()


async def test_worker_cap_evicts_the_least_recently_used_idle_worker(
    runtime_settings: RuntimeSettings, tmp_path: Path
) -> None:
    rt = Runtime(_settings(runtime_settings, tmp_path, max_workers=1))
    try:
        first = await rt.load("a", GGUF_NAME, "cpu")
        second = await rt.load("b", GGUF_NAME, "auto")  # another key: needs a second worker
        assert await rt.holding("a") is None and "make room" in (await rt.exit_reason("a") or "")
        assert not psutil.pid_exists(first.pid) and psutil.pid_exists(second.pid)
    finally:
        await rt.close()
    strict = Runtime(_settings(runtime_settings, tmp_path, max_workers=1, evict_idle=False))
    try:
        await strict.load("a", GGUF_NAME, "cpu")
        with pytest.raises(TooManyModels, match="LLMCHAT_MAX_WORKERS"):
            await strict.load("b", GGUF_NAME, "auto")
        assert await strict.holding("a") is not None
    finally:
        await strict.close()


async def test_a_model_that_does_not_fit_is_refused_with_numbers(
    runtime_settings: RuntimeSettings, tmp_path: Path
) -> None:
    rt = Runtime(_settings(runtime_settings, tmp_path, memory_headroom_mb=10**8))
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    try:
        numbers = r"needs about [\d,]+ MB \([\d,]+ MB for the model, [\d,]+ MB for one 2048-token context\); [\d,]+ MB is free"
        with pytest.raises(InsufficientMemory, match=numbers):
            await rt.load("a", GGUF_NAME, "cpu")
        assert {p.pid for p in psutil.Process().children(recursive=True)} <= before
    finally:
        await rt.close()


async def test_queue_beyond_the_limit_is_refused(runtime_settings: RuntimeSettings, tmp_path: Path) -> None:
    """One slot, a line of one: the second request waits, the third is refused; token counts
    skip the line (the worker answers them between steps)."""
    rt = Runtime(_settings(runtime_settings, tmp_path, max_queue=1, parallel=1))
    try:
        await rt.load("q", GGUF_NAME, "cpu")
        params = GenerationParams(max_new_tokens=400, temperature=0)
        async with contextlib.aclosing(rt.generate("q", ENDLESS, params)) as running:
            assert await anext(running) == Queued(0, 0.0, batch=1, waited_s=pytest.approx(0, abs=0.1))
            await anext(running)  # the first token: the worker is busy now
            second = rt.generate("q", ENDLESS, GenerationParams(max_new_tokens=4, temperature=0))
            assert (await anext(second)).position == 1  # accepted, first in line
            assert (await rt.holding("q")).queued == 1  # type: ignore[union-attr]
            assert await rt.count_tokens("q", ENDLESS) > 0  # not behind the line
            with pytest.raises(Busy) as refused:
                await anext(rt.generate("q", ENDLESS, params))
            assert refused.value.retry_after_s >= 1
        # The running request was aborted: the waiting one runs to its end.
        events = [event async for event in second]
        assert events[0] == Queued(0, 0.0, batch=1, waited_s=events[0].waited_s) and events[0].waited_s > 0
        assert isinstance(events[-1], Finished) and events[-1].finish_reason == "length"
    finally:
        await rt.close()


def test_workers_left_by_a_dead_runtime_are_ended(runtime_settings: RuntimeSettings, tmp_path: Path) -> None:
    # A stand-in for an orphaned worker: a multiprocessing process whose recorded parent is gone.
    orphan = subprocess.Popen([sys.executable, "-c", "import multiprocessing, time; time.sleep(60)"])
    dead_parent = subprocess.Popen([sys.executable, "-c", "pass"])
    dead_parent.wait()
    started = psutil.Process(orphan.pid).create_time()
    bystander = subprocess.Popen([sys.executable, "-c", "import multiprocessing, time; time.sleep(60)"])
    # The bystander's pid is recorded with another start time: as if the pid had been reused.
    (tmp_path / "workers.pids").write_text(
        f"{orphan.pid}:{dead_parent.pid}:{started}\n{bystander.pid}:{dead_parent.pid}:{started - 100}\n"
    )
    Runtime(_settings(runtime_settings, tmp_path))
    assert orphan.wait(timeout=5) != 0
    assert (tmp_path / "workers.pids").read_text() == ""
    assert bystander.poll() is None  # a reused pid is never touched
    bystander.kill()
    bystander.wait()


async def test_a_caller_going_away_never_leaves_a_worker_half_started_or_half_stopped(
    runtime_settings: RuntimeSettings, tmp_path: Path
) -> None:
    rt = Runtime(_settings(runtime_settings, tmp_path))

    def children() -> set[int]:  # worker processes (not multiprocessing's resource tracker)
        return {p.pid for p in psutil.Process().children(recursive=True)
                if p.status() != psutil.STATUS_ZOMBIE and "spawn_main" in " ".join(p.cmdline())}

    try:
        # A load whose caller gives up: the worker still starts, and the runtime knows it.
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(rt.load("gone", GGUF_NAME, "cpu"), 0.2)
        deadline = time.monotonic() + 30
        while not await rt.workers() and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        assert {w.pid for w in await rt.workers()} == children()
        # An unload whose caller gives up: the worker still ends, and leaves the books.
        info = await rt.load("a", GGUF_NAME, "cpu")
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(rt.unload("a"), 0.01)
        again = await asyncio.wait_for(rt.load("b", GGUF_NAME, "cpu"), 30)  # waits for the end, then starts
        assert again.pid != info.pid and not psutil.pid_exists(info.pid)
        assert await rt.holding("a") is None and [w.pid for w in await rt.workers()] == [again.pid]
        assert children() == {again.pid}
    finally:
        await rt.close()
