"""Turning chat messages into a prompt, and cutting generated text at stop sequences.

Models with a chat template use it (each backend renders its own). Base models without
one, like the default Gemma 3 270M, get a plain transcript that ends with the assistant's
turn marker; stop sequences at the next turn marker end the reply where the turn ends.
The transcript opens with an instruction line and two example exchanges: without them the
base model often repeats the question back instead of answering it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from runtime.protocol import ChatMessage

_SPEAKERS = {"user": "User", "assistant": "Assistant"}
TRANSCRIPT_STOPS: tuple[str, ...] = ("\nUser:", "\nAssistant:", "\nSystem:")

# Chosen by measurement on the default GGUF (greedy, 20 everyday questions): with a bare
# transcript 5 replies echoed the question, with this opening none did
# (tests/runtime/test_reply_quality.py). A chat's system prompt replaces the instruction.
TRANSCRIPT_INSTRUCTION = (
    "A conversation between a user and a helpful, knowledgeable assistant who answers "
    "questions directly and concisely."
)
# One-line answers, so every example turn ends the way a reply should: at "\nUser:".
TRANSCRIPT_EXAMPLES: tuple[tuple[str, str], ...] = (
    ("Who discovered penicillin?", "Alexander Fleming discovered penicillin in 1928."),
    (
        "How do I keep bread fresh longer?",
        (
            "Store it in a bread box or a paper bag at room temperature, "
            "or freeze slices you won't eat within a few days."
        ),
    ),
)


@dataclass(frozen=True, slots=True)
class Prompt:
    """The text given to the model and the sequences that end its reply."""

    text: str
    stops: tuple[str, ...]
    templated: bool


def plain_transcript(messages: Sequence[ChatMessage]) -> Prompt:
    """A ``User: …`` / ``Assistant: …`` transcript for models without a chat template.

    It opens with :data:`TRANSCRIPT_INSTRUCTION`, or with the chat's system messages in its
    place, then :data:`TRANSCRIPT_EXAMPLES`. The examples live in the prompt text only: they
    are not messages of the chat, so trimming never drops them and no history shows them.
    """
    system = "\n\n".join(m.content.strip() for m in messages if m.role == "system" and m.content.strip())
    parts = [f"{system or TRANSCRIPT_INSTRUCTION}\n"]
    for question, answer in TRANSCRIPT_EXAMPLES:
        parts += [f"User: {question}", f"Assistant: {answer}"]
    parts += [f"{_SPEAKERS[m.role]}: {m.content.strip()}" for m in messages if m.role != "system"]
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
