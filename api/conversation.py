"""Chat turns: store the user's message, make sure a model is loaded, fit the history to
the context window, stream the reply, and store it with its metrics and final status.

The user's message is written before anything that can fail; the reply row is created
before generation starts and flushed while it streams, so a stop, a disconnect, a dead
worker or a dead server leaves the partial reply stored with an honest status.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

from tortoise.exceptions import ValidationError

from api.chatlog import ChatLog
from api.errors import ApiError, ChatBusy, ChatNotFound, MessageTooLong, NotLoaded
from api.metrics import Metrics
from api.settings import ApiSettings
from api.store import Chat, Message
from runtime.client import ModelRuntime, WorkerInfo
from runtime.errors import Busy, ModelRuntimeError
from runtime.protocol import ChatMessage, Device, Finished, GenerationParams, TokenChunk

FLUSH_EVERY_S = 1.0


@dataclass(frozen=True, slots=True)
class Turn:
    """A reply about to be generated: its stored row, its prompt and its settings."""

    chat: Chat
    reply: Message
    messages: tuple[ChatMessage, ...]
    params: GenerationParams
    dropped: int
    worker: WorkerInfo


@dataclass(frozen=True, slots=True)
class ReplyDone:
    """The stored outcome of a turn, sent as the final event of a stream."""

    message_id: int
    status: str
    text: str
    prompt_tokens: int
    completion_tokens: int
    time_to_first_token_s: float
    total_time_s: float
    tokens_per_s: float
    dropped_messages: int
    model: str
    device: str


class Conversations:
    """Runs chat turns against the runtime and keeps the database in step."""

    def __init__(self, runtime: ModelRuntime, settings: ApiSettings, chatlog: ChatLog, metrics: Metrics) -> None:
        self.runtime = runtime
        self.settings = settings
        self.chatlog = chatlog
        self.metrics = metrics
        self._stops: dict[str, asyncio.Event] = {}

    # Chats

    async def get(self, chat_id: str) -> Chat:
        try:
            chat = await Chat.get_or_none(id=chat_id)
        except ValidationError:  # an id no chat can have (too long): the ORM refuses to look
            chat = None
        if chat is None:
            raise ChatNotFound(f"no chat with id {chat_id!r}")
        return chat

    async def get_or_create(self, chat_id: str) -> Chat:
        chat, created = await Chat.get_or_create(id=chat_id, defaults=self._defaults())
        if created:
            await self.chatlog.write(chat_id, "chat created")
        return chat

    def _defaults(self) -> dict[str, object]:
        s = self.settings
        return {"temperature": s.default_temperature, "top_p": s.default_top_p, "max_new_tokens": s.default_max_new_tokens}

    async def delete(self, chat_id: str) -> None:
        chat = await self.get(chat_id)
        self.stop(chat_id)
        await self.runtime.unload(chat_id)
        await chat.delete()
        await self.chatlog.delete(chat_id)

    def is_generating(self, chat_id: str) -> bool:
        return chat_id in self._stops

    def stop(self, chat_id: str) -> bool:
        """Stop the chat's running reply; it is stored with status ``stopped``."""
        event = self._stops.get(chat_id)
        if event is None:
            return False
        event.set()
        return True

    # Models

    async def load(
        self,
        chat: Chat,
        model: str,
        device: Device | None,
        backend: str | None = None,
        idle_unload_s: float | None = None,
    ) -> WorkerInfo:
        device = device or self.settings.default_device  # type: ignore[assignment]
        await self.chatlog.write(chat.id, f"load {model} on {device}")
        worker = await self.runtime.load(chat.id, model, device, backend, idle_unload_s)  # type: ignore[arg-type]
        self.metrics.observe_load(worker)
        chat.model, chat.device, chat.backend = worker.key.model, worker.key.device, worker.key.backend
        await chat.save(update_fields=["model", "device", "backend", "updated_at"])
        await self.chatlog.write(
            chat.id, f"loaded {model} with {worker.key.backend} on {worker.device} in {worker.load_time_s:.2f} s"
        )
        return worker

    async def _ensure_loaded(self, chat: Chat, model: str | None, device: Device | None) -> WorkerInfo:
        held = self.runtime.holding(chat.id)
        if model is None:
            if held is None:
                raise NotLoaded(
                    "no model is loaded for this chat: load one with POST /load, or name one with ?model="
                )
            return held
        wanted_device = device or (held.key.device if held and held.key.model == model else None)
        if held is not None and held.key.model == model and held.key.device == (wanted_device or held.key.device):
            return held
        return await self.load(chat, model, wanted_device)

    # Turns

    async def start_turn(self, chat_id: str, text: str, model: str | None, device: Device | None) -> Turn:
        if len(text) > self.settings.max_message_chars:
            raise MessageTooLong(
                f"the message has {len(text)} characters; the limit is {self.settings.max_message_chars}"
                " (LLMCHAT_MAX_MESSAGE_CHARS)"
            )
        if self.is_generating(chat_id):
            raise ChatBusy("a reply is still being generated for this chat; stop it or wait for it")
        chat = await self.get_or_create(chat_id)
        await Message.create(chat=chat, role="user", text=text)  # stored before anything can fail
        await chat.save(update_fields=["updated_at"])
        await self.chatlog.write(chat_id, f"user: {text}")
        worker = await self._ensure_loaded(chat, model, device)
        return await self._prepare_reply(chat, worker)

    async def regenerate(self, chat_id: str) -> Turn:
        chat = await self.get(chat_id)
        if self.is_generating(chat_id):
            raise ChatBusy("a reply is still being generated for this chat; stop it or wait for it")
        last = await Message.filter(chat=chat).order_by("-id").first()
        if last is None:
            raise ApiError("the chat has no messages to answer")
        if last.role == "assistant":
            await last.delete()
            await self.chatlog.write(chat_id, f"regenerate: replaced message {last.id}")
        worker = await self._ensure_loaded(chat, None, None)
        return await self._prepare_reply(chat, worker)

    async def _prepare_reply(self, chat: Chat, worker: WorkerInfo) -> Turn:
        history = [ChatMessage("system", chat.system_prompt)] if chat.system_prompt.strip() else []
        for stored in await Message.filter(chat=chat).order_by("id"):
            if stored.role == "assistant" and (stored.status == "streaming" or not stored.text):
                continue
            history.append(ChatMessage(stored.role, stored.text))  # type: ignore[arg-type]
        params = GenerationParams(chat.max_new_tokens, chat.temperature, chat.top_p)
        fitted = await self.runtime.fit(chat.id, history, params.max_new_tokens)
        reply = await Message.create(
            chat=chat,
            role="assistant",
            text="",
            status="streaming",
            model=worker.key.model,
            device=worker.device,
            backend=worker.key.backend,
            dropped_messages=fitted.dropped,
            prompt_tokens=fitted.prompt_tokens,
        )
        return Turn(chat, reply, fitted.messages, params, fitted.dropped, worker)

    async def run(self, turn: Turn) -> AsyncIterator[str | ReplyDone]:
        """Yield the reply's text chunks, then one :class:`ReplyDone`; errors are raised after storing."""
        chat_id = turn.chat.id
        stop = asyncio.Event()
        self._stops[chat_id] = stop
        parts: list[str] = []
        finished: Finished | None = None
        error: ModelRuntimeError | None = None
        started = time.perf_counter()
        first_at: float | None = None
        flushed_at = started
        try:
            async with contextlib.aclosing(
                self.runtime.generate(chat_id, turn.messages, turn.params)
            ) as events:
                async for event in events:
                    if isinstance(event, TokenChunk):
                        first_at = first_at or time.perf_counter()
                        parts.append(event.text)
                        yield event.text
                        if time.perf_counter() - flushed_at > FLUSH_EVERY_S:
                            turn.reply.text = "".join(parts)
                            await turn.reply.save(update_fields=["text"])
                            flushed_at = time.perf_counter()
                    else:
                        finished = event
                    if stop.is_set():
                        break
        except ModelRuntimeError as exc:
            error = exc
            raise
        finally:
            self._stops.pop(chat_id, None)
            ended = time.perf_counter()
            if isinstance(error, Busy) and not parts:
                # Refused before it started: no reply to keep (the user's message stays).
                await asyncio.shield(asyncio.ensure_future(turn.reply.delete()))
            else:
                outcome = asyncio.ensure_future(
                    self._store(turn, parts, finished, error, first_at, started, ended)
                )
                done = await asyncio.shield(outcome)
        yield done

    async def _store(
        self,
        turn: Turn,
        parts: list[str],
        finished: Finished | None,
        error: ModelRuntimeError | None,
        first_at: float | None,
        started: float,
        ended: float,
    ) -> ReplyDone:
        reply = turn.reply
        text = reply.text = "".join(parts)
        if finished is not None and finished.finish_reason != "aborted":
            m = finished.metrics
            reply.status = "complete"
            reply.prompt_tokens = m.prompt_tokens
            reply.completion_tokens = m.completion_tokens
            reply.time_to_first_token_s = m.time_to_first_token_s
            reply.total_time_s = m.total_time_s
            reply.tokens_per_s = m.tokens_per_s
        else:
            # Stopped, disconnected or failed: the worker's metrics never came, so measure
            # here. A worker sends one chunk per token that shows text, so chunks ~ tokens.
            reply.status = "error" if error is not None else "stopped"
            reply.error = str(error) if error is not None else None
            total = ended - started
            reply.completion_tokens = len(parts)
            reply.time_to_first_token_s = (first_at - started) if first_at else total
            reply.total_time_s = total
            reply.tokens_per_s = reply.completion_tokens / total if total > 0 else 0.0
        await reply.save()
        await turn.chat.save(update_fields=["updated_at"])
        self.metrics.observe_reply(turn.worker.key.model, reply.status, reply.completion_tokens or 0,
                                   reply.time_to_first_token_s or 0.0, reply.tokens_per_s or 0.0)
        note = f" ({reply.error})" if reply.error else ""
        await self.chatlog.write(
            turn.chat.id,
            f"assistant [{reply.status}{note}; {reply.completion_tokens} tokens, {reply.total_time_s:.2f} s, "
            f"{reply.tokens_per_s:.1f} tokens/s, {turn.dropped} dropped]: {text}",
        )
        return ReplyDone(
            message_id=reply.id,
            status=reply.status,
            text=text,
            prompt_tokens=reply.prompt_tokens or 0,
            completion_tokens=reply.completion_tokens or 0,
            time_to_first_token_s=reply.time_to_first_token_s or 0.0,
            total_time_s=reply.total_time_s or 0.0,
            tokens_per_s=reply.tokens_per_s or 0.0,
            dropped_messages=turn.dropped,
            model=turn.worker.key.model,
            device=turn.worker.device,
        )
