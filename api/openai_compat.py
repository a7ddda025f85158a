"""OpenAI-compatible endpoints: ``GET /v1/models`` and ``POST /v1/chat/completions``.

Enough of the OpenAI wire format for the official ``openai`` client and tools built on
it: non-streaming and streaming completions with ``usage`` filled. These requests are
stateless (nothing is stored); the model is loaded on first use and shared by every
OpenAI-style caller of that model.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from quart import Blueprint, Response
from quart_schema import validate_request

from api import sse
from api.auth import current_user
from api.errors import MessageTooLong, describe, error_payload
from api.holders import openai_holder
from api.limits import Limits
from api.metrics import Metrics
from api.services import services
from runtime.errors import ModelRuntimeError
from runtime.interface import Event, Queued, WorkerInfo
from runtime.protocol import ChatMessage, Finished, GenerationParams, TokenChunk

blueprint = Blueprint("openai", __name__, url_prefix="/v1")

_FINISH = {"stop": "stop", "length": "length", "aborted": "stop"}


class OpenAIMessage(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[dict[str, Any]] | None = None

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(str(part.get("text", "")) for part in self.content if part.get("type") == "text")
        return self.content or ""


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")
    include_usage: bool = False


class CompletionRequest(BaseModel):
    model_config = ConfigDict(extra="allow")  # unknown OpenAI options are accepted and ignored
    model: str = Field(min_length=1, max_length=255)
    messages: list[OpenAIMessage] = Field(min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(None, ge=1, le=32_768)
    max_completion_tokens: int | None = Field(None, ge=1, le=32_768)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    stop: str | list[str] | None = None
    seed: int | None = Field(None, ge=-(2**63), lt=2**64, description="Same seed, same sampled reply.")


def _holder(model: str) -> str:
    return openai_holder(current_user().id, model)


async def _worker_for(model: str) -> WorkerInfo:
    s = services()
    held = await s.runtime.holding(_holder(model))
    if held is not None:
        return held
    await s.limits.check_load(current_user(), _holder(model), model, s.settings.default_device)
    return await s.runtime.load(_holder(model), model, s.settings.default_device)


@blueprint.get("/models")
async def list_models() -> dict[str, Any]:
    found = await services().runtime.models()
    return {"object": "list", "data": [{"id": m.name, "object": "model", "created": 0, "owned_by": "local"} for m in found]}


@blueprint.post("/chat/completions")
@validate_request(CompletionRequest)
async def chat_completions(data: CompletionRequest) -> Response | dict[str, Any]:
    s = services()
    limit = s.settings.max_message_chars
    messages = [
        ChatMessage("system" if m.role == "developer" else m.role, m.text())  # type: ignore[arg-type]
        for m in data.messages
    ]
    if any(len(m.content) > limit for m in messages):
        raise MessageTooLong(f"a message is longer than {limit} characters (LLMCHAT_MAX_MESSAGE_CHARS)")
    stop = tuple([data.stop] if isinstance(data.stop, str) else data.stop or [])
    user = current_user()
    left = await s.limits.tokens_left(user)
    asked = data.max_completion_tokens or data.max_tokens or s.settings.default_max_new_tokens
    params = GenerationParams(
        max_new_tokens=asked if left is None else min(asked, left),
        temperature=s.settings.default_temperature if data.temperature is None else data.temperature,
        top_p=data.top_p or s.settings.default_top_p,
        stop=stop,
        seed=data.seed,
    )
    worker = await _worker_for(data.model)
    fitted = await s.runtime.fit(_holder(data.model), messages, params.max_new_tokens)
    completion_id = f"chatcmpl-{uuid.uuid4().hex}"
    created = int(time.time())
    s.limits.begin_reply(user)
    counted = _Counted(s.limits, s.metrics, user.id, worker.key.model)
    events = s.runtime.generate(_holder(data.model), fitted.messages, params)
    try:
        first = await _first_output(events, worker.key.model)  # refusals and failures in the queue keep their HTTP status
    except BaseException:
        await events.aclose()
        s.limits.end_reply(user.id)
        raise
    if data.stream:
        include_usage = bool(data.stream_options and data.stream_options.include_usage)
        return sse.respond(_chunks(first, events, completion_id, created, worker.key.model, include_usage, counted))
    parts: list[str] = []
    finished: Finished | None = None
    try:
        async with contextlib.aclosing(events) as stream:
            event: Event | None = first
            while event is not None:
                if isinstance(event, TokenChunk):
                    parts.append(event.text)
                    counted.token()
                elif isinstance(event, Finished):
                    finished = counted.finished = event
                    break
                event = await anext(stream, None)
    finally:
        await asyncio.shield(counted.settle())
    assert finished is not None
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": created,
        "model": worker.key.model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "".join(parts)},
                "finish_reason": _FINISH[finished.finish_reason],
            }
        ],
        "usage": _usage(finished),
    }


class _Counted:
    """One /v1 reply's place among its user's replies at once, and its tokens for the day's usage."""

    def __init__(self, limits: Limits, metrics: Metrics, user_id: int, model: str) -> None:
        # Held here: a streamed reply ends outside the request's app context.
        self.limits, self.metrics = limits, metrics
        self.user_id, self.model = user_id, model
        self.tokens = 0  # chunks seen: the count when the worker's metrics never come
        self.finished: Finished | None = None

    def token(self) -> None:
        self.tokens += 1
        self.metrics.observe_token(self.model)

    async def settle(self) -> None:
        limits = self.limits
        limits.end_reply(self.user_id)
        m = self.finished.metrics if self.finished is not None else None
        await limits.record(self.user_id, m.prompt_tokens if m else 0, m.completion_tokens if m else self.tokens)


