"""Export and import of chats: the JSON archive format, its Markdown rendering, and the zip of all.

The archive (``{"format": "llmchat.chats", "version": 1, ...}``, :class:`ChatArchive`) holds
everything of each chat: its settings and every message of its tree, by id, each as
``/history`` shows it (without ``siblings``, which the tree implies). Importing one makes new
chats owned by the importer, with new chat and message ids (parents and the current message
remapped) and the archive's timestamps. An archive is checked whole before anything is
written, and written in one transaction: a malformed one imports nothing, and its
:class:`~api.errors.MalformedRequest` says where (chat index, message id, field).

Markdown is for people: the title, then each message of the branch shown with its sender
and time, and each reply followed by its model and metrics, as the dashboard shows them.
"""

from __future__ import annotations

import asyncio
import io
import re
import unicodedata
import uuid
import zipfile
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Annotated, Any, ClassVar, Literal

from pydantic import AfterValidator, Field, PlainSerializer, ValidationError, ValidationInfo, field_validator
from quart import Request
from tortoise.transactions import in_transaction

from api.database import dialect_of_connection, placeholders, stored_time
from api.errors import MalformedRequest
from api.requests import parse_json
from api.schemas import MessageStatus, RunningOn, Strict
from api.store import Chat, Message, User, chat_title

ARCHIVE_FORMAT = "llmchat.chats"
ARCHIVE_VERSION = 1
MAX_IMPORT_CHATS = 10_000
# A reply is at most 32,768 tokens (max_new_tokens); a token rarely spells more than 16 characters.
MAX_REPLY_CHARS = 32_768 * 16
MAX_SHOWN_ERRORS = 10
IMPORT_PATH = "/chats/import"
_INT = 2**63 - 1  # what an SQLite INTEGER holds
_COUNT = 2**31 - 1


def _utc(value: datetime) -> datetime:
    """Aware and in UTC (a time without a zone is taken as UTC), like every stored time."""
    try:
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    except OverflowError as exc:
        raise ValueError("the time is out of range") from exc


Timestamp = Annotated[
    datetime, AfterValidator(_utc), PlainSerializer(lambda value: value.isoformat(), return_type=str)
]
Count = Annotated[int, Field(ge=0, le=_COUNT)]
Seconds = Annotated[float, Field(ge=0, allow_inf_nan=False)]
MessageId = Annotated[int, Field(ge=1, le=_INT)]


class ArchivedMessage(Strict):
    """A message as ``/history`` shows it (``ChatMessage`` without ``siblings``); ``id`` and
    ``parent_id`` are the exporting server's and only link messages within the archive."""

    id: MessageId
    parent_id: MessageId | None = Field(None, description="An earlier message of the same chat; null: a first message.")
    sender: Literal["user", "assistant"]
    text: str = Field(description="A user's message: 1 to LLMCHAT_MAX_MESSAGE_CHARS characters.")
    timestamp: Timestamp
    status: MessageStatus = Field("complete", description="A reply still streaming when exported imports as stopped.")
    error: str | None = Field(None, max_length=10_000)
    model: str | None = Field(None, max_length=255)
    backend: str | None = Field(None, max_length=16)
    running_on: RunningOn | None = None
    prompt_tokens: Count | None = None
    tokens: Count | None = None
    time_to_first_token_s: Seconds | None = None
    time_s: Seconds | None = None
    tps: Seconds | None = None
    dropped_messages: Count | None = None

    @field_validator("text")
    @classmethod
    def _fits(cls, text: str, info: ValidationInfo) -> str:
        limit = (info.context or {}).get("max_message_chars")
        if info.data.get("sender") == "user":
            if not text:
                raise ValueError("a user's message may not be empty")
            if limit is not None and len(text) > limit:
                raise ValueError(f"{len(text)} characters; the limit is {limit} (LLMCHAT_MAX_MESSAGE_CHARS)")
        elif len(text) > MAX_REPLY_CHARS:
            raise ValueError(f"{len(text)} characters; a reply has at most {MAX_REPLY_CHARS}")
        return text

    @field_validator("status")
    @classmethod
    def _finished(cls, status: str) -> str:
        return "stopped" if status == "streaming" else status  # it will never finish here


