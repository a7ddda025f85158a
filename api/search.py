"""Full-text search of a user's chats: their titles and the text of their messages.

The semantics, which any implementation must give (whatever replaces SQLite FTS5 on
another database must find the same things):

- The query is split into **terms**: maximal runs of letters and digits (Unicode). Every
  other character (spaces, punctuation, quotes, ``*``, ``-``, parentheses) only separates
  terms, and words such as ``AND``, ``OR``, ``NOT`` or ``NEAR`` are terms like any other:
  what the user types is never query syntax.
- A text matches when **each term is the prefix of a word** in it (terms are ANDed):
  ``conf pyth`` finds "configuring Python". Words are split the same way as the query.
- Matching ignores **case and diacritics**: ``cafe`` finds "Café", ``ÉTÉ`` finds "été".
- Two kinds of results: each matching **message** (its own text; every message of the chat,
  not only the branch shown), and each chat whose **title** (the name its owner gave it)
  matches. A chat without a title is found by its messages.
- Only the owner's chats. Results are ranked by relevance (BM25 over the matching text,
  so rarer terms and shorter texts rank higher), then the newest first.
- Each result has a **snippet**: HTML, the text around the match (a few words either side,
  ``…`` where cut), escaped, with each matching word wrapped in ``<mark>…</mark>``.

:class:`ChatSearch` is the interface; :class:`Fts5Search` implements it on the SQLite FTS5
tables of the migration ``6_…_dashboard`` (kept in step with every write by triggers), and
:class:`api.search_pg.PgSearch` on PostgreSQL's generated ``tsvector`` columns.
"""

from __future__ import annotations

import html
import re
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, Protocol

from tortoise import connections
from tortoise.functions import Min

from api.database import dialect_of_connection
from api.errors import MalformedRequest
from api.store import Chat, Message, chat_title

MAX_TERMS = 32
SNIPPET_WORDS = 16  # words of context in a snippet, the matches included

_TERM = re.compile(r"[^\W_]+")  # letters and digits: what the FTS5 unicode61 tokenizer keeps

Sender = Literal["user", "assistant"]


@dataclass(frozen=True, slots=True)
class Match:
    """One match: a message (``message_id`` set) or a chat's title (``message_id`` None)."""

    chat_id: str
    message_id: int | None
    sender: Sender | None
    snippet: str  # HTML, see the module docstring
    timestamp: datetime | None  # the message's; None for a title


@dataclass(frozen=True, slots=True)
class Found:
    """A match with the chat's title as the chat list shows it."""

    match: Match
    title: str


class ChatSearch(Protocol):
    """Finds the owner's messages and titles matching every term (see the module docstring)."""

    async def search(self, owner_id: int, terms: list[str], limit: int) -> list[Match]: ...


def query_terms(query: str) -> list[str]:
    """The terms of a query as the user typed it; :class:`MalformedRequest` beyond :data:`MAX_TERMS`."""
    terms = _TERM.findall(query)
    if len(terms) > MAX_TERMS:
        raise MalformedRequest(f"q: at most {MAX_TERMS} words are searched for; this query has {len(terms)}")
    return terms


async def find(owner_id: int, query: str, limit: int, engine: ChatSearch | None = None) -> list[Found]:
    """The best ``limit`` matches of ``query`` in the owner's chats, each with its chat's title."""
    terms = query_terms(query)
    if not terms:  # nothing but punctuation: nothing to find
        return []
    matches = await (engine or default_engine()).search(owner_id, terms, limit)
    titles = await _titles({m.chat_id for m in matches})
    return [Found(m, titles.get(m.chat_id, "")) for m in matches]


def default_engine() -> ChatSearch:
    """The engine of the open database: FTS5 on SQLite, :class:`api.search_pg.PgSearch` on PostgreSQL."""
    if dialect_of_connection(connections.get("default")) == "postgres":
        from api.search_pg import PgSearch

        return PgSearch()
    return Fts5Search()


async def _titles(chat_ids: set[str]) -> dict[str, str]:
    chats = await Chat.filter(id__in=list(chat_ids)) if chat_ids else []
    untitled = [c.id for c in chats if not c.title]
    firsts: dict[str, str] = {}
    if untitled:
        ids = await Message.filter(chat_id__in=untitled, role="user").group_by("chat_id").annotate(
            first=Min("id")).values_list("first", flat=True)
        firsts = dict(await Message.filter(id__in=list(ids)).values_list("chat_id", "text"))
    return {c.id: chat_title(c, firsts.get(c.id)) for c in chats}


