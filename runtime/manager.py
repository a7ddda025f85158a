"""The parent side of the runtime: starts, talks to, watches and stops worker processes.

Every worker is a ``spawn``-ed child with one duplex pipe. A reader thread per worker
turns whatever arrives into calls on the event loop, so the loop never blocks on a pipe;
sends go through a one-thread executor for the same reason. When the pipe reports EOF
the worker is dead: every pending request fails with :class:`WorkerDied` at once and the
runtime forgets the worker, so the next load starts a fresh one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import threading
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import psutil

from runtime import discovery, gpu, worker
from runtime.client import FittedPrompt, UnloadResult, WorkerInfo, WorkerKey
from runtime.discovery import ModelInfo
from runtime.errors import (
    BackendUnavailable,
    Busy,
    ContextOverflow,
    InsufficientMemory,
    ModelLoadFailed,
    ModelNotLoaded,
    ModelRuntimeError,
    TooManyModels,
    WorkerDied,
    from_wire,
)
from runtime.protocol import (
    LOAD_REQUEST_ID,
    Abort,
    ChatMessage,
    CountTokens,
    Device,
    Event,
    Failed,
    Finished,
    FromWorker,
    Generate,
    GenerationParams,
    Ready,
    Shutdown,
    TokenCount,
    ToWorker,
    WorkerSpec,
)
from runtime.settings import RuntimeSettings

log = logging.getLogger(__name__)

# Which backends can open which kind of model folder.
_COMPATIBLE = {
    "llama.cpp": {"llama.cpp"},
    "transformers": {"transformers"},
    "onnx": {"onnx"},
}


class _Worker:
    """Parent-side handle of one worker process."""

    def __init__(
        self, key: WorkerKey, spec: WorkerSpec, loop: asyncio.AbstractEventLoop, max_queue: int, idle_unload_s: float
    ) -> None:
        self.key = key
        self.holders: set[str] = set()
        self.idle_unload_s = idle_unload_s
        self.last_used = time.monotonic()
        self._max_queue = max_queue
        self._entered = 0  # requests running or waiting for the lock
        self.ready: Ready | None = None
        self.lock = asyncio.Lock()  # one request at a time; asyncio.Lock wakes waiters FIFO
        self._loop = loop
        self._pending: dict[str, asyncio.Queue[FromWorker | ModelRuntimeError]] = {}
        self._sender = ThreadPoolExecutor(1, thread_name_prefix=f"send-{key.model}")
        self._started: asyncio.Future[Ready] = loop.create_future()
        self._dead = False
        self.on_death: list[Any] = []
        context = multiprocessing.get_context("spawn")
        self.conn, child_conn = context.Pipe(duplex=True)
        self.process = context.Process(
            target=worker.main,
            args=(spec, child_conn, os.getpid()),
            name=f"llmchat-worker[{key.model}]",
            daemon=True,
        )
        self._child_conn: Connection | None = child_conn

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self, timeout_s: float) -> Ready:
        await asyncio.to_thread(self.process.start)
        assert self._child_conn is not None
        self._child_conn.close()  # so EOF is seen when the child dies
        self._child_conn = None
        threading.Thread(target=self._read, name=f"read-{self.key.model}", daemon=True).start()
        try:
            self.ready = await asyncio.wait_for(asyncio.shield(self._started), timeout_s)
        except TimeoutError:
            await self.stop(1.0)
            raise ModelLoadFailed(
                f"loading {self.key.model} took longer than {timeout_s:.0f} s; the worker was stopped"
            ) from None
        except WorkerDied as exc:
            raise ModelLoadFailed(f"loading {self.key.model} failed: {exc}") from exc
        except ModelRuntimeError:
            await self.stop(1.0)
            raise
        return self.ready

    async def stop(self, timeout_s: float) -> tuple[bool, int | None]:
        """Ask the worker to exit, kill it after ``timeout_s``; return (exited, exit code)."""
        pid = self.process.pid
        try:
            children = psutil.Process(pid).children(recursive=True) if pid else []
        except psutil.Error:
            children = []
        if not self._dead:
            with contextlib.suppress(OSError, RuntimeError):
                await self._send(Shutdown())
        if pid is not None:
            await asyncio.to_thread(self.process.join, timeout_s)
            if self.process.is_alive():
                log.warning("worker %s (pid %s) ignored shutdown; killing it", self.key.model, pid)
                self.process.kill()
                await asyncio.to_thread(self.process.join, timeout_s)
        for child in children:
            with contextlib.suppress(psutil.Error):
                child.kill()
        self._sender.shutdown(wait=False)
        self.conn.close()
        exited = pid is None or not _pid_running(pid)
        return exited, self.process.exitcode

    # -- requests ----------------------------------------------------------------------------

    @property
    def queued(self) -> int:
        return max(0, self._entered - (1 if self.lock.locked() else 0))

    @property
    def idle(self) -> bool:
        return self._entered == 0

    @contextlib.asynccontextmanager
    async def _turn(self) -> AsyncIterator[None]:
        """Wait for this worker, FIFO, refusing when the queue is full."""
        if self.queued >= self._max_queue:
            raise Busy(
                f"{self.key.model} already has {self.queued} requests waiting; try again shortly",
                retry_after_s=float(1 + self.queued),
            )
        self._entered += 1
        try:
            async with self.lock:
                self.last_used = time.monotonic()
                yield
        finally:
            self._entered -= 1
            self.last_used = time.monotonic()

    async def generate(
        self, messages: Sequence[ChatMessage], params: GenerationParams
    ) -> AsyncIterator[Event]:
        async with self._turn():
            request_id = uuid.uuid4().hex
            queue = self._open(request_id)
            finished = False
            try:
                await self._send(Generate(request_id, tuple(messages), params))
                while not finished:
                    item = await queue.get()
                    if isinstance(item, ModelRuntimeError):
                        raise item
                    if isinstance(item, Failed):
                        raise from_wire(item.kind, item.message)
                    finished = isinstance(item, Finished)
                    yield item  # type: ignore[misc]
            finally:
                self._pending.pop(request_id, None)
                if not finished and not self._dead:
                    # The pipe is FIFO, so the worker sees this before any later request.
                    self._sender.submit(self._send_quietly, Abort(request_id))

    async def count_tokens(self, messages: Sequence[ChatMessage]) -> int:
        async with self._turn():
            request_id = uuid.uuid4().hex
            queue = self._open(request_id)
            try:
                await self._send(CountTokens(request_id, tuple(messages)))
                item = await queue.get()
            finally:
                self._pending.pop(request_id, None)
            if isinstance(item, ModelRuntimeError):
                raise item
            if isinstance(item, Failed):
                raise from_wire(item.kind, item.message)
            assert isinstance(item, TokenCount)
            return item.count

    def info(self) -> WorkerInfo:
        assert self.ready is not None
        return WorkerInfo(
            key=self.key,
            pid=self.ready.pid,
            device=self.ready.device,
            context_length=self.ready.context_length,
            load_time_s=self.ready.load_time_s,
            has_chat_template=self.ready.has_chat_template,
            holders=tuple(sorted(self.holders)),
            busy=self.lock.locked(),
            queued=self.queued,
            idle_s=time.monotonic() - self.last_used if self.idle else 0.0,
            idle_unload_s=self.idle_unload_s,
            cuda_visible_devices=self.ready.cuda_visible_devices,
        )

    # -- pipe --------------------------------------------------------------------------------

    def _open(self, request_id: str) -> asyncio.Queue[FromWorker | ModelRuntimeError]:
        if self._dead:
            raise WorkerDied(f"the worker for {self.key.model} is no longer running")
        queue: asyncio.Queue[FromWorker | ModelRuntimeError] = asyncio.Queue()
        self._pending[request_id] = queue
        return queue

    async def _send(self, message: ToWorker) -> None:
        try:
            await self._loop.run_in_executor(self._sender, self.conn.send, message)
        except (OSError, RuntimeError) as exc:
            raise WorkerDied(f"the worker for {self.key.model} is no longer running") from exc

    def _send_quietly(self, message: ToWorker) -> None:
        with contextlib.suppress(OSError):
            self.conn.send(message)

    def _read(self) -> None:
        """Reader thread: forward every message to the loop until the pipe closes."""
        while True:
            try:
                message = self.conn.recv()
            except (EOFError, OSError):
                break
            self._call(self._dispatch, message)
        self.process.join(0.5)  # reap it, so the exit code can be reported
        self._call(self._on_eof, self.process.exitcode)

    def _call(self, callback: Any, arg: Any) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is already closed
            self._loop.call_soon_threadsafe(callback, arg)

    def _dispatch(self, message: FromWorker) -> None:
        if message.request_id == LOAD_REQUEST_ID:
            if self._started.done():
                return
            if isinstance(message, Ready):
                self._started.set_result(message)
            elif isinstance(message, Failed):
                self._started.set_exception(from_wire(message.kind, message.message))
            return
        queue = self._pending.get(message.request_id)
        if queue is not None:  # replies to an abandoned request are dropped
            queue.put_nowait(message)

    def _on_eof(self, exit_code: int | None) -> None:
        self._dead = True
        how = f"was killed by signal {-exit_code}" if exit_code and exit_code < 0 else f"exited (code {exit_code})"
        error = WorkerDied(f"the worker for {self.key.model} {how}")
        if not self._started.done():
            self._started.set_exception(error)
            self._started.exception()  # mark retrieved: start() may already have given up
        for queue in self._pending.values():
            queue.put_nowait(error)
        for callback in self.on_death:
            callback(self, error)


def _rss_mb(pid: int) -> float | None:
    try:
        return float(psutil.Process(pid).memory_info().rss) / 2**20
    except psutil.Error:
        return None


async def _gpu_released_mb(pid: int, before: float | None, within_s: float = 10.0) -> float | None:
    """Wait (bounded) until NVML no longer charges ``pid`` any memory; return what was freed."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        used = await asyncio.to_thread(gpu.used_by_mb, pid)
        if not used:
            return before
        await asyncio.sleep(0.2)
    log.warning("NVML still charges %s MB to exited worker %s", used, pid)
    return (before or 0) - (used or 0)


