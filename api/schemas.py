"""Request, response and event bodies: one pydantic model per thing on the wire.

quart-schema validates requests against these and builds ``/openapi.json`` from them, so
the documented schemas are the enforced ones; the server-sent events' payloads are models
here too. The first fields of LoadRequest, ChatRequest, ChatResponse, StatusResponse,
ChatMeta and ChatMessage are the original API's, so its clients work unchanged.

On the wire, ``device`` is always the device a load asked for (``auto``, ``cpu``, ``gpu``)
and ``running_on`` the one a worker actually runs on (``cpu``, ``cuda``).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from runtime import backends

CHAT_ID_PATTERN = r"^[A-Za-z0-9_.:-]+$"
ChatId = Field(min_length=1, max_length=64, pattern=CHAT_ID_PATTERN, examples=["5f0c2a9e"])
OptionalChatId = Field(None, min_length=1, max_length=64, pattern=CHAT_ID_PATTERN)
DeviceName = Literal["auto", "cpu", "gpu"]
BackendName = Annotated[
    str, AfterValidator(backends.check), Field(json_schema_extra={"enum": list(backends.NAMES)})
]
RunningOn = Literal["cpu", "cuda"]
MAX_ID = 2**31 - 1  # ids are INTEGER columns: 4 bytes on PostgreSQL, which refuses a larger one in a query
MessageStatus = Literal["streaming", "complete", "stopped", "error"]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# Requests


class LoadRequest(Strict):
    chat_id: str = ChatId
    model: str = Field(min_length=1, max_length=255)
    device: DeviceName = "auto"
    backend: BackendName | None = Field(None, description="Force a backend; default: the model's own.")
    idle_unload_s: float | None = Field(
        None, ge=0, le=30 * 24 * 3600, description="Unload after this long unused (0 = never); default: the setting."
    )
    parallel: int | None = Field(
        None, ge=1, le=64,
        description="Replies a new worker generates at once; default: LLMCHAT_PARALLEL (8 on CPU, 16 on a GPU).",
    )


class UnloadRequest(Strict):
    chat_id: str = ChatId
    model: str | None = Field(None, description="Accepted for the original API's clients; the chat's model is unloaded.")
    device: DeviceName | None = None


class ChatRequest(Strict):
    chat_id: str = ChatId
    message: str = Field(min_length=1)
    stream: bool = Field(False, description="Answer with server-sent events instead of one JSON body.")
    edit_of: int | None = Field(
        None, ge=1, le=MAX_ID, description="Send ``message`` in place of this earlier question of yours: the chat goes on from "
        "there, and the question's old continuation stays as a branch beside it.")


class ChatQuery(Strict):
    model: str | None = Field(None, max_length=255, description="Load this model first if it is not loaded.")
    device: DeviceName | None = None


class ChatIdQuery(Strict):
    chat_id: str = ChatId


class HistoryQuery(Strict):
    chat_id: str = ChatId
    tree: bool = Field(False, description="Every message of the chat (each with its parent_id), not only the branch shown.")


class OptionalChatIdQuery(Strict):
    chat_id: str | None = OptionalChatId


class StopQuery(Strict):
    message_id: int | None = Field(None, ge=1, le=MAX_ID, description="Stop only this reply (not one started since).")


class ChatSettings(Strict):
    """Fields a chat can be created with or changed to; omitted fields stay as they are."""

    title: str | None = Field(None, max_length=200)
    system_prompt: str | None = Field(None, max_length=32_000)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    max_new_tokens: int | None = Field(None, ge=1, le=32_768)


class CreateChatRequest(ChatSettings):
    chat_id: str | None = OptionalChatId


class RegenerateRequest(Strict):
    stream: bool = False
    message_id: int | None = Field(
        None, ge=1, le=MAX_ID, description="The reply to make again (kept as a sibling); default: the last one shown.")


class BranchRequest(Strict):
    message_id: int = Field(ge=1, le=MAX_ID, description="Show the branch through this message (to its newest end).")


class TokenCountRequest(Strict):
    chat_id: str = ChatId
    text: str = Field(description="A draft message: counted as the chat's model would read it.")


# Responses


class WorkerState(BaseModel):
    model: str
    device: DeviceName
    backend: str
    running_on: RunningOn
    pid: int
    context_length: int
    load_time_s: float
    chats: list[str]
    busy: bool
    queued: int = Field(0, description="Requests waiting for a free slot.")
    running: int = Field(0, description="Replies being generated now.")
    parallel: int = Field(1, description="Replies it generates at once (continuous batching).")
    idle_s: float = 0.0
    idle_unload_s: float = 0.0
    cuda_visible_devices: str | None = None
    node: str | None = Field(None, description="The machine it runs on (Ray runtime: the node's address); null: the API's.")


class StatusResponse(BaseModel):
    loaded: bool
    model: str | None = None
    device: str | None = None
    chat_id: str | None = None
    backend: str | None = None
    running_on: RunningOn | None = None
    context_length: int | None = None
    reason: str | None = Field(None, description="Why the chat's model is no longer loaded, if it went away.")
    node: str | None = Field(None, description="Where the chat's model runs (Ray runtime: the node's address).")
    workers: list[WorkerState] = []


class ChatMeta(BaseModel):
    chat_id: str
    title: str
    model: str | None = None
    device: str | None = None
    backend: str | None = None
    loaded: bool = False
    created_at: str
    updated_at: str
    message_count: int = 0


class ChatDetail(ChatMeta):
    system_prompt: str
    temperature: float
    top_p: float
    max_new_tokens: int


class ChatList(BaseModel):
    chats: list[ChatMeta] = Field(description="One page, most recently active first.")
    next_cursor: str | None = Field(
        None, description="Pass as ?cursor= for the next page; null: this is the last page.")


class ChatMessage(BaseModel):
    """One stored message. A reply also says how it was made; the same shape is in
    ``/history``, in ``POST /chat``'s answer and in the stream's ``done`` event."""

    id: int
    parent_id: int | None = Field(None, description="The message this one follows (None: the chat's first).")
    sender: Literal["user", "assistant"]
    text: str
    timestamp: str
    status: MessageStatus = "complete"
    error: str | None = Field(None, description="Why the reply failed (status error).")
    model: str | None = None
    backend: str | None = None
    running_on: RunningOn | None = None
    prompt_tokens: int | None = None
    tokens: int | None = Field(None, description="Tokens generated.")
    time_to_first_token_s: float | None = None
    time_s: float | None = Field(None, description="Time from the request reaching the model to its end.")
    tps: float | None = Field(None, description="Tokens per second.")
    dropped_messages: int | None = Field(None, description="Earlier messages left out to fit the context.")
    siblings: list[int] | None = Field(
        None, description="In /history: the ids of the messages with the same parent, this one included, oldest "
        "first (an edited question, regenerated replies): show one of them with POST /chats/{id}/branch.")


class TokenCount(BaseModel):
    tokens: int = Field(description="The text's tokens for the model (without the chat template's markers).")
    context_length: int


class History(BaseModel):
    chat_id: str
    current_message_id: int | None = Field(None, description="The last message of the branch shown.")
    messages: list[ChatMessage] = Field(
        description="The branch shown, first message first; with ?tree=true every message of the chat, by id.")


class LoadResponse(BaseModel):
    status: Literal["loaded"]
    chat_id: str
    model: str
    device: str
    load_time_s: float
    backend: str
    running_on: str
    context_length: int


class UnloadResponse(BaseModel):
    status: Literal["unloaded", "not_loaded"]
    chat_id: str
    model: str | None = None
    device: str | None = None
    process_exited: bool | None = Field(None, description="Checked after the worker stopped.")
    freed_mb: float | None = Field(
        None, description="Memory given back: the worker's resident memory on CPU, its VRAM (NVML) on a GPU."
    )
    shared: bool = Field(False, description="Other chats still use the worker, so it keeps running.")


class ChatResponse(ChatMessage):
    """``POST /chat``'s JSON answer: the stored reply, and its text as ``response``."""

    response: str