class Fts5Search:
    """:class:`ChatSearch` on SQLite FTS5: ``messages_fts`` (external content on
    ``messages.text``) and ``chat_titles_fts``, both tokenized ``unicode61 remove_diacritics 2``.

    Each term goes to FTS5 as a quoted string (quotes doubled) followed by ``*``: a prefix
    token, never an operator. The best rows are chosen first by their BM25 score alone; the
    snippets, which read each text again, are made for those rows only.
    """

    def __init__(self, connection: str = "default") -> None:
        self._connection = connection

    async def search(self, owner_id: int, terms: list[str], limit: int) -> list[Match]:
        db = connections.get(self._connection)
        expression = " ".join('"' + term.replace('"', '""') + '"*' for term in terms)
        _, messages = await db.execute_query(
            'SELECT m."id", m."chat_id", m."role", m."created_at", bm25("messages_fts") AS score '
            'FROM "messages_fts" JOIN "messages" m ON m."id" = "messages_fts".rowid '
            'JOIN "chats" c ON c."id" = m."chat_id" '
            'WHERE "messages_fts" MATCH ? AND c."owner_id" = ? '
            'ORDER BY score, m."created_at" DESC, m."id" DESC LIMIT ?',
            [expression, owner_id, limit],
        )
        _, titles = await db.execute_query(
            'SELECT "chat_titles_fts".rowid, c."id", c."updated_at", bm25("chat_titles_fts") AS score '
            'FROM "chat_titles_fts" JOIN "chats" c ON c."id" = "chat_titles_fts"."chat_id" '
            'WHERE "chat_titles_fts" MATCH ? AND c."owner_id" = ? '
            'ORDER BY score, c."updated_at" DESC LIMIT ?',
            [expression, owner_id, limit],
        )
        candidates = [_Candidate(row[4], row[3], row[0], row) for row in messages]
        candidates += [_Candidate(row[3], row[2], None, row) for row in titles]
        # Relevance, then the newest: stored times are ISO text in UTC, so text order is time order.
        candidates.sort(key=lambda c: c.when, reverse=True)
        candidates.sort(key=lambda c: c.score)
        chosen = candidates[:limit]
        marks = _Marks()
        message_snippets = await self._snippets(
            "messages_fts", 0, expression, [c.row[0] for c in chosen if c.message_id is not None], marks)
        title_snippets = await self._snippets(
            "chat_titles_fts", 1, expression, [c.row[0] for c in chosen if c.message_id is None], marks)
        return [
            Match(c.row[1], c.message_id, c.row[2], message_snippets.get(c.message_id, ""),
                  datetime.fromisoformat(c.when))
            if c.message_id is not None
            else Match(c.row[1], None, None, title_snippets.get(c.row[0], ""), None)
            for c in chosen
        ]

    async def _snippets(self, table: str, column: int, expression: str, rowids: list[int], marks: _Marks) -> dict[int, str]:
        if not rowids:
            return {}
        db = connections.get(self._connection)
        _, rows = await db.execute_query(
            f'SELECT rowid, snippet("{table}", {column}, ?, ?, ?, {SNIPPET_WORDS}) FROM "{table}" '
            f'WHERE "{table}" MATCH ? AND rowid IN ({", ".join("?" * len(rowids))})',
            [marks.open, marks.close, "…", expression, *rowids],
        )
        return {row[0]: marks.to_html(row[1]) for row in rows}


class _Marks:
    """Markers FTS5 puts around each match, made unguessable per search so that no text a
    user stored can pass for one; :meth:`to_html` escapes the text, then turns them into tags."""

    def __init__(self) -> None:
        token = secrets.token_hex(8)
        self.open = f"\ue000{token}\ue001"
        self.close = f"\ue002{token}\ue003"

    def to_html(self, marked: str) -> str:
        return html.escape(marked).replace(self.open, "<mark>").replace(self.close, "</mark>")


@dataclass(frozen=True, slots=True)
class _Candidate:
    score: float
    when: str
    message_id: int | None
    row: Any
