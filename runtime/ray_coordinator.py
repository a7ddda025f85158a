"""The cluster's books and decisions, in one Ray actor: who holds which worker, where a new
worker goes, which idle one is unloaded, and why a holder's worker went away.

One detached actor named ``llmchat-coordinator`` serves every API replica; it is pinned to the
head node, so it lives as long as the cluster (Ray's own control store is on the head too).
Being one actor it is the single writer of the books, and what only one replica may do (idle
unload, LRU eviction, ending a dead replica's requests) it does exactly once.

- **Admission and placement** per node: each node's :class:`runtime.ray_probe.NodeProbe` says
  what is free, and whether the model's files there are the API's (else a refusal); the worker goes to a node where it fits (GPU nodes first for ``auto``/``gpu``;
  then nodes with the custom resource ``LLMCHAT_RAY_PREFER_RESOURCE``; then the most room), pinned there with node affinity, after evicting least recently used
  idle workers if none has room. A load that fits nowhere is refused with the numbers per node.
- **Death**: each worker's ``until_dead`` call fails when its actor dies (crash, ``kill -9``, its
  node gone): its holders learn why, as with a local worker.
- **Unload** kills the actor, then proves it: Ray's state API says DEAD, the node's probe no
  longer sees the pid, and on a GPU NVML no longer charges it any memory.
- **Replicas** send a heartbeat each second; one silent for :data:`REPLICA_TIMEOUT_S` is taken
  for dead and its requests are aborted in every worker (Ray would let them run to their end).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import re
import time
from dataclasses import dataclass, field
from typing import Any

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from runtime.digest import FileDigest
from runtime.discovery import ModelInfo
from runtime.errors import (
    DeviceUnavailable,
    InsufficientMemory,
    ModelLoadFailed,
    ModelRuntimeError,
    TooManyModels,
)
from runtime.interface import UnloadResult, WorkerInfo, WorkerKey
from runtime.placement import Placement, default_parallel, idle_reason, need_mb, sequence_mb
from runtime.protocol import Ready, WorkerSpec
from runtime.ray_probe import NodeMemory, NodeProbe
from runtime.ray_worker import ModelWorker, Refused, WorkerStats
from runtime.settings import RuntimeSettings

log = logging.getLogger(__name__)

NAMESPACE = "llmchat"
COORDINATOR = "llmchat-coordinator"
REPLICA_TIMEOUT_S = 3.0
HEAD_RESOURCE = "node:__internal_head__"


def actor_name(key: WorkerKey) -> str:
    """The start of a worker's actor name: ``llmchat-worker/<model>/<device>/<backend>``; each
    start adds ``#<n>``, so a new worker never meets the name of one on a node that is going away
    (Ray releases a name only once it has declared the actor dead)."""
    return "llmchat-worker/" + re.sub(r"[^\w.-]+", "_", f"{key.model}/{key.requested_device}/{key.backend}")


def label(node: NodeMemory) -> str:
    """A node as people find it: its address and the start of its Ray node id."""
    return f"{node.address} ({node.node_id[:8]})"


def probe_name(node_id: str) -> str:
    return f"llmchat-probe/{node_id}"


@dataclass(frozen=True, slots=True)
class Route:
    """Where a holder's requests go."""

    actor: str
    actor_id: str
    context_length: int


