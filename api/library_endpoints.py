"""The chat library's endpoints: search, export (one chat, or all as a zip) and import.

Paging the chat list itself is ``GET /chats`` (:mod:`api.endpoints`, :mod:`api.chat_pages`).
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import cast

from quart import Blueprint, Quart, Request, Response, request
from quart_schema import document_request, document_response, validate_querystring, validate_response
from werkzeug.exceptions import RequestEntityTooLarge

from api import search, transfer
from api.auth import current_user
from api.errors import UnsupportedMediaType
from api.schemas import (
    ExportQuery,
    ImportedChat,
    ImportResult,
    SearchQuery,
    SearchResult,
    SearchResults,
)
from api.services import services
from api.settings import ApiSettings

blueprint = Blueprint("library", __name__)


def register(app: Quart, settings: ApiSettings) -> None:
    """Add the routes, and give ``POST /chats/import`` its own body limit
    (``LLMCHAT_MAX_IMPORT_BYTES``); call after :func:`api.requests.register`."""
    app.request_class = cast(type[Request], type(
        "ImportingRequest", (transfer.ImportBodyLimit, app.request_class),
        {"import_max_bytes": settings.max_import_bytes},
    ))
    app.register_blueprint(blueprint)


@blueprint.get("/search")
@validate_querystring(SearchQuery)
@validate_response(SearchResults)
async def search_chats(query_args: SearchQuery) -> SearchResults:
    """Search your chats' titles and messages.

    Every word of ``q`` must be the start of a word of the text (``pyth conf`` finds
    "configuring Python"), ignoring case and diacritics; punctuation only separates words, and
    nothing typed is query syntax. Best match first (relevance, then the newest);
    ``message_id`` is null when a title matched. ``snippet`` is HTML: the escaped text around
    the match, each matching word in ``<mark>``."""
    found = await search.find(current_user().id, query_args.q, query_args.limit)
    return SearchResults(query=query_args.q, results=[
        SearchResult(chat_id=f.match.chat_id, title=f.title, message_id=f.match.message_id, sender=f.match.sender,
                     snippet=f.match.snippet,
                     timestamp=f.match.timestamp.isoformat() if f.match.timestamp is not None else None)
        for f in found
    ])


@blueprint.get("/chats/<chat_id>/export")
@validate_querystring(ExportQuery)
@document_response(transfer.ChatArchive)
async def export_chat(chat_id: str, query_args: ExportQuery) -> Response:
    """Download a chat as Markdown or as a JSON archive.

    ``format=markdown`` (the default) is to read: the title, the branch shown, each reply with
    its model and metrics. ``format=json`` is an archive with every message of the chat's
    tree, which ``POST /chats/import`` takes back."""
    chat = await services().conversations.get(chat_id, current_user())
    archive = await transfer.load_archive(current_user().id, chat.id)
    (archived,) = archive.chats
    if query_args.format == "json":
        body = transfer.archive_json(archive)
        return _attachment(body, "application/json", transfer.chat_filename(archived, "json"))
    markdown = transfer.to_markdown(archived, archive.exported_at or datetime.now(UTC))
    return _attachment(markdown.encode(), "text/markdown; charset=utf-8", transfer.chat_filename(archived, "md"))


@blueprint.get("/chats/export")
async def export_all() -> Response:
    """Download all your chats as a zip.

    It holds ``chats.json``, an archive of every chat (which ``POST /chats/import`` takes back),
    and one Markdown file per chat under ``chats/``."""
    archive = await transfer.load_archive(current_user().id)
    body = await asyncio.to_thread(transfer.build_zip, archive)
    return _attachment(body, "application/zip", f"llmchat-chats-{datetime.now(UTC):%Y-%m-%d}.zip")


@blueprint.post("/chats/import")
@document_request(transfer.ChatArchive)
@validate_response(ImportResult, 201)
async def import_chats() -> tuple[ImportResult, int]:
    """Import an archive of chats as new chats of yours.

    Takes the JSON of ``GET /chats/{id}/export?format=json`` or the ``chats.json`` of
    ``GET /chats/export`` (and only that); the chats get new ids and keep the archive's times.
    The archive is checked whole first: a malformed one is a 400 that says where (chat index,
    message id, field), and nothing of it is imported. At most ``LLMCHAT_MAX_IMPORT_BYTES``
    (413 beyond)."""
    if not request.is_json:
        got = f"Content-Type {request.mimetype[:100]!r}" if request.mimetype else "no Content-Type"
        raise UnsupportedMediaType(f"an archive is JSON (Content-Type: application/json); got {got}")
    settings = services().settings
    try:
        raw = await request.get_data(cache=False, as_text=False, parse_form_data=False)
    except RequestEntityTooLarge as exc:
        raise RequestEntityTooLarge(
            f"the archive is larger than {settings.max_import_bytes:,} bytes (LLMCHAT_MAX_IMPORT_BYTES); "
            "export fewer chats, or ask an administrator to raise the limit"
        ) from exc
    archive = await asyncio.to_thread(transfer.read_archive, raw, settings.max_message_chars)
    user = current_user()
    imported = await transfer.store_archive(archive, user)
    chatlog = services().chatlog
    await asyncio.gather(*(chatlog.write(chat_id, f"chat imported from an archive ({len(chat.messages)} messages)")
                           for (chat_id, _), chat in zip(imported, archive.chats, strict=True)))
    return ImportResult(imported=[ImportedChat(chat_id=c, title=t) for c, t in imported]), 201


def _attachment(body: bytes, content_type: str, filename: str) -> Response:
    response = Response(body, content_type=content_type)
    response.headers["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response
