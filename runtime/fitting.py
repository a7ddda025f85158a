"""Context fitting: which turns of a conversation fit the model's context with room for the reply.

It sits beside :mod:`runtime.prompt` because it measures rendered prompts: the count comes
from the model's own tokenizer (a worker's), so the result is exact, not estimated.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

from runtime.errors import ContextOverflow
from runtime.interface import FittedPrompt
from runtime.protocol import ChatMessage

Counter = Callable[[Sequence[ChatMessage]], Awaitable[int]]


async def fit(count: Counter, messages: Sequence[ChatMessage], context_length: int, max_new_tokens: int) -> FittedPrompt:
    """Drop the oldest turns (never system messages) until prompt + reply fit ``context_length``.

    The kept history starts at a user turn; :class:`ContextOverflow` if even the newest
    turn alone leaves no room for the reply.
    """
    budget = context_length - max_new_tokens
    system = [m for m in messages if m.role == "system"]
    turns = [m for m in messages if m.role != "system"]

    async def without(dropped: int) -> int:
        return await count([*system, *turns[dropped:]])

    total = await without(0)
    if total <= budget:
        return FittedPrompt(tuple(messages), 0, total)
    # Fewer dropped turns never count fewer tokens, so binary-search the least drop.
    low, high = 1, len(turns) - 1
    if high < low or await without(high) > budget:
        raise ContextOverflow(
            f"the message needs more than {budget} tokens, which is what the {context_length}-token "
            f"context leaves after {max_new_tokens} tokens for the reply"
        )
    while low < high:
        middle = (low + high) // 2
        if await without(middle) <= budget:
            high = middle
        else:
            low = middle + 1
    dropped = low
    if turns[dropped].role == "assistant" and dropped + 1 < len(turns):
        dropped += 1  # start the kept history at a user turn
    kept = (*system, *turns[dropped:])
    return FittedPrompt(kept, dropped, await count(kept))