class ModelEntry(BaseModel):
    name: str
    backend: str
    size_bytes: int
    context_length: int | None
    loaded_on: list[str] = Field(description="Devices it is loaded on right now (auto, cpu, gpu).")


class BuildEntry(BaseModel):
    """A model set-up is still deriving (or failed to): it joins ``models`` once ready."""

    name: str
    state: Literal["queued", "building", "ready", "failed"]
    step: str = Field(description="What the build is doing, or did last.")
    elapsed_s: float | None = None
    error: str | None = None


class ModelList(BaseModel):
    models: list[ModelEntry]
    models_dir: str
    preparing: list[BuildEntry] = Field(default_factory=list, description="Models being built in the background.")


class Deleted(BaseModel):
    deleted: bool
    chat_id: str


class Stopped(BaseModel):
    stopped: bool
    chat_id: str
    message_id: int | None = Field(None, description="The reply that was stopped.")


# Server-sent events of POST /chat with "stream": true (event name: payload model)


class StartEvent(BaseModel):
    """``start``: the reply was accepted and stored; tokens follow."""

    message_id: int
    model: str
    backend: str
    running_on: RunningOn
    dropped_messages: int


class QueuedEvent(BaseModel):
    """``queued``: every slot of the model is busy and the request waits its turn; sent again
    each time it moves up, and with position 0 once it starts."""

    position: int = Field(description="Its place in line: 1 = next to start; 0 = it has started.")
    ahead: int = Field(description="Requests in line before it.")
    estimate_s: float | None = Field(None, description="Rough wait until it starts, from recent replies.")