class ArchivedChat(Strict):
    """A chat: its settings, and every message of its tree, each parent before its children."""

    chat_id: str | None = Field(None, max_length=64, description="The exporting server's id; a new one is made.")
    title: str | None = Field(None, max_length=200, description="The title its owner gave (null: none).")
    display_title: str | None = Field(
        None, max_length=200, description="The title the chat list shows (ignored on import).")
    created_at: Timestamp
    updated_at: Timestamp
    model: str | None = Field(None, max_length=255)
    device: Literal["auto", "cpu", "gpu"] | None = None
    backend: str | None = Field(None, max_length=16)
    system_prompt: str = Field("", max_length=32_000)
    temperature: float = Field(0.7, ge=0, le=2)
    top_p: float = Field(0.95, gt=0, le=1)
    max_new_tokens: int = Field(256, ge=1, le=32_768)
    current_message_id: MessageId | None = Field(
        None, description="The last message of the branch shown; null: the last message.")
    messages: list[ArchivedMessage] = Field(default_factory=list)


class ChatArchive(Strict):
    """Chats exported by ``GET /chats/{id}/export?format=json`` or ``GET /chats/export``
    (``chats.json``), and what ``POST /chats/import`` takes."""

    format: Literal["llmchat.chats"]
    version: Literal[1]
    exported_at: Timestamp | None = None
    chats: list[ArchivedChat] = Field(min_length=1, max_length=MAX_IMPORT_CHATS)


# Export


_MESSAGE_COLUMNS = (
    "id", "chat_id", "parent_id", "role", "text", "created_at", "status", "error", "model", "backend",
    "running_on", "prompt_tokens", "completion_tokens", "time_to_first_token_s", "total_time_s", "tokens_per_s",
    "dropped_messages",
)
_CHAT_COLUMNS = (
    "id", "title", "created_at", "updated_at", "model", "requested_device", "backend", "system_prompt", "temperature",
    "top_p", "max_new_tokens", "current_message_id",
)
_SELECT_CHATS = f'SELECT {", ".join(_CHAT_COLUMNS)} FROM "chats" WHERE "owner_id" = ?'
_SELECT_MESSAGES = (
    f'SELECT {", ".join(f"m.{c}" for c in _MESSAGE_COLUMNS)} FROM "messages" m '
    'JOIN "chats" c ON c."id" = m."chat_id" WHERE c."owner_id" = ?'
)


async def load_archive(owner_id: int, chat_id: str | None = None) -> ChatArchive:
    """The owner's chats (only ``chat_id``, if given), most recently active first, as an archive.

    Rows are read plain and the archive is built in a thread: ORM objects for thousands of
    chats and their messages would hold the event loop for seconds."""
    db = Message._meta.db
    chats, messages = _SELECT_CHATS, _SELECT_MESSAGES
    params: list[int | str] = [owner_id]
    if chat_id is not None:
        chats, messages, params = chats + ' AND "id" = ?', messages + ' AND m."chat_id" = ?', [owner_id, chat_id]
    dialect = dialect_of_connection(db)
    _, chat_rows = await db.execute_query(placeholders(chats + ' ORDER BY "updated_at" DESC, "id" DESC', dialect), params)
    _, message_rows = await db.execute_query(placeholders(messages + ' ORDER BY m."id"', dialect), params)
    return await asyncio.to_thread(_archive, chat_rows, message_rows)


def _archive(chat_rows: Sequence[Any], message_rows: Sequence[Any]) -> ChatArchive:
    by_chat: dict[str, list[ArchivedMessage]] = {}
    for row in message_rows:
        by_chat.setdefault(row[1], []).append(ArchivedMessage.model_construct(
            id=row[0], parent_id=row[2], sender=row[3], text=row[4], timestamp=_stored_time(row[5]),
            status=row[6], error=row[7], model=row[8], backend=row[9], running_on=row[10], prompt_tokens=row[11],
            tokens=row[12], time_to_first_token_s=row[13], time_s=row[14], tps=row[15], dropped_messages=row[16],
        ))
    chats = []
    for row in chat_rows:
        messages = by_chat.get(row[0], [])
        # Built without validation: what is stored is what the archive says, and the import checks it.
        chats.append(ArchivedChat.model_construct(
            chat_id=row[0], title=row[1], display_title=_display_title(row[1], messages),
            created_at=_stored_time(row[2]), updated_at=_stored_time(row[3]), model=row[4], device=row[5],
            backend=row[6], system_prompt=row[7], temperature=row[8], top_p=row[9], max_new_tokens=row[10],
            current_message_id=row[11], messages=messages,
        ))
    return ChatArchive.model_construct(
        format=ARCHIVE_FORMAT, version=ARCHIVE_VERSION, exported_at=datetime.now(UTC), chats=chats)


