"""A worker's slots and waiting line (runtime/slots.py): order, places, refusals, death."""

from __future__ import annotations

import asyncio

import pytest

from runtime.errors import Busy, WorkerDied
from runtime.interface import Queued
from runtime.slots import Place, Slots


async def _places(place: Place, seen: list[Queued]) -> None:
    async for queued in place.wait():
        seen.append(queued)


async def test_first_come_first_served_with_places_that_move_up() -> None:
    slots = Slots("m", parallel=2, max_queue=3)
    running = [slots.enter(f"r{i}") for i in range(2)]
    waiting = [slots.enter(f"w{i}") for i in range(3)]
    assert (slots.running, slots.queued) == (2, 3)
    seen: list[list[Queued]] = [[] for _ in waiting]
    tasks = [asyncio.ensure_future(_places(p, s)) for p, s in zip(waiting, seen, strict=True)]
    await asyncio.sleep(0)
    assert [[q.position for q in s] for s in seen] == [[1], [2], [3]]
    running[0].leave()  # a slot frees: the first in line takes it, the others move up
    await asyncio.sleep(0)
    assert tasks[0].done() and seen[0][-1].started and seen[0][-1].batch == 2
    assert [[q.position for q in s] for s in seen[1:]] == [[2, 1], [3, 2]]
    waiting[1].leave()  # gives up while waiting: the one behind it moves up
    await asyncio.sleep(0)
    assert [q.position for q in seen[2]] == [3, 2, 1]
    assert (slots.running, slots.queued) == (2, 1)
    for place in (running[1], waiting[0]):
        place.leave()
    await asyncio.sleep(0)
    assert tasks[2].done() and seen[2][-1].started and seen[2][-1].waited_s >= 0
    waiting[2].leave()
    assert slots.idle
    tasks[1].cancel()


async def test_a_full_line_and_a_second_place_for_a_session_are_refused() -> None:
    slots = Slots("m", parallel=1, max_queue=1)
    first = slots.enter("a")
    with pytest.raises(Busy, match="already has a reply"):
        slots.enter("a")
    slots.enter("b")
    with pytest.raises(Busy, match="1 are waiting") as refused:
        slots.enter("c")
    assert refused.value.retry_after_s == 2.0
    first.leave()
    slots.enter("a")  # its first reply ended: the chat may ask again


async def test_a_dead_worker_fails_those_in_line_and_refuses_the_next() -> None:
    slots = Slots("m", parallel=1, max_queue=4)
    slots.enter(None)
    waiting = slots.enter(None)
    seen: list[Queued] = []
    task = asyncio.ensure_future(_places(waiting, seen))
    await asyncio.sleep(0)
    slots.fail_all(WorkerDied("the worker for m was killed by signal 9"))
    with pytest.raises(WorkerDied):
        await task
    assert [q.position for q in seen] == [1]
    with pytest.raises(WorkerDied):
        slots.enter(None)


def test_wait_estimates_learn_from_finished_replies() -> None:
    slots = Slots("m", parallel=4, max_queue=4)
    assert slots.estimate_s(2) is None
    slots.learn(8.0)
    assert slots.estimate_s(2) == pytest.approx(4.0)
    slots.learn(18.0)
    assert slots.estimate_s(1) == pytest.approx((8.0 + 0.2 * 10.0) / 4)
