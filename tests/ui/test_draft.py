"""The draft's token count (:class:`ui.draft.DraftCounter`) against a counting function that
records its calls: it waits for the draft to rest, asks once at a time, and says what it got."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from ui.client import ApiProblem
from ui.draft import NOT_LOADED, DraftCounter, tokens_line

SETTLE_S = 0.05


class Counter:
    """Counts a word as a token, in ``delay_s``; remembers each call and the most at once."""

    def __init__(self, context_length: int = 8192, delay_s: float = 0.0, problem: ApiProblem | None = None) -> None:
        self.context_length = context_length
        self.delay_s = delay_s
        self.problem = problem
        self.calls: list[str] = []
        self.running = 0
        self.most_at_once = 0

    async def __call__(self, text: str) -> dict[str, Any]:
        self.calls.append(text)
        self.running += 1
        self.most_at_once = max(self.most_at_once, self.running)
        try:
            await asyncio.sleep(self.delay_s)
            if self.problem is not None:
                raise self.problem
            return {"tokens": len(text.split()), "context_length": self.context_length}
        finally:
            self.running -= 1


def shown(counter: DraftCounter) -> str:
    return str(counter.view.object)


def test_the_line_reads_like_the_issue_asks() -> None:
    assert tokens_line(1234, 8192) == "1,234 / 8,192 tokens"


async def test_typing_is_counted_once_it_rests() -> None:
    count = Counter()
    draft = DraftCounter(count, settle_s=SETTLE_S)
    typing = [asyncio.create_task(draft.update(text)) for text in ("one", "one two", "one two three")]
    await asyncio.gather(*typing)
    assert count.calls == ["one two three"]
    assert "3 / 8,192 tokens" in shown(draft) and "over" not in shown(draft)


async def test_never_more_than_one_count_on_its_way() -> None:
    count = Counter(delay_s=4 * SETTLE_S)
    draft = DraftCounter(count, settle_s=SETTLE_S)
    first = asyncio.create_task(draft.update("a b"))
    await asyncio.sleep(2 * SETTLE_S)  # its count is on its way
    later = [asyncio.create_task(draft.update(text)) for text in ("a b c", "a b c d")]
    await asyncio.gather(first, *later)
    assert count.most_at_once == 1
    assert count.calls == ["a b", "a b c d"]  # the edits made meanwhile, counted once, the last
    assert "4 / 8,192 tokens" in shown(draft)


async def test_over_the_context_turns_to_the_warning() -> None:
    draft = DraftCounter(Counter(context_length=3), settle_s=SETTLE_S)
    await draft.update("one two three four")
    assert 'class="draft-tokens over"' in shown(draft) and "4 / 3 tokens" in shown(draft)


async def test_no_model_loaded() -> None:
    draft = DraftCounter(Counter(problem=ApiProblem("not loaded", 409)), settle_s=SETTLE_S)
    await draft.update("hello")
    assert NOT_LOADED in shown(draft)


async def test_longer_than_the_api_takes() -> None:
    problem = ApiProblem("the text has 9 characters; the limit is 5", 413)
    draft = DraftCounter(Counter(problem=problem), settle_s=SETTLE_S)
    await draft.update("123456789")
    assert "over" in shown(draft) and "the limit is 5" in shown(draft)


@pytest.mark.parametrize("status", [401, 404, 500, None])
async def test_other_problems_show_nothing(status: int | None) -> None:
    draft = DraftCounter(Counter(problem=ApiProblem("no", status)), settle_s=SETTLE_S)
    await draft.update("hello")
    assert shown(draft) == ""


async def test_an_empty_draft_clears_the_line_without_asking() -> None:
    count = Counter()
    draft = DraftCounter(count, settle_s=SETTLE_S)
    await draft.update("hello there")
    assert "2 / 8,192 tokens" in shown(draft)
    await draft.update("  ")
    assert shown(draft) == "" and count.calls == ["hello there"]


async def test_a_refresh_counts_the_same_draft_again() -> None:
    count = Counter()
    draft = DraftCounter(count, settle_s=SETTLE_S)
    await draft.update("hello")
    count.context_length = 2048  # another model now
    await draft.refresh()
    assert count.calls == ["hello", "hello"] and "1 / 2,048 tokens" in shown(draft)
