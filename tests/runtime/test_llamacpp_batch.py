"""How the llama.cpp backend lays out a step's batch, on the real default GGUF, in process.

llama.cpp computes a batch's sequences in one pass only while their ids run without a gap,
so a step orders its rows by slot and bridges a short gap with throw-away rows: the texts
must be what each reply gives alone, and the idle slot's cached prefix must survive.
Sampling takes top-k with numpy before the llama.cpp chain: a seed still repeats a reply,
alone or batched.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import llama_cpp
import pytest

from runtime.backends import llamacpp
from runtime.backends.base import Output
from runtime.backends.llamacpp import LlamaCppBackend
from runtime.default_model import GGUF_NAME
from runtime.protocol import ChatMessage, Failed, Finished, Generate, GenerationParams, TokenChunk, WorkerSpec

GREEDY = GenerationParams(max_new_tokens=24, temperature=0.0)
FIRST = {
    "a": "What is the capital of France, and which river runs through it on its way to the sea?",
    "b": "Name three colours that painters mix to make all the others, and say why they work.",
    "c": "Who wrote Hamlet, in which century, and in which city were his plays first performed?",
}


def _load(models_dir: Path, parallel: int) -> LlamaCppBackend:
    backend = LlamaCppBackend()
    spec = WorkerSpec(str(models_dir / GGUF_NAME), "llama.cpp", "cpu", n_ctx=1024, n_threads=2, parallel=parallel)
    assert backend.load(spec).parallel == parallel
    return backend


@pytest.fixture(scope="module")
def backend(models_dir: Path) -> Iterator[LlamaCppBackend]:
    loaded = _load(models_dir, 4)
    yield loaded
    loaded.close()


@pytest.fixture(scope="module")
def alone(models_dir: Path) -> Iterator[LlamaCppBackend]:
    """One sequence, so every reply is read afresh and runs alone."""
    loaded = _load(models_dir, 1)
    yield loaded
    loaded.close()


def _run(backend: LlamaCppBackend, *requests: Generate) -> dict[str, tuple[str, Finished]]:
    for request in requests:
        backend.submit(request)
    texts: dict[str, str] = {}
    finished: dict[str, Finished] = {}
    while backend.has_work:
        outputs: list[Output] = backend.step()
        for output in outputs:
            assert not isinstance(output, Failed), output
            if isinstance(output, TokenChunk):
                texts[output.request_id] = texts.get(output.request_id, "") + output.text
            elif isinstance(output, Finished):
                finished[output.request_id] = output
    return {rid: (texts.get(rid, ""), done) for rid, done in finished.items()}


def _turn(rid: str, messages: list[ChatMessage], session: str, params: GenerationParams = GREEDY) -> Generate:
    return Generate(rid, tuple(messages), params, session)


class _Batches:
    """Records each ``llama_decode``'s rows: (sequence id, wants logits)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.rows: list[list[tuple[int, bool]]] = []
        real = llama_cpp.llama_decode

        def decode(ctx: Any, batch: Any) -> int:
            self.rows.append([(batch.seq_id[i][0], bool(batch.logits[i])) for i in range(batch.n_tokens)])
            return int(real(ctx, batch))

        monkeypatch.setattr(llama_cpp, "llama_decode", decode)


