"""Continuous batching on the real default GGUF, through real spawned workers.

One worker generates several replies at once: the greedy text of each must be what it is
alone, an abort ends one reply only, a killed worker fails all of its streams at once, a
chat's next turn reuses its cached prefix, and ``parallel = 1`` is the serial path.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import AsyncIterator, Sequence

import pytest

from runtime.default_model import GGUF_NAME
from runtime.errors import ContextOverflow, WorkerDied
from runtime.interface import Queued
from runtime.manager import Runtime
from runtime.protocol import ChatMessage, Finished, GenerationParams, TokenChunk
from runtime.settings import RuntimeSettings

QUESTIONS = (
    "What is the capital of France?",
    "Name three colours.",
    "How do plants make food?",
    "Who wrote Hamlet?",
    "Why is the sky blue?",
    "What do cats eat?",
    "Tell me about the moon.",
    "How many legs does a spider have?",
)
GREEDY = GenerationParams(max_new_tokens=32, temperature=0.0)
# Greedy decoding of this prompt runs to the token limit.
ENDLESS = [ChatMessage("user", "Continue: 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12,")]


@pytest.fixture(scope="module")
async def runtime(runtime_settings: RuntimeSettings) -> AsyncIterator[Runtime]:
    rt = Runtime(runtime_settings.model_copy(update={"parallel": 8}))
    yield rt
    await rt.close()


async def _reply(
    rt: Runtime, holder: str, messages: Sequence[ChatMessage], params: GenerationParams, session: str | None = None
) -> tuple[str, Finished, list[Queued]]:
    parts: list[str] = []
    places: list[Queued] = []
    finished = None
    async for event in rt.generate(holder, messages, params, session):
        if isinstance(event, Queued):
            places.append(event)
        elif isinstance(event, TokenChunk):
            parts.append(event.text)
        else:
            finished = event
    assert finished is not None
    return "".join(parts), finished, places


async def test_eight_concurrent_streams_give_each_one_its_greedy_text_alone(runtime: Runtime) -> None:
    info = await runtime.load("batch", GGUF_NAME, "cpu")
    assert info.parallel == 8
    alone = [(await _reply(runtime, "batch", [ChatMessage("user", q)], GREEDY))[0] for q in QUESTIONS]
    together = await asyncio.gather(
        *(_reply(runtime, "batch", [ChatMessage("user", q)], GREEDY, session=f"s{i}") for i, q in enumerate(QUESTIONS))
    )
    assert [text for text, _, _ in together] == alone
    assert all(text.strip() for text in alone)
    # All eight ran at once: none waited for a slot, and they shared batches.
    assert all(places[-1].started and places[-1].waited_s < 1 for _, _, places in together)
    assert max(places[-1].batch for _, _, places in together) >= 4
    assert (await runtime.holding("batch")).running == 0  # type: ignore[union-attr]


async def test_aborting_one_of_four_leaves_the_other_three_complete(runtime: Runtime) -> None:
    await runtime.load("abort", GGUF_NAME, "cpu")
    params = GenerationParams(max_new_tokens=48, temperature=0.0)
    victim = runtime.generate("abort", ENDLESS, params, session="victim")

    async def abort_after_three_tokens() -> int:
        tokens = 0
        async with contextlib.aclosing(victim) as events:
            async for event in events:
                tokens += isinstance(event, TokenChunk)
                if tokens == 3:
                    break
        return tokens

    others = [_reply(runtime, "abort", ENDLESS, params, session=f"other{i}") for i in range(3)]
    aborted, *completed = await asyncio.gather(abort_after_three_tokens(), *others)
    assert aborted == 3
    for text, finished, _ in completed:
        assert finished.finish_reason == "length" and finished.metrics.completion_tokens == 48
    assert len({text for text, _, _ in completed}) == 1  # the same prompt, greedy: the same text
    worker = await runtime.holding("abort")
    assert worker is not None and worker.running == 0 and worker.queued == 0


async def test_a_prompt_too_long_for_its_slot_is_a_clear_error_and_the_others_go_on(runtime: Runtime) -> None:
    await runtime.load("overflow", GGUF_NAME, "cpu")
    running = asyncio.ensure_future(_reply(runtime, "overflow", ENDLESS, GenerationParams(32, 0.0), session="ok"))
    with pytest.raises(ContextOverflow, match="2048-token context"):
        await _reply(runtime, "overflow", [ChatMessage("user", "word " * 3000)], GREEDY, session="big")
    text, finished, _ = await running
    assert finished.metrics.completion_tokens == 32 and text


async def test_token_counts_do_not_wait_behind_running_replies(runtime: Runtime) -> None:
    await runtime.load("count", GGUF_NAME, "cpu")
    long = GenerationParams(max_new_tokens=200, temperature=0.0)
    streams = [asyncio.ensure_future(_reply(runtime, "count", ENDLESS, long, session=f"c{i}")) for i in range(3)]
    while (worker := await runtime.holding("count")) is None or worker.running < 3:
        await asyncio.sleep(0.01)
    counted = await runtime.count_tokens("count", ENDLESS)
    assert counted > 10 and not any(s.done() for s in streams)  # answered between two steps
    for stream in streams:
        stream.cancel()
    await asyncio.gather(*streams, return_exceptions=True)


async def test_a_chats_next_turn_reuses_its_cached_prefix(runtime: Runtime) -> None:
    await runtime.load("turns", GGUF_NAME, "cpu")
    first = [ChatMessage("user", "What is the capital of France?")]
    text, finished, _ = await _reply(runtime, "turns", first, GREEDY, session="chat-a")
    # Other chats use other slots meanwhile.
    await asyncio.gather(*(_reply(runtime, "turns", [ChatMessage("user", q)], GREEDY, session=f"x{i}")
                           for i, q in enumerate(QUESTIONS[1:4])))
    second = [*first, ChatMessage("assistant", text), ChatMessage("user", "And of Spain?")]
    _, again, _ = await _reply(runtime, "turns", second, GREEDY, session="chat-a")
    assert again.metrics.cached_tokens >= finished.metrics.prompt_tokens
    assert again.metrics.cached_tokens < again.metrics.prompt_tokens


async def test_a_worker_killed_mid_batch_fails_all_its_streams_within_a_second(
    runtime_settings: RuntimeSettings,
) -> None:
    rt = Runtime(runtime_settings.model_copy(update={"parallel": 4}))
    try:
        info = await rt.load("victim", GGUF_NAME, "cpu")
        long = GenerationParams(max_new_tokens=400, temperature=0.0)
        first_token = [asyncio.Event() for _ in range(4)]
        ended: list[float] = []

        async def stream(index: int) -> None:
            with pytest.raises(WorkerDied):
                async for event in rt.generate("victim", ENDLESS, long, session=f"v{index}"):
                    if isinstance(event, TokenChunk):
                        first_token[index].set()
            ended.append(time.perf_counter())

        streams = asyncio.gather(*(stream(i) for i in range(4)))
        await asyncio.wait_for(asyncio.gather(*(e.wait() for e in first_token)), 60)
        os.kill(info.pid, signal.SIGKILL)
        killed_at = time.perf_counter()
        await asyncio.wait_for(streams, 10)
        assert len(ended) == 4 and max(ended) - killed_at < 1.0
        assert await rt.holding("victim") is None
    finally:
        await rt.close()


async def test_parallel_one_is_the_serial_path(runtime: Runtime, runtime_settings: RuntimeSettings) -> None:
    """One reply at a time: the second waits in line (position 1), then runs; texts are as batched."""
    rt = Runtime(runtime_settings.model_copy(update={"parallel": 1}))
    try:
        info = await rt.load("serial", GGUF_NAME, "cpu")
        assert info.parallel == 1
        messages = [[ChatMessage("user", q)] for q in QUESTIONS[:2]]
        (first, _, first_places), (second, _, second_places) = await asyncio.gather(
            _reply(rt, "serial", messages[0], GREEDY, session="one"),
            _reply(rt, "serial", messages[1], GREEDY, session="two"),
        )
        assert [q.position for q in first_places] == [0]
        assert [q.position for q in second_places] == [1, 0]
        assert second_places[-1].waited_s > 0
        await runtime.load("batch", GGUF_NAME, "cpu")
        batched = await asyncio.gather(*(_reply(runtime, "batch", m, GREEDY) for m in messages))
        assert [first, second] == [text for text, _, _ in batched]
    finally:
        await rt.close()
