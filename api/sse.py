"""Server-sent events: turning a chat turn into an ``text/event-stream`` response."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import asdict
from typing import Any

from quart import Response

from api.conversation import Conversations, ReplyDone, Turn
from api.errors import status_of
from runtime.errors import ModelRuntimeError


def event(name: str, data: Any) -> bytes:
    return f"event: {name}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n".encode()


def respond(body: AsyncIterator[bytes]) -> Response:
    response = Response(body, mimetype="text/event-stream")
    response.headers["Cache-Control"] = "no-cache"
    response.headers["X-Accel-Buffering"] = "no"  # proxies must not buffer the stream
    response.timeout = None  # a long reply must not be cut by the response timeout
    return response


async def start_turn_events(conversations: Conversations, turn: Turn) -> AsyncIterator[bytes]:
    """Start the reply and wait for its first chunk, so a refusal (a full queue, a dead
    worker) is raised here, as a real HTTP error, before any response is committed."""
    reply = conversations.run(turn)
    try:
        first = await anext(reply)
    except BaseException:
        await reply.aclose()
        raise
    return _turn_events(turn, first, reply)


async def _turn_events(turn: Turn, first: str | ReplyDone, rest: AsyncIterator[str | ReplyDone]) -> AsyncIterator[bytes]:
    """``start``, ``token`` events with ``{"text"}``, then ``done`` with the stored message, or ``error``."""
    yield event("start", {"message_id": turn.reply.id, "model": turn.worker.key.model,
                          "device": turn.worker.device, "dropped_messages": turn.dropped})

    async def items() -> AsyncIterator[str | ReplyDone]:
        yield first
        async for item in rest:
            yield item

    async with contextlib.aclosing(rest), contextlib.aclosing(items()) as reply:
        try:
            async for item in reply:
                if isinstance(item, ReplyDone):
                    yield event("done", asdict(item))
                else:
                    yield event("token", {"text": item})
        except ModelRuntimeError as exc:
            yield event("error", {"error": type(exc).__name__, "detail": str(exc),
                                  "status": status_of(exc), "message_id": turn.reply.id})


