"""Prototype: a snippet made in Python from a text and the query's terms, the same on every
database (ts_headline marks by PostgreSQL's parser, which keeps emails, URLs and numbers like
3.14 whole, drops trailing punctuation and never writes "…").

Words are the same runs of letters and digits as the query's terms; a word is marked when its
folded form (NFKD without combining marks, casefolded) starts with a folded term. The window is
``SNIPPET_WORDS`` words holding the most distinct terms, with its matches centred, "…" where cut.
"""

from __future__ import annotations

import html
import re
import unicodedata

SNIPPET_WORDS = 16
_WORD = re.compile(r"[^\W_]+")  # the query's terms
# A word of the text: letters and digits, with any combining marks that follow (FTS5's unicode61
# keeps them in the token; the text is never normalised, so offsets stay the stored text's).
_TEXT_WORD = re.compile(r"(?:[^\W_]|[\u0300-\u036f\u1ab0-\u1aff\u1dc0-\u1dff\u20d0-\u20ff\ufe20-\ufe2f])+")


def fold(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if not unicodedata.combining(c)).casefold()


def snippet(text: str, terms: list[str], words: int = SNIPPET_WORDS) -> str:
    folded_terms = [fold(t) for t in terms]
    spans = [(m.start(), m.end()) for m in _TEXT_WORD.finditer(text)]
    hits = [{i for i, t in enumerate(folded_terms) if fold(text[a:b]).startswith(t)} for a, b in spans]
    if not spans:
        return html.escape(text)
    best, best_score = 0, (-1, 0)
    for start in range(max(1, len(spans) - words + 1)):
        window = hits[start:start + words]
        distinct = set().union(*window)
        score = (len(distinct), sum(bool(h) for h in window))
        if score > best_score:
            best, best_score = start, score
    matched = [i for i in range(best, min(len(spans), best + words)) if hits[i]]
    if matched:  # centre the matches in the window, within the text
        first, last = matched[0], matched[-1]
        best = max(0, min(len(spans) - words, first - (words - (last - first + 1)) // 2))
    end = min(len(spans), best + words)
    out = ["…" if best > 0 else html.escape(text[: spans[0][0]])]
    for i in range(best, end):
        a, b = spans[i]
        word = html.escape(text[a:b])
        out.append(f"<mark>{word}</mark>" if hits[i] else word)
        if i + 1 < end:
            out.append(html.escape(text[b: spans[i + 1][0]]))
    out.append("…" if end < len(spans) else html.escape(text[spans[end - 1][1]:]))
    return "".join(out)


if __name__ == "__main__":
    import json
    import sys

    sys.path.insert(0, "/tmp/i14")
    sys.argv = ["x"]
    from compare_search import CORPUS, QUERIES  # noqa: E402

    texts = {}
    for chat_id, (title, messages) in CORPUS.items():
        for t in ([title] if title else []) + messages:
            texts.setdefault(chat_id, []).append(t)
    data = json.load(open("/tmp/i14/compare_search.json"))
    same = total = 0
    for q in QUERIES:
        terms = _WORD.findall(q)
        for chat_id, _, fts5 in data["sqlite"][q]:
            candidates = [snippet(t, terms) for t in texts[chat_id]]
            total += 1
            if fts5 in candidates:
                same += 1
            else:
                best = max(candidates, key=lambda c: c.count("<mark>"))
                print(f"{q!r}\n   fts5  : {fts5}\n   python: {best}")
    print(f"{same}/{total} snippets identical to FTS5's")
