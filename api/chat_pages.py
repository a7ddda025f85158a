"""Paging a user's chat list: newest first, by keyset, with cursors a client passes back unchanged.

Chats are ordered by ``(updated_at desc, id desc)``; a page is read through the index on
``chats(owner_id, updated_at)``, so a page costs the same whether the user has ten chats or
ten thousand. A cursor names the last chat of the page before it (its ``updated_at`` and id,
as URL-safe base64 of JSON), so a chat that moves to the top between two pages is neither
lost nor shown twice below; only its new place at the top is missed until the list is read
again from the start.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from datetime import UTC, datetime

from tortoise.expressions import Q
from tortoise.queryset import QuerySet

from api.errors import MalformedRequest
from api.store import Chat

MAX_CURSOR_CHARS = 200


@dataclass(frozen=True, slots=True)
class Position:
    """Where a page ends: the last chat's ``updated_at`` and id."""

    updated_at: datetime
    chat_id: str


def encode_cursor(chat: Chat) -> str:
    """The opaque cursor of the page that follows ``chat``."""
    text = json.dumps([chat.updated_at.astimezone(UTC).isoformat(), chat.id], separators=(",", ":"))
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> Position:
    """The position a cursor names; :class:`MalformedRequest` for anything that is not one of ours."""
    refused = MalformedRequest(
        "cursor: not a cursor this server gave out; pass the next_cursor of the previous page unchanged, "
        "or leave it out for the first page"
    )
    if len(cursor) > MAX_CURSOR_CHARS:
        raise refused
    try:
        decoded = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode())
        when, chat_id = decoded
        updated_at = datetime.fromisoformat(when)
    except (binascii.Error, UnicodeDecodeError, ValueError, TypeError) as exc:  # JSONDecodeError is a ValueError
        raise refused from exc
    if not isinstance(chat_id, str) or not 0 < len(chat_id) <= 64 or updated_at.tzinfo is None:
        raise refused
    return Position(updated_at.astimezone(UTC), chat_id)


def page_query(owner_id: int, limit: int, after: Position | None) -> QuerySet[Chat]:
    """The owner's chats after ``after`` (from the newest if None), newest first, ``limit`` of them."""
    query = Chat.filter(owner_id=owner_id)
    if after is not None:
        # The first condition bounds the index range; the second breaks ties of equal times by id.
        query = query.filter(updated_at__lte=after.updated_at).filter(
            Q(updated_at__lt=after.updated_at) | Q(id__lt=after.chat_id)
        )
    return query.order_by("-updated_at", "-id").limit(limit)


async def chat_page(owner_id: int, limit: int, after: Position | None) -> tuple[list[Chat], str | None]:
    """Up to ``limit`` of the owner's chats after ``after`` (from the newest if None), and the
    cursor of the next page (None when this one is the last)."""
    chats = await page_query(owner_id, limit + 1, after)
    if len(chats) <= limit:
        return chats, None
    del chats[limit:]
    return chats, encode_cursor(chats[-1])
