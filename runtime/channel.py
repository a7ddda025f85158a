"""The per-worker request channel: requests sent to one worker, each matched to its replies by id.

A worker generates up to ``parallel`` replies together (its backend batches them); who
runs and who waits in which place is :mod:`runtime.slots`' to decide. Token counts skip
the line: the worker answers them between two steps. When the worker dies, every pending
request fails with :class:`WorkerDied` at once. Closing a generation early sends an
:class:`Abort` for it, which ends that reply alone.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncGenerator, Sequence
from typing import Protocol

from runtime.errors import ModelRuntimeError, WorkerDied, from_wire
from runtime.interface import Event
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
    ToWorker,
)
from runtime.slots import Slots


class Sender(Protocol):
    """How requests reach the worker (:class:`runtime.supervisor.WorkerProcess`, or a Ray actor's queue)."""

    async def send(self, message: ToWorker) -> None:
        """Send one message; :class:`WorkerDied` if the worker is gone."""
        ...

    def send_soon(self, message: ToWorker) -> None:
        """Send without waiting, ignoring a worker that is gone (for aborts from ``finally`` blocks)."""
        ...


class RequestChannel:
    """Requests to one worker: ``parallel`` at once, then a bounded line in order."""

    def __init__(self, process: Sender, name: str, max_queue: int, parallel: int = 1) -> None:
        self._process = process
        self._name = name
        self._slots = Slots(name, parallel, max_queue)
        self._counting = 0
        self._pending: dict[str, asyncio.Queue[FromWorker | ModelRuntimeError]] = {}
        self.last_used = time.monotonic()

    @property
    def parallel(self) -> int:
        return self._slots.parallel

    @parallel.setter
    def parallel(self, value: int) -> None:
        """Set once the worker says how many replies it generates at once."""
        self._slots.parallel = value

    @property
    def busy(self) -> bool:
        return self._slots.running > 0

    @property
    def running(self) -> int:
        """Replies being generated now."""
        return self._slots.running

    @property
    def queued(self) -> int:
        """Replies waiting for a slot."""
        return self._slots.queued

    @property
    def idle(self) -> bool:
        return self._slots.idle and self._counting == 0

    def deliver(self, message: FromWorker) -> None:
        """Route a worker's reply to its request; replies to abandoned requests are dropped."""
        queue = self._pending.get(message.request_id)
        if queue is not None:
            queue.put_nowait(message)

    def fail_all(self, error: WorkerDied) -> None:
        """The worker is gone: every pending and later request fails with ``error``."""
        self._slots.fail_all(error)
        for queue in self._pending.values():
            queue.put_nowait(error)

    async def generate(
        self, messages: Sequence[ChatMessage], params: GenerationParams, session: str | None = None
    ) -> AsyncGenerator[Event, None]:
        place = self._slots.enter(session)  # raised at the first ``anext``: nothing was accepted
        self.last_used = time.monotonic()
        try:
            async for queued in place.wait():
                yield queued
            request = Generate(uuid.uuid4().hex, tuple(messages), params, session)
            async for event in self._run(request):
                yield event
            place.done()
        finally:
            place.leave()
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
                # The pipe is FIFO, so the worker sees this after its Generate.
                self._process.send_soon(Abort(request.request_id))

    async def count_tokens(self, messages: Sequence[ChatMessage]) -> int:
        """Counted by the worker between two steps, without waiting in line."""
        request_id = uuid.uuid4().hex
        queue = self._open(request_id)
        self._counting += 1
        try:
            await self._process.send(CountTokens(request_id, tuple(messages)))
            item = await queue.get()
        finally:
            self._pending.pop(request_id, None)
            self._counting -= 1
        if isinstance(item, ModelRuntimeError):
            raise item
        if isinstance(item, Failed):
            raise from_wire(item.kind, item.message)
        if not isinstance(item, TokenCount):
            raise WorkerDied(f"the worker for {self._name} answered a token count with {type(item).__name__}")
        return item.count

    def _open(self, request_id: str) -> asyncio.Queue[FromWorker | ModelRuntimeError]:
        if self._slots.dead is not None:
            raise self._slots.dead
        queue: asyncio.Queue[FromWorker | ModelRuntimeError] = asyncio.Queue()
        self._pending[request_id] = queue
        return queue
