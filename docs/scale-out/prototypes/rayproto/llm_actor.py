"""Prototype of runtime/ray_actor.py: a model worker as a Ray actor running the project's own
serving code: runtime.worker._Server steps the backend in a thread (as in a worker process),
runtime.channel.RequestChannel (+ runtime.slots) queues requests on the actor's event loop.
Only the pipe is replaced: a thread-safe inbox instead of multiprocessing.Connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import queue
import threading
import time
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass

import ray

from runtime.backends.base import Backend
from runtime.channel import RequestChannel
from runtime.errors import Busy, ModelRuntimeError, to_wire
from runtime.protocol import ChatMessage, FromWorker, GenerationParams, Ready, Shutdown, ToWorker, WorkerSpec
from runtime.worker import _Server


@dataclass(frozen=True, slots=True)
class Refused:
    """A ModelRuntimeError raised in the actor, as plain values (never a live exception)."""

    kind: str
    message: str
    retry_after_s: float | None = None


class _Pipe:
    """Both ends of what used to be the worker's pipe, inside one process.

    The stepping thread sees a ``Connection`` (poll, recv, send); the event loop sees what
    RequestChannel needs of a WorkerProcess (async send, send_soon)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._inbox: queue.SimpleQueue[ToWorker] = queue.SimpleQueue()
        self._loop = loop
        self.deliver = lambda message: None  # set once the channel exists

    # the stepping thread's side (multiprocessing.connection.Connection's subset _Server uses)
    def poll(self) -> bool:
        return not self._inbox.empty()

    def recv(self) -> ToWorker:
        return self._inbox.get()

    def send(self, message: FromWorker) -> None:
        self._loop.call_soon_threadsafe(self.deliver, message)

    # the loop's side (runtime.supervisor.WorkerProcess's subset RequestChannel uses)
    def send_soon(self, message: ToWorker) -> None:
        self._inbox.put(message)


class _LoopSide:
    def __init__(self, pipe: _Pipe) -> None:
        self._pipe = pipe

    async def send(self, message: ToWorker) -> None:
        self._pipe.send_soon(message)

    def send_soon(self, message: ToWorker) -> None:
        self._pipe.send_soon(message)


class ModelWorker:
    """One loaded model. Created detached and named by the API replica that loads it."""

    def __init__(self) -> None:
        self._channel: RequestChannel | None = None
        self.aborted: list[str] = []
        self.cancelled_streams = 0

    async def start(self, spec: WorkerSpec, name: str, max_queue: int, backend_factory=None) -> Ready:
        started = time.perf_counter()
        loop = asyncio.get_running_loop()
        pipe = _Pipe(loop)
        backend: Backend = backend_factory() if backend_factory else __import__("runtime.backends", fromlist=["create"]).create(spec.backend)
        loaded = await asyncio.to_thread(backend.load, spec)
        self._backend = backend
        channel = RequestChannel(_LoopSide(pipe), name, max_queue, loaded.parallel)  # type: ignore[arg-type]
        pipe.deliver = channel.deliver
        self._channel, self._pipe = channel, pipe
        self._thread = threading.Thread(target=_Server(backend, pipe).serve, name="step", daemon=True)  # type: ignore[arg-type]
        self._thread.start()
        return Ready("load", os.getpid(), spec.backend, "cpu", loaded.context_length, time.perf_counter() - started,
                     loaded.has_chat_template, os.environ.get("CUDA_VISIBLE_DEVICES"), loaded.parallel)

    async def generate(
        self, messages: Sequence[ChatMessage], params: GenerationParams, session: str | None = None
    ) -> AsyncGenerator[object, None]:
        assert self._channel is not None
        try:
            async with contextlib.aclosing(self._channel.generate(messages, params, session)) as events:
                async for event in events:
                    yield event
        except ModelRuntimeError as exc:
            kind, message = to_wire(exc) if not isinstance(exc, Busy) else ("Busy", str(exc))
            yield Refused(kind, message, exc.retry_after_s if isinstance(exc, Busy) else None)
        except asyncio.CancelledError:
            self.cancelled_streams += 1  # ray.cancel on the consumer's ObjectRefGenerator
            raise

    async def count_tokens(self, messages: Sequence[ChatMessage]) -> int | Refused:
        assert self._channel is not None
        try:
            return await self._channel.count_tokens(messages)
        except ModelRuntimeError as exc:
            return Refused(*to_wire(exc))

    def stats(self) -> dict:
        c = self._channel
        assert c is not None
        return {"pid": os.getpid(), "node_id": ray.get_runtime_context().get_node_id(), "running": c.running,
                "queued": c.queued, "parallel": c.parallel, "idle_s": time.monotonic() - c.last_used if c.idle else 0.0,
                "aborted": list(getattr(self._backend, "aborted", [])), "cancelled_streams": self.cancelled_streams,
                "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES")}

    def shutdown(self) -> None:
        self._pipe.send_soon(Shutdown())
