"""A model worker as a Ray actor: the same backend, batching and request line as a local worker.

:class:`ModelWorker` is created (detached, named) by the cluster's coordinator on the node
chosen for it, once that node's probe has found the model's files to be the bytes the API
expects. It loads the model from that node's models folder, then runs :class:`runtime.serving.StepLoop` in a thread over an
in-process queue, and :class:`runtime.channel.RequestChannel` (slots, line, per-chat
exclusivity) on the actor's event loop, so every API replica sees one line per worker.

Nothing that crosses the actor boundary is a live exception: a refusal is a :class:`Refused`.
Each request names its API replica (``owner``): :meth:`ModelWorker.abort_owner` ends the
requests of a replica that died, which Ray itself would let run to their end.
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
from pathlib import Path

from runtime import backends, fitting
from runtime.channel import RequestChannel
from runtime.errors import Busy, ModelLoadFailed, ModelRuntimeError, to_wire, without_paths
from runtime.interface import Event, FittedPrompt
from runtime.protocol import (
    ChatMessage,
    FromWorker,
    GenerationParams,
    Ready,
    Shutdown,
    ToWorker,
    WorkerSpec,
)
from runtime.serving import StepLoop
from runtime.settings import RuntimeSettings


@dataclass(frozen=True, slots=True)
class Refused:
    """A runtime error raised in an actor, as plain values (:func:`runtime.errors.to_wire`)."""

    kind: str
    message: str
    retry_after_s: float | None = None

    @classmethod
    def of(cls, exc: ModelRuntimeError) -> Refused:
        if isinstance(exc, Busy):
            return cls("Busy", str(exc), exc.retry_after_s)
        return cls(*wire(exc))

    def error(self) -> ModelRuntimeError:
        from runtime import errors

        if self.kind == "Busy":
            return errors.Busy(self.message, self.retry_after_s or 1.0)
        kind = getattr(errors, self.kind, None)
        if isinstance(kind, type) and issubclass(kind, ModelRuntimeError) and kind is not Busy:
            return kind(self.message)
        return errors.from_wire(self.kind, self.message)


def wire(exc: ModelRuntimeError) -> tuple[str, str]:
    """Like :func:`runtime.errors.to_wire`, keeping every runtime error's own kind (not only a worker's)."""
    return type(exc).__name__, without_paths(str(exc) or type(exc).__name__)


@dataclass(frozen=True, slots=True)
class WorkerStats:
    """What a replica shows of a worker: measured where it runs."""

    pid: int
    node_id: str
    running: int
    queued: int
    parallel: int
    idle_s: float
    busy: bool
    memory_mb: float | None  # resident RAM, or on CUDA what NVML charges it


class _Pipe:
    """Both ends of what is a pipe in a local worker, inside one process: the stepping thread
    polls and receives from a queue and sends onto the event loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._inbox: queue.SimpleQueue[ToWorker] = queue.SimpleQueue()
        self._loop = loop
        self.deliver = lambda message: None  # set once the channel exists

    def poll(self) -> bool:
        return not self._inbox.empty()

    def recv(self) -> ToWorker:
        return self._inbox.get()

    def send(self, message: FromWorker) -> None:
        self._loop.call_soon_threadsafe(self.deliver, message)

    def send_soon(self, message: ToWorker) -> None:
        self._inbox.put(message)


class _LoopSide:
    """The channel's :class:`runtime.channel.Sender` over the in-process queue."""

    def __init__(self, pipe: _Pipe) -> None:
        self._pipe = pipe

    async def send(self, message: ToWorker) -> None:
        self._pipe.send_soon(message)

    def send_soon(self, message: ToWorker) -> None:
        self._pipe.send_soon(message)


