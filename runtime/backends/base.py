"""The one interface every backend implements. Backends run only inside worker processes.

A backend generates many replies at once, one step at a time: the worker hands it requests
(:meth:`Backend.submit`), cancels them (:meth:`Backend.cancel`) and calls
:meth:`Backend.step` while it has work, sending whatever each step produced. Between two
steps the worker reads its pipe, so a new request joins the running batch at the next step
and an abort ends one sequence while the others go on. Backends that can only generate one
reply at a time derive from :class:`SerialBackend` and implement :meth:`SerialBackend.stream`.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Iterator, Sequence
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
    GenerationParams,
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


class SerialBackend(Backend):
    """A backend that generates one reply at a time; later requests wait their turn in order."""

    def __init__(self) -> None:
        self._waiting: deque[Generate] = deque()
        self._current: tuple[Track, Iterator[str]] | None = None

    @abstractmethod
    def stream(self, messages: Sequence[ChatMessage], params: GenerationParams, usage: Usage) -> Iterator[str]:
        """Yield text once per generated token ("" when a token shows nothing yet).

        Closing the iterator early must stop the generation and leave the backend ready
        for the next request.
        """

    def submit(self, request: Generate) -> None:
        self._waiting.append(request)

    def cancel(self, request_id: str) -> Output | None:
        for request in self._waiting:
            if request.request_id == request_id:
                self._waiting.remove(request)
                return None
        if self._current is not None and self._current[0].request_id == request_id:
            track, tokens = self._current
            self._end()
            tokens.close()  # type: ignore[attr-defined]
            return track.finished("aborted")
        return None

    @property
    def has_work(self) -> bool:
        return self._current is not None or bool(self._waiting)

    def step(self) -> list[Output]:
        if self._current is None:
            request = self._waiting.popleft()
            track = Track(request.request_id)
            self._current = track, self.stream(request.messages, request.params, track.usage)
        track, tokens = self._current
        try:
            text = next(tokens)
        except StopIteration:
            self._end()
            return [track.finished()]
        except Exception as exc:  # noqa: BLE001 - reported to the parent; the worker lives on
            self._end()
            return [track.failed(exc)]
        chunk = track.chunk(text)
        return [chunk] if chunk else []

    def _end(self) -> None:
        self._current = None


def resolve_device(requested: str, cuda_available: bool, hint: str) -> str:
    """Map ``auto``/``cpu``/``gpu`` to ``cpu`` or ``cuda``; ``gpu`` without CUDA is an error."""
    if requested == "cpu":
        return "cpu"
    if cuda_available:
        return "cuda"
    if requested == "gpu":
        raise DeviceUnavailable(f"device 'gpu' requested but no CUDA device is usable: {hint}")
    return "cpu"