async def _first_output(events: AsyncGenerator[Event, None], model: str) -> TokenChunk | Finished:
    """Wait past the queue for the first token (or the end of an empty reply)."""
    async for event in events:
        if not isinstance(event, Queued):
            return event
        if event.started:
            services().metrics.observe_start(model, event)
    raise ModelRuntimeError("the reply ended before it started")


def _usage(finished: Finished) -> dict[str, Any]:
    m = finished.metrics
    return {
        "prompt_tokens": m.prompt_tokens,
        "completion_tokens": m.completion_tokens,
        "total_tokens": m.prompt_tokens + m.completion_tokens,
        "prompt_tokens_details": {"cached_tokens": m.cached_tokens},
    }


async def _chunks(
    first: TokenChunk | Finished, events: AsyncGenerator[Event, None], completion_id: str, created: int, model: str,
    include_usage: bool, counted: _Counted,
) -> AsyncIterator[bytes]:
    def chunk(delta: dict[str, Any], finish: str | None, usage: dict[str, Any] | None = None) -> bytes:
        body: dict[str, Any] = {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}] if usage is None else [],
        }
        if usage is not None:
            body["usage"] = usage
        return f"data: {json.dumps(body, ensure_ascii=False)}\n\n".encode()

    try:
        yield chunk({"role": "assistant", "content": ""}, None)
        event: Event | None = first
        while event is not None:
            if isinstance(event, TokenChunk):
                counted.token()
                yield chunk({"content": event.text}, None)
            elif isinstance(event, Finished):
                counted.finished = event
                yield chunk({}, _FINISH[event.finish_reason])
                if include_usage:
                    yield chunk({}, None, _usage(event))
                break
            event = await anext(events, None)
    except Exception as exc:  # noqa: BLE001 - the stream's end says what happened, in OpenAI's error shape
        yield f"data: {json.dumps(error_payload(describe(exc), openai=True))}\n\n".encode()
    finally:
        await events.aclose()
        await asyncio.shield(counted.settle())
    yield b"data: [DONE]\n\n"
