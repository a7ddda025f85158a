"""The local runtime: one spawned worker process per loaded (model, requested device, backend),
shared by the holders that loaded it, on this machine.

It ties the parts together and keeps the books (who holds which worker, why a worker went
away): :mod:`runtime.supervisor` runs the processes, :mod:`runtime.channel` queues requests
to each, :mod:`runtime.placement` decides admission, eviction and idle unload,
:mod:`runtime.fitting` trims history to the context. State changes only once a worker's
process is gone, so what :meth:`Runtime.holding` and :meth:`Runtime.workers` say is true.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass, field

from runtime import discovery, fitting, gpu
from runtime.builds import BuildState, read_builds
from runtime.channel import RequestChannel
from runtime.choice import choose_backend
from runtime.discovery import ModelInfo
from runtime.errors import ModelNotLoaded, WorkerDied
from runtime.interface import Event, FittedPrompt, UnloadResult, WorkerInfo, WorkerKey
from runtime.pidfile import PidFile
from runtime.placement import Placement, idle_reason
from runtime.protocol import ChatMessage, Device, FromWorker, GenerationParams, Ready, WorkerSpec
from runtime.settings import RuntimeSettings
from runtime.supervisor import WorkerProcess, rss_mb, shutdown

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class _Start:
    """What a load asks of a worker it starts (a running worker keeps its own)."""

    idle_unload_s: float
    parallel: int | None  # None: the default for the device


@dataclass(eq=False)
class _Loaded:
    """A running worker: its process, its request channel, and who holds it."""

    key: WorkerKey
    process: WorkerProcess
    channel: RequestChannel
    idle_unload_s: float
    ready: Ready | None = None
    holders: set[str] = field(default_factory=set)
    closing: bool = False  # being unloaded: no new requests, still listed until its process is gone
    ending: asyncio.Future[UnloadResult] | None = None
    gone: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def idle(self) -> bool:
        return self.channel.idle and not self.closing

    @property
    def last_used(self) -> float:
        return self.channel.last_used

    def info(self) -> WorkerInfo:
        assert self.ready is not None
        channel = self.channel
        return WorkerInfo(
            key=self.key,
            pid=self.ready.pid,
            running_on=self.ready.device,
            context_length=self.ready.context_length,
            load_time_s=self.ready.load_time_s,
            has_chat_template=self.ready.has_chat_template,
            holders=tuple(sorted(self.holders)),
            busy=channel.busy,
            queued=channel.queued,
            running=channel.running,
            parallel=channel.parallel,
            idle_s=time.monotonic() - channel.last_used if channel.idle else 0.0,
            idle_unload_s=self.idle_unload_s,
            cuda_visible_devices=self.ready.cuda_visible_devices,
        )


class Runtime:
    """The local :class:`runtime.interface.ModelRuntime`: one spawned process per loaded model.

    Construction ends workers an earlier run left behind (it reads a file and asks the OS):
    construct it off the event loop, e.g. with ``asyncio.to_thread(Runtime, settings)``.
    """

    def __init__(self, settings: RuntimeSettings | None = None) -> None:
        self.settings = settings or RuntimeSettings()
        self._placement = Placement(self.settings)
        self._workers: dict[WorkerKey, _Loaded] = {}
        self._held: dict[str, WorkerKey] = {}
        self._starts: dict[WorkerKey, asyncio.Future[_Loaded]] = {}
        self._admitting = asyncio.Lock()  # one admission decision at a time
        self._exit_reasons: dict[str, str] = {}  # holder -> why its worker went away
        self._deaths = 0
        self._reaper: asyncio.Task[None] | None = None
        self._reaper_wake = asyncio.Event()
        self._pids = PidFile(self.settings.state_dir / "workers.pids")
        self._pids.reap_orphans()

    # Models

    async def models(self) -> list[ModelInfo]:
        return await asyncio.to_thread(discovery.scan, self.settings.models_dir)

    async def builds(self) -> list[BuildState]:
        return await asyncio.to_thread(read_builds, self.settings.models_dir)

    # Loading and unloading

    async def load(
        self,
        holder: str,
        model: str,
        device: Device = "auto",
        backend: str | None = None,
        idle_unload_s: float | None = None,
        parallel: int | None = None,
    ) -> WorkerInfo:
        info, chosen = await asyncio.to_thread(choose_backend, self.settings, model, device, backend)
        key = WorkerKey(info.name, device, chosen)
        idle = self.settings.idle_unload_s if idle_unload_s is None else idle_unload_s
        running = await self._worker_for(key, info, _Start(idle, parallel or self.settings.parallel))
        running.holders.add(holder)
        running.channel.last_used = time.monotonic()
        previous = self._held.get(holder)
        self._held[holder] = key
        self._exit_reasons.pop(holder, None)
        if previous is not None and previous != key:
            await self._release(holder, previous)
        return running.info()

    async def _worker_for(self, key: WorkerKey, info: ModelInfo, start_with: _Start) -> _Loaded:
        """The running worker for ``key``, or one started for it.

        A start belongs to the runtime, not to the caller: a caller that goes away (a client
        disconnects during a load) does not stop it half-way, and later callers wait for it.
        """
        while True:
            running = self._workers.get(key)
            if running is not None and not running.closing:
                return running
            if running is not None:
                await running.gone.wait()  # being unloaded: start afresh once it is gone
                continue
            start = self._starts.get(key)
            if start is None:
                start = self._starts[key] = asyncio.ensure_future(self._start(key, info, start_with))

                def started(task: asyncio.Future[_Loaded]) -> None:
                    self._starts.pop(key, None)
                    _retrieved(task)

                start.add_done_callback(started)
            return await asyncio.shield(start)

    async def _start(self, key: WorkerKey, info: ModelInfo, start_with: _Start) -> _Loaded:
        settings = self.settings
        n_ctx = min(settings.n_ctx, info.context_length) if info.context_length else settings.n_ctx
        async with self._admitting:
            running = lambda: [w for w in self._workers.values() if not w.closing]  # noqa: E731
            parallel = await self._placement.admit(
                info, key.requested_device, n_ctx, start_with.parallel, running, self._evict
            )
            spec = WorkerSpec(
                str(info.path), key.backend, key.requested_device, n_ctx, settings.n_threads,
                settings.cuda_visible_devices, settings.gpu_memory_fraction, parallel,
            )
            loaded = self._new_worker(key, spec, start_with.idle_unload_s)
            loaded.ready = await loaded.process.start(settings.load_timeout_s)
            loaded.channel.parallel = loaded.ready.parallel
            self._workers[key] = loaded  # from here on, a death is handled by _on_exit
        await asyncio.to_thread(self._pids.add, loaded.ready.pid)
        self._ensure_reaper()
        log.info(
            "loaded %s on %s with %s in %.2f s (pid %s), %d replies at once",
            key.model, loaded.ready.device, key.backend, loaded.ready.load_time_s, loaded.ready.pid,
            loaded.ready.parallel,
        )
        return loaded

    def _new_worker(self, key: WorkerKey, spec: WorkerSpec, idle_unload_s: float) -> _Loaded:
        loaded: _Loaded | None = None

        def on_message(message: FromWorker) -> None:
            assert loaded is not None
            loaded.channel.deliver(message)

        def on_exit(error: WorkerDied) -> None:
            assert loaded is not None
            self._on_exit(loaded, error)

        process = WorkerProcess(spec, key.model, on_message, on_exit)
        loaded = _Loaded(key, process, RequestChannel(process, key.model, self.settings.max_queue), idle_unload_s)
        return loaded

    def _on_exit(self, loaded: _Loaded, error: WorkerDied) -> None:
        """The process is gone (reaped). Unexpected exits are deaths: its holders learn why."""
        loaded.channel.fail_all(error)
        if loaded.process.pid is not None:
            pid = loaded.process.pid
            asyncio.get_running_loop().run_in_executor(None, self._pids.discard, pid)
        if loaded.closing or self._workers.get(loaded.key) is not loaded:
            return  # an unload or eviction in progress records its own outcome (see _end)
        self._deaths += 1
        del self._workers[loaded.key]
        loaded.gone.set()
        log.error("%s", error)
        for holder in loaded.holders:
            if self._held.get(holder) == loaded.key:
                del self._held[holder]
                self._exit_reasons[holder] = str(error)

    async def unload(self, holder: str) -> UnloadResult | None:
        self._exit_reasons.pop(holder, None)
        key = self._held.get(holder)
        loaded = self._workers.get(key) if key else None
        if loaded is None:
            self._held.pop(holder, None)
            return None
        if loaded.holders - {holder} or loaded.closing:
            loaded.holders.discard(holder)
            del self._held[holder]
            pid = loaded.ready.pid if loaded.ready else -1
            return UnloadResult(loaded.key, pid, False, False, None, len(loaded.holders))
        return await self._stop(loaded, reason=None)  # the holder is let go once the process is gone

    async def unload_worker(self, key: WorkerKey, reason: str) -> UnloadResult | None:
        loaded = self._workers.get(key)
        if loaded is None or loaded.ready is None:
            return None
        log.info("%s: %s", key.model, reason)
        return await self._stop(loaded, reason)

    async def _release(self, holder: str, key: WorkerKey) -> UnloadResult | None:
        loaded = self._workers.get(key)
        if loaded is None:
            return None
        loaded.holders.discard(holder)
        if loaded.holders or loaded.closing:
            pid = loaded.ready.pid if loaded.ready else -1
            return UnloadResult(key, pid, False, False, None, len(loaded.holders))
        return await self._stop(loaded, reason=None)

    async def _evict(self, loaded: _Loaded, reason: str) -> None:
        """Unload a worker for every holder, recording why (idle, or room for another model)."""
        if not loaded.closing and self._workers.get(loaded.key) is loaded:
            log.info("%s: %s", loaded.key.model, reason)
            await self._stop(loaded, reason)

    async def _stop(self, loaded: _Loaded, reason: str | None) -> UnloadResult:
        """End a worker's process. The ending belongs to the runtime: a caller that goes away
        does not leave it half-done, and a second caller waits for the same ending."""
        if loaded.ending is None:
            loaded.closing = True
            loaded.ending = asyncio.ensure_future(self._end(loaded, reason))
            loaded.ending.add_done_callback(_retrieved)
        return await asyncio.shield(loaded.ending)

    async def _end(self, loaded: _Loaded, reason: str | None) -> UnloadResult:
        """Stop the process; only once it is gone does the worker leave the books."""
        assert loaded.ready is not None
        pid, on_gpu = loaded.ready.pid, loaded.ready.device == "cuda"
        exited, code, before = False, None, None
        try:
            before = await asyncio.to_thread(gpu.used_by_mb if on_gpu else rss_mb, pid)
            exited, code = await loaded.process.stop(self.settings.shutdown_timeout_s)
            if exited:
                await asyncio.to_thread(self._pids.discard, pid)
        finally:
            if self._workers.get(loaded.key) is loaded:
                del self._workers[loaded.key]
            for holder in loaded.holders:
                if self._held.get(holder) == loaded.key:
                    del self._held[holder]
                    if reason:
                        self._exit_reasons[holder] = reason
            loaded.gone.set()
        freed = await _gpu_released_mb(pid, before) if on_gpu else before
        log.info("unloaded %s (pid %s, exit code %s, %.0f MB freed)", loaded.key.model, pid, code, freed or 0)
        return UnloadResult(loaded.key, pid, True, exited, code, 0, freed)

    # Idle unload

    def _ensure_reaper(self) -> None:
        if self._reaper is None or self._reaper.done():
            self._reaper = asyncio.get_running_loop().create_task(self._reap_idle())
        else:
            self._reaper_wake.set()  # a new worker's limit may be shorter than the sleep under way

    async def _reap_idle(self) -> None:
        while self._workers:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._reaper_wake.wait(), Placement.next_check_s(list(self._workers.values())))
            self._reaper_wake.clear()
            for loaded in Placement.expired([w for w in self._workers.values() if not w.closing]):
                if Placement.expired([loaded]):  # still unused: an earlier eviction took time
                    await self._evict(loaded, idle_reason(loaded.idle_unload_s))

    # State

    async def holding(self, holder: str) -> WorkerInfo | None:
        key = self._held.get(holder)
        loaded = self._workers.get(key) if key else None
        return loaded.info() if loaded and loaded.ready else None

    async def exit_reason(self, holder: str) -> str | None:
        return self._exit_reasons.get(holder)

    async def workers(self) -> list[WorkerInfo]:
        return [w.info() for w in self._workers.values() if w.ready]

    async def worker_deaths(self) -> int:
        return self._deaths

    # Requests

    def _handle(self, holder: str) -> _Loaded:
        key = self._held.get(holder)
        loaded = self._workers.get(key) if key else None
        if loaded is None:
            raise ModelNotLoaded(self._exit_reasons.get(holder) or "no model is loaded for this chat")
        if loaded.closing:
            raise ModelNotLoaded(f"{loaded.key.model} is being unloaded")
        return loaded

    async def count_tokens(self, holder: str, messages: Sequence[ChatMessage]) -> int:
        return await self._handle(holder).channel.count_tokens(messages)

    async def fit(self, holder: str, messages: Sequence[ChatMessage], max_new_tokens: int) -> FittedPrompt:
        loaded = self._handle(holder)
        assert loaded.ready is not None
        return await fitting.fit(loaded.channel.count_tokens, messages, loaded.ready.context_length, max_new_tokens)

    async def generate(
        self, holder: str, messages: Sequence[ChatMessage], params: GenerationParams, session: str | None = None
    ) -> AsyncGenerator[Event, None]:
        loaded = self._handle(holder)
        async with contextlib.aclosing(loaded.channel.generate(messages, params, session)) as events:
            async for event in events:
                yield event

    async def close(self) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
        starting = list(self._starts.values())
        for start in starting:
            start.cancel()  # a worker still loading is stopped by its start
        await asyncio.gather(*starting, return_exceptions=True)
        every = list(self._workers.values())
        for loaded in every:
            loaded.closing = True
        await shutdown([w.process for w in every], self.settings.shutdown_timeout_s)
        for loaded in every:
            if loaded.ready is not None:
                await asyncio.to_thread(self._pids.discard, loaded.ready.pid)
            loaded.gone.set()
        self._workers.clear()
        self._held.clear()


def _retrieved(task: asyncio.Future[object]) -> None:
    """Mark a runtime-owned task's failure as seen: every caller that cared got it already."""
    if not task.cancelled():
        task.exception()


async def _gpu_released_mb(pid: int, before: float | None, within_s: float = 10.0) -> float | None:
    """Wait (bounded) until NVML no longer charges ``pid`` any memory; return what was freed."""
    deadline = time.monotonic() + within_s
    used = None
    while time.monotonic() < deadline:
        used = await asyncio.to_thread(gpu.used_by_mb, pid)
        if not used:
            return before
        await asyncio.sleep(0.2)
    log.warning("NVML still charges %s MB to exited worker %s", used, pid)
    return (before or 0) - (used or 0)


__all__ = ["Runtime"]