@dataclass(eq=False)
class _Worker:
    key: WorkerKey
    name: str
    handle: Any
    node_id: str
    address: str
    need_mb: float
    on_gpu: bool
    idle_unload_s: float
    ready: Ready | None = None
    actor_id: str = ""
    holders: set[str] = field(default_factory=set)
    closing: bool = False
    ending: asyncio.Future[UnloadResult] | None = None
    gone: asyncio.Event = field(default_factory=asyncio.Event)
    stats: WorkerStats | None = None
    stats_at: float = 0.0

    @property
    def idle(self) -> bool:  # runtime.placement.Placed
        return not self.closing and (self.stats is None or (self.stats.running == 0 and self.stats.queued == 0))

    @property
    def last_used(self) -> float:
        return time.monotonic() - (self.stats.idle_s if self.stats else 0.0)

    def info(self) -> WorkerInfo:
        assert self.ready is not None
        stats = self.stats
        return WorkerInfo(
            key=self.key, pid=self.ready.pid, running_on=self.ready.device, context_length=self.ready.context_length,
            load_time_s=self.ready.load_time_s, has_chat_template=self.ready.has_chat_template,
            holders=tuple(sorted(self.holders)), busy=bool(stats and stats.busy),
            queued=stats.queued if stats else 0, running=stats.running if stats else 0,
            parallel=stats.parallel if stats else self.ready.parallel, idle_s=stats.idle_s if stats else 0.0,
            idle_unload_s=self.idle_unload_s, cuda_visible_devices=self.ready.cuda_visible_devices,
            node=self.address, memory_mb=stats.memory_mb if stats else None,
        )


