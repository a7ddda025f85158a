"""A Backend (runtime.backends.base) that needs no model: each step gives every running request one
token after ``step_s`` seconds, like a batched decode step. For measuring the transport only."""

from __future__ import annotations

import time
from collections.abc import Sequence

from runtime.backends.base import Backend, Loaded, Output, Track
from runtime.prompt import Prompt
from runtime.protocol import ChatMessage, Generate, WorkerSpec


class PacedBackend(Backend):
    def __init__(self, step_s: float = 0.0, parallel: int = 8) -> None:
        self.step_s, self.parallel = step_s, parallel
        self._running: dict[str, tuple[Track, int]] = {}
        self.aborted: list[str] = []

    def load(self, spec: WorkerSpec) -> Loaded:
        return Loaded("cpu", 2048, False, min(self.parallel, spec.parallel))

    def render(self, messages: Sequence[ChatMessage]) -> Prompt:
        raise NotImplementedError

    def count_tokens(self, messages: Sequence[ChatMessage]) -> int:
        return sum(len(m.content.split()) for m in messages)

    def submit(self, request: Generate) -> None:
        self._running[request.request_id] = (Track(request.request_id), request.params.max_new_tokens)

    def cancel(self, request_id: str) -> Output | None:
        self.aborted.append(request_id)
        entry = self._running.pop(request_id, None)
        return entry[0].finished("aborted") if entry else None

    @property
    def has_work(self) -> bool:
        return bool(self._running)

    def step(self) -> list[Output]:
        if self.step_s:
            time.sleep(self.step_s)
        out: list[Output] = []
        for rid, (track, left) in list(self._running.items()):
            track.usage.completion_tokens += 1
            chunk = track.chunk(f"t{track.usage.completion_tokens} ")
            if chunk:
                out.append(chunk)
            if left <= 1:
                del self._running[rid]
                out.append(track.finished("length"))
            else:
                self._running[rid] = (track, left - 1)
        return out
