"""Chats as trees: each message follows a parent, messages with one parent are siblings (an
edited question, a regenerated reply), and a chat shows one branch, from its first message
to ``Chat.current_message_id``.

The functions on lists are pure (a chat's messages are few enough to load whole); the
``async`` ones read the database.
"""

from __future__ import annotations

from collections.abc import Sequence

from api.store import Chat, Message


def children(messages: Sequence[Message]) -> dict[int | None, list[Message]]:
    """Each message id (None: the root) to the messages that follow it, oldest first."""
    found: dict[int | None, list[Message]] = {}
    for m in sorted(messages, key=lambda m: m.id):
        found.setdefault(m.parent_id, []).append(m)
    return found


def newest_end(messages: Sequence[Message], start: int | None) -> int | None:
    """The last message of the newest branch through ``start`` (None: from the root): at
    each step, the most recent child. None for a chat without messages."""
    below = children(messages)
    current = start
    while below.get(current):
        current = below[current][-1].id
    return current


def path(messages: Sequence[Message], end: int | None) -> list[Message]:
    """The branch from the first message to ``end``, first message first; an unknown (or
    None) end shows the newest branch."""
    by_id = {m.id: m for m in messages}
    if end not in by_id:
        end = newest_end(messages, None)
    shown: list[Message] = []
    seen: set[int] = set()
    while end is not None and end in by_id and end not in seen:
        seen.add(end)
        shown.append(by_id[end])
        end = by_id[end].parent_id
    return shown[::-1]


def siblings(messages: Sequence[Message]) -> dict[int, list[int]]:
    """Each message id to the ids of the messages with its parent, itself included, oldest first."""
    return {m.id: [s.id for s in group] for group in children(messages).values() for m in group}


async def tree(chat: Chat) -> list[Message]:
    return await Message.filter(chat=chat).order_by("id")


async def shown(chat: Chat) -> tuple[list[Message], list[Message]]:
    """The chat's messages and the branch it shows."""
    messages = await tree(chat)
    return messages, path(messages, chat.current_message_id)


async def show(chat: Chat, message_id: int) -> list[Message] | None:
    """Show the newest branch through ``message_id`` (None if the chat has no such message)."""
    messages = await tree(chat)
    if not any(m.id == message_id for m in messages):
        return None
    end = newest_end(messages, message_id)
    await Chat.filter(id=chat.id).update(current_message_id=end)
    chat.current_message_id = end
    return messages