def test_a_gap_between_slots_is_bridged_and_the_idle_slot_keeps_its_prefix(
    backend: LlamaCppBackend, alone: LlamaCppBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Started together, chats a, b and c take slots 0, 1 and 2.
    firsts = {chat: text for chat, (text, _) in
              _run(backend, *(_turn(chat, [ChatMessage("user", q)], chat) for chat, q in FIRST.items())).items()}
    assert [slot.session for slot in backend._slots[:3]] == ["a", "b", "c"]
    b_cached, b_prompt = list(backend._slots[1].cached), backend._slots[1].prefilled

    def second(chat: str, follow_up: str) -> list[ChatMessage]:
        return [ChatMessage("user", FIRST[chat]), ChatMessage("assistant", firsts[chat]), ChatMessage("user", follow_up)]

    a2, c2 = second("a", "And of Spain? Answer at length."), second("c", "When did he live? Answer at length.")
    batches = _Batches(monkeypatch)
    together = _run(backend, _turn("a2", a2, "a"), _turn("c2", c2, "c"))
    # Slots 0 and 2 generated in one pass, with a throw-away row for idle slot 1 between them.
    assert [(0, True), (1, False), (2, True)] in batches.rows
    assert backend._slots[1].cached == b_cached  # its cache was not touched...
    b2 = second("b", "Which of them is the brightest?")
    reused = _run(backend, _turn("b2", b2, "b"))["b2"]
    assert reused[1].metrics.cached_tokens >= b_prompt - 2  # ...and is reused
    # Each text is what the reply gives alone, read afresh.
    for rid, messages in (("a2", a2), ("c2", c2), ("b2", b2)):
        expected = _run(alone, _turn(rid, messages, "alone"))[rid][0]
        got = together[rid][0] if rid in together else reused[0]
        assert got == expected and got.strip()


def test_rows_are_in_slot_order_whatever_order_the_replies_started(
    backend: LlamaCppBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    batches = _Batches(monkeypatch)
    # Replies start in slots 3, 2, 1 and 0, in that order.
    monkeypatch.setattr(backend, "_choose_slot", lambda reply: max((s for s in backend._slots if not s.busy),
                                                                   key=lambda s: s.seq_id))
    requests = [_turn(f"r{i}", [ChatMessage("user", f"Count to {i + 5}.")], f"order{i}") for i in range(4)]
    replies = _run(backend, *requests)
    assert [backend._slots[3].session, backend._slots[0].session] == ["order0", "order3"]
    generating = [[seq for seq, logits in rows] for rows in batches.rows if len(rows) == 4 and all(l for _, l in rows)]
    assert generating and all(seqs == [0, 1, 2, 3] for seqs in generating)
    assert all(text.strip() for text, _ in replies.values())


def test_a_seed_repeats_a_sampled_reply_alone_or_batched(backend: LlamaCppBackend) -> None:
    sampled = GenerationParams(max_new_tokens=24, temperature=0.9, top_p=0.95, seed=1234)
    question = [ChatMessage("user", "Tell me a short story about a fox.")]
    first = _run(backend, _turn("s1", question, "seed-1", sampled))["s1"][0]
    again = _run(backend, _turn("s2", question, "seed-2", sampled))["s2"][0]
    others = [_turn(f"o{i}", [ChatMessage("user", q)], f"seed-o{i}") for i, q in enumerate(FIRST.values())]
    batched = _run(backend, _turn("s3", question, "seed-3", sampled), *others)["s3"][0]
    greedy = _run(backend, _turn("g", question, "seed-g"))["g"][0]
    assert first == again == batched
    assert first.strip() and first != greedy  # it did sample


def _step_until(backend: LlamaCppBackend, rid: str, tokens: int) -> None:
    while rid not in backend._running or backend._running[rid].track.usage.completion_tokens < tokens:
        assert not [o for o in backend.step() if isinstance(o, (Failed, Finished))]


def test_prompts_that_arrive_together_are_read_together(backend: LlamaCppBackend) -> None:
    """A reply that has just begun does not make the prompts arriving with it wait in slices."""
    endless = GenerationParams(max_new_tokens=200, temperature=0.0)
    backend.submit(_turn("first", [ChatMessage("user", "Count from 1 to 100: 1, 2, 3,")], "burst-0", endless))
    _step_until(backend, "first", 1)
    for i, question in enumerate(FIRST.values()):  # each its own opening: no cached prefix to reuse
        messages = [ChatMessage("system", f"Burst {i}: {question}"), ChatMessage("user", question * 2)]
        backend.submit(_turn(f"with{i}", messages, f"burst-{i + 1}", endless))
    backend.step()
    assert all(backend._running[f"with{i}"].track.usage.completion_tokens == 1 for i in range(3))
    for rid in list(backend._running):
        backend.cancel(rid)


def test_a_long_prompt_is_read_in_slices_while_a_settled_reply_streams(backend: LlamaCppBackend) -> None:
    endless = GenerationParams(max_new_tokens=300, temperature=0.0)
    backend.submit(_turn("running", [ChatMessage("user", "Count from 1 to 100: 1, 2, 3,")], "slices-0", endless))
    _step_until(backend, "running", llamacpp.SETTLED_TOKENS)
    log = "\n".join(f"Entry {i}: {i * 13 % 97} boxes moved from shelf {i % 40}." for i in range(45))
    backend.submit(_turn("long", [ChatMessage("user", log + "\nSummarise it.")], "slices-1", endless))
    steps = 0
    while "long" not in backend._running or not backend._running["long"].track.usage.completion_tokens:
        before = backend._running["running"].track.usage.completion_tokens
        backend.step()
        steps += 1
        assert backend._running["running"].track.usage.completion_tokens == before + 1  # it never skips a step
    assert steps >= 3  # the long prompt took several steps, one slice each
    for rid in list(backend._running):
        backend.cancel(rid)
