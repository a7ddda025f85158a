"""Placement policy: whether a new worker fits (memory for its weights and the KV cache of
each parallel sequence, the worker cap), which idle workers make room for it (least
recently used first), and when an unused worker is unloaded.

It decides; :mod:`runtime.manager` acts. Memory questions (psutil, NVML) block, so they
run in a thread, never on the event loop.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol, TypeVar

import psutil

from runtime import gpu
from runtime.discovery import ModelInfo
from runtime.errors import InsufficientMemory, TooManyModels
from runtime.protocol import Device
from runtime.settings import RuntimeSettings

log = logging.getLogger(__name__)


class Placed(Protocol):
    """What the policy needs to know of a running worker."""

    @property
    def idle(self) -> bool: ...

    @property
    def last_used(self) -> float: ...

    @property
    def idle_unload_s(self) -> float: ...


P = TypeVar("P", bound=Placed)


def need_mb(info: ModelInfo) -> float:
    """Estimated memory of a worker for ``info`` before its KV cache: weights plus working memory."""
    return info.size_bytes / 2**20 * 1.2 + 300


def sequence_mb(info: ModelInfo, n_ctx: int) -> float:
    """KV cache of one sequence with a full context (the whole worker when the shape is unknown: 0)."""
    return (info.kv_bytes_per_token or 0) * n_ctx / 2**20


def default_parallel(on_gpu: bool) -> int:
    """Replies one worker generates at once unless a setting or the load says otherwise."""
    return 16 if on_gpu else 8


def duration(seconds: float) -> str:
    """A duration as a person writes it: "1 s", "45 s", "2 min", "1 min 30 s", "2 h", "1 h 30 min"."""
    total = max(0, round(seconds))
    if total < 60:
        return f"{total} s"
    if total < 3600:
        minutes, rest = divmod(total, 60)
        return f"{minutes} min" + (f" {rest} s" if rest else "")
    hours, rest = divmod(total // 60, 60)
    return f"{hours} h" + (f" {rest} min" if rest else "")


def idle_reason(idle_unload_s: float) -> str:
    return f"unloaded after {duration(idle_unload_s)} without use"


class Placement:
    """Admission with LRU eviction, and idle unload, by the runtime's settings."""

    def __init__(self, settings: RuntimeSettings) -> None:
        self._settings = settings

    async def admit(
        self,
        info: ModelInfo,
        device: Device,
        n_ctx: int,
        parallel: int | None,
        running: Callable[[], Sequence[P]],
        evict: Callable[[P, str], Awaitable[None]],
    ) -> int:
        """Make room for a new worker for ``info`` serving ``parallel`` sequences of ``n_ctx``
        tokens (None: the device's default); return how many sequences it gets, or refuse
        with the numbers.

        The KV cache of every sequence is part of the estimate. Idle workers are evicted
        (least recently used first) until all the sequences fit; if some still do not, the
        worker gets as many as fit, at least one. ``running`` lists the workers now;
        ``evict`` unloads one and returns once its process is gone, so the memory it held
        is free when this checks again.
        """
        settings = self._settings
        on_gpu = device != "cpu" and await asyncio.to_thread(gpu.device_count) > 0
        wanted = parallel or default_parallel(on_gpu)
        base, per_sequence = need_mb(info), sequence_mb(info, n_ctx)
        while True:
            workers = running()
            free = await asyncio.to_thread(self._free_mb, device) - settings.memory_headroom_mb
            fitting = wanted if per_sequence <= 0 else min(wanted, int((free - base) // per_sequence))
            room = len(workers) < settings.max_workers
            if fitting == wanted and room:
                return wanted
            idle = sorted((w for w in workers if w.idle), key=lambda w: w.last_used)
            if idle and settings.evict_idle:
                await evict(idle[0], f"unloaded to make room for {info.name}")
                continue
            if not room:
                raise TooManyModels(
                    f"{len(workers)} models are loaded, the most allowed (LLMCHAT_MAX_WORKERS), "
                    "and none is idle; unload one first"
                )
            if fitting >= 1:
                log.warning(
                    "%s: memory for %d of %d parallel sequences of %d tokens (%.0f MB each); serving %d",
                    info.name, fitting, wanted, n_ctx, per_sequence, fitting,
                )
                return fitting
            raise InsufficientMemory(
                f"{info.name} needs about {base + per_sequence:,.0f} MB ({base:,.0f} MB for the model, "
                f"{per_sequence:,.0f} MB for one {n_ctx}-token context); {free + settings.memory_headroom_mb:,.0f} MB "
                f"is free and {settings.memory_headroom_mb} MB is kept in reserve"
            )

    def _free_mb(self, device: Device) -> float:
        if device == "gpu" and gpu.device_count() > 0:
            free = gpu.free_mb(gpu.first_device(self._settings.cuda_visible_devices))
            if free is not None:
                return free
        return float(psutil.virtual_memory().available) / 2**20

    @staticmethod
    def expired(workers: Sequence[P], now: float | None = None) -> list[P]:
        """Workers unused for longer than their idle-unload time (0 = never)."""
        now = time.monotonic() if now is None else now
        return [w for w in workers if w.idle_unload_s > 0 and w.idle and now - w.last_used >= w.idle_unload_s]

    @staticmethod
    def next_check_s(workers: Sequence[Placed]) -> float:
        """How long the idle check may sleep: a quarter of the shortest limit, within 0.2 to 30 s."""
        limits = [w.idle_unload_s for w in workers if w.idle_unload_s > 0]
        return min(30.0, max(0.2, min(limits, default=120.0) / 4))
