"""The shared machine's recent past, for the Machine page (``GET /machine``).

A :class:`Sampler`, started and stopped with the app, records every
``LLMCHAT_MACHINE_SAMPLE_S`` seconds what each loaded worker costs and does: its memory
(resident RAM of its process, or the GPU memory NVML charges to it when it runs on CUDA),
its running and queued requests, and each model's tokens per second over the interval
(from :attr:`api.metrics.Metrics.streamed`, which counts every token that reaches a client
of ``/chat`` or ``/v1``). It keeps the last 15 minutes.

psutil and NVML block, so memory is measured in a thread, never on the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections import Counter, deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

import psutil
from quart import current_app

from api.metrics import Metrics
from runtime import gpu
from runtime.interface import ModelRuntime, WorkerInfo, WorkerKey

log = logging.getLogger(__name__)

WINDOW_S = 15 * 60.0
EXTENSION = "llmchat.machine"  # the running app's sampler, in ``app.extensions``
MemoryKind = Literal["RAM", "VRAM"]


def resident_mb(pid: int) -> float | None:
    """Resident memory (RAM) of ``pid`` in MB, None if it is gone (blocking: call off the loop)."""
    try:
        return round(float(psutil.Process(pid).memory_info().rss) / 2**20, 1)
    except (psutil.Error, ValueError):
        return None


def memory_kind(worker: WorkerInfo) -> MemoryKind:
    """What a worker's memory is counted in: GPU memory when it runs on CUDA, else RAM."""
    return "VRAM" if worker.running_on == "cuda" else "RAM"


def worker_memory_mb(worker: WorkerInfo) -> float | None:
    """The memory a worker holds, in MB, as :func:`memory_kind` says (blocking: call off the loop).
    A worker on another machine (Ray runtime) comes with its own measurement."""
    if worker.memory_mb is not None or worker.node is not None:
        return None if worker.memory_mb is None else round(worker.memory_mb, 1)
    if worker.running_on == "cuda":
        used = gpu.used_by_mb(worker.pid)
        return None if used is None else round(used, 1)
    return resident_mb(worker.pid)


@dataclass(frozen=True, slots=True)
class WorkerSample:
    """One worker at one sample."""

    key: WorkerKey
    pid: int
    memory_mb: float | None
    memory_kind: MemoryKind
    running: int
    queued: int


@dataclass(frozen=True, slots=True)
class Sample:
    """The machine at one moment: ``at`` is Unix time; ``tokens_per_s`` is per model name,
    over the interval since the sample before."""

    at: float
    tokens_per_s: dict[str, float]
    workers: tuple[WorkerSample, ...]

    @property
    def queued(self) -> int:
        return sum(w.queued for w in self.workers)

    @property
    def running(self) -> int:
        return sum(w.running for w in self.workers)


class Sampler:
    """Samples the runtime every ``interval_s`` seconds into a bounded window of ``window_s``."""

    def __init__(self, runtime: ModelRuntime, metrics: Metrics, interval_s: float,
                 window_s: float = WINDOW_S) -> None:
        self.runtime = runtime
        self.metrics = metrics
        self.interval_s = interval_s
        self.window_s = window_s
        self.samples: deque[Sample] = deque(maxlen=math.ceil(window_s / interval_s) + 1)
        self._counted: Counter[str] = Counter(metrics.streamed)
        self._counted_at = time.monotonic()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> Sampler:
        """Sample from now on, in a task of the running loop."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="machine sampler")
        return self

    async def stop(self) -> None:
        """Stop sampling (the samples taken stay)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            began = time.monotonic()
            try:
                await self.sample()
            except Exception:
                log.exception("the machine sample failed")
            await asyncio.sleep(max(0.0, self.interval_s - (time.monotonic() - began)))

    async def sample(self) -> Sample:
        """Take one sample now and keep it."""
        workers = await self.runtime.workers()
        memory = await asyncio.to_thread(_measure, workers)
        now = time.monotonic()
        streamed = Counter(self.metrics.streamed)
        elapsed = max(now - self._counted_at, 1e-6)
        models = {w.key.model for w in workers} | {m for m in streamed if streamed[m] != self._counted[m]}
        rates = {m: round(max(0, streamed[m] - self._counted[m]) / elapsed, 2) for m in sorted(models)}
        self._counted, self._counted_at = streamed, now
        taken = Sample(
            at=time.time(),
            tokens_per_s=rates,
            workers=tuple(WorkerSample(w.key, w.pid, mb, memory_kind(w), w.running, w.queued)
                          for w, mb in zip(workers, memory, strict=True)),
        )
        self.samples.append(taken)
        return taken

    def recent(self) -> list[Sample]:
        """The samples of the last ``window_s`` seconds, oldest first."""
        since = time.time() - self.window_s
        return [s for s in self.samples if s.at >= since]

    async def memory_now(self, workers: Iterable[WorkerInfo]) -> dict[WorkerKey, float | None]:
        """Each worker's memory from the newest sample that has it; measured now (in a thread)
        for a worker loaded since."""
        found: dict[WorkerKey, float | None] = {}
        latest = self.samples[-1] if self.samples else None
        known = {(w.key, w.pid): w.memory_mb for w in latest.workers} if latest is not None else {}
        missing = []
        for worker in workers:
            if (worker.key, worker.pid) in known:
                found[worker.key] = known[worker.key, worker.pid]
            else:
                missing.append(worker)
        if missing:
            found.update(zip((w.key for w in missing), await asyncio.to_thread(_measure, missing), strict=True))
        return found


def _measure(workers: list[WorkerInfo]) -> list[float | None]:
    return [worker_memory_mb(w) for w in workers]


def sampler() -> Sampler:
    """The running app's sampler (between ``before_serving`` and ``after_serving``)."""
    found: Sampler = current_app.extensions[EXTENSION]
    return found
