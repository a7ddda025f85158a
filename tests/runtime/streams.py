"""Helpers for tests that read a whole reply from the runtime."""

from __future__ import annotations

from collections.abc import Sequence

from runtime.interface import ModelRuntime
from runtime.protocol import ChatMessage, Finished, GenerationParams, TokenChunk


async def collect(
    rt: ModelRuntime, holder: str, messages: Sequence[ChatMessage], params: GenerationParams
) -> tuple[str, Finished]:
    """The reply's text and its ``Finished`` event."""
    parts: list[str] = []
    finished = None
    async for event in rt.generate(holder, messages, params):
        if isinstance(event, TokenChunk):
            parts.append(event.text)
        elif isinstance(event, Finished):
            finished = event
    assert finished is not None
    return "".join(parts), finished