class Coordinator:
    """The cluster's one coordinator (a Ray actor class; see the module docstring)."""

    def __init__(self) -> None:
        self._workers: dict[WorkerKey, _Worker] = {}
        self._held: dict[str, WorkerKey] = {}
        self._starts: dict[WorkerKey, asyncio.Future[_Worker]] = {}
        self._admitting = asyncio.Lock()
        self._exit_reasons: dict[str, str] = {}
        self._deaths = 0
        self._replicas: dict[str, float] = {}
        self._probes: dict[str, Any] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._started = False
        self._settings = RuntimeSettings()  # the last loading replica's, for idle unloads
        self._new_worker = asyncio.Event()
        self._serial = itertools.count(1)

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _ensure_started(self) -> None:
        if not self._started:
            self._started = True
            self._spawn(self._watch_replicas())
            self._spawn(self._reap_idle())

    # Replicas

    def heartbeat(self, replica: str) -> None:
        self._ensure_started()
        self._replicas[replica] = time.monotonic()

    def forget_replica(self, replica: str) -> None:
        """A replica that stops cleanly: nothing of it is left to abort."""
        self._replicas.pop(replica, None)

    async def _watch_replicas(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            now = time.monotonic()
            dead = [r for r, seen in self._replicas.items() if now - seen > REPLICA_TIMEOUT_S]
            if not dead:
                continue
            for replica in dead:
                del self._replicas[replica]
            log.warning("API replicas %s stopped answering: ending their requests", dead)
            for worker in list(self._workers.values()):
                with contextlib.suppress(Exception):
                    await worker.handle.abort_owner.remote(dead)

    # Loading

    async def load(
        self, holder: str, key: WorkerKey, info: ModelInfo, expect: FileDigest, idle_unload_s: float,
        parallel: int | None, settings: RuntimeSettings,
    ) -> WorkerInfo | Refused:
        self._ensure_started()
        self._settings = settings
        try:
            worker = await self._worker_for(key, info, expect, idle_unload_s, parallel, settings)
        except ModelRuntimeError as exc:
            return Refused.of(exc)
        worker.holders.add(holder)
        previous = self._held.get(holder)
        self._held[holder] = key
        self._exit_reasons.pop(holder, None)
        if previous is not None and previous != key:
            await self._release(holder, previous, settings)
        await self._refresh(worker)
        return worker.info()

    async def _worker_for(
        self, key: WorkerKey, info: ModelInfo, expect: FileDigest, idle_unload_s: float, parallel: int | None,
        settings: RuntimeSettings,
    ) -> _Worker:
        while True:
            running = self._workers.get(key)
            if running is not None and not running.closing:
                return running
            if running is not None:
                await running.gone.wait()
                continue
            start = self._starts.get(key)
            if start is None:
                start = self._starts[key] = asyncio.ensure_future(
                    self._start(key, info, expect, idle_unload_s, parallel, settings))
                start.add_done_callback(lambda done: self._started_one(key, done))
            return await asyncio.shield(start)

    def _started_one(self, key: WorkerKey, start: asyncio.Future[_Worker]) -> None:
        self._starts.pop(key, None)
        _retrieved(start)

    async def _start(
        self, key: WorkerKey, info: ModelInfo, expect: FileDigest, idle_unload_s: float, parallel: int | None,
        settings: RuntimeSettings,
    ) -> _Worker:
        n_ctx = min(settings.n_ctx, info.context_length) if info.context_length else settings.n_ctx
        async with self._admitting:
            memory, on_gpu, fitting = await self._place(info, key.requested_device, n_ctx, parallel, settings)
            mismatch = await self._probe(memory.node_id, memory.address).check_files.remote(
                info.name, str(info.path), expect)
            if mismatch is not None:
                raise mismatch
            spec = WorkerSpec(str(info.path), key.backend, key.requested_device, n_ctx, settings.n_threads,
                              None, settings.gpu_memory_fraction, fitting)
            name = f"{actor_name(key)}#{next(self._serial)}"
            handle: Any = ray.remote(ModelWorker).options(
                name=name, namespace=NAMESPACE, lifetime="detached",
                num_cpus=0, num_gpus=1 if on_gpu else 0, max_restarts=0, max_concurrency=1000,
                scheduling_strategy=NodeAffinitySchedulingStrategy(memory.node_id, soft=False),
            ).remote()
            worker = _Worker(key, name, handle, memory.node_id, memory.address,
                             need_mb(info) + sequence_mb(info, n_ctx) * fitting, on_gpu, idle_unload_s)
            self._workers[key] = worker  # counted by the next admission while it loads
            try:
                ready = await asyncio.wait_for(
                    handle.start.remote(spec, info.name, settings.max_queue), settings.load_timeout_s)
            except BaseException as exc:
                del self._workers[key]
                worker.gone.set()
                with contextlib.suppress(Exception):
                    ray.kill(handle, no_restart=True)
                if isinstance(exc, TimeoutError):
                    raise ModelLoadFailed(
                        f"loading {info.name} took longer than {settings.load_timeout_s:.0f} s; the worker was stopped"
                    ) from None
                if isinstance(exc, ray.exceptions.RayActorError):
                    raise ModelLoadFailed(f"loading {info.name} failed: its worker died ({_first_line(exc)})") from None
                raise
            if isinstance(ready, Refused):
                del self._workers[key]
                worker.gone.set()
                with contextlib.suppress(Exception):
                    ray.kill(handle, no_restart=True)
                raise ready.error()
            worker.ready = ready
            worker.actor_id = handle._actor_id.hex()
        self._spawn(self._watch(worker))
        self._new_worker.set()
        log.info("loaded %s on %s (%s) with %s in %.2f s (pid %s), %d replies at once", key.model, ready.device,
                 worker.address, key.backend, ready.load_time_s, ready.pid, ready.parallel)
        return worker

    async def _place(
        self, info: ModelInfo, device: str, n_ctx: int, parallel: int | None, settings: RuntimeSettings
    ) -> tuple[NodeMemory, bool, int]:
        """The node for a new worker, whether it runs on a GPU there, and how many replies it serves."""
        base, per_sequence = need_mb(info), sequence_mb(info, n_ctx)
        while True:
            nodes, preferred = await self._memory(settings.ray_prefer_resource)
            gpu_nodes = [n for n in nodes if n.gpu_free_mb] if device != "cpu" else []
            if device == "gpu" and not gpu_nodes:
                raise DeviceUnavailable("gpu was asked for, and no node of the cluster has a GPU")
            on_gpu = bool(gpu_nodes)
            wanted = parallel or default_parallel(on_gpu)
            candidates = []
            for node in gpu_nodes or nodes:
                others = [w for w in self._workers.values() if w.node_id == node.node_id and not w.closing]
                free = (max(node.gpu_free_mb) if on_gpu else node.ram_free_mb) - settings.memory_headroom_mb
                if any(w.ready is None for w in others):  # still loading: not yet in the node's numbers
                    free -= sum(w.need_mb for w in others if w.ready is None)
                fitting = wanted if per_sequence <= 0 else min(wanted, int((free - base) // per_sequence))
                candidates.append((node, free, fitting, len(others) < settings.max_workers))
            full = [c for c in candidates if c[2] == wanted and c[3]]
            if full:  # a preferred node if one has room, then the one with the most
                node, _, fitting, _ = max(full, key=lambda c: (c[0].node_id in preferred, c[1]))
                return node, on_gpu, fitting
            await asyncio.gather(*(self._refresh(w, max_age_s=0.0) for w in self._workers.values()))
            idle = sorted((w for w in self._workers.values() if w.ready and w.idle), key=lambda w: w.last_used)
            if idle and settings.evict_idle:
                await self._stop(idle[0], f"unloaded to make room for {info.name}", settings)
                continue
            partial = [c for c in candidates if c[2] >= 1 and c[3]]
            if partial:
                node, _, fitting, _ = max(partial, key=lambda c: c[2])
                log.warning("%s: memory for %d of %d parallel sequences on %s; serving %d",
                            info.name, fitting, wanted, node.address, fitting)
                return node, on_gpu, fitting
            if not any(c[3] for c in candidates):
                raise TooManyModels(
                    f"every node holds {settings.max_workers} models, the most allowed (LLMCHAT_MAX_WORKERS), "
                    "and none is idle; unload one first")
            where = "; ".join(
                f"node {label(c[0])}: {c[1] + settings.memory_headroom_mb:,.0f} MB{' of GPU memory' if on_gpu else ''} free"
                for c in candidates)
            raise InsufficientMemory(
                f"{info.name} needs about {base + per_sequence:,.0f} MB ({base:,.0f} MB for the model, "
                f"{per_sequence:,.0f} MB for one {n_ctx}-token context) and fits on no node: {where}; "
                f"{settings.memory_headroom_mb:,} MB is kept in reserve on each")

    async def _memory(self, prefer: str | None) -> tuple[list[NodeMemory], set[str]]:
        """Each live node's free memory, from its probe (one is started on a node seen first),
        and the nodes that have the custom resource ``prefer``."""
        nodes = [n for n in await asyncio.to_thread(ray.nodes) if n.get("Alive")]
        preferred = {n["NodeID"] for n in nodes if prefer and prefer in n.get("Resources", {})}
        answers = []
        for node in nodes:
            probe = self._probe(node["NodeID"], node.get("NodeManagerAddress", "?"))
            answers.append(probe.memory.remote())
        found = []
        for answer in answers:
            with contextlib.suppress(Exception):
                found.append(await asyncio.wait_for(answer, 30))
        return found, preferred

    def _probe(self, node_id: str, address: str) -> Any:
        probe = self._probes.get(node_id)
        if probe is None:
            probe = self._probes[node_id] = ray.remote(NodeProbe).options(
                name=probe_name(node_id), namespace=NAMESPACE, lifetime="detached", get_if_exists=True, num_cpus=0,
                max_restarts=0, scheduling_strategy=NodeAffinitySchedulingStrategy(node_id, soft=False),
            ).remote(node_id, address)
        return probe

    # Deaths

    async def _watch(self, worker: _Worker) -> None:
        try:
            await worker.handle.until_dead.remote()
        except ray.exceptions.RayActorError as exc:
            cause = exc
        else:
            return
        if worker.closing or self._workers.get(worker.key) is not worker:
            return  # an unload records its own outcome
        assert worker.ready is not None
        if not await self._node_answers(worker):
            reason = (f"the worker for {worker.key.model} was lost with its node {worker.address}, which left "
                      "the cluster; load the model again to start it on another node")
        else:
            reason = f"the worker for {worker.key.model} (pid {worker.ready.pid} on {worker.address}) died"
        log.error("%s: %s", reason, _first_line(cause))
        self._deaths += 1
        del self._workers[worker.key]
        self._probes.pop(worker.node_id, None)  # made again on next use, if the node is still there
        worker.gone.set()
        for holder in worker.holders:
            if self._held.get(holder) == worker.key:
                del self._held[holder]
                self._exit_reasons[holder] = reason

    async def _node_answers(self, worker: _Worker) -> bool:
        """Whether the worker's node is still in the cluster: Ray still counts it, and its probe
        answers (a machine that goes away takes its processes with it before Ray's health checks
        notice, so the probe tells sooner)."""
        alive = {n["NodeID"] for n in await asyncio.to_thread(ray.nodes) if n.get("Alive")}
        if worker.node_id not in alive:
            return False
        try:
            await asyncio.wait_for(self._probe(worker.node_id, worker.address).pid_running.remote(0), 3)
        except Exception:  # noqa: BLE001 - dead or unreachable: the node is gone, or going
            return False
        return True

    # Unloading

    async def unload(self, holder: str, settings: RuntimeSettings) -> UnloadResult | None:
        self._exit_reasons.pop(holder, None)
        key = self._held.get(holder)
        worker = self._workers.get(key) if key else None
        if worker is None:
            self._held.pop(holder, None)
            return None
        if worker.holders - {holder} or worker.closing:
            worker.holders.discard(holder)
            del self._held[holder]
            return UnloadResult(worker.key, worker.ready.pid if worker.ready else -1, False, False, None,
                                len(worker.holders))
        return await self._stop(worker, None, settings)

    async def unload_worker(self, key: WorkerKey, reason: str, settings: RuntimeSettings) -> UnloadResult | None:
        worker = self._workers.get(key)
        if worker is None or worker.ready is None:
            return None
        log.info("%s: %s", key.model, reason)
        return await self._stop(worker, reason, settings)

    async def _release(self, holder: str, key: WorkerKey, settings: RuntimeSettings) -> None:
        worker = self._workers.get(key)
        if worker is None:
            return
        worker.holders.discard(holder)
        if not worker.holders and not worker.closing:
            await self._stop(worker, None, settings)

    async def _stop(self, worker: _Worker, reason: str | None, settings: RuntimeSettings) -> UnloadResult:
        if worker.ending is None:
            worker.closing = True
            worker.ending = asyncio.ensure_future(self._end(worker, reason, settings))
            worker.ending.add_done_callback(_retrieved)
        return await asyncio.shield(worker.ending)

    async def _end(self, worker: _Worker, reason: str | None, settings: RuntimeSettings) -> UnloadResult:
        """Kill the actor, then prove it: DEAD in Ray's state API, its pid gone on its node, its VRAM back."""
        assert worker.ready is not None
        pid, on_gpu = worker.ready.pid, worker.ready.device == "cuda"
        probe = self._probe(worker.node_id, worker.address)
        dead = gone = False
        before = None
        try:
            with contextlib.suppress(Exception):
                before = await asyncio.wait_for(probe.used_mb.remote(pid, on_gpu), 10)
            with contextlib.suppress(Exception):
                ray.kill(worker.handle, no_restart=True)
            deadline = time.monotonic() + max(5.0, settings.shutdown_timeout_s)
            while time.monotonic() < deadline and not (dead and gone):
                dead = dead or await asyncio.to_thread(_dead_in_state_api, worker.actor_id)
                if not gone:
                    with contextlib.suppress(Exception):
                        gone = not await asyncio.wait_for(probe.pid_running.remote(pid), 10)
                if not (dead and gone):
                    await asyncio.sleep(0.05)
        finally:
            if self._workers.get(worker.key) is worker:
                del self._workers[worker.key]
            for holder in worker.holders:
                if self._held.get(holder) == worker.key:
                    del self._held[holder]
                    if reason:
                        self._exit_reasons[holder] = reason
            worker.gone.set()
        freed = before
        if on_gpu and before:
            freed = await self._vram_returned(probe, pid, before)
        log.info("unloaded %s on %s (pid %s): dead in Ray %s, process gone %s, %.0f MB freed",
                 worker.key.model, worker.address, pid, dead, gone, freed or 0)
        return UnloadResult(worker.key, pid, True, dead and gone, None, 0, freed)

    async def _vram_returned(self, probe: Any, pid: int, before: float, within_s: float = 10.0) -> float:
        deadline = time.monotonic() + within_s
        used = before
        while time.monotonic() < deadline:
            with contextlib.suppress(Exception):
                used = await probe.used_mb.remote(pid, True) or 0.0
            if not used:
                return before
            await asyncio.sleep(0.2)
        return before - used

    # Idle unload

    async def _reap_idle(self) -> None:
        while True:
            workers = [w for w in self._workers.values() if w.ready and not w.closing]
            with contextlib.suppress(TimeoutError):  # a new worker may need an earlier check
                await asyncio.wait_for(self._new_worker.wait(), Placement.next_check_s(workers) if workers else 1.0)
            self._new_worker.clear()
            workers = [w for w in self._workers.values() if w.ready and not w.closing]
            for worker in workers:
                if worker.idle_unload_s <= 0 or worker.closing:
                    continue
                await self._refresh(worker, max_age_s=0.0)
                if worker.stats is not None and worker.idle and worker.stats.idle_s >= worker.idle_unload_s:
                    log.info("%s: %s", worker.key.model, idle_reason(worker.idle_unload_s))
                    await self._stop(worker, idle_reason(worker.idle_unload_s), self._settings)

    # State

    async def _refresh(self, worker: _Worker, max_age_s: float = 0.5) -> None:
        if worker.ready is None or worker.closing or time.monotonic() - worker.stats_at < max_age_s:
            return
        with contextlib.suppress(Exception):
            worker.stats = await asyncio.wait_for(worker.handle.stats.remote(), 5)
            worker.stats_at = time.monotonic()

    async def route(self, holder: str) -> Route | Refused:
        """Where the holder's requests go, or why they cannot."""
        from runtime.errors import ModelNotLoaded

        key = self._held.get(holder)
        worker = self._workers.get(key) if key else None
        if worker is None or worker.ready is None:
            return Refused.of(ModelNotLoaded(self._exit_reasons.get(holder) or "no model is loaded for this chat"))
        if worker.closing:
            return Refused.of(ModelNotLoaded(f"{worker.key.model} is being unloaded"))
        return Route(worker.name, worker.actor_id, worker.ready.context_length)

    async def holding(self, holder: str) -> WorkerInfo | None:
        key = self._held.get(holder)
        worker = self._workers.get(key) if key else None
        if worker is None or worker.ready is None:
            return None
        await self._refresh(worker)
        return worker.info()

    def exit_reason(self, holder: str) -> str | None:
        return self._exit_reasons.get(holder)

    async def workers(self) -> list[WorkerInfo]:
        ready = [w for w in self._workers.values() if w.ready]
        await asyncio.gather(*(self._refresh(w) for w in ready))
        return [w.info() for w in ready if w.ready]

    def worker_deaths(self) -> int:
        return self._deaths


def _dead_in_state_api(actor_id: str) -> bool:
    from ray.util.state import get_actor

    try:
        state = get_actor(actor_id, timeout=5)
    except Exception:  # noqa: BLE001 - the dashboard may be slow to answer: ask again
        return False
    return state is not None and state.state == "DEAD"


def _first_line(error: BaseException) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__


def _retrieved(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()


__all__ = ["COORDINATOR", "NAMESPACE", "Coordinator", "Route", "actor_name"]
