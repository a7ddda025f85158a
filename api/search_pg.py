"""Full-text search of a user's chats on PostgreSQL: :class:`PgSearch`, the ChatSearch there.

It finds what :class:`~api.search.Fts5Search` finds on SQLite (the semantics are in
:mod:`api.search`) through two generated ``tsvector`` columns of the PostgreSQL init migration,
``messages.search`` and ``chats.title_search``: the text, NFC-normalised, with every run of
characters other than letters and digits turned into a space (so the parser sees the words the
query's terms are made of), then each word unaccented and lower-cased by the ``llmchat_search``
text search configuration. Each term is a prefix lexeme ``'term':*``; terms are ANDed.

Where it differs from SQLite:

- unaccent's rules fold more than FTS5's ``remove_diacritics`` (ß → ss, œ → oe, æ → ae, ł → l,
  ø → o, Ⅻ → xii, Greek accents): ``strasse`` finds "Straße" here, not on SQLite.
- Letters and digits are what the database's ``LC_CTYPE`` (glibc) says they are, so superscripts
  and fractions are not: ``x²`` is searched as ``x``, ``½`` alone finds nothing.
- Relevance is ``ts_rank`` (higher is better), not BM25: unequal matches may come in another
  order; equally relevant ones come newest first on both.

Snippets are made in Python from the stored text by :func:`snippet`: the window FTS5's
``snippet()`` picks, with the words marked that PostgreSQL matched (``ts_headline`` marks whole
e-mail addresses and URLs, skips numbers such as ``14`` in ``3.14`` and never writes "…").
"""

from __future__ import annotations

import asyncio
import bisect
import html
import re
import unicodedata
from typing import Any, cast

from tortoise import connections

from api.search import SNIPPET_WORDS, Match, Sender

# The best rows by rank, messages and titles each limited first, then the text of those rows only.
_SEARCH = """
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
)
SELECT h.*, COALESCE(m."text", c."title") AS text
FROM (SELECT * FROM hits ORDER BY score DESC, at DESC, message_id DESC NULLS LAST LIMIT $3) h
LEFT JOIN "messages" m ON m."id" = h.message_id
LEFT JOIN "chats" c ON h.message_id IS NULL AND c."id" = h.chat_id
ORDER BY h.score DESC, h.at DESC, h.message_id DESC NULLS LAST
"""


class PgSearch:
    """:class:`~api.search.ChatSearch` on PostgreSQL full-text search, in one statement."""

    def __init__(self, connection: str = "default") -> None:
        self._connection = connection

    async def search(self, owner_id: int, terms: list[str], limit: int) -> list[Match]:
        if not terms:
            return []
        db = connections.get(self._connection)
        rows = await db.execute_query_dict(_SEARCH, [_tsquery(terms), owner_id, limit])
        # A snippet reads its whole text (up to a long reply's): made off the event loop, as FTS5's
        # are in SQLite's thread.
        return await asyncio.to_thread(lambda: [_match(row, terms) for row in rows])


def _tsquery(terms: list[str]) -> str:
    # Terms are letters and digits (api.search.query_terms); quoted anyway, so that no character
    # can ever be an operator of to_tsquery.
    return " & ".join("'" + term.replace("\\", "\\\\").replace("'", "''") + "':*" for term in terms)


def _match(row: dict[str, Any], terms: list[str]) -> Match:
    text = snippet(row["text"] or "", terms)
    if row["message_id"] is None:
        return Match(row["chat_id"], None, None, text, None)
    return Match(row["chat_id"], row["message_id"], cast(Sender, row["role"]), text, row["at"])


# A word of a text: letters and digits, with the combining marks that follow them (FTS5's
# unicode61 keeps those in the word; the text is never normalised, so offsets stay the stored text's).
_WORD = re.compile(r"(?:[^\W_]|[\u0300-\u036f\u1ab0-\u1aff\u1dc0-\u1dff\u20d0-\u20ff\ufe20-\ufe2f])+")
# Letters that unaccent's rules fold but that have no Unicode decomposition (after casefold).
_UNACCENT_EXTRA = str.maketrans({
    "æ": "ae", "ð": "d", "ø": "o", "þ": "th", "đ": "d", "ħ": "h", "ı": "i", "ŀ": "l", "ł": "l",
    "ŋ": "n", "œ": "oe", "ŧ": "t",
})