def _stored_time(value: str | datetime) -> datetime:
    return _utc(value if isinstance(value, datetime) else datetime.fromisoformat(value))


def _display_title(title: str | None, messages: Sequence[ArchivedMessage]) -> str:
    """The title the chat list shows (:func:`api.store.chat_title`)."""
    return chat_title(Chat(title=title), next((m.text for m in messages if m.sender == "user"), None))


def archive_json(archive: ChatArchive) -> bytes:
    """The archive as JSON, a chat a line, each serialised on its own (see :class:`_Envelope`)."""
    head = archive.model_dump_json(exclude={"chats"}).encode()
    chats = b",\n".join(chat.model_dump_json().encode() for chat in archive.chats)
    return head[:-1] + b', "chats": [\n' + chats + b"\n]}\n"


def branch_shown(chat: ArchivedChat) -> list[ArchivedMessage]:
    """The branch the chat shows, first message first, as ``GET /history`` has it (see
    :func:`api.branches.path`): up from the current message; without one, the newest branch."""
    by_id = {m.id: m for m in chat.messages}
    end = chat.current_message_id
    if end not in by_id:
        below: dict[int | None, list[ArchivedMessage]] = {}
        for m in sorted(chat.messages, key=lambda m: m.id):
            below.setdefault(m.parent_id, []).append(m)
        end = None
        while below.get(end):
            end = below[end][-1].id
    path: list[ArchivedMessage] = []
    seen: set[int] = set()
    while end is not None and end in by_id and end not in seen:
        seen.add(end)
        path.append(by_id[end])
        end = by_id[end].parent_id
    return path[::-1]


def reply_footer(m: ArchivedMessage) -> str:
    """A reply's metrics as the dashboard's line under it shows them."""
    parts = []
    if m.tokens is not None:
        parts.append(f"{m.tokens} tokens")
    if m.time_s is not None:
        parts.append(f"{m.time_s:.2f} s")
    if m.tps is not None:
        parts.append(f"{m.tps:.1f} tokens/s")
    if m.time_to_first_token_s is not None:
        parts.append(f"first token {m.time_to_first_token_s * 1000:.0f} ms")
    if m.model:
        parts.append(f"{m.model} on {m.running_on or '?'}")
    if m.dropped_messages:
        parts.append(f"{m.dropped_messages} earlier messages left out to fit the context")
    if m.status == "stopped":
        parts.append("stopped")
    elif m.status == "error":
        parts.append(f"failed: {m.error or 'unknown error'}")
    elif m.status == "streaming":
        parts.append("still being generated when exported")
    return " · ".join(parts)