def _pid_running(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


class Runtime:
    """The real :class:`runtime.client.ModelRuntime`: one spawned process per loaded model."""

    def __init__(self, settings: RuntimeSettings | None = None) -> None:
        self.settings = settings or RuntimeSettings()
        self._workers: dict[WorkerKey, _Worker] = {}
        self._held: dict[str, WorkerKey] = {}
        self._loading: dict[WorkerKey, asyncio.Lock] = {}
        self._admitting = asyncio.Lock()  # one admission decision at a time
        self._exit_reasons: dict[str, str] = {}  # holder -> why its worker went away
        self._deaths = 0
        self._reaper: asyncio.Task[None] | None = None
        self._pids = _PidFile(self.settings.state_dir / "workers.pids")
        self._pids.reap_orphans()

    def models(self) -> list[ModelInfo]:
        return discovery.scan(self.settings.models_dir)

    def resolve(self, model: str) -> ModelInfo:
        return discovery.resolve(self.settings.models_dir, model)

    async def load(
        self,
        holder: str,
        model: str,
        device: Device = "auto",
        backend: str | None = None,
        idle_unload_s: float | None = None,
    ) -> WorkerInfo:
        info, backend = self._choose_backend(self.resolve(model), device, backend)
        key = WorkerKey(info.name, device, backend)
        lock = self._loading.setdefault(key, asyncio.Lock())
        async with lock:
            running = self._workers.get(key)
            if running is None:
                idle = self.settings.idle_unload_s if idle_unload_s is None else idle_unload_s
                running = await self._start(key, info, idle)
            running.holders.add(holder)
            running.last_used = time.monotonic()
        previous = self._held.get(holder)
        self._held[holder] = key
        self._exit_reasons.pop(holder, None)
        if previous is not None and previous != key:
            await self._release(holder, previous)
        return running.info()

    def _choose_backend(self, info: ModelInfo, device: Device, backend: str | None) -> tuple[ModelInfo, str]:
        """The backend to run ``info`` with, and the files it opens.

        A Transformers model with an ONNX export beside it (``<name>-onnx``) runs from the
        export when ONNX is asked for, or on CPU when ``onnx_on_cpu`` is set.
        """
        if backend is not None and backend not in _COMPATIBLE:
            raise BackendUnavailable(f"unknown backend {backend!r}; known: {', '.join(_COMPATIBLE)}")
        export = self._onnx_export(info) if info.backend == "transformers" else None
        if backend == "onnx" and info.backend == "transformers":
            if export is None:
                raise BackendUnavailable(
                    f"{info.name} has no ONNX export; create one with: python -m runtime.onnx_export {info.name}"
                )
            return replace(info, path=export.path), "onnx"
        if backend is None and export is not None and self.settings.onnx_on_cpu:
            if device == "cpu" or (device == "auto" and gpu.device_count() == 0):
                return replace(info, path=export.path), "onnx"
        backend = backend or info.backend
        if info.backend not in _COMPATIBLE[backend]:
            raise BackendUnavailable(f"{info.name} is a {info.backend} model; backend {backend!r} cannot open it")
        return info, backend

    def _onnx_export(self, info: ModelInfo) -> ModelInfo | None:
        try:
            export = self.resolve(f"{info.name}-onnx")
        except ModelRuntimeError:
            return None
        return export if export.backend == "onnx" else None

    async def _start(self, key: WorkerKey, info: ModelInfo, idle_unload_s: float) -> _Worker:
        n_ctx = self.settings.n_ctx
        if info.context_length:
            n_ctx = min(n_ctx, info.context_length)
        spec = WorkerSpec(
            str(info.path), key.backend, key.device, n_ctx, self.settings.n_threads,
            self.settings.cuda_visible_devices, self.settings.gpu_memory_fraction,
        )
        async with self._admitting:
            await self._admit(info, key)
            handle = _Worker(key, spec, asyncio.get_running_loop(), self.settings.max_queue, idle_unload_s)
            handle.on_death.append(self._forget)
            ready = await handle.start(self.settings.load_timeout_s)
            self._pids.add(ready.pid)  # no await since start(): a death is handled after this
            self._workers[key] = handle
        self._ensure_reaper()
        log.info(
            "loaded %s on %s with %s in %.2f s (pid %s)",
            key.model, ready.device, key.backend, ready.load_time_s, ready.pid,
        )
        return handle

    def _forget(self, handle: _Worker, error: WorkerDied) -> None:
        if handle.process.pid is not None:
            self._pids.discard(handle.process.pid)
        if self._workers.get(handle.key) is not handle:
            return
        self._deaths += 1
        del self._workers[handle.key]
        log.error("%s", error)
        for holder in handle.holders:
            if self._held.get(holder) == handle.key:
                del self._held[holder]
                self._exit_reasons[holder] = str(error)

    async def unload(self, holder: str) -> UnloadResult | None:
        self._exit_reasons.pop(holder, None)
        key = self._held.pop(holder, None)
        if key is None:
            return None
        return await self._release(holder, key)

    async def _release(self, holder: str, key: WorkerKey) -> UnloadResult | None:
        handle = self._workers.get(key)
        if handle is None:
            return None
        handle.holders.discard(holder)
        pid = handle.ready.pid if handle.ready else -1
        if handle.holders:
            return UnloadResult(key, pid, False, False, None, len(handle.holders))
        del self._workers[key]
        on_gpu = handle.ready is not None and handle.ready.device == "cuda"
        before = gpu.used_by_mb(pid) if on_gpu else _rss_mb(pid)
        exited, code = await self._stop(handle)
        freed = await _gpu_released_mb(pid, before) if on_gpu else before
        log.info("unloaded %s (pid %s, exit code %s, %.0f MB freed)", key.model, pid, code, freed or 0)
        return UnloadResult(key, pid, True, exited, code, 0, freed)

    async def _stop(self, handle: _Worker) -> tuple[bool, int | None]:
        exited, code = await handle.stop(self.settings.shutdown_timeout_s)
        if handle.process.pid is not None and exited:
            self._pids.discard(handle.process.pid)
        return exited, code

    async def _evict(self, handle: _Worker, reason: str) -> None:
        """Unload a worker for every holder, recording why (idle, or room for another model)."""
        if self._workers.get(handle.key) is not handle:
            return
        del self._workers[handle.key]
        for holder in handle.holders:
            if self._held.get(holder) == handle.key:
                del self._held[holder]
                self._exit_reasons[holder] = reason
        log.info("%s: %s", handle.key.model, reason)
        await self._stop(handle)

    # -- admission -----------------------------------------------------------------------------

    async def _admit(self, info: ModelInfo, key: WorkerKey) -> None:
        """Make room for a new worker, or refuse with the numbers.

        Needed memory is estimated from the size on disk (weights plus working memory);
        free memory is what the OS reports as available (NVML's free VRAM for ``gpu``).
        Least recently used idle workers are unloaded when ``evict_idle`` allows it.
        """
        need_mb = info.size_bytes / 2**20 * 1.2 + 300
        while True:
            free_mb = self._free_mb(key.device)
            fits = free_mb - self.settings.memory_headroom_mb >= need_mb
            room = len(self._workers) < self.settings.max_workers
            if fits and room:
                return
            idle = sorted((w for w in self._workers.values() if w.idle), key=lambda w: w.last_used)
            if not idle or not self.settings.evict_idle:
                if not room:
                    raise TooManyModels(
                        f"{len(self._workers)} models are loaded, the most allowed (LLMCHAT_MAX_WORKERS), "
                        "and none is idle; unload one first"
                    )
                raise InsufficientMemory(
                    f"{info.name} needs about {need_mb:,.0f} MB; {free_mb:,.0f} MB is free and "
                    f"{self.settings.memory_headroom_mb} MB is kept in reserve"
                )
            await self._evict(idle[0], f"unloaded to make room for {info.name}")

    def _free_mb(self, device: Device) -> float:
        if device == "gpu" and gpu.device_count() > 0:
            free = gpu.free_mb(gpu.first_device(self.settings.cuda_visible_devices))
            if free is not None:
                return free
        return float(psutil.virtual_memory().available) / 2**20

    # -- idle unload ----------------------------------------------------------------------------

    def _ensure_reaper(self) -> None:
        if self._reaper is None or self._reaper.done():
            self._reaper = asyncio.get_running_loop().create_task(self._reap_idle())

    async def _reap_idle(self) -> None:
        while self._workers:
            limits = [w.idle_unload_s for w in self._workers.values() if w.idle_unload_s > 0]
            await asyncio.sleep(min(30.0, max(0.2, min(limits, default=30.0) / 4)))
            now = time.monotonic()
            for handle in list(self._workers.values()):
                if handle.idle_unload_s > 0 and handle.idle and now - handle.last_used >= handle.idle_unload_s:
                    minutes = handle.idle_unload_s / 60
                    await self._evict(handle, f"unloaded after {minutes:g} min without use (idle unload)")

    def holding(self, holder: str) -> WorkerInfo | None:
        key = self._held.get(holder)
        handle = self._workers.get(key) if key else None
        return handle.info() if handle else None

    def exit_reason(self, holder: str) -> str | None:
        return self._exit_reasons.get(holder)

    def workers(self) -> list[WorkerInfo]:
        return [handle.info() for handle in self._workers.values()]

    def worker_deaths(self) -> int:
        return self._deaths

    def _handle(self, holder: str) -> _Worker:
        key = self._held.get(holder)
        handle = self._workers.get(key) if key else None
        if handle is None:
            reason = self._exit_reasons.get(holder)
            raise ModelNotLoaded(reason or f"no model is loaded for {holder!r}")
        return handle

    async def count_tokens(self, holder: str, messages: Sequence[ChatMessage]) -> int:
        return await self._handle(holder).count_tokens(messages)

    async def fit(
        self, holder: str, messages: Sequence[ChatMessage], max_new_tokens: int
    ) -> FittedPrompt:
        handle = self._handle(holder)
        budget = handle.info().context_length - max_new_tokens
        system = [m for m in messages if m.role == "system"]
        turns = [m for m in messages if m.role != "system"]

        async def count(dropped: int) -> int:
            return await handle.count_tokens([*system, *turns[dropped:]])

        total = await count(0)
        if total <= budget:
            return FittedPrompt(tuple(messages), 0, total)
        # Fewer dropped turns never count fewer tokens, so binary-search the least drop.
        low, high = 1, len(turns) - 1
        if high < low or await count(high) > budget:
            raise ContextOverflow(
                f"the message needs more than {budget} tokens, which is what the "
                f"{handle.info().context_length}-token context leaves after "
                f"{max_new_tokens} tokens for the reply"
            )
        while low < high:
            middle = (low + high) // 2
            if await count(middle) <= budget:
                high = middle
            else:
                low = middle + 1
        dropped = low
        if turns[dropped].role == "assistant" and dropped + 1 < len(turns):
            dropped += 1  # start the kept history at a user turn
        kept = (*system, *turns[dropped:])
        return FittedPrompt(kept, dropped, await handle.count_tokens(kept))

    async def generate(
        self, holder: str, messages: Sequence[ChatMessage], params: GenerationParams
    ) -> AsyncIterator[Event]:
        handle = self._handle(holder)
        async with contextlib.aclosing(handle.generate(messages, params)) as events:
            async for event in events:
                yield event

    async def close(self) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
        handles = list(self._workers.values())
        self._workers.clear()
        self._held.clear()
        await asyncio.gather(*(self._stop(h) for h in handles), return_exceptions=True)


class _PidFile:
    """Records worker pids with their parent, so a restarted API can end workers an earlier
    run left behind (the parent-death signal covers Linux; this covers the rest).

    Entries are ``pid:parent:created``; a process is ended only if it still has the
    recorded start time, so a pid the OS has since reused is never touched.
    """

    def __init__(self, path: Path) -> None:
        self._path = path
        self._pids: dict[int, float] = {}  # pid -> process start time

    def reap_orphans(self) -> None:
        try:
            lines = self._path.read_text().split()
        except OSError:
            return
        kept = []
        for entry in lines:
            try:
                pid, parent, created = entry.split(":")
                process_id, parent_id, started = int(pid), int(parent), float(created)
            except ValueError:
                continue
            if _pid_running(parent_id) and parent_id != os.getpid():
                kept.append(entry)  # another live runtime's worker: not ours to end
                continue
            with contextlib.suppress(psutil.Error):
                process = psutil.Process(process_id)
                if abs(process.create_time() - started) < 0.01 and "multiprocessing" in " ".join(process.cmdline()):
                    log.warning("ending worker pid %s left behind by an earlier run", process_id)
                    process.kill()
        self._write(kept)

    def add(self, pid: int) -> None:
        with contextlib.suppress(psutil.Error):
            self._pids[pid] = psutil.Process(pid).create_time()
            self._save()

    def discard(self, pid: int) -> None:
        if self._pids.pop(pid, None) is not None:
            self._save()

    def _save(self) -> None:
        try:
            others = [e for e in self._path.read_text().split() if e.split(":")[1:2] != [str(os.getpid())]]
        except OSError:
            others = []
        mine = [f"{pid}:{os.getpid()}:{created}" for pid, created in sorted(self._pids.items())]
        self._write(others + mine)

    def _write(self, entries: list[str]) -> None:
        with contextlib.suppress(OSError):
            self._path.parent.mkdir(parents=True, exist_ok=True)
            self._path.write_text("\n".join(entries) + ("\n" if entries else ""))


__all__ = ["Runtime"]