def fold(text: str) -> str:
    """``text`` without case or diacritics, as the search compares words: NFKD without combining
    marks (recomposed, so Hangul syllables stay whole), casefolded (ß → ss), a few unaccent letters."""
    if text.isascii():
        return text.lower()
    bare = "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c))
    return unicodedata.normalize("NFC", bare).casefold().translate(_UNACCENT_EXTRA)


def snippet(text: str, terms: list[str], words: int = SNIPPET_WORDS) -> str:
    """HTML: about ``words`` words of ``text`` around the matches of ``terms``, escaped, each word
    that starts with a term (folded) in ``<mark>``, "…" where cut.

    The window is the one FTS5's ``snippet()`` picks: the first window, starting at a match, with
    the most distinct terms (then the most matches), centred on its matches; a window starting
    at a sentence before the match instead when that holds as many distinct terms.
    """
    spans = [match.span() for match in _WORD.finditer(text)]
    if not spans:
        return html.escape(text)
    folded_terms = [fold(term) for term in terms]
    folds: dict[str, str] = {}  # a long text repeats its words
    hits: list[list[int]] = []  # per word, the terms it starts with
    for a, b in spans:
        word = text[a:b]
        folded = folds.get(word)
        if folded is None:
            folded = folds[word] = fold(word)
        hits.append([i for i, term in enumerate(folded_terms) if folded.startswith(term)])
    start = _window(text, spans, hits, words)
    end = min(len(spans), start + words)
    out = ["…" if start > 0 else html.escape(text[: spans[0][0]])]
    for i in range(start, end):
        a, b = spans[i]
        word = html.escape(text[a:b])
        out.append(f"<mark>{word}</mark>" if hits[i] else word)
        if i + 1 < end:
            out.append(html.escape(text[b : spans[i + 1][0]]))
    out.append("…" if end < len(spans) else html.escape(text[spans[-1][1] :]))
    return "".join(out)


def _window(text: str, spans: list[tuple[int, int]], hits: list[list[int]], words: int) -> int:
    """The first word of the snippet, chosen as SQLite's ``fts5SnippetFunction`` does."""
    count = len(spans)
    sentences = [0] + [i for i in range(1, count) if _ends_sentence(text[spans[i - 1][1] : spans[i][0]])]
    best_score, best_start = 0, 0
    for position in (i for i, terms in enumerate(hits) if terms):
        score, first, last = _score(hits, position, words)
        if score > best_score:
            centred = first - (words - (last - first)) // 2
            best_score, best_start = score, max(0, min(centred, count - words))
        if count > words:
            sentence = sentences[bisect.bisect_right(sentences, position) - 1]
            if sentence < position:
                score = _score(hits, sentence, words)[0] + (120 if sentence == 0 else 100)
                if score > best_score:
                    best_score, best_start = score, sentence
    return best_start


def _score(hits: list[list[int]], start: int, words: int) -> tuple[int, int, int]:
    """A window's score (1000 for each distinct term, 1 for each further match) and the span of
    its matches (first word, one past the last)."""
    seen: set[int] = set()
    score, first, last = 0, -1, 0
    for i in range(start, min(len(hits), start + words)):
        for term in hits[i]:
            score += 1 if term in seen else 1000
            seen.add(term)
            first = i if first < 0 else first
            last = i + 1
    return score, first, last


def _ends_sentence(separator: str) -> bool:
    # FTS5's rule for the word after ``separator``: it follows whitespace that follows "." or ":".
    stripped = separator.rstrip(" \t\n\r")
    return len(stripped) < len(separator) and stripped.endswith((".", ":"))