def _when(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def _line(text: str) -> str:
    return " ".join(text.split())


def to_markdown(chat: ArchivedChat, exported_at: datetime) -> str:
    """The chat for reading: the title, then the branch shown, each reply with its metrics."""
    title = _line(chat.display_title or chat.title or "") or "Untitled chat"
    about = [f"created {_when(chat.created_at)}", f"last active {_when(chat.updated_at)}",
             f"exported {_when(exported_at)} from llmchat"]
    if chat.model:
        about.insert(0, f"model {chat.model}" + (f" ({chat.backend})" if chat.backend else ""))
    out = [f"# {title}", "", " · ".join(about), ""]
    if chat.system_prompt.strip():
        out += ["> **System prompt:**", *(f"> {line}".rstrip() for line in chat.system_prompt.splitlines()), ""]
    for m in branch_shown(chat):
        out += ["---", "", f"**{'You' if m.sender == 'user' else 'Assistant'}** · {_when(m.timestamp)}", "",
                m.text if m.text.strip() else "*(no text)*", ""]
        if m.sender == "assistant" and (footer := reply_footer(m)):
            out += [f"*{footer}*", ""]
    return "\n".join(out)


def slug(text: str, fallback: str = "chat") -> str:
    """A short ASCII file name stem for ``text``."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    stem = re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-")[:48].strip("-")
    return stem or fallback


def chat_filename(chat: ArchivedChat, extension: str) -> str:
    return f"{slug(chat.display_title or chat.title or '')}.{extension}"


def build_zip(archive: ChatArchive) -> bytes:
    """``chats.json`` (the archive) and one Markdown file per chat; CPU-bound: run it in a thread."""
    exported_at = archive.exported_at or datetime.now(UTC)
    buffer = io.BytesIO()
    used: set[str] = set()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as bundle:
        bundle.writestr("chats.json", archive_json(archive))
        for chat in archive.chats:
            stem = f"{chat.updated_at.astimezone(UTC):%Y-%m-%d}-{slug(chat.display_title or chat.title or '')}"
            name, n = stem, 1
            while name in used:
                n += 1
                name = f"{stem}-{n}"
            used.add(name)
            bundle.writestr(f"chats/{name}.md", to_markdown(chat, exported_at))
    return buffer.getvalue()


# Import


def read_archive(raw: bytes, max_message_chars: int) -> ChatArchive:
    """Parse and check an archive; :class:`MalformedRequest` says what is wrong and where.
    CPU-bound for a large archive: run it in a thread."""
    document = parse_json(raw)
    if not isinstance(document, dict):
        raise MalformedRequest(f"the archive is a JSON object with format {ARCHIVE_FORMAT!r}; got a JSON "
                               f"{type(document).__name__}")
    try:
        envelope = _Envelope.model_validate(document)
    except ValidationError as exc:
        raise _malformed([f"{_where(e['loc'], document)}: {_reason(e)}" for e in exc.errors()]) from exc
    context = {"max_message_chars": max_message_chars}
    chats: list[ArchivedChat] = []
    problems: list[str] = []
    for index, item in enumerate(envelope.chats):
        try:
            chat = ArchivedChat.model_validate(item, context=context)
        except ValidationError as exc:
            problems += [f"{_where(('chats', index, *e['loc']), document)}: {_reason(e)}" for e in exc.errors()]
            continue
        problems += _tree_problems(index, chat)
        chats.append(chat)
    if problems:
        raise _malformed(problems)
    return ChatArchive.model_construct(
        format=envelope.format, version=envelope.version, exported_at=envelope.exported_at, chats=chats)


class _Envelope(Strict):
    """An archive with its chats still to check. They are checked one at a time: one check of
    a whole large archive would hold the interpreter, and with it the event loop, for seconds."""

    format: Literal["llmchat.chats"]
    version: Literal[1]
    exported_at: Timestamp | None = None
    chats: list[dict[str, Any]] = Field(min_length=1, max_length=MAX_IMPORT_CHATS)


def _malformed(problems: list[str]) -> MalformedRequest:
    shown = problems[:MAX_SHOWN_ERRORS]
    more = f"; and {len(problems) - len(shown)} more" if len(problems) > len(shown) else ""
    return MalformedRequest("the archive is not a valid llmchat export; nothing was imported: " + "; ".join(shown) + more)


def _tree_problems(index: int, chat: ArchivedChat) -> list[str]:
    """Each message's id unique in its chat, its parent an earlier message, the current one a message."""
    problems: list[str] = []
    seen: set[int] = set()
    for m in chat.messages:
        if m.id in seen:
            problems.append(f"chats[{index}], message {m.id}, id: another message of this chat has the same id")
        elif m.parent_id is not None and m.parent_id not in seen:
            problems.append(f"chats[{index}], message {m.id}, parent_id: {m.parent_id} is no earlier message of this chat")
        seen.add(m.id)
    if chat.current_message_id is not None and chat.current_message_id not in seen:
        problems.append(f"chats[{index}], current_message_id: {chat.current_message_id} is no message of this chat")
    return problems


def _reason(error: Any) -> str:
    message = str(error.get("msg", "invalid"))
    return message.removeprefix("Value error, ")


def _where(loc: tuple[int | str, ...], document: dict[str, Any]) -> str:
    """``chats[2], message 17, sender`` for pydantic's ``("chats", 2, "messages", 5, "sender")``."""
    parts: list[str] = []
    rest = list(loc)
    if len(rest) >= 2 and rest[0] == "chats" and isinstance(rest[1], int):
        index = rest[1]
        parts.append(f"chats[{index}]")
        rest = rest[2:]
        if len(rest) >= 2 and rest[0] == "messages" and isinstance(rest[1], int):
            parts.append(_message_name(document, index, rest[1]))
            rest = rest[2:]
    if rest:
        parts.append(".".join(str(p) for p in rest))
    return ", ".join(parts) or "the archive"


def _message_name(document: dict[str, Any], chat: int, message: int) -> str:
    try:
        found = document["chats"][chat]["messages"][message]["id"]
    except (KeyError, IndexError, TypeError):
        found = None
    return f"message {found}" if isinstance(found, int) and not isinstance(found, bool) else f"messages[{message}]"


_CHAT_INSERT = (
    'INSERT INTO "chats" ("id", "title", "created_at", "updated_at", "model", "requested_device", "backend", '
    '"system_prompt", "temperature", "top_p", "max_new_tokens", "owner_id") VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)'
)
_MESSAGE_INSERT = (
    'INSERT INTO "messages" ("chat_id", "role", "text", "created_at", "status", "error", "model", "running_on", '
    '"backend", "prompt_tokens", "completion_tokens", "time_to_first_token_s", "total_time_s", "tokens_per_s", '
    '"dropped_messages") VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)'
)


def _kept_title(title: str | None) -> str | None:
    return (title or "").strip() or None  # as PATCH /chats/{id} keeps one


async def store_archive(archive: ChatArchive, owner: User) -> list[tuple[str, str]]:
    """Make the archive's chats the owner's, in one transaction; (new chat id, title) of each.

    Rows are written with plain ``executemany``, not ORM objects: thousands of chats would
    otherwise hold the event loop for seconds. Every other connection waits while the
    transaction runs, so the rows are prepared before it starts."""
    new_ids = [uuid.uuid4().hex for _ in archive.chats]
    dialect = dialect_of_connection(Message._meta.db)
    chat_rows = [
        [new_id, _kept_title(chat.title), stored_time(chat.created_at, dialect),
         stored_time(chat.updated_at, dialect), chat.model,
         chat.device, chat.backend, chat.system_prompt, chat.temperature, chat.top_p, chat.max_new_tokens, owner.id]
        for new_id, chat in zip(new_ids, archive.chats, strict=True)
    ]
    message_rows = [
        [new_id, m.sender, m.text, stored_time(m.timestamp, dialect), m.status, m.error, m.model, m.running_on, m.backend,
         m.prompt_tokens, m.tokens, m.time_to_first_token_s, m.time_s, m.tps, m.dropped_messages]
        for new_id, chat in zip(new_ids, archive.chats, strict=True) for m in chat.messages
    ]
    async with in_transaction() as db:
        _, rows = await db.execute_query('SELECT COALESCE(MAX("id"), 0) FROM "messages"')
        before = int(rows[0][0])
        await db.execute_many(placeholders(_CHAT_INSERT, dialect), chat_rows)
        if message_rows:
            await db.execute_many(placeholders(_MESSAGE_INSERT, dialect), message_rows)
        # The new ids, in the order inserted (while the transaction runs, no other writes).
        imported = set(new_ids)
        _, rows = await db.execute_query(
            placeholders('SELECT "id", "chat_id" FROM "messages" WHERE "id" > ? ORDER BY "id"', dialect), [before])
        ids = [row[0] for row in rows if row[1] in imported]
        if len(ids) != len(message_rows):  # a bug: the transaction rolls back
            raise RuntimeError(f"{len(message_rows)} messages were imported but {len(ids)} found")
        parents: list[list[int]] = []
        currents: list[list[Any]] = []
        given = iter(ids)
        for new_id, chat in zip(new_ids, archive.chats, strict=True):
            mapping = {m.id: next(given) for m in chat.messages}
            parents += [[mapping[m.parent_id], mapping[m.id]] for m in chat.messages if m.parent_id is not None]
            current = chat.current_message_id if chat.current_message_id is not None else (
                chat.messages[-1].id if chat.messages else None)
            if current is not None:
                currents.append([mapping[current], new_id])
        if parents:
            await db.execute_many(placeholders('UPDATE "messages" SET "parent_id" = ? WHERE "id" = ?', dialect), parents)
        if currents:
            await db.execute_many(
                placeholders('UPDATE "chats" SET "current_message_id" = ? WHERE "id" = ?', dialect), currents)
    titles = await asyncio.to_thread(lambda: [_display_title(_kept_title(c.title), c.messages) for c in archive.chats])
    return list(zip(new_ids, titles, strict=True))


class ImportBodyLimit(Request):
    """A request whose body may be as large as :attr:`import_max_bytes` on ``POST /chats/import``
    (the app's ``MAX_CONTENT_LENGTH`` elsewhere). The limit must be known when the request is
    made: its body is read, and refused beyond the limit, while the route is still being found."""

    import_max_bytes: ClassVar[int | None] = None

    def __init__(self, method: str, scheme: str, path: str, *args: Any, **kwargs: Any) -> None:
        if method == "POST" and path == IMPORT_PATH and self.import_max_bytes is not None:
            kwargs["max_content_length"] = self.import_max_bytes
        super().__init__(method, scheme, path, *args, **kwargs)
