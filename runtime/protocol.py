"""The worker protocol: every message that crosses the pipe between the parent and a worker.

Only small frozen dataclasses of plain values travel (no tensors, no live exceptions), so
any worker can be replaced by another process speaking the same messages. Each request
carries a ``request_id``; replies carry the id of the request they answer.

Parent -> worker: :class:`Generate`, :class:`CountTokens`, :class:`Abort`, :class:`Shutdown`.
Worker -> parent: :class:`Ready` once after loading, then :class:`TokenChunk`,
:class:`Finished`, :class:`TokenCount` and :class:`Failed`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Role = Literal["system", "user", "assistant"]
Device = Literal["auto", "cpu", "gpu"]
FinishReason = Literal["stop", "length", "aborted"]

LOAD_REQUEST_ID = "load"


@dataclass(frozen=True, slots=True)
class ChatMessage:
    """One turn of a conversation, as the model sees it."""

    role: Role
    content: str


@dataclass(frozen=True, slots=True)
class GenerationParams:
    """Sampling settings for one reply. ``temperature == 0`` means greedy decoding."""

    max_new_tokens: int = 256
    temperature: float = 0.7
    top_p: float = 0.95
    stop: tuple[str, ...] = ()
    seed: int | None = None  # for sampling; None = a fresh random seed per reply


@dataclass(frozen=True, slots=True)
class GenerationMetrics:
    """Measured in the worker, so pipe and HTTP overheads are not counted."""

    prompt_tokens: int
    completion_tokens: int
    time_to_first_token_s: float
    total_time_s: float
    cached_tokens: int = 0  # prompt tokens whose KV cache was reused instead of computed

    @property
    def tokens_per_s(self) -> float:
        return self.completion_tokens / self.total_time_s if self.total_time_s > 0 else 0.0


@dataclass(frozen=True, slots=True)
class WorkerSpec:
    """What a worker loads; passed to the child process at start."""

    model_path: str
    backend: str
    device: Device
    n_ctx: int
    n_threads: int
    cuda_visible_devices: str | None = None  # set in the worker before any CUDA library loads
    gpu_memory_fraction: float | None = None
    parallel: int = 1  # sequences generated together (continuous batching); backends may serve fewer


# Parent -> worker


@dataclass(frozen=True, slots=True)
class Generate:
    request_id: str
    messages: tuple[ChatMessage, ...]
    params: GenerationParams
    session: str | None = None  # a chat id: its next turn prefers the slot that holds its prefix


@dataclass(frozen=True, slots=True)
class CountTokens:
    request_id: str
    messages: tuple[ChatMessage, ...]


@dataclass(frozen=True, slots=True)
class Abort:
    request_id: str


@dataclass(frozen=True, slots=True)
class Shutdown:
    request_id: str = "shutdown"


# Worker -> parent


@dataclass(frozen=True, slots=True)
class Ready:
    """Sent once the model is loaded and the worker accepts requests."""

    request_id: str
    pid: int
    backend: str
    device: Literal["cpu", "cuda"]
    context_length: int
    load_time_s: float
    has_chat_template: bool
    cuda_visible_devices: str | None = None
    parallel: int = 1  # sequences the worker generates at once


@dataclass(frozen=True, slots=True)
class TokenChunk:
    request_id: str
    text: str


@dataclass(frozen=True, slots=True)
class Finished:
    request_id: str
    metrics: GenerationMetrics
    finish_reason: FinishReason


@dataclass(frozen=True, slots=True)
class TokenCount:
    request_id: str
    count: int


@dataclass(frozen=True, slots=True)
class Failed:
    """A request failed; ``kind`` names a class from :mod:`runtime.errors`."""

    request_id: str
    kind: str
    message: str


ToWorker = Generate | CountTokens | Abort | Shutdown
FromWorker = Ready | TokenChunk | Finished | TokenCount | Failed
Event = TokenChunk | Finished
__all__ = [
    "ChatMessage",
    "GenerationParams",
    "GenerationMetrics",
    "WorkerSpec",
    "Generate",
    "CountTokens",
    "Abort",
    "Shutdown",
    "Ready",
    "TokenChunk",
    "Finished",
    "TokenCount",
    "Failed",
]
