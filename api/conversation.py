"""Chat turns: reserve the chat, make sure a model is loaded, fit the history to the context,
wait until the runtime accepts the request, then store the question and stream and store
the reply with its metrics and final status.

A refused request (a chat still answering, no model, a message too long, a full queue)
stores nothing. Once the runtime accepts it, the user's message and the reply row are
written before the first token; the reply is flushed while it streams and finished under
``asyncio.shield``, so a stop, a disconnect, a dead worker or a dead server leaves the
partial reply stored with an honest status: every stored question has its answer row.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncGenerator, Coroutine
from dataclasses import dataclass, field
from typing import Any

from tortoise.exceptions import ValidationError
from tortoise.transactions import in_transaction

from api import branches
from api.chatlog import ChatLog
from api.errors import (
    ApiError,
    ChatBusy,
    ChatNotFound,
    MessageNotFound,
    MessageTooLong,
    NotLoaded,
    ReplyFailed,
    describe,
)
from api.limits import Limits
from api.metrics import Metrics
from api.replicas import Replicas
from api.schemas import ChatMessage as MessageOut
from api.schemas import StartEvent
from api.settings import ApiSettings
from api.store import Chat, Message, User
from runtime.errors import GenerationFailed, ModelRuntimeError
from runtime.interface import Event, FittedPrompt, ModelRuntime, Queued, WorkerInfo
from runtime.protocol import ChatMessage, Device, Finished, GenerationParams, Role, TokenChunk

FLUSH_EVERY_S = 1.0
RESERVED_CHAT_IDS = frozenset({"export", "import"})  # paths under /chats/ that are routes, not chats


ROLES: dict[str, Role] = {"user": "user", "assistant": "assistant"}  # as stored -> as the model sees it


def message_out(m: Message) -> MessageOut:
    """A stored message as every endpoint and event shows it (validated: the columns are plain strings)."""
    return MessageOut.model_validate({
        "id": m.id, "parent_id": m.parent_id, "sender": m.role, "text": m.text, "timestamp": m.created_at.isoformat(), "status": m.status,
        "error": m.error, "model": m.model, "backend": m.backend, "running_on": m.running_on,
        "prompt_tokens": m.prompt_tokens, "tokens": m.completion_tokens,
        "time_to_first_token_s": m.time_to_first_token_s, "time_s": m.total_time_s, "tps": m.tokens_per_s,
        "dropped_messages": m.dropped_messages,
    })


@dataclass(eq=False)
class ActiveReply:
    """A chat's reply in progress. Reserved before the first ``await`` of a turn, so a chat
    runs one reply at a time; its stop signal belongs to this reply alone."""

    chat_id: str
    owner: User
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    message_id: int | None = None
    handed_off: bool = False  # the reply's stream (or its clean-up) releases the chat once stored


ReplyItem = str | Queued | MessageOut


class Reply:
    """An accepted reply: ``start`` is what was stored; :meth:`items` yields where it stands
    in line while it waits for a slot (:class:`Queued`, only if it has to wait), the text as
    it comes, then the stored :class:`MessageOut` (or raises the runtime error, after storing
    it). :meth:`aclose` ends it early (stored as stopped), whether or not it was iterated."""

    def __init__(self, start: StartEvent, first: ReplyItem, rest: AsyncGenerator[ReplyItem, None]) -> None:
        self.start = start
        self._first = first
        self._rest = rest

    async def items(self) -> AsyncGenerator[ReplyItem, None]:
        yield self._first
        async for item in self._rest:
            yield item

    async def aclose(self) -> None:
        await self._rest.aclose()


async def _next_or_stop(events: AsyncGenerator[Event, None], stop: asyncio.Event) -> Event | None:
    """The next event, or None once ``stop`` is set (the pending step is cancelled, which aborts it)."""
    if stop.is_set():
        return None
    step = asyncio.ensure_future(anext(events))
    stopped = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({step, stopped}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopped.cancel()
        if not step.done():
            step.cancel()
            with contextlib.suppress(BaseException):
                await step
    return step.result() if not step.cancelled() else None


class Conversations:
    """Runs chat turns against the runtime and keeps the database in step."""

    def __init__(
        self, runtime: ModelRuntime, settings: ApiSettings, chatlog: ChatLog, metrics: Metrics, limits: Limits
    ) -> None:
        self.runtime = runtime
        self.settings = settings
        self.chatlog = chatlog
        self.metrics = metrics
        self.limits = limits
        self._active: dict[str, ActiveReply] = {}
        self._tasks: set[asyncio.Future[None]] = set()  # clean-ups that outlive their request
        self.peers: Replicas | None = None  # the other API replicas, when several serve (api.replicas)

    # Chats

    async def get(self, chat_id: str, owner: User) -> Chat:
        """The owner's chat; another user's answers as if there were none (nothing of it leaks)."""
        try:
            chat = await Chat.get_or_none(id=chat_id, owner_id=owner.id)
        except ValidationError:  # an id no chat can have (too long): the ORM refuses to look
            chat = None
        if chat is None:
            raise _not_found(chat_id)
        return chat

    async def claim(self, chat_id: str, owner: User) -> tuple[Chat, bool]:
        """The owner's chat, created if no chat has the id (and whether it was); another
        user's id answers :class:`ChatNotFound`. Creating is atomic (the id is the key), so of
        two users asking for one new id at once, one gets it and the other is refused before
        anything is loaded for it."""
        if chat_id in RESERVED_CHAT_IDS:  # GET /chats/export would answer instead of the chat
            raise ApiError(f"the chat id {chat_id!r} is reserved (it names a route under /chats/); choose another")
        chat, created = await Chat.get_or_create(id=chat_id, defaults={**self._defaults(), "owner_id": owner.id})
        if chat.owner_id != owner.id:
            raise _not_found(chat_id)
        if created:
            await self.chatlog.write(chat_id, "chat created")
        return chat, created

    async def check_owner(self, chat_id: str, owner: User) -> None:
        """Refuse (as not found) an id that is another user's chat; a free id passes."""
        try:
            found = await Chat.filter(id=chat_id).values_list("owner_id", flat=True)
        except ValidationError:
            found = []
        if found and found[0] != owner.id:
            raise _not_found(chat_id)

    def _defaults(self) -> dict[str, object]:
        s = self.settings
        return {"temperature": s.default_temperature, "top_p": s.default_top_p, "max_new_tokens": s.default_max_new_tokens}

    async def delete(self, chat_id: str, owner: User) -> None:
        chat = await self.get(chat_id, owner)
        self.stop(chat_id)
        await self.runtime.unload(chat_id)
        await chat.delete()
        await self.chatlog.delete(chat_id)

    def stop(self, chat_id: str, message_id: int | None = None) -> ActiveReply | None:
        """Stop the chat's reply in progress (stored as ``stopped``), or only reply ``message_id``;
        the reply it stopped, if any."""
        active = self._active.get(chat_id)
        if active is None or (message_id is not None and active.message_id != message_id):
            return None
        active.stop.set()
        return active

    async def stop_anywhere(self, chat_id: str, message_id: int | None = None) -> tuple[bool, int | None]:
        """:meth:`stop`, on whichever replica streams the reply: whether one was stopped, and its id."""
        stopped = self.stop(chat_id, message_id)
        if stopped is not None or self.peers is None:
            return stopped is not None, stopped.message_id if stopped else None
        streaming = Message.filter(chat_id=chat_id, status="streaming", role="assistant")
        reply = await (streaming.filter(id=message_id) if message_id is not None else streaming).order_by("-id").first()
        if reply is None:
            return False, None
        await self.peers.stop_chat(chat_id, reply.id)
        return True, reply.id

    def stop_user(self, user_id: int) -> int:
        """Stop every reply in progress in the user's chats (a disabled user); how many."""
        stopping = [a for a in self._active.values() if a.owner.id == user_id]
        for active in stopping:
            active.stop.set()
        return len(stopping)

    async def stop_user_anywhere(self, user_id: int) -> None:
        """:meth:`stop_user` on every replica."""
        self.stop_user(user_id)
        if self.peers is not None:
            await self.peers.stop_user(user_id)

    def answering(self, chat_id: str) -> bool:
        """Whether a reply for the chat is in progress."""
        return chat_id in self._active

    def _reserve(self, chat_id: str, owner: User) -> ActiveReply:
        """Claim the chat for one reply, counted against its owner's replies at once.
        Synchronous, so two requests cannot both pass."""
        if chat_id in self._active:
            raise ChatBusy("a reply is still being generated for this chat; stop it or wait for it")
        self.limits.begin_reply(owner)
        active = self._active[chat_id] = ActiveReply(chat_id, owner)
        return active

    def _release(self, active: ActiveReply) -> None:
        if self._active.get(active.chat_id) is active:
            del self._active[active.chat_id]
            self.limits.end_reply(active.owner.id)
            if self.peers is not None and active.message_id is not None:
                self._background(self.peers.release(active.message_id))

    # Models

    async def load(
        self, chat_id: str, owner: User, model: str, device: Device | None, backend: str | None = None,
        idle_unload_s: float | None = None, parallel: int | None = None,
    ) -> WorkerInfo:
        """Load a model for the owner's chat (a new id creates the chat, kept only if the load
        succeeds), and remember the choice."""
        requested: Device = device or self.settings.default_device
        await self.limits.check_load(owner, chat_id, model, requested)
        chat, created = await self.claim(chat_id, owner)
        try:
            worker = await self.runtime.load(chat_id, model, requested, backend, idle_unload_s, parallel)
        except BaseException:
            if created:  # a refused load stores nothing
                await asyncio.shield(self._forget(chat))
            raise
        self.metrics.observe_load(worker)
        chat.model, chat.requested_device, chat.backend = worker.key.model, worker.key.requested_device, worker.key.backend
        await chat.save(update_fields=["model", "requested_device", "backend", "updated_at"])
        await self.chatlog.write(
            chat.id, f"loaded {model} with {worker.key.backend} on {worker.running_on} (asked for {requested}) "
            f"in {worker.load_time_s:.2f} s"
        )
        return worker

    async def _forget(self, chat: Chat) -> None:
        await chat.delete()
        await self.chatlog.delete(chat.id)

    async def _ensure_loaded(self, chat_id: str, owner: User, model: str | None, device: Device | None) -> WorkerInfo:
        held = await self.runtime.holding(chat_id)
        if model is None:
            if held is None:
                reason = await self.runtime.exit_reason(chat_id)
                raise NotLoaded(
                    (f"the chat's model stopped ({reason}); " if reason else "no model is loaded for this chat: ")
                    + "load one with POST /load, or name one with ?model="
                )
            return held
        wanted = device or (held.key.requested_device if held and held.key.model == model else None)
        if held is not None and held.key.model == model and held.key.requested_device == (wanted or held.key.requested_device):
            return held
        return await self.load(chat_id, owner, model, wanted)

    # Turns

    async def start(
        self, chat_id: str, owner: User, text: str | None, model: str | None = None, device: Device | None = None,
        edit_of: int | None = None, again: int | None = None,
    ) -> Reply:
        """Begin a reply: to ``text``, a new user message after the branch shown (or in place
        of question ``edit_of``, beside it), or with ``text=None`` a new reply beside reply
        ``again`` (default: the last one shown; regenerate). Nothing is replaced: the earlier
        question or reply stays as a sibling. Returns once the first token is there, or once
        the request is in line when every slot of the model is busy; raises, having stored
        nothing, if the request is refused."""
        if text is not None and len(text) > self.settings.max_message_chars:
            raise MessageTooLong(
                f"the message has {len(text)} characters; the limit is {self.settings.max_message_chars}"
                " (LLMCHAT_MAX_MESSAGE_CHARS)"
            )
        await self.check_owner(chat_id, owner)
        active = self._reserve(chat_id, owner)
        try:
            return await self._open(active, text, model, device, edit_of, again)
        except BaseException:
            if not active.handed_off:
                self._release(active)
            raise

    async def _open(
        self, active: ActiveReply, text: str | None, model: str | None, device: Device | None,
        edit_of: int | None, again: int | None,
    ) -> Reply:
        chat_id = active.chat_id
        if text is None or edit_of is not None:
            await self.get(chat_id, active.owner)  # regenerate and edit: the chat must exist
        worker = await self._ensure_loaded(chat_id, active.owner, model, device)
        chat = await self.get(chat_id, active.owner)  # it exists once a model is loaded for it
        parent, before = await _place(chat, text, edit_of, again)
        history = [ChatMessage("system", chat.system_prompt)] if chat.system_prompt.strip() else []
        history += [ChatMessage(ROLES[m.role], m.text) for m in before
                    if m.role == "user" or (m.status != "streaming" and m.text)]
        if text is not None:
            history.append(ChatMessage("user", text))
        left = await self.limits.tokens_left(active.owner)
        max_new = chat.max_new_tokens if left is None else min(chat.max_new_tokens, left)
        params = GenerationParams(max_new, chat.temperature, chat.top_p)
        fitted = await self.runtime.fit(chat_id, history, params.max_new_tokens)
        started = time.perf_counter()
        events = self.runtime.generate(chat_id, fitted.messages, params, session=chat_id)
        try:
            accepted = await _next_or_stop(events, active.stop)  # refusals are raised here
        except BaseException:
            await events.aclose()
            raise
        # Accepted: from here on, the question and its answer row are stored, whatever happens.
        active.handed_off = True
        accepting = asyncio.ensure_future(self._accept(chat, text, parent, worker, fitted, edit_of, again))
        try:
            reply = await asyncio.shield(accepting)
        except BaseException as exc:  # cancelled meanwhile, or the database failed
            self._background(self._abandon(active, accepting, events, exc))
            raise
        active.message_id = reply.id
        if self.peers is not None:  # held while this replica streams it; if it dies, the others cut it
            await self.peers.claim(reply.id)
        turn = _Turn(chat, reply, worker, fitted.dropped, started)
        stream = self._stream(active, turn, events, accepted)
        try:
            first = await anext(stream)  # the first token or place in line: a failure before keeps its HTTP status
        except ModelRuntimeError as exc:
            raise ReplyFailed(exc, reply.id) from exc
        start = StartEvent(message_id=reply.id, model=worker.key.model, backend=worker.key.backend,
                           running_on=worker.running_on, dropped_messages=fitted.dropped)
        return Reply(start, first, stream)

    async def _accept(
        self, chat: Chat, text: str | None, parent: int | None, worker: WorkerInfo, fitted: FittedPrompt,
        edit_of: int | None, again: int | None,
    ) -> Message:
        """Store the question and its answer row together, and show their branch."""
        async with in_transaction():
            if text is not None:
                question = await Message.create(chat=chat, role="user", text=text, parent_id=parent)
                parent = question.id
            reply = await Message.create(
                chat=chat, role="assistant", text="", status="streaming", model=worker.key.model,
                running_on=worker.running_on, backend=worker.key.backend, dropped_messages=fitted.dropped,
                prompt_tokens=fitted.prompt_tokens, parent_id=parent,
            )
            await Chat.filter(id=chat.id).update(current_message_id=reply.id)
        chat.current_message_id = reply.id
        if text is not None:
            await self.chatlog.write(chat.id, f"user{f' (edit of message {edit_of})' if edit_of else ''}: {text}")
        else:
            await self.chatlog.write(chat.id, f"regenerate: a new reply beside message {again or 'the last'}")
        return reply

    async def _abandon(
        self, active: ActiveReply, accepting: asyncio.Future[Message], events: AsyncGenerator[Event, None],
        cause: BaseException,
    ) -> None:
        """The turn's caller went away between acceptance and the stream: finish its books."""
        with contextlib.suppress(BaseException):
            await events.aclose()
        try:
            reply = await accepting
        except BaseException:  # noqa: BLE001 - nothing was stored (the transaction rolled back)
            self._release(active)
            return
        try:
            stopped = isinstance(cause, asyncio.CancelledError)
            reply.status = "stopped" if stopped else "error"
            reply.error = None if stopped else describe(cause).detail  # type: ignore[assignment]
            await reply.save(update_fields=["status", "error"])
        finally:
            self._release(active)

    def _background(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _stream(
        self, active: ActiveReply, turn: _Turn, events: AsyncGenerator[Event, None], event: Event | None
    ) -> AsyncGenerator[ReplyItem, None]:
        parts: list[str] = []
        waited = False
        finished: Finished | None = None
        error: ModelRuntimeError | None = None
        first_at: float | None = None
        flushed_at = time.perf_counter()
        stored: MessageOut | None = None
        try:
            while event is not None and not active.stop.is_set():
                if isinstance(event, Queued):
                    if event.started:
                        self.metrics.observe_start(turn.worker.key.model, event)
                    if event.position > 0 or waited:  # only a request that waits says where it stands
                        waited = True
                        yield event
                elif isinstance(event, TokenChunk):
                    first_at = first_at or time.perf_counter()
                    parts.append(event.text)
                    self.metrics.observe_token(turn.worker.key.model)
                    yield event.text
                    if time.perf_counter() - flushed_at > FLUSH_EVERY_S:
                        turn.reply.text = "".join(parts)
                        await turn.reply.save(update_fields=["text"])
                        flushed_at = time.perf_counter()
                elif isinstance(event, Finished):
                    finished = event
                    break
                event = await _next_or_stop(events, active.stop)
        except ModelRuntimeError as exc:
            error = exc
        except Exception as exc:  # noqa: BLE001 - e.g. the database failed mid-reply: stored as an error
            error = GenerationFailed(describe(exc).detail)
        finally:
            with contextlib.suppress(BaseException):
                await events.aclose()
            outcome = asyncio.ensure_future(self._store(turn, parts, finished, error, first_at, time.perf_counter()))
            outcome.add_done_callback(lambda _: self._release(active))  # a new turn sees this one stored
            stored = await asyncio.shield(outcome)
        if error is not None:
            raise error
        yield stored

    async def _store(
        self, turn: _Turn, parts: list[str], finished: Finished | None, error: ModelRuntimeError | None,
        first_at: float | None, ended: float,
    ) -> MessageOut:
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
            reply.error = str(error) if error is not None else None  # type: ignore[assignment]
            total = ended - turn.started
            reply.completion_tokens = len(parts)
            reply.time_to_first_token_s = (first_at - turn.started) if first_at else total
            reply.total_time_s = total
            reply.tokens_per_s = reply.completion_tokens / total if total > 0 else 0.0
        await reply.save()
        await turn.chat.save(update_fields=["updated_at"])
        if turn.chat.owner_id is not None:
            await self.limits.record(turn.chat.owner_id, reply.prompt_tokens or 0, reply.completion_tokens or 0)
        self.metrics.observe_reply(turn.worker.key.model, reply.status, reply.completion_tokens or 0,
                                   reply.time_to_first_token_s or 0.0, reply.tokens_per_s or 0.0)
        note = f" ({reply.error})" if reply.error else ""
        await self.chatlog.write(
            turn.chat.id,
            f"assistant [{reply.status}{note}; {reply.completion_tokens} tokens, {reply.total_time_s:.2f} s, "
            f"{reply.tokens_per_s:.1f} tokens/s, {turn.dropped} dropped]: {text}",
        )
        beside = Message.filter(chat_id=turn.chat.id)
        beside = beside.filter(parent_id=reply.parent_id) if reply.parent_id else beside.filter(parent_id__isnull=True)
        ids = await beside.order_by("id").values_list("id", flat=True)
        return message_out(reply).model_copy(update={"siblings": list(ids)})


@dataclass(frozen=True, slots=True)
class _Turn:
    """An accepted reply's stored rows and what it runs on."""

    chat: Chat
    reply: Message
    worker: WorkerInfo
    dropped: int
    started: float


async def _place(
    chat: Chat, text: str | None, edit_of: int | None, again: int | None
) -> tuple[int | None, list[Message]]:
    """Where a turn's first new message goes (its parent) and the branch the model reads
    before it: after the branch shown, beside question ``edit_of``, or (``text`` None) a
    reply beside ``again`` or the last reply shown."""
    messages, shown = await branches.shown(chat)
    by_id = {m.id: m for m in messages}
    if edit_of is not None:
        edited = by_id.get(edit_of)
        if edited is None or edited.role != "user":
            raise MessageNotFound(f"the chat has no question with id {edit_of} to edit")
        parent = edited.parent_id
    elif text is not None:
        parent = shown[-1].id if shown else None
    elif again is not None:
        redone = by_id.get(again)
        if redone is None or redone.role != "assistant" or redone.parent_id is None:
            raise MessageNotFound(f"the chat has no reply with id {again} to make again")
        parent = redone.parent_id
    else:
        if not shown:
            raise ApiError("the chat has no messages to answer")
        last = shown[-1]
        parent = last.parent_id if last.role == "assistant" else last.id
        if parent is None:
            raise ApiError("the chat has no question to answer")
    return parent, branches.path(messages, parent) if parent is not None else []


def _not_found(chat_id: str) -> ChatNotFound:
    shown = chat_id if len(chat_id) <= 80 else chat_id[:80] + "…"
    return ChatNotFound(f"no chat with id {shown!r}")