class TokenEvent(BaseModel):
    """``token``: the next piece of the reply's text."""

    text: str


class ErrorBody(BaseModel):
    """Every error: an HTTP error's body, and the stream's ``error`` event (with the reply's id)."""

    error: str = Field(description="The error's name, e.g. ModelNotFound, ChatBusy, WorkerDied.")
    detail: str = Field(description="What happened, for people.")
    status: int = Field(description="The HTTP status it maps to.")
    reference: str | None = Field(None, description="For unexpected errors: the id of the log entry.")
    message_id: int | None = Field(None, description="In a stream: the reply stored with status error.")


STREAM_EVENTS: dict[str, type[BaseModel]] = {
    "start": StartEvent,
    "queued": QueuedEvent,
    "token": TokenEvent,
    "done": ChatMessage,
    "error": ErrorBody,
}


# Accounts


class LoginRequest(Strict):
    username: str = Field(min_length=1, max_length=200)
    password: str = Field(min_length=1, max_length=1024)


class PasswordChange(Strict):
    current: str = Field(min_length=1, max_length=1024)
    new: str = Field(min_length=8, max_length=1024)


class LimitsOut(BaseModel):
    loaded_models: int = Field(description="Models you may hold loaded at once (0: no limit).")
    concurrent_replies: int = Field(description="Replies you may have generated at once (0: no limit).")
    tokens_per_day: int = Field(description="Tokens you may generate a UTC day (0: no limit).")


class OverridesOut(BaseModel):
    loaded_models: int | None = None
    concurrent_replies: int | None = None
    tokens_per_day: int | None = None


class UsageOut(BaseModel):
    day: str
    replies: int
    prompt_tokens: int
    completion_tokens: int


class Me(BaseModel):
    id: int
    name: str
    role: Literal["admin", "user"]
    via: Literal["session", "key", "local"] = Field(description="The credential this request came with.")
    limits: LimitsOut | None = None
    today: UsageOut | None = None


class KeyCreate(Strict):
    name: str = Field(min_length=1, max_length=100, description="A label, to tell your keys apart.")


class KeyOut(BaseModel):
    id: str
    name: str
    created_at: str
    last_used_at: str | None = None
    revoked: bool = False


class KeyCreated(KeyOut):
    key: str = Field(description="The key itself: shown this once, stored only as a hash.")


class KeyList(BaseModel):
    keys: list[KeyOut]


class Revoked(BaseModel):
    revoked: bool
    id: str


class SignedOut(BaseModel):
    signed_out: bool


# Administration


class UserOut(BaseModel):
    id: int
    name: str
    role: Literal["admin", "user"]
    disabled: bool
    created_at: str
    chats: int = Field(description="Chats the user owns.")
    limits: LimitsOut | None = Field(None, description="The limits that apply (the settings unless overridden).")
    overrides: OverridesOut | None = Field(None, description="The administrator's overrides; null: the setting.")
    today: UsageOut | None = None


class UserList(BaseModel):
    users: list[UserOut]