class ModelWorker:
    """One loaded model on one node (a Ray actor class; see the module docstring)."""

    def __init__(self) -> None:
        self._ready: asyncio.Future[Ready | Refused] | None = None
        self._channel: RequestChannel | None = None
        self._pipe: _Pipe | None = None
        self._owners: dict[asyncio.Task[object], str] = {}
        self._closing = False
        self._device = "cpu"
        self._forever = asyncio.Event()

    async def start(self, spec: WorkerSpec, name: str, max_queue: int) -> Ready | Refused:
        """Load the model, start serving. A second call waits for the first's outcome.

        ``spec.model_path`` is relative to this node's models folder (``LLMCHAT_MODELS_DIR``)."""
        if self._ready is None:
            self._ready = asyncio.get_running_loop().create_future()
            try:
                self._ready.set_result(await self._start(spec, name, max_queue))
            except ModelRuntimeError as exc:
                self._ready.set_result(Refused.of(exc))
            except Exception as exc:  # noqa: BLE001 - a load that fails is reported, as a worker process does
                self._ready.set_result(Refused(*to_wire(ModelLoadFailed(f"loading {name} failed: {exc}"))))
        return await asyncio.shield(self._ready)

    async def _start(self, spec: WorkerSpec, name: str, max_queue: int) -> Ready:
        started = time.perf_counter()
        path = RuntimeSettings().models_dir / spec.model_path
        backend = backends.create(spec.backend)
        loaded = await asyncio.to_thread(backend.load, _with_path(spec, path))  # the loop keeps answering
        loop = asyncio.get_running_loop()
        pipe = _Pipe(loop)
        channel = RequestChannel(_LoopSide(pipe), name, max_queue, loaded.parallel)
        pipe.deliver = channel.deliver
        self._channel, self._pipe = channel, pipe
        self._device = "cuda" if loaded.device == "cuda" else "cpu"

        def serve() -> None:
            try:
                StepLoop(backend, pipe).serve()
            finally:
                backend.close()
            if not self._closing:
                os._exit(70)  # the stepping thread failed: end the actor, so Ray reports a death

        threading.Thread(target=serve, name=f"step-{name}", daemon=True).start()
        return Ready(
            "load", os.getpid(), spec.backend, "cuda" if loaded.device == "cuda" else "cpu", loaded.context_length,
            time.perf_counter() - started, loaded.has_chat_template, os.environ.get("CUDA_VISIBLE_DEVICES"),
            loaded.parallel,
        )

    def _serving(self) -> RequestChannel:
        if self._channel is None:
            raise RuntimeError("the worker has not loaded its model")
        return self._channel

    async def generate(
        self, messages: Sequence[ChatMessage], params: GenerationParams, session: str | None, owner: str
    ) -> AsyncGenerator[Event | Refused, None]:
        """The request's events; a refusal (full line, busy chat) is yielded as a :class:`Refused`.

        Ray cancels this generator's task when the caller cancels the stream: the channel's
        clean-up then aborts the reply in the backend."""
        task = asyncio.current_task()
        assert task is not None
        self._owners[task] = owner
        try:
            async with contextlib.aclosing(self._serving().generate(messages, params, session)) as events:
                async for event in events:
                    yield event
        except ModelRuntimeError as exc:
            yield Refused.of(exc)
        finally:
            self._owners.pop(task, None)

    def abort_owner(self, owners: list[str]) -> int:
        """End every request of these (dead) API replicas; how many were ended."""
        ended = [task for task, owner in self._owners.items() if owner in owners]
        for task in ended:
            task.cancel()
        return len(ended)

    async def count_tokens(self, messages: Sequence[ChatMessage]) -> int | Refused:
        try:
            return await self._serving().count_tokens(messages)
        except ModelRuntimeError as exc:
            return Refused.of(exc)

    async def fit(self, messages: Sequence[ChatMessage], max_new_tokens: int, context_length: int) -> FittedPrompt | Refused:
        """:func:`runtime.fitting.fit` here, beside the tokenizer: one round trip per turn."""
        try:
            return await fitting.fit(self._serving().count_tokens, messages, context_length, max_new_tokens)
        except ModelRuntimeError as exc:
            return Refused.of(exc)

    def stats(self) -> WorkerStats:
        import ray

        from runtime import gpu
        from runtime.supervisor import rss_mb

        channel = self._serving()
        on_gpu = self._device == "cuda"
        return WorkerStats(
            os.getpid(), ray.get_runtime_context().get_node_id(), channel.running, channel.queued, channel.parallel,
            time.monotonic() - channel.last_used if channel.idle else 0.0, channel.busy,
            gpu.used_by_mb(os.getpid()) if on_gpu else rss_mb(os.getpid()),
        )

    async def until_dead(self) -> None:
        """Never returns: the coordinator awaits it to learn of this actor's death (ActorDiedError)."""
        await self._forever.wait()

    def stop(self) -> None:
        """Stop stepping (before ``ray.kill``): the backend frees its memory in its own thread."""
        self._closing = True
        if self._pipe is not None:
            self._pipe.send_soon(Shutdown())


def _with_path(spec: WorkerSpec, path: Path) -> WorkerSpec:
    from dataclasses import replace

    return replace(spec, model_path=str(path))
