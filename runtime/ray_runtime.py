"""The Ray runtime: model workers as actors placed across a Ray cluster's nodes, shared by every
API replica (``LLMCHAT_RUNTIME=ray``, ``LLMCHAT_RAY_ADDRESS``).

An implementation of :class:`runtime.interface.ModelRuntime` for one API replica. The books
and decisions are the cluster coordinator's (:mod:`runtime.ray_coordinator`); requests go
straight to the worker actor (:mod:`runtime.ray_worker`) and tokens come back through Ray's
streaming generators. Which backend runs a model, and the digest its files must match on the
node that loads it, are chosen here, from this replica's models folder.

:meth:`RayRuntime.close` ends this replica's part only: workers belong to the cluster and
stay for the other replicas, until unloaded or idle.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncGenerator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, cast

from runtime import discovery
from runtime.builds import BuildState, read_builds
from runtime.choice import choose_backend
from runtime.digest import digest
from runtime.discovery import ModelInfo
from runtime.errors import ModelRuntimeError, WorkerDied
from runtime.interface import Event, FittedPrompt, UnloadResult, WorkerInfo, WorkerKey
from runtime.protocol import ChatMessage, Device, GenerationParams
from runtime.settings import RuntimeSettings

log = logging.getLogger(__name__)

HEARTBEAT_S = 1.0


class RayRuntime:
    """:class:`runtime.interface.ModelRuntime` over a Ray cluster (see the module docstring).

    Connecting to the cluster blocks for a moment: use :meth:`connect` (a coroutine) to make one.
    """

    def __init__(self, settings: RuntimeSettings, coordinator: Any) -> None:
        self.settings = settings
        # What the coordinator needs of the settings, and nothing else (no API secrets).
        self._shared = RuntimeSettings.model_construct(**{k: getattr(settings, k) for k in RuntimeSettings.model_fields})
        self.replica = f"replica-{uuid.uuid4().hex[:12]}"
        self._coordinator = coordinator
        self._handles: dict[str, Any] = {}
        self._heartbeat = asyncio.get_running_loop().create_task(self._beat())

    @classmethod
    async def connect(cls, settings: RuntimeSettings | None = None) -> RayRuntime:
        """Join the cluster at ``settings.ray_address`` and find (or create) its coordinator."""
        settings = settings or RuntimeSettings()
        coordinator = await asyncio.to_thread(_join, settings.ray_address)
        runtime = cls(settings, coordinator)
        await coordinator.heartbeat.remote(runtime.replica)
        return runtime

    async def _beat(self) -> None:
        while True:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._coordinator.heartbeat.remote(self.replica), 10)
            await asyncio.sleep(HEARTBEAT_S)

    # Models (this replica's models folder; every node must hold the same)

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
        expect = await asyncio.to_thread(digest, info.path)
        relative = replace(info, path=_relative(info.path, self.settings.models_dir))
        idle = self.settings.idle_unload_s if idle_unload_s is None else idle_unload_s
        answer = await self._coordinator.load.remote(
            holder, WorkerKey(info.name, device, chosen), relative, expect, idle,
            parallel or self.settings.parallel, self._shared,
        )
        return cast(WorkerInfo, _answer(answer))

    async def unload(self, holder: str) -> UnloadResult | None:
        return cast(UnloadResult | None, _answer(await self._coordinator.unload.remote(holder, self._shared)))

    async def unload_worker(self, key: WorkerKey, reason: str) -> UnloadResult | None:
        return cast(UnloadResult | None,
                    _answer(await self._coordinator.unload_worker.remote(key, reason, self._shared)))

    # State

    async def holding(self, holder: str) -> WorkerInfo | None:
        return cast(WorkerInfo | None, _answer(await self._coordinator.holding.remote(holder)))

    async def exit_reason(self, holder: str) -> str | None:
        return cast(str | None, _answer(await self._coordinator.exit_reason.remote(holder)))

    async def workers(self) -> list[WorkerInfo]:
        return cast(list[WorkerInfo], _answer(await self._coordinator.workers.remote()))

    async def worker_deaths(self) -> int:
        return int(_answer(await self._coordinator.worker_deaths.remote()))

    # Requests

    async def _route(self, holder: str) -> tuple[Any, int]:
        from runtime.ray_worker import Refused

        route = await self._coordinator.route.remote(holder)
        if isinstance(route, Refused):
            raise route.error()
        handle = self._handles.get(route.actor_id)
        if handle is None:
            handle = await asyncio.to_thread(_actor, route.actor)
            self._handles = {route.actor_id: handle, **{k: v for k, v in self._handles.items() if k != route.actor_id}}
        return handle, route.context_length

    async def count_tokens(self, holder: str, messages: Sequence[ChatMessage]) -> int:
        handle, _ = await self._route(holder)
        return int(_answer(await self._call(handle.count_tokens.remote(list(messages)))))

    async def fit(self, holder: str, messages: Sequence[ChatMessage], max_new_tokens: int) -> FittedPrompt:
        handle, context_length = await self._route(holder)
        return cast(FittedPrompt, _answer(await self._call(handle.fit.remote(list(messages), max_new_tokens,
                                                                              context_length))))

    async def _call(self, ref: Any) -> Any:
        import ray

        try:
            return await ref
        except ray.exceptions.RayActorError as exc:
            raise WorkerDied(f"the model's worker is no longer running ({_first_line(exc)})") from None

    async def generate(
        self, holder: str, messages: Sequence[ChatMessage], params: GenerationParams, session: str | None = None
    ) -> AsyncGenerator[Event, None]:
        import ray

        from runtime.ray_worker import Refused

        handle, _ = await self._route(holder)
        stream = handle.generate.remote(list(messages), params, session, self.replica)
        finished = False
        try:
            async for ref in stream:
                event = await ref
                if isinstance(event, Refused):
                    raise event.error()
                yield event
            finished = True
        except ray.exceptions.RayActorError as exc:
            raise WorkerDied(f"the worker for this chat's model died ({_first_line(exc)})") from None
        except ray.exceptions.RayTaskError as exc:
            raise WorkerDied(f"the worker failed this request ({_first_line(exc)})") from None
        finally:
            if not finished:
                with contextlib.suppress(Exception):
                    ray.cancel(stream)  # the actor's clean-up aborts the reply in the backend

    async def close(self) -> None:
        """This replica leaves; the cluster's workers stay for the others."""
        self._heartbeat.cancel()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._coordinator.forget_replica.remote(self.replica), 5)


