"""The chat API's endpoints: status, chats, history and branches, load, unload, chat, token counts, models,
metrics, and chat management."""

from __future__ import annotations

import contextlib
import hmac
import uuid

from quart import Blueprint, Response, g, request
from quart_schema import document_response, validate_querystring, validate_request, validate_response
from tortoise.functions import Count, Min

from api import branches, metrics, sse
from api.auth import CREDENTIALS, current_identity, current_user, public, require_admin
from api.chat_pages import chat_page, decode_cursor
from api.conversation import Reply, message_out
from api.errors import (
    ApiError,
    ChatBusy,
    MessageNotFound,
    MessageTooLong,
    NotLoaded,
    ReplyFailed,
    Unauthenticated,
)
from api.holders import openai_user
from api.openapi import streams_events
from api.schemas import (
    BranchRequest,
    BuildEntry,
    ChatDetail,
    ChatList,
    ChatListQuery,
    ChatMessage,
    ChatMeta,
    ChatQuery,
    ChatRequest,
    ChatResponse,
    ChatSettings,
    CreateChatRequest,
    Deleted,
    History,
    HistoryQuery,
    LoadRequest,
    LoadResponse,
    ModelEntry,
    ModelList,
    OptionalChatIdQuery,
    RegenerateRequest,
    StatusResponse,
    Stopped,
    StopQuery,
    TokenCount,
    TokenCountRequest,
    UnloadRequest,
    UnloadResponse,
    WorkerState,
)
from api.services import services
from api.store import Chat, Message, chat_title
from runtime.errors import ModelRuntimeError
from runtime.interface import WorkerInfo
from runtime.protocol import ChatMessage as RuntimeMessage

blueprint = Blueprint("endpoints", __name__)


def worker_state(w: WorkerInfo) -> WorkerState:
    return WorkerState(
        model=w.key.model, device=w.key.requested_device, backend=w.key.backend, running_on=w.running_on,
        pid=w.pid, context_length=w.context_length, load_time_s=w.load_time_s, chats=list(w.holders), busy=w.busy,
        queued=w.queued, running=w.running, parallel=w.parallel, idle_s=w.idle_s, idle_unload_s=w.idle_unload_s,
        cuda_visible_devices=w.cuda_visible_devices, node=w.node,
    )


async def _summaries(chat_ids: list[str]) -> dict[str, tuple[int, str | None]]:
    """Message count and first user message of each chat, in three queries whatever their number."""
    counts = await (Message.filter(chat_id__in=chat_ids).group_by("chat_id")
                    .annotate(n=Count("id")).values_list("chat_id", "n"))
    firsts = await (Message.filter(chat_id__in=chat_ids, role="user").group_by("chat_id")
                    .annotate(first=Min("id")).values_list("first", flat=True))
    texts = dict(await Message.filter(id__in=list(firsts)).values_list("chat_id", "text"))
    by_chat = dict(counts)
    return {c: (by_chat.get(c, 0), texts.get(c)) for c in chat_ids}


async def _meta(
    chat: Chat, detail: bool = False, summary: tuple[int, str | None] | None = None, loaded: bool | None = None
) -> ChatMeta:
    count, first = summary if summary is not None else (await _summaries([chat.id]))[chat.id]
    if loaded is None:
        loaded = await services().runtime.holding(chat.id) is not None
    fields = dict(
        chat_id=chat.id, title=chat_title(chat, first), model=chat.model,
        device=chat.requested_device, backend=chat.backend, loaded=loaded,
        created_at=chat.created_at.isoformat(), updated_at=chat.updated_at.isoformat(), message_count=count,
    )
    if detail:
        return ChatDetail(**fields, system_prompt=chat.system_prompt, temperature=chat.temperature,
                          top_p=chat.top_p, max_new_tokens=chat.max_new_tokens)
    return ChatMeta(**fields)


# The original API's endpoints


