"""The per-worker request channel: a bounded FIFO of requests, each matched to its replies by id.

One request runs in a worker at a time; others wait in arrival order, up to ``max_queue``
of them, and beyond that are refused with :class:`Busy`. Replies are routed to their
request's queue by request id; when the worker dies, every pending request fails with
:class:`WorkerDied` at once. Closing a generation early sends an :class:`Abort` for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Sequence

from runtime.errors import Busy, ModelRuntimeError, WorkerDied, from_wire
from runtime.interface import Event, Queued
from runtime.protocol import (
    Abort,
    ChatMessage,
    CountTokens,
    Failed,
    Finished,
    FromWorker,
    Generate,
    GenerationParams,
    TokenChunk,
    TokenCount,
)
from runtime.supervisor import WorkerProcess


class RequestChannel:
    """Requests to one worker process, in order, with a bounded wait."""

    def __init__(self, process: WorkerProcess, name: str, max_queue: int) -> None:
        self._process = process
        self._name = name
        self._max_queue = max_queue
        self._lock = asyncio.Lock()  # one request at a time; asyncio.Lock wakes waiters FIFO
        self._entered = 0  # requests running or waiting
        self._pending: dict[str, asyncio.Queue[FromWorker | ModelRuntimeError]] = {}
        self._dead: WorkerDied | None = None
        self.last_used = time.monotonic()

    @property
    def busy(self) -> bool:
        return self._lock.locked()

    @property
    def queued(self) -> int:
        """Requests waiting behind the running one."""
        return max(0, self._entered - (1 if self._lock.locked() else 0))

    @property
    def idle(self) -> bool:
        return self._entered == 0

    def deliver(self, message: FromWorker) -> None:
        """Route a worker's reply to its request; replies to abandoned requests are dropped."""
        queue = self._pending.get(message.request_id)
        if queue is not None:
            queue.put_nowait(message)

    def fail_all(self, error: WorkerDied) -> None:
        """The worker is gone: every pending and later request fails with ``error``."""
        self._dead = error
        for queue in self._pending.values():
            queue.put_nowait(error)

    def _admit(self) -> int:
        """Take a place in line, or refuse; returns how many run or wait ahead."""
        if self._dead is not None:
            raise self._dead
        if self.queued >= self._max_queue:
            raise Busy(
                f"{self._name} already has {self.queued} requests waiting; try again shortly",
                retry_after_s=float(1 + self.queued),
            )
        ahead = self._entered
        self._entered += 1
        return ahead

    @contextlib.asynccontextmanager
    async def _turn(self) -> AsyncIterator[None]:
        """Take a place in line, then hold the worker for one request."""
        self._admit()
        try:
            async with self._lock:
                self.last_used = time.monotonic()
                yield
        finally:
            self._entered -= 1
            self.last_used = time.monotonic()

    async def generate(self, messages: Sequence[ChatMessage], params: GenerationParams) -> AsyncGenerator[Event, None]:
        ahead = self._admit()  # raised at the first ``anext``: nothing was accepted
        try:
            yield Queued(ahead)
            async with self._lock:
                self.last_used = time.monotonic()
                request = Generate(uuid.uuid4().hex, tuple(messages), params)
                async with contextlib.aclosing(self._run(request)) as events:
                    async for event in events:
                        yield event
        finally:
            self._entered -= 1
            self.last_used = time.monotonic()

    async def _run(self, request: Generate) -> AsyncGenerator[TokenChunk | Finished, None]:
        queue = self._open(request.request_id)
        finished = False
        try:
            await self._process.send(request)
            while not finished:
                item = await queue.get()
                if isinstance(item, ModelRuntimeError):
                    raise item
                if isinstance(item, Failed):
                    raise from_wire(item.kind, item.message)
                if isinstance(item, TokenChunk | Finished):
                    finished = isinstance(item, Finished)
                    yield item
        finally:
            self._pending.pop(request.request_id, None)
            if not finished:
                # The pipe is FIFO, so the worker sees this before any later request.
                self._process.send_soon(Abort(request.request_id))

    async def count_tokens(self, messages: Sequence[ChatMessage]) -> int:
        async with self._turn():
            request_id = uuid.uuid4().hex
            queue = self._open(request_id)
            try:
                await self._process.send(CountTokens(request_id, tuple(messages)))
                item = await queue.get()
            finally:
                self._pending.pop(request_id, None)
        if isinstance(item, ModelRuntimeError):
            raise item
        if isinstance(item, Failed):
            raise from_wire(item.kind, item.message)
        if not isinstance(item, TokenCount):
            raise WorkerDied(f"the worker for {self._name} answered a token count with {type(item).__name__}")
        return item.count

    def _open(self, request_id: str) -> asyncio.Queue[FromWorker | ModelRuntimeError]:
        if self._dead is not None:
            raise self._dead
        queue: asyncio.Queue[FromWorker | ModelRuntimeError] = asyncio.Queue()
        self._pending[request_id] = queue
        return queue
