"""A worker's slots and its waiting line: who generates now, who waits, and in which place.

A worker generates up to ``parallel`` replies at once. Further requests wait in arrival
order, up to ``max_queue`` of them; beyond that they are refused with :class:`Busy`. A
waiting request hears its new place each time the line moves. One session (a chat) holds
at most one place, so no chat takes two slots while others wait. Used by the real request
channel and by the fake runtime alike.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator

from runtime.errors import Busy, WorkerDied
from runtime.interface import Queued

_DURATION_WEIGHT = 0.2  # of the newest reply in the running mean used for wait estimates


class Place:
    """One request's place: in line, then in a slot, until :meth:`leave`."""

    def __init__(self, slots: Slots, session: str | None) -> None:
        self._slots = slots
        self.session = session
        self.entered = time.monotonic()
        self.started: float | None = None
        self.granted = False
        self.place_in_line = 0  # last announced
        self.moves: asyncio.Queue[int | None] = asyncio.Queue()  # new places, then None: a slot

    async def wait(self) -> AsyncIterator[Queued]:
        """Yield the place in line each time it changes, then ``Queued(0)`` once a slot is this request's."""
        slots = self._slots
        if not self.granted:
            position = self.place_in_line = slots.position(self)
            yield Queued(position, slots.estimate_s(position))
            while (moved := await self.moves.get()) is not None:
                yield Queued(moved, slots.estimate_s(moved))
        if slots.dead is not None:
            raise slots.dead
        self.started = time.monotonic()
        yield Queued(0, 0.0, batch=slots.running, waited_s=self.started - self.entered)

    def done(self) -> None:
        """The reply finished normally: its duration teaches the wait estimate."""
        if self.started is not None:
            self._slots.learn(time.monotonic() - self.started)

    def leave(self) -> None:
        """Give the slot to the first in line, or leave the line."""
        self._slots.leave(self)


class Slots:
    """``parallel`` slots and a bounded FIFO line."""

    def __init__(self, name: str, parallel: int, max_queue: int) -> None:
        self._name = name
        self.parallel = parallel
        self.max_queue = max_queue
        self.running = 0
        self._line: deque[Place] = deque()
        self._sessions: set[str] = set()
        self._mean_reply_s: float | None = None
        self.dead: WorkerDied | None = None

    @property
    def queued(self) -> int:
        return len(self._line)

    @property
    def idle(self) -> bool:
        return self.running == 0 and not self._line

    def enter(self, session: str | None) -> Place:
        """A place for a new request, in a slot if one is free and nobody waits; else refuse."""
        if self.dead is not None:
            raise self.dead
        if session is not None and session in self._sessions:
            raise Busy(f"this chat already has a reply running or waiting on {self._name}", retry_after_s=1.0)
        free = self.running < self.parallel and not self._line
        if not free and len(self._line) >= self.max_queue:
            raise Busy(
                f"{self._name} is answering {self.running} requests and {len(self._line)} are waiting; "
                "try again shortly",
                retry_after_s=float(1 + len(self._line)),
            )
        place = Place(self, session)
        if session is not None:
            self._sessions.add(session)
        if free:
            place.granted = True
            self.running += 1
        else:
            self._line.append(place)
        return place

    def position(self, place: Place) -> int:
        return self._line.index(place) + 1

    def estimate_s(self, position: int) -> float | None:
        """Roughly how long a request ``position``-th in line waits for a slot."""
        if self._mean_reply_s is None:
            return None
        return position * self._mean_reply_s / self.parallel

    def learn(self, duration_s: float) -> None:
        mean = self._mean_reply_s
        self._mean_reply_s = duration_s if mean is None else mean + _DURATION_WEIGHT * (duration_s - mean)

    def leave(self, place: Place) -> None:
        if place.session is not None:
            self._sessions.discard(place.session)
        if not place.granted:
            self._line.remove(place)
        else:
            self.running -= 1
            if self._line and self.dead is None:
                first = self._line.popleft()
                first.granted = True
                self.running += 1
                first.moves.put_nowait(None)
        for index, waiting in enumerate(self._line, start=1):
            if waiting.place_in_line != index:
                waiting.place_in_line = index
                waiting.moves.put_nowait(index)

    def fail_all(self, error: WorkerDied) -> None:
        """The worker is gone: those in line stop waiting (and fail), later requests are refused."""
        self.dead = error
        for place in self._line:
            place.moves.put_nowait(None)