@blueprint.get("/status")
@validate_querystring(OptionalChatIdQuery)
@validate_response(StatusResponse)
async def status(query_args: OptionalChatIdQuery) -> StatusResponse:
    """Loaded state of one chat (``?chat_id=``), or of the whole server."""
    runtime = services().runtime
    if query_args.chat_id is None:
        workers = [await _visible(worker_state(w)) for w in await runtime.workers()]
        return StatusResponse(loaded=bool(workers), workers=workers)
    chat = await services().conversations.get(query_args.chat_id, current_user())
    held = await runtime.holding(chat.id)
    if held is None:
        return StatusResponse(loaded=False, chat_id=chat.id, model=chat.model, device=chat.requested_device,
                              backend=chat.backend, reason=await runtime.exit_reason(chat.id))
    return StatusResponse(loaded=True, chat_id=chat.id, model=held.key.model, device=held.key.requested_device,
                          backend=held.key.backend, running_on=held.running_on, context_length=held.context_length,
                          node=held.node)


async def _visible(state: WorkerState) -> WorkerState:
    """Every user sees every worker (the machine is shared), but only administrators see
    which chats of other users hold it."""
    identity = current_identity()
    if identity.admin:
        return state
    own = set(await Chat.filter(owner_id=identity.user.id, id__in=state.chats).values_list("id", flat=True))
    return state.model_copy(
        update={"chats": [c for c in state.chats if c in own or openai_user(c) == identity.user.id]}
    )


@blueprint.get("/chats")
@validate_querystring(ChatListQuery)
@validate_response(ChatList)
async def list_chats(query_args: ChatListQuery) -> ChatList:
    """Your chats, most recently active first, a page at a time.

    Pass a page's ``next_cursor`` as ``?cursor=`` for the next one (null: the last page); a
    malformed cursor is a 400."""
    after = decode_cursor(query_args.cursor) if query_args.cursor is not None else None
    chats, next_cursor = await chat_page(current_user().id, query_args.limit, after)
    summaries = await _summaries([c.id for c in chats])
    held = {holder for w in await services().runtime.workers() for holder in w.holders}  # one question, not one a chat
    return ChatList(chats=[await _meta(c, summary=summaries[c.id], loaded=c.id in held) for c in chats],
                    next_cursor=next_cursor)


@blueprint.get("/history")
@validate_querystring(HistoryQuery)
@validate_response(History)
async def history(query_args: HistoryQuery) -> History:
    """The branch of the chat being shown, first message first, with each reply's metrics and
    status and each message's siblings (other versions of it); ``?tree=true``: every message."""
    chat = await services().conversations.get(query_args.chat_id, current_user())
    messages, shown = await branches.shown(chat)
    return _history(chat, messages, messages if query_args.tree else shown)


def _history(chat: Chat, messages: list[Message], listed: list[Message]) -> History:
    around = branches.siblings(messages)
    current = listed[-1].id if listed and chat.current_message_id is None else chat.current_message_id
    return History(chat_id=chat.id, current_message_id=current,
                   messages=[message_out(m).model_copy(update={"siblings": around[m.id]}) for m in listed])


@blueprint.post("/chats/<chat_id>/branch")
@validate_request(BranchRequest)
@validate_response(History)
async def branch(chat_id: str, data: BranchRequest) -> History:
    """Show another version of a message (one of its ``siblings``), with the newest branch
    after it; answers the branch now shown, as ``GET /history`` does."""
    conversations = services().conversations
    chat = await conversations.get(chat_id, current_user())
    if conversations.answering(chat.id):  # the reply under way belongs to the branch shown
        raise ChatBusy("a reply is still being generated for this chat; stop it or wait for it, then switch")
    messages = await branches.show(chat, data.message_id)
    if messages is None:
        raise MessageNotFound(f"the chat has no message with id {data.message_id}")
    return _history(chat, messages, branches.path(messages, chat.current_message_id))


@blueprint.post("/tokens")
@validate_request(TokenCountRequest)
@validate_response(TokenCount)
async def count_tokens(data: TokenCountRequest) -> TokenCount:
    """How many tokens ``text`` is for the chat's loaded model (the text alone, without the
    chat template's markers around a message), and its context length: the dashboard's
    count under the message box."""
    s = services()
    chat = await s.conversations.get(data.chat_id, current_user())
    if len(data.text) > s.settings.max_message_chars:
        raise MessageTooLong(f"the text has {len(data.text)} characters; the limit is {s.settings.max_message_chars}")
    held = await s.runtime.holding(chat.id)
    if held is None:
        raise NotLoaded("no model is loaded for this chat: load one to count tokens")
    with_text = await s.runtime.count_tokens(chat.id, [RuntimeMessage("user", data.text)])
    template = await s.runtime.count_tokens(chat.id, [RuntimeMessage("user", "")])  # the turn's own markers
    return TokenCount(tokens=max(0, with_text - template), context_length=held.context_length)


