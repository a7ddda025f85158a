"""The runtime interface the API and the terminal chat depend on, and the values it returns.

Callers identify themselves as *holders* (a chat id, say). A holder holds at most one
loaded model at a time; workers are shared by all holders of the same (model, requested
device, backend) and stop when the last holder lets go.

Two implementations exist: :class:`runtime.manager.Runtime` (one spawned process per
loaded model) and :class:`runtime.fake.FakeRuntime` (in-process, for tests of the layers
above). Nothing else of the runtime is imported by the API.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from runtime.builds import BuildState
from runtime.discovery import ModelInfo
from runtime.protocol import ChatMessage, Device, Finished, GenerationParams, TokenChunk

RunningOn = Literal["cpu", "cuda"]


@dataclass(frozen=True, slots=True)
class WorkerKey:
    """Identity of a worker: two loads with the same key share one process."""

    model: str
    requested_device: Device  # what the load asked for: auto, cpu or gpu
    backend: str


@dataclass(frozen=True, slots=True)
class WorkerInfo:
    """A snapshot of one running worker."""

    key: WorkerKey
    pid: int
    running_on: RunningOn  # what the worker actually runs on
    context_length: int
    load_time_s: float
    has_chat_template: bool
    holders: tuple[str, ...]
    busy: bool
    queued: int = 0  # requests waiting for a slot
    running: int = 0  # replies being generated now
    parallel: int = 1  # replies it generates at once (continuous batching)
    idle_s: float = 0.0  # seconds since it last served a request
    idle_unload_s: float = 0.0  # unloaded after this long unused (0 = never)
    cuda_visible_devices: str | None = None  # the worker's GPU pinning, if any
    node: str | None = None  # the machine it runs on (Ray runtime: the node's address); None: this one
    memory_mb: float | None = None  # measured where it runs (Ray runtime); None: measure the pid here


@dataclass(frozen=True, slots=True)
class UnloadResult:
    """What releasing a holder did. ``exited`` is checked, not assumed."""

    key: WorkerKey
    pid: int
    stopped: bool  # False when other holders still use the worker
    exited: bool
    exit_code: int | None
    remaining_holders: int
    freed_mb: float | None = None  # resident memory on CPU, VRAM (NVML) on CUDA, measured


@dataclass(frozen=True, slots=True)
class FittedPrompt:
    """The messages that fit the context window, and how many older ones were left out."""

    messages: tuple[ChatMessage, ...]
    dropped: int
    prompt_tokens: int


@dataclass(frozen=True, slots=True)
class Queued:
    """Where a request stands before its first token; the first event of every generation.

    The first ``Queued`` means the request was accepted: until it arrives nothing was, so a
    caller may refuse its client without keeping anything. ``position`` 0 means it has a
    slot and its prompt is being read (``batch`` replies now run together, itself included;
    ``waited_s`` it spent in line); ``position`` n >= 1 means it is n-th in line for a slot,
    with a rough ``estimate_s`` of the wait (None before any reply finished to learn from).
    A waiting request gets a new ``Queued`` each time it moves up, then one with position 0.
    """

    position: int
    estimate_s: float | None = None
    batch: int = 0
    waited_s: float = 0.0

    @property
    def started(self) -> bool:
        return self.position == 0


Event = Queued | TokenChunk | Finished


class ModelRuntime(Protocol):
    """Everything callers may ask of the runtime.

    Even the accessors of state (:meth:`holding`, :meth:`exit_reason`, :meth:`workers`,
    :meth:`worker_deaths`) are coroutines: an implementation may keep its books outside the
    process (in a database, say) and need I/O to answer.
    """

    async def models(self) -> list[ModelInfo]:
        """Models found in the models folder now."""
        ...

    async def builds(self) -> list[BuildState]:
        """Models being derived for the models folder (set-up's background builds), and how far along."""
        ...

    async def load(
        self,
        holder: str,
        model: str,
        device: Device = "auto",
        backend: str | None = None,
        idle_unload_s: float | None = None,
        parallel: int | None = None,
    ) -> WorkerInfo:
        """Make ``holder`` hold a worker for ``model``, starting one if none runs.

        ``idle_unload_s`` overrides the idle-unload setting for a new worker (0 = never),
        ``parallel`` how many replies a new worker generates at once.
        """
        ...

    async def unload(self, holder: str) -> UnloadResult | None:
        """Let go of what ``holder`` holds; the worker stops if nobody else holds it."""
        ...

    async def unload_worker(self, key: WorkerKey, reason: str) -> UnloadResult | None:
        """Stop a worker whoever holds it (an administrator's force-unload): its replies end
        with an error, and each holder's :meth:`exit_reason` becomes ``reason``. None if no
        such worker runs."""
        ...

    async def holding(self, holder: str) -> WorkerInfo | None:
        """The worker ``holder`` holds, if any."""
        ...

    async def exit_reason(self, holder: str) -> str | None:
        """Why the holder's worker went away without being unloaded by it (died, idle, evicted)."""
        ...

    async def workers(self) -> list[WorkerInfo]:
        """Every running worker."""
        ...

    async def worker_deaths(self) -> int:
        """How many workers died (not unloaded) since the runtime started."""
        ...

    async def count_tokens(self, holder: str, messages: Sequence[ChatMessage]) -> int:
        """Exact prompt tokens for these messages on the holder's model."""
        ...

    async def fit(
        self, holder: str, messages: Sequence[ChatMessage], max_new_tokens: int
    ) -> FittedPrompt:
        """Drop the oldest turns (never system messages) until prompt + reply fit the context."""
        ...

    def generate(
        self,
        holder: str,
        messages: Sequence[ChatMessage],
        params: GenerationParams,
        session: str | None = None,
    ) -> AsyncGenerator[Event, None]:
        """Stream :class:`Queued` events (the last with position 0), token chunks, then one ``Finished``.

        Refusals (no model, a full queue, the ``session`` already has a reply on this
        worker) are raised before the first ``Queued``; failures after it (the worker died)
        are raised where they happen. Closing the iterator aborts the request. ``session``
        (a chat id) holds at most one place per worker, and its next turn reuses the
        prompt prefix the worker still caches for it.
        """
        ...

    async def close(self) -> None:
        """Let go of the workers: the local runtime stops every one; a cluster's stay for the other replicas."""
        ...
