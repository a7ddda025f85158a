"""The runtime interface the API and the terminal chat depend on, and the values it returns.

Callers identify themselves as *holders* (a chat id, say). A holder holds at most one
loaded model at a time; workers are shared by all holders of the same (model, device,
backend) and stop when the last holder lets go.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Protocol

from runtime.discovery import ModelInfo
from runtime.protocol import ChatMessage, Device, Event, GenerationParams


@dataclass(frozen=True, slots=True)
class WorkerKey:
    """Identity of a worker: two loads with the same key share one process."""

    model: str
    device: Device
    backend: str


@dataclass(frozen=True, slots=True)
class WorkerInfo:
    """A snapshot of one running worker."""

    key: WorkerKey
    pid: int
    device: str  # what it actually runs on: "cpu" or "cuda"
    context_length: int
    load_time_s: float
    has_chat_template: bool
    holders: tuple[str, ...]
    busy: bool
    queued: int = 0  # requests waiting behind the running one
    idle_s: float = 0.0  # seconds since it last served a request
    idle_unload_s: float = 0.0  # unloaded after this long unused (0 = never)
    cuda_visible_devices: str | None = None  # the worker's GPU pinning, if any


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


class ModelRuntime(Protocol):
    """Everything callers may ask of the runtime."""

    def models(self) -> list[ModelInfo]:
        """Models found in the models folder now."""
        ...

    async def load(
        self,
        holder: str,
        model: str,
        device: Device = "auto",
        backend: str | None = None,
        idle_unload_s: float | None = None,
    ) -> WorkerInfo:
        """Make ``holder`` hold a worker for ``model``, starting one if none runs.

        ``idle_unload_s`` overrides the idle-unload setting for a new worker (0 = never).
        """
        ...

    async def unload(self, holder: str) -> UnloadResult | None:
        """Let go of what ``holder`` holds; the worker stops if nobody else holds it."""
        ...

    def holding(self, holder: str) -> WorkerInfo | None:
        """The worker ``holder`` holds, if any."""
        ...

    def exit_reason(self, holder: str) -> str | None:
        """Why the holder's worker went away without being unloaded (it died), if it did."""
        ...

    def workers(self) -> list[WorkerInfo]:
        """Every running worker."""
        ...

    def worker_deaths(self) -> int:
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
        self, holder: str, messages: Sequence[ChatMessage], params: GenerationParams
    ) -> AsyncIterator[Event]:
        """Stream token chunks, then one ``Finished``. Closing the iterator aborts the request."""
        ...

    async def close(self) -> None:
        """Stop every worker."""
        ...