@blueprint.post("/load")
@validate_request(LoadRequest)
@validate_response(LoadResponse)
async def load(data: LoadRequest) -> LoadResponse:
    """Load a model for a chat (creating the chat if its id is new) and remember the choice."""
    conversations = services().conversations
    user = current_user()
    await conversations.check_owner(data.chat_id, user)
    if conversations.answering(data.chat_id):  # a new model would end the reply under it
        raise ChatBusy("a reply is still being generated for this chat; stop it or wait for it, then load")
    w = await conversations.load(
        data.chat_id, user, data.model, data.device, data.backend, data.idle_unload_s, data.parallel
    )
    return LoadResponse(status="loaded", chat_id=data.chat_id, model=w.key.model, device=w.key.requested_device,
                        load_time_s=w.load_time_s, backend=w.key.backend, running_on=w.running_on,
                        context_length=w.context_length)


@blueprint.post("/unload")
@validate_request(UnloadRequest)
@validate_response(UnloadResponse)
async def unload(data: UnloadRequest) -> UnloadResponse:
    """Release the chat's model; its process ends unless another chat uses it. Settings stay."""
    s = services()
    chat = await s.conversations.get(data.chat_id, current_user())
    await s.conversations.stop_anywhere(chat.id)
    result = await s.runtime.unload(chat.id)
    await s.chatlog.write(chat.id, f"unload: {result}")
    if result is None:
        return UnloadResponse(status="not_loaded", chat_id=chat.id, model=chat.model, device=chat.requested_device)
    return UnloadResponse(status="unloaded", chat_id=chat.id, model=result.key.model, device=result.key.requested_device,
                          process_exited=result.exited if result.stopped else None, shared=not result.stopped,
                          freed_mb=result.freed_mb)


@blueprint.post("/chat")
@streams_events
@validate_querystring(ChatQuery)
@validate_request(ChatRequest)
@document_response(ChatResponse)  # documented, not validated: the streaming form is a Response
async def chat(data: ChatRequest, query_args: ChatQuery) -> dict[str, object] | Response:
    """One chat turn. With ``"stream": true`` or ``Accept: text/event-stream``: server-sent events
    ``start``, ``token``..., then ``done`` (the stored reply) or ``error`` (see the schemas
    StartEvent, TokenEvent, ChatMessage and ErrorBody). A refused request stores nothing."""
    reply = await services().conversations.start(
        data.chat_id, current_user(), data.message, query_args.model, query_args.device, edit_of=data.edit_of
    )
    return await _answer(reply, data.stream)


async def _answer(reply: Reply, stream: bool) -> dict[str, object] | Response:
    if stream or "text/event-stream" in request.headers.get("Accept", ""):
        return sse.respond(sse.reply_events(reply))
    done: ChatMessage | None = None
    try:
        async with contextlib.aclosing(reply.items()) as items:
            async for item in items:
                if isinstance(item, ChatMessage):
                    done = item
    except ModelRuntimeError as exc:  # failed mid-reply: stored with status error
        raise ReplyFailed(exc, reply.start.message_id) from exc
    finally:
        await reply.aclose()
    assert done is not None
    return ChatResponse(**done.model_dump(), response=done.text).model_dump(mode="json")


@blueprint.get("/models")
@validate_response(ModelList)
async def models() -> ModelList:
    """Models in the models folder, and the devices each is loaded on now."""
    s = services()
    found = await s.runtime.models()
    loaded: dict[str, list[str]] = {}
    for w in await s.runtime.workers():
        loaded.setdefault(w.key.model, []).append(w.key.requested_device)
    return ModelList(
        models=[ModelEntry(name=m.name, backend=m.backend, size_bytes=m.size_bytes,
                           context_length=m.context_length, loaded_on=loaded.get(m.name, [])) for m in found],
        models_dir=str(s.settings.models_dir),
        preparing=[BuildEntry(name=b.name, state=b.state, step=b.step, elapsed_s=b.elapsed_s, error=b.error)
                   for b in await s.runtime.builds() if b.state != "ready"],
    )


