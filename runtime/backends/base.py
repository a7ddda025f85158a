"""The one interface every backend implements. Backends run only inside worker processes."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from runtime.errors import DeviceUnavailable
from runtime.prompt import Prompt
from runtime.protocol import ChatMessage, FinishReason, GenerationParams, WorkerSpec


@dataclass(frozen=True, slots=True)
class Loaded:
    """What a backend reports once its model is in memory."""

    device: str  # "cpu" or "cuda"
    context_length: int
    has_chat_template: bool


@dataclass(slots=True)
class Usage:
    """Filled in by a backend while it streams, read by the worker afterwards."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: FinishReason = "stop"


class Backend(ABC):
    """Load a model, render and count prompts, stream a reply, release everything."""

    @abstractmethod
    def load(self, spec: WorkerSpec) -> Loaded:
        """Load the model on the device the spec asks for (``auto`` falls back to CPU)."""

    @abstractmethod
    def render(self, messages: Sequence[ChatMessage]) -> Prompt:
        """The prompt for these messages: the model's chat template, else a plain transcript."""

    @abstractmethod
    def count_tokens(self, messages: Sequence[ChatMessage]) -> int:
        """Exact number of prompt tokens these messages become."""

    @abstractmethod
    def stream(
        self, messages: Sequence[ChatMessage], params: GenerationParams, usage: Usage
    ) -> Iterator[str]:
        """Yield text once per generated token ("" when a token shows nothing yet).

        Closing the iterator early must stop the generation and leave the backend ready
        for the next request.
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
