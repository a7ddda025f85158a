"""An in-process fake of the runtime interface, for tests of the layers above the runtime.

It implements the whole of :class:`runtime.interface.ModelRuntime` with the real
semantics (holders sharing workers, ``parallel`` slots and a bounded FIFO line per
worker from :mod:`runtime.slots`, refusals before :class:`Queued`, context fitting) but no processes: replies are deterministic tokens at an
adjustable pace, and a test can kill a worker or fill its queue. Like httpx's
``MockTransport``, it is passed in where the real one would be (``create_app(runtime=...)``).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from runtime import backends, fitting
from runtime.builds import BuildState
from runtime.discovery import ModelInfo
from runtime.errors import Busy, InvalidModelName, ModelNotFound, ModelNotLoaded, WorkerDied
from runtime.interface import Event, FittedPrompt, UnloadResult, WorkerInfo, WorkerKey
from runtime.protocol import (
    ChatMessage,
    Device,
    Finished,
    FinishReason,
    GenerationMetrics,
    GenerationParams,
    TokenChunk,
)
from runtime.slots import Slots

_pids = itertools.count(900_000)


def fake_model(name: str, backend: str = "llama.cpp", context_length: int = 2048) -> ModelInfo:
    """A model the fake serves (nothing on disk)."""
    return ModelInfo(name, backends.check(backend), Path("/nonexistent") / name, 100 * 2**20, context_length)


@dataclass(eq=False)
class _FakeWorker:
    key: WorkerKey
    info: ModelInfo
    slots: Slots
    pid: int = field(default_factory=lambda: next(_pids))
    holders: set[str] = field(default_factory=set)
    last_used: float = field(default_factory=time.monotonic)
    dead: WorkerDied | None = None
    killed: asyncio.Event = field(default_factory=asyncio.Event)

    def snapshot(self, idle_unload_s: float) -> WorkerInfo:
        slots = self.slots
        return WorkerInfo(
            key=self.key, pid=self.pid, running_on="cpu", context_length=self.info.context_length or 2048,
            load_time_s=0.01, has_chat_template=False, holders=tuple(sorted(self.holders)), busy=slots.running > 0,
            queued=slots.queued, running=slots.running, parallel=slots.parallel, idle_unload_s=idle_unload_s,
        )


class FakeRuntime:
    """Deterministic replies: ``reply_words`` words (``word0 word1 …``), one per ``token_delay_s``;
    a worker generates ``parallel`` at once unless its load asks otherwise."""

    def __init__(
        self,
        models: Sequence[ModelInfo] = (fake_model("fake.gguf"),),
        *,
        token_delay_s: float = 0.0,
        reply_words: int = 8,
        max_queue: int = 8,
        load_delay_s: float = 0.0,
        parallel: int = 1,
    ) -> None:
        self._models = {m.name: m for m in models}
        self.token_delay_s = token_delay_s
        self.reply_words = reply_words
        self.max_queue = max_queue
        self.load_delay_s = load_delay_s
        self.parallel = parallel
        self.saturated = False  # when set, every worker's slots and line are full: requests get Busy
        self._workers: dict[WorkerKey, _FakeWorker] = {}
        self._held: dict[str, WorkerKey] = {}
        self._reasons: dict[str, str] = {}
        self._deaths = 0
        self.generations = 0  # generations that got past the queue (a test's evidence)
        self.last_prompt: list[ChatMessage] = []  # the messages the latest of them read (evidence too)
        self.building: list[BuildState] = []  # what builds() reports; a test sets it

    # Test controls

    def kill(self, model: str) -> None:
        """Make every worker of ``model`` die: its requests fail with WorkerDied, its holders lose it."""
        for key, worker in list(self._workers.items()):
            if key.model == model:
                worker.dead = WorkerDied(f"the worker for {model} was killed by signal 9")
                worker.slots.fail_all(worker.dead)
                worker.killed.set()
                del self._workers[key]
                self._deaths += 1
                for holder in worker.holders:
                    if self._held.get(holder) == key:
                        del self._held[holder]
                        self._reasons[holder] = str(worker.dead)

    # The interface

    async def models(self) -> list[ModelInfo]:
        return sorted(self._models.values(), key=lambda m: m.name)

    async def builds(self) -> list[BuildState]:
        return list(self.building)

    async def load(
        self, holder: str, model: str, device: Device = "auto", backend: str | None = None,
        idle_unload_s: float | None = None, parallel: int | None = None,
    ) -> WorkerInfo:
        if "/" in model or model in (".", ".."):
            raise InvalidModelName(f"invalid model name {model!r}: give the name of an entry of the models folder")
        info = self._models.get(model)
        if info is None:
            raise ModelNotFound(f"no model named {model!r} in the models folder")
        key = WorkerKey(model, device, backend or info.backend)
        await asyncio.sleep(self.load_delay_s)
        if key not in self._workers:
            slots = Slots(model, parallel or self.parallel, self.max_queue)
            self._workers[key] = _FakeWorker(key, info, slots)
        worker = self._workers[key]
        worker.holders.add(holder)
        previous = self._held.get(holder)
        self._held[holder] = key
        self._reasons.pop(holder, None)
        if previous is not None and previous != key:
            self._let_go(holder, previous)
        return worker.snapshot(idle_unload_s or 0.0)

    async def unload(self, holder: str) -> UnloadResult | None:
        self._reasons.pop(holder, None)
        key = self._held.pop(holder, None)
        return None if key is None else self._let_go(holder, key)

    def _let_go(self, holder: str, key: WorkerKey) -> UnloadResult | None:
        worker = self._workers.get(key)
        if worker is None:
            return None
        worker.holders.discard(holder)
        if worker.holders:
            return UnloadResult(key, worker.pid, False, False, None, len(worker.holders))
        del self._workers[key]
        return UnloadResult(key, worker.pid, True, True, 0, 0, 100.0)

    async def unload_worker(self, key: WorkerKey, reason: str) -> UnloadResult | None:
        worker = self._workers.pop(key, None)
        if worker is None:
            return None
        worker.slots.fail_all(WorkerDied(f"the worker for {key.model} was stopped: {reason}"))
        worker.killed.set()
        for holder in worker.holders:
            if self._held.get(holder) == key:
                del self._held[holder]
                self._reasons[holder] = reason
        return UnloadResult(key, worker.pid, True, True, 0, 0, 100.0)

    async def holding(self, holder: str) -> WorkerInfo | None:
        key = self._held.get(holder)
        worker = self._workers.get(key) if key else None
        return worker.snapshot(0.0) if worker else None

    async def exit_reason(self, holder: str) -> str | None:
        return self._reasons.get(holder)

    async def workers(self) -> list[WorkerInfo]:
        return [w.snapshot(0.0) for w in self._workers.values()]

    async def worker_deaths(self) -> int:
        return self._deaths

    def _worker(self, holder: str) -> _FakeWorker:
        key = self._held.get(holder)
        worker = self._workers.get(key) if key else None
        if worker is None:
            raise ModelNotLoaded(self._reasons.get(holder) or "no model is loaded for this chat")
        return worker

    async def count_tokens(self, holder: str, messages: Sequence[ChatMessage]) -> int:
        self._worker(holder)
        return sum(len(m.content.split()) + 3 for m in messages) + 2

    async def fit(self, holder: str, messages: Sequence[ChatMessage], max_new_tokens: int) -> FittedPrompt:
        worker = self._worker(holder)
        context = worker.info.context_length or 2048
        return await fitting.fit(lambda m: self.count_tokens(holder, m), messages, context, max_new_tokens)

    async def generate(
        self, holder: str, messages: Sequence[ChatMessage], params: GenerationParams, session: str | None = None
    ) -> AsyncGenerator[Event, None]:
        worker = self._worker(holder)
        if self.saturated:
            raise Busy(f"{worker.key.model} is answering and its line is full; try again shortly", retry_after_s=1.0)
        worker.slots.max_queue = self.max_queue  # a test may change it between requests
        place = worker.slots.enter(session)
        try:
            async for queued in place.wait():
                yield queued
            self.generations += 1
            self.last_prompt = list(messages)
            async for event in self._reply(worker, messages, params):
                yield event
            place.done()
        finally:
            place.leave()
            worker.last_used = time.monotonic()

    async def _reply(
        self, worker: _FakeWorker, messages: Sequence[ChatMessage], params: GenerationParams
    ) -> AsyncGenerator[TokenChunk | Finished, None]:
        started = time.perf_counter()
        count = min(self.reply_words, params.max_new_tokens)
        first = 0.0
        for index in range(count):
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(worker.killed.wait(), self.token_delay_s)
            if worker.dead:
                raise worker.dead
            first = first or time.perf_counter() - started
            yield TokenChunk("fake", f"word{index}" if index == 0 else f" word{index}")
        total = time.perf_counter() - started
        prompt = sum(len(m.content.split()) + 3 for m in messages) + 2
        reason: FinishReason = "length" if count == params.max_new_tokens else "stop"
        yield Finished("fake", GenerationMetrics(prompt, count, first or total, total), reason)

    async def close(self) -> None:
        self._workers.clear()
        self._held.clear()