def _answer(value: Any) -> Any:
    from runtime.ray_worker import Refused

    if isinstance(value, Refused):
        raise value.error()
    return value


def _relative(path: Path, models_dir: Path) -> Path:
    """The model's path inside the models folder: each node resolves it against its own."""
    for base in (models_dir, models_dir.resolve()):
        with contextlib.suppress(ValueError):
            return path.relative_to(base)
    return path.resolve().relative_to(models_dir.resolve())


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0][:300] if text else type(error).__name__


def _join(address: str) -> Any:
    """Connect this process to the cluster (once) and return the coordinator's handle (blocking)."""
    import ray

    from runtime.ray_coordinator import COORDINATOR, HEAD_RESOURCE, NAMESPACE, Coordinator

    if not ray.is_initialized():
        ray.init(address=address, namespace=NAMESPACE, logging_level=logging.WARNING, log_to_driver=False)
    try:
        return ray.get_actor(COORDINATOR, namespace=NAMESPACE)
    except ValueError:
        pass
    return ray.remote(Coordinator).options(
        name=COORDINATOR, namespace=NAMESPACE, lifetime="detached", get_if_exists=True, num_cpus=0,
        max_concurrency=1000, resources={HEAD_RESOURCE: 0.001},
    ).remote()


def _actor(name: str) -> Any:
    import ray

    from runtime.ray_coordinator import NAMESPACE

    try:
        return ray.get_actor(name, namespace=NAMESPACE)
    except ValueError:
        raise WorkerDied(f"the worker {name} is no longer in the cluster") from None


__all__ = ["ModelRuntimeError", "RayRuntime"]