@blueprint.get("/metrics")
@public
async def prometheus_metrics() -> Response:
    """Prometheus metrics: workers, queue depth, tokens, time to first token, tokens/s, loads, deaths.
    For an administrator, or with ``Authorization: Bearer <LLMCHAT_METRICS_TOKEN>``."""
    token = services().settings.metrics_token
    sent = request.headers.get("Authorization", "").partition(" ")[2].strip()
    if not (token and sent and hmac.compare_digest(sent.encode(), token.get_secret_value().encode())):
        if g.get("identity") is None:
            raise Unauthenticated(CREDENTIALS)
        require_admin()
    body, content_type = await metrics.render(services().metrics)
    return Response(body, content_type=content_type)


# Chat management


@blueprint.post("/chats")
@validate_request(CreateChatRequest)
@validate_response(ChatDetail, 201)
async def create_chat(data: CreateChatRequest) -> tuple[ChatMeta, int]:
    """Create a chat, optionally with a title, a system prompt and generation settings."""
    conversations = services().conversations
    chat_id = data.chat_id or uuid.uuid4().hex
    chat, created = await conversations.claim(chat_id, current_user())  # another user's id: 404
    if not created:
        raise ApiError(f"a chat with id {chat_id!r} already exists")
    await _apply(chat, data)
    return await _meta(chat, detail=True), 201


@blueprint.get("/chats/<chat_id>")
@validate_response(ChatDetail)
async def get_chat(chat_id: str) -> ChatMeta:
    return await _meta(await services().conversations.get(chat_id, current_user()), detail=True)


@blueprint.patch("/chats/<chat_id>")
@validate_request(ChatSettings)
@validate_response(ChatDetail)
async def update_chat(chat_id: str, data: ChatSettings) -> ChatMeta:
    """Rename a chat or change its system prompt and generation settings."""
    chat = await services().conversations.get(chat_id, current_user())
    await _apply(chat, data)
    return await _meta(chat, detail=True)


async def _apply(chat: Chat, data: ChatSettings) -> None:
    changes = {k: v for k, v in data.model_dump(exclude_unset=True).items() if k != "chat_id" and v is not None}
    if "title" in changes:
        changes["title"] = changes["title"].strip() or None
    for key, value in changes.items():
        setattr(chat, key, value)
    if changes:
        await chat.save()
        await services().chatlog.write(chat.id, f"settings: {changes}")


@blueprint.delete("/chats/<chat_id>")
@validate_response(Deleted)
async def delete_chat(chat_id: str) -> Deleted:
    """Delete a chat, its messages and its log file; its model is released."""
    await services().conversations.delete(chat_id, current_user())
    return Deleted(deleted=True, chat_id=chat_id)


@blueprint.post("/chats/<chat_id>/stop")
@validate_querystring(StopQuery)
@validate_response(Stopped)
async def stop(chat_id: str, query_args: StopQuery) -> Stopped:
    """Stop the reply being generated (only reply ``message_id``, if given); the partial reply is kept
    with status ``stopped``."""
    conversations = services().conversations
    await conversations.get(chat_id, current_user())
    stopped, message_id = await conversations.stop_anywhere(chat_id, query_args.message_id)
    return Stopped(stopped=stopped, chat_id=chat_id, message_id=message_id)


@blueprint.post("/chats/<chat_id>/regenerate")
@validate_request(RegenerateRequest)
@document_response(ChatResponse)
@streams_events
async def regenerate(chat_id: str, data: RegenerateRequest) -> dict[str, object] | Response:
    """A new reply beside the last one shown (or beside ``message_id``), or to the last
    question if it has none; the earlier reply stays as a sibling (see ``siblings``)."""
    reply = await services().conversations.start(chat_id, current_user(), None, again=data.message_id)
    return await _answer(reply, data.stream)

