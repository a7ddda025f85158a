"""Prototype of api/search.py's PostgreSQL engine: :class:`ChatSearch` on tsvector columns.

The columns (``messages.search``, ``chats.title_search``) are generated from the text by the
``llmchat_search`` text search configuration (see pg_search_ddl.sql): the text is NFC-normalised,
every run of characters that are not letters or digits becomes a space (so the parser sees the
same words as FTS5's unicode61 and the query's ``[^\\W_]+``), then each word is unaccented and
lower-cased. Each term becomes a prefix lexeme ``'term':*``; terms are ANDed.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from tortoise import connections

from api.search import SNIPPET_WORDS, Match, _Marks  # noqa: PLC2701 - prototype reuses the markers


def tsquery(terms: list[str]) -> str:
    # Terms are letters and digits only (query_terms); quoting still keeps any character a lexeme.
    return " & ".join("'" + t.replace("\\", "\\\\").replace("'", "''") + "':*" for t in terms)


class PgSearch:
    def __init__(self, connection: str = "default") -> None:
        self._connection = connection

    async def search(self, owner_id: int, terms: list[str], limit: int) -> list[Match]:
        db = connections.get(self._connection)
        marks = _Marks()
        options = (f"StartSel={marks.open}, StopSel={marks.close}, MaxWords={SNIPPET_WORDS}, "
                   f"MinWords={SNIPPET_WORDS // 2}, ShortWord=0, HighlightAll=false, MaxFragments=1, "
                   "FragmentDelimiter=…")
        # One statement: best rows by rank, then the headline of those rows only.
        _, rows = await db.execute_query(
            """
            WITH q AS (SELECT to_tsquery('llmchat_search', $1) AS query),
            hits AS (
                (SELECT m."id" AS message_id, m."chat_id", m."role", m."created_at" AS at,
                        ts_rank(m."search", q.query) AS score
                 FROM "messages" m JOIN "chats" c ON c."id" = m."chat_id", q
                 WHERE m."search" @@ q.query AND c."owner_id" = $2
                 ORDER BY score DESC, m."created_at" DESC, m."id" DESC LIMIT $3)
                UNION ALL
                (SELECT NULL, c."id", NULL, c."updated_at", ts_rank(c."title_search", q.query)
                 FROM "chats" c, q
                 WHERE c."title_search" @@ q.query AND c."owner_id" = $2
                 ORDER BY 5 DESC, c."updated_at" DESC LIMIT $3)
            ),
            best AS (SELECT * FROM hits ORDER BY score DESC, at DESC, message_id DESC NULLS LAST LIMIT $3)
            SELECT b.message_id, b.chat_id, b.role, b.at, b.score,
                   ts_headline('llmchat_search', COALESCE(m."text", c."title"), q.query, $4) AS snippet,
                   left(COALESCE(m."text", c."title"), 1) AS first_char
            FROM best b CROSS JOIN q
            LEFT JOIN "messages" m ON m."id" = b.message_id
            LEFT JOIN "chats" c ON b.message_id IS NULL AND c."id" = b.chat_id
            ORDER BY b.score DESC, b.at DESC, b.message_id DESC NULLS LAST
            """,
            [tsquery(terms), owner_id, limit, options],
        )
        return [self._match(row, marks) for row in rows]

    @staticmethod
    def _match(row: Any, marks: _Marks) -> Match:
        snippet = marks.to_html(row["snippet"])
        if row["message_id"] is None:
            return Match(row["chat_id"], None, None, snippet, None)
        at: datetime = row["at"]
        return Match(row["chat_id"], row["message_id"], row["role"], snippet, at)
