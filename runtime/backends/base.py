"""The one interface every backend implements. Backends run only inside worker processes.

A backend generates many replies at once, one step at a time: the worker hands it requests
(:meth:`Backend.submit`), cancels them (:meth:`Backend.cancel`) and calls
:meth:`Backend.step` while it has work, sending whatever each step produced. Between two
steps the worker reads its pipe, so a new request joins the running batch at the next step
and an abort ends one sequence while the others go on.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass

from runtime.errors import DeviceUnavailable, to_wire
from runtime.prompt import Prompt
from runtime.protocol import (
    ChatMessage,
    Failed,
    Finished,
    FinishReason,
    Generate,
    GenerationMetrics,
    TokenChunk,
    WorkerSpec,
)

Output = TokenChunk | Finished | Failed


@dataclass(frozen=True, slots=True)
class Loaded:
    """What a backend reports once its model is in memory."""

    device: str  # "cpu" or "cuda"
    context_length: int  # per sequence
    has_chat_template: bool
    parallel: int = 1  # sequences generated at once


@dataclass(slots=True)
class Usage:
    """Filled in by a backend while it streams, read by the worker afterwards."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0  # of the prompt, reused from the KV cache
    finish_reason: FinishReason = "stop"


class Track:
    """One reply's timing and counts, turned into the protocol's messages."""

    def __init__(self, request_id: str) -> None:
        self.request_id = request_id
        self.usage = Usage()
        self.started = time.perf_counter()
        self.first_token_at: float | None = None

    def chunk(self, text: str) -> TokenChunk | None:
        """A generated token's text (``""`` when it shows nothing yet): a chunk to send, if any."""
        if self.first_token_at is None:
            self.first_token_at = time.perf_counter()
        return TokenChunk(self.request_id, text) if text else None

    def finished(self, reason: FinishReason | None = None) -> Finished:
        now = time.perf_counter()
        usage = self.usage
        metrics = GenerationMetrics(
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
            time_to_first_token_s=(self.first_token_at or now) - self.started,
            total_time_s=now - self.started,
            cached_tokens=usage.cached_tokens,
        )
        return Finished(self.request_id, metrics, reason or usage.finish_reason)

    def failed(self, exc: BaseException) -> Failed:
        return Failed(self.request_id, *to_wire(exc))


class Backend(ABC):
    """Load a model, render and count prompts, generate replies step by step, release everything."""

    @abstractmethod
    def load(self, spec: WorkerSpec) -> Loaded:
        """Load the model on the device the spec asks for (``auto`` falls back to CPU).

        ``spec.parallel`` asks for that many sequences at once; :attr:`Loaded.parallel`
        says how many the backend serves.
        """

    @abstractmethod
    def render(self, messages: Sequence[ChatMessage]) -> Prompt:
        """The prompt for these messages: the model's chat template, else a plain transcript."""

    @abstractmethod
    def count_tokens(self, messages: Sequence[ChatMessage]) -> int:
        """Exact number of prompt tokens these messages become."""

    @abstractmethod
    def submit(self, request: Generate) -> None:
        """Accept a request; its tokens come from later steps.

        Raises a :class:`~runtime.errors.ModelRuntimeError` for a request that cannot run
        (its prompt does not fit the context): nothing of it is kept.
        """

    @abstractmethod
    def cancel(self, request_id: str) -> Output | None:
        """End one request (an abort); the others go on. Its ``Finished`` (``aborted``), if it ran."""

    @property
    @abstractmethod
    def has_work(self) -> bool:
        """Whether any request is running or waiting to start."""

    @abstractmethod
    def step(self) -> list[Output]:
        """Advance every running request by one token, starting waiting ones where room allows.

        A failure of one request is its :class:`Failed`; the others go on.
        """

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release what the process exit would not (nothing, for most backends)."""


def resolve_device(requested: str, cuda_available: bool, hint: str) -> str:
    """Map ``auto``/``cpu``/``gpu`` to ``cpu`` or ``cuda``; ``gpu`` without CUDA is an error."""
    if requested == "cpu":
        return "cpu"
    if cuda_available:
        return "cuda"
    if requested == "gpu":
        raise DeviceUnavailable(f"device 'gpu' requested but no CUDA device is usable: {hint}")
    return "cpu"
