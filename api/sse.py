"""Server-sent events: a ``text/event-stream`` response, and a chat reply as its events.

A reply's events are ``start`` (:class:`~api.schemas.StartEvent`), ``queued``
(:class:`~api.schemas.QueuedEvent`) while it waits for a free slot of the model, ``token``
(:class:`~api.schemas.TokenEvent`) per piece of text, then ``done`` (the stored
:class:`~api.schemas.ChatMessage`) or ``error`` (:class:`~api.schemas.ErrorBody`). The
response is made only for a reply the runtime accepted and started, so refusals keep their
HTTP status.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

from pydantic import BaseModel
from quart import Response

from api.conversation import Reply
from api.errors import describe, error_payload
from api.schemas import ChatMessage, QueuedEvent, TokenEvent
from runtime.interface import Queued


def event(name: str, data: BaseModel | dict[str, Any]) -> bytes:
    payload = data.model_dump(mode="json") if isinstance(data, BaseModel) else data
    return f"event: {name}\ndata: {json.dumps(payload, ensure_ascii=False)}\n\n".encode()


def respond(body: AsyncIterator[bytes]) -> Response:
    response = Response(body, mimetype="text/event-stream")
    response.headers["Cache-Control"] = "no-cache"
    response.headers["X-Accel-Buffering"] = "no"  # proxies must not buffer the stream
    response.timeout = None  # a long reply must not be cut by the response timeout
    return response


async def reply_events(reply: Reply) -> AsyncIterator[bytes]:
    """The events of an accepted reply; closing this stream stops the reply (stored as stopped)."""
    try:
        yield event("start", reply.start)
        async with contextlib.aclosing(reply.items()) as items:
            async for item in items:
                if isinstance(item, ChatMessage):
                    yield event("done", item)
                elif isinstance(item, Queued):
                    place = QueuedEvent(position=item.position, ahead=max(0, item.position - 1), estimate_s=item.estimate_s)
                    yield event("queued", place)
                else:
                    yield event("token", TokenEvent(text=item))
    except Exception as exc:  # noqa: BLE001 - the stream's end says what happened, in the one error shape
        body = error_payload(describe(exc), openai=False)
        yield event("error", {**body, "message_id": reply.start.message_id})
    finally:
        await reply.aclose()