class UserCreate(Strict):
    name: str = Field(min_length=1, max_length=64)
    role: Literal["admin", "user"] = "user"
    password: str | None = Field(None, min_length=8, max_length=1024, description="Default: a random one, shown once.")


class UserCreated(UserOut):
    password: str | None = Field(None, description="The generated password, shown this once (null if you gave one).")


class UserUpdate(Strict):
    role: Literal["admin", "user"] | None = None
    disabled: bool | None = Field(None, description="A disabled user's sessions end and their replies stop.")
    limit_loaded_models: int | None = Field(None, ge=0, le=1000, description="Override (0: none; null: the setting).")
    limit_concurrent_replies: int | None = Field(None, ge=0, le=10_000, description="Override (0: none; null: the setting).")
    limit_tokens_per_day: int | None = Field(  # an INTEGER column: 4 bytes on PostgreSQL
        None, ge=0, le=2**31 - 1, description="Override (0: none; null: the setting)."
    )


class PasswordReset(Strict):
    password: str | None = Field(None, min_length=8, max_length=1024, description="Default: a random one, shown once.")


class PasswordResetDone(BaseModel):
    name: str
    password: str | None = Field(None, description="The generated password, shown this once.")


class Holder(BaseModel):
    user: str | None = Field(description="Whose hold it is.")
    chat_id: str | None = Field(description="The chat, or null for the OpenAI-compatible API.")
    title: str | None = None


class AdminWorker(WorkerState):
    holders: list[Holder]
    memory_mb: float | None = Field(None, description="Resident memory of the worker process (RAM; not GPU memory).")


class AdminWorkerList(BaseModel):
    workers: list[AdminWorker]


class WorkerUnload(Strict):
    model: str = Field(min_length=1, max_length=255)
    device: DeviceName
    backend: BackendName


class WorkerUnloaded(BaseModel):
    unloaded: bool
    model: str
    holders: int = Field(description="Holds that were ended (each sees the reason in /status).")
    process_exited: bool | None = None


class AuditOut(BaseModel):
    id: int
    at: str
    actor: str | None
    action: str
    target: str | None = None
    client: str | None = None
    detail: dict[str, object] | None = None


class AuditList(BaseModel):
    entries: list[AuditOut]


class AuditQuery(Strict):
    before_id: int | None = Field(None, ge=1, le=MAX_ID, description="Entries older than this one (for paging).")
    limit: int = Field(100, ge=1, le=1000)


class SignupRequest(Strict):
    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=8, max_length=1024)


class ServerSettingsOut(BaseModel):
    open_signup: bool = Field(description="Whether anyone who reaches the server may make an account.")


class ServerSettingsUpdate(Strict):
    open_signup: bool | None = None


# The chat library: paging the chat list, search, import (api/library_endpoints.py; the
# archive format itself is in api/transfer.py)


class ChatListQuery(Strict):
    limit: int = Field(50, ge=1, le=200, description="Chats per page.")
    cursor: str | None = Field(
        None, description="The next_cursor of the previous page; leave out for the first page.")


class SearchQuery(Strict):
    q: str = Field(min_length=1, max_length=500, description="Words to find (see GET /search).")
    limit: int = Field(20, ge=1, le=50)


class SearchResult(BaseModel):
    chat_id: str
    title: str = Field(description="The chat's title as the chat list shows it.")
    message_id: int | None = Field(description="The matching message; null when only the title matched.")
    sender: Literal["user", "assistant"] | None = Field(description="The matching message's sender.")
    snippet: str = Field(
        description="HTML: the escaped text around the match, each matching word in <mark>...</mark>.")
    timestamp: str | None = Field(description="When the message was sent; null for a title.")


class SearchResults(BaseModel):
    query: str
    results: list[SearchResult] = Field(description="Best match first (relevance, then the newest).")


class ExportQuery(Strict):
    format: Literal["markdown", "json"] = Field(
        "markdown", description="markdown: readable, the branch shown; json: every message, re-importable.")


class ImportedChat(BaseModel):
    chat_id: str = Field(description="The new chat's id.")
    title: str


class ImportResult(BaseModel):
    imported: list[ImportedChat] = Field(description="The new chats, in the archive's order.")
