"""Turning chat messages into a prompt, and cutting generated text at stop sequences.

Models with a chat template use it (each backend renders its own). Base models without
one, like the default Gemma 3 270M, get a plain transcript that ends with the assistant's
turn marker; stop sequences at the next turn marker end the reply where the turn ends.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from runtime.protocol import ChatMessage

_SPEAKERS = {"user": "User", "assistant": "Assistant"}
TRANSCRIPT_STOPS: tuple[str, ...] = ("\nUser:", "\nAssistant:", "\nSystem:")


@dataclass(frozen=True, slots=True)
class Prompt:
    """The text given to the model and the sequences that end its reply."""

    text: str
    stops: tuple[str, ...]
    templated: bool


def plain_transcript(messages: Sequence[ChatMessage]) -> Prompt:
    """A ``User: …`` / ``Assistant: …`` transcript for models without a chat template."""
    parts = []
    for message in messages:
        if message.role == "system":
            parts.append(f"{message.content.strip()}\n")
        else:
            parts.append(f"{_SPEAKERS[message.role]}: {message.content.strip()}")
    parts.append("Assistant:")
    return Prompt("\n".join(parts), TRANSCRIPT_STOPS, templated=False)


def merge_system_into_user(messages: Sequence[ChatMessage]) -> list[ChatMessage]:
    """For templates that reject a system role: prepend the system text to the first user turn."""
    system = "\n\n".join(m.content for m in messages if m.role == "system")
    rest = [m for m in messages if m.role != "system"]
    if system and rest and rest[0].role == "user":
        rest[0] = ChatMessage("user", f"{system}\n\n{rest[0].content}")
    return rest


class StopFilter:
    """Streams text through, holding back only what could be the start of a stop sequence.

    ``feed`` returns the text that is safe to show and whether a stop sequence was hit
    (the stop sequence itself is never shown). Leading whitespace of the reply is dropped,
    since transcript prompts end with ``Assistant:`` and the model answers `` Hello``.
    """

    def __init__(self, stops: Sequence[str], strip_leading: bool = True) -> None:
        self._stops = tuple(s for s in stops if s)
        self._pending = ""
        self._at_start = strip_leading

    def feed(self, text: str) -> tuple[str, bool]:
        if self._at_start:
            text = text.lstrip()
            if not text:
                return "", False
            self._at_start = False
        buffer = self._pending + text
        hits = [i for i in (buffer.find(s) for s in self._stops) if i >= 0]
        if hits:
            self._pending = ""
            return buffer[: min(hits)], True
        hold = max((self._partial_match(buffer, s) for s in self._stops), default=0)
        self._pending = buffer[len(buffer) - hold :] if hold else ""
        return buffer[: len(buffer) - hold], False

    def flush(self) -> str:
        """Whatever was held back, once generation ended without completing a stop."""
        rest, self._pending = self._pending, ""
        return rest

    @staticmethod
    def _partial_match(buffer: str, stop: str) -> int:
        for size in range(min(len(stop) - 1, len(buffer)), 0, -1):
            if buffer.endswith(stop[:size]):
                return size
        return 0
