"""PgSearch on a real PostgreSQL server against Fts5Search on SQLite: the same chats written through
the ORM into each database, the same queries (tricky words, hostile input, after edits), the same
matches with the same snippets, except where PostgreSQL's unaccent folds letters that FTS5 keeps
(the supersets, asserted as such). Another user's chats never appear on either."""

from __future__ import annotations

import asyncio
import contextlib
import html
import random
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest

from api.database import close_store, open_store
from api.errors import MalformedRequest
from api.search import SNIPPET_WORDS, ChatSearch, Found, Fts5Search, find
from api.search_pg import PgSearch, snippet
from api.store import Chat, Message, User
from tests.api.test_search import HOSTILE

LIMIT = 50
LONG = " ".join(f"word{i}" for i in range(40)) + " the needle sits here " + " ".join(f"tail{i}" for i in range(40))
# Sentences: FTS5 starts a long text's snippet at a sentence when that holds as many terms.
STORY = ("Once upon a time. " + " ".join(f"filler{i}" for i in range(30)) + ". Then: a haystack hid the pin, "
         + " ".join(f"after{i}" for i in range(20)) + ". The pin was found.")
CORPUS: dict[str, tuple[str | None, list[str]]] = {
    "c-creme": ("Crème brûlée recipe", ["How do I make crème brûlée?", "Heat the cream; caramelise the sugar."]),
    "c-py": ("Python notes", ["Configuring Python logging", "snake_case_name and CamelCase"]),
    "c-fr": (None, ["ÉTÉ à Paris", "Café au lait, naïve approach"]),
    "c-de": (None, ["Straße in München", "Œuvre and Æsir, łódź"]),
    "c-tech": (None, ["e-mail bob@example.com about v2.0 release 3.14", "see https://docs.example.org/a_b/c.html"]),
    "c-intl": ("中文 测试", ["Ελληνικά ΑΘΗΝΑ", "Привет МИР", "decomposed cre\u0301me bru\u0302le\u0301e"]),
    "c-ops": ("NEAR AND OR NOT", ['rowid messages_fts "quoted" (paren) a*b', LONG]),
    "c-html": (None, ["<b>bold</b> & <script>x</script> tag", 'See <b onclick=x>it</b> \ue000 \ue001 "q" marker']),
    "c-story": ("A long story", [STORY, "Short one. Pin it: here."]),
    "c-hostile": ("x² and ½ Ⅻ", ["ünïcödé rowid messages_fts word a b x² Ⅻ 🙂 w w w", "korean 한국어 텍스트"]),
    "c-edit": ("Paint shop", ["My favourite colour is turquoise"]),
    "c-doomed": ("Doomed", ["vermilion plans"]),
    "same-0": (None, ["identical zebra question"]),
    "same-1": (None, ["identical zebra question"]),
    "same-2": (None, ["identical zebra question"]),
}
OTHER: dict[str, tuple[str | None, list[str]]] = {
    "o-creme": ("crème brûlée", ["crème brûlée for bob", "Straße zebra needle word1 example"]),
}
QUERIES = [
    "creme brulee", "Crème brûlée", "crem brul", "conf pyth", "ete", "ÉTÉ", "cafe", "naive", "straße", "munchen",
    "example", "com", "bob", "v2", "14", "snake", "case", "camelcase", "中文", "αθηνα", "ΑΘΗΝΑ", "мир", "cre\u0301me",
    "NEAR", "AND OR", "rowid", "messages", "fts", "zzz", "e mail", "needle", "https", "html", "script", "a_b", "b c",
    "word", "word1", "tail3 needle", "haystack", "pin", "haystack pin", "filler2", "once", "after1 filler", "marker",
    "b onclick", "x", "x²", "½", "Ⅻ", "한국", "텍스트", "w w", "zebra", "identical question", "a:*|b", "a' | 'b",
    "a\\'b", "turquoise", "paint", "doomed", "vermilion",
]
# Where the databases differ, asserted as such below. unaccent folds letters that FTS5's
# remove_diacritics keeps (ß → ss, œ → oe, ł → l, Greek accents): PostgreSQL finds more, here the
# chat and its snippet.
SUPERSETS = {
    "strasse": ("c-de", "<mark>Straße</mark> in München"),
    "oeuvre": ("c-de", "<mark>Œuvre</mark> and Æsir, łódź"),
    "lodz": ("c-de", "Œuvre and Æsir, <mark>łódź</mark>"),
    "ελληνικα": ("c-intl", "<mark>Ελληνικά</mark> ΑΘΗΝΑ"),
}
# The same matches, and PostgreSQL marks the words it folds further (Ⅻ is "xii", Æ is "ae").
MARKED_FURTHER = {"x": "Ⅻ", "a AND": "Æsir"}
# Superscripts and fractions are no letters or digits to PostgreSQL's parser (glibc's classes, not
# Unicode's): "x²" is searched as "x", "½" finds nothing.
NO_DIGITS = ["x²", "½"]
EDITED = ["turquoise", "ochre", "favourite", "paint", "galore", "doomed", "vermilion"]
SHARED = [q for q in dict.fromkeys(QUERIES + HOSTILE) if q not in {*MARKED_FURTHER, *NO_DIGITS}]


@dataclass(frozen=True, slots=True)
class Run:
    """What one engine answered, on its own database."""

    messages: dict[int, tuple[str, str]]  # id -> (chat, text): both databases must number them alike
    found: dict[str, list[Found]]  # per query
    refused: set[str]  # the queries refused as malformed (more than MAX_TERMS words)
    limited: list[Found]  # "b c" with a limit of 2
    edited: dict[str, list[Found]]  # after a message edit, a rename and a delete
    bobs: list[Found]  # bob's own search


async def _find_all(owner_id: int, queries: list[str], engine: ChatSearch) -> tuple[dict[str, list[Found]], set[str]]:
    found: dict[str, list[Found]] = {}
    refused: set[str] = set()
    for query in queries:
        try:
            found[query] = await find(owner_id, query, LIMIT, engine)
        except MalformedRequest:
            refused.add(query)
        except Exception as exc:
            exc.add_note(f"searching for {query!r} with {type(engine).__name__}")
            raise
    return found, refused


async def _write(owner: User, corpus: dict[str, tuple[str | None, list[str]]]) -> None:
    for chat_id, (title, texts) in corpus.items():
        chat = await Chat.create(id=chat_id, title=title, owner=owner)
        parent: Message | None = None
        for n, text in enumerate(texts):
            parent = await Message.create(chat=chat, role="user" if n % 2 == 0 else "assistant", text=text,
                                          parent_id=parent.id if parent else None)


async def _run(url: str, engine: ChatSearch) -> Run:
    await open_store(url)
    try:
        alice = await User.create(name="alice", password_hash="x")
        bob = await User.create(name="bob", password_hash="x")
        await _write(alice, CORPUS)
        await _write(bob, OTHER)
        messages = {row[0]: (row[1], row[2]) for row in await Message.all().values_list("id", "chat_id", "text")}
        found, refused = await _find_all(alice.id, [*QUERIES, *HOSTILE, *SUPERSETS], engine)
        limited = await find(alice.id, "b c", 2, engine)
        bobs = await find(bob.id, "crème", LIMIT, engine)

        await Message.filter(text="My favourite colour is turquoise").update(text="My favourite colour was ochre")
        await Chat.filter(id="c-edit").update(title="Colours galore")
        await Chat.filter(id="c-doomed").delete()
        edited, _ = await _find_all(alice.id, EDITED, engine)
        return Run(messages, found, refused, limited, edited, bobs)
    finally:
        await close_store()


@pytest.fixture(scope="module")
async def runs(tmp_path_factory: pytest.TempPathFactory, pg_database: Callable[[], str]) -> dict[str, Run]:
    """Both engines, one after the other, each in a task of its own: Tortoise holds one
    configuration at a time, in the context of the task that opened it."""
    home: Path = tmp_path_factory.mktemp("search-pg")
    sqlite = await asyncio.create_task(_run(str(home / "search.sqlite3"), Fts5Search()))
    postgres = await asyncio.create_task(_run(pg_database(), PgSearch()))
    return {"sqlite": sqlite, "postgres": postgres}


def _keys(found: list[Found]) -> set[tuple[str, int | None]]:
    return {(f.match.chat_id, f.match.message_id) for f in found}


def _snippets(found: list[Found]) -> dict[tuple[str, int | None], str]:
    return {(f.match.chat_id, f.match.message_id): f.match.snippet for f in found}


def test_both_databases_number_the_messages_alike(runs: dict[str, Run]) -> None:
    assert runs["sqlite"].messages == runs["postgres"].messages
    assert len(runs["sqlite"].messages) == sum(len(texts) for _, texts in [*CORPUS.values(), *OTHER.values()])


@pytest.mark.parametrize("query", SHARED)
def test_same_matches_and_snippets(runs: dict[str, Run], query: str) -> None:
    if query in runs["sqlite"].refused or query in runs["postgres"].refused:  # more than MAX_TERMS words
        assert query in runs["sqlite"].refused and query in runs["postgres"].refused
        return
    sqlite, postgres = runs["sqlite"].found[query], runs["postgres"].found[query]
    assert _keys(postgres) == _keys(sqlite)
    assert len(postgres) == len(sqlite)
    assert _snippets(postgres) == _snippets(sqlite)
    assert [f.title for f in sorted(postgres, key=_key)] == [f.title for f in sorted(sqlite, key=_key)]


def _key(found: Found) -> tuple[str, int]:
    return found.match.chat_id, found.match.message_id or 0


def test_the_corpus_finds_something_for_most_queries(runs: dict[str, Run]) -> None:
    # Equal empty answers prove nothing: the shared queries must mostly find something.
    found = [q for q in QUERIES if runs["sqlite"].found[q]]
    assert len(found) >= len(QUERIES) - 5, sorted(set(QUERIES) - set(found))


@pytest.mark.parametrize("query", SUPERSETS)
def test_postgres_folds_more_letters_than_fts5(runs: dict[str, Run], query: str) -> None:
    chat_id, expected = SUPERSETS[query]
    assert runs["sqlite"].found[query] == []
    (hit,) = runs["postgres"].found[query]
    assert (hit.match.chat_id, hit.match.snippet) == (chat_id, expected)


@pytest.mark.parametrize("query", MARKED_FURTHER)
def test_postgres_marks_the_words_it_folds_further(runs: dict[str, Run], query: str) -> None:
    sqlite, postgres = _snippets(runs["sqlite"].found[query]), _snippets(runs["postgres"].found[query])
    assert postgres.keys() == sqlite.keys()
    differing = {key for key in sqlite if postgres[key] != sqlite[key]}
    assert differing
    word = MARKED_FURTHER[query]
    for key in differing:
        assert f"<mark>{word}</mark>" in postgres[key] and f"<mark>{word}</mark>" not in sqlite[key]
        assert postgres[key].replace(f"<mark>{word}</mark>", word) == sqlite[key]


def test_superscripts_and_fractions_are_no_digits_to_postgres(runs: dict[str, Run]) -> None:
    sqlite, postgres = runs["sqlite"].found, runs["postgres"].found
    assert {chat for chat, _ in _keys(sqlite["x²"])} == {"c-hostile"}
    assert _keys(postgres["x²"]) == _keys(postgres["x"]) > _keys(sqlite["x²"])
    assert [(f.match.chat_id, f.match.message_id) for f in sqlite["½"]] == [("c-hostile", None)]
    assert postgres["½"] == []


def test_other_users_chats_never_appear(runs: dict[str, Run]) -> None:
    for run in runs.values():
        everything = [*run.found.values(), *run.edited.values(), run.limited]
        assert not {f.match.chat_id for found in everything for f in found} & set(OTHER)
        # bob's own search does find his chat, and only his.
        assert {(f.match.chat_id, f.match.message_id is None) for f in run.bobs} == {
            ("o-creme", True), ("o-creme", False)}


def test_equally_relevant_matches_come_newest_first(runs: dict[str, Run]) -> None:
    for run in runs.values():
        assert [f.match.chat_id for f in run.found["zebra"]] == ["same-2", "same-1", "same-0"]


def test_message_matches_carry_their_utc_time_and_titles_none(runs: dict[str, Run]) -> None:
    for run in runs.values():
        found = run.found["crem brul"]
        assert len(found) == 3
        for f in found:
            at = f.match.timestamp
            assert (at is None) == (f.match.message_id is None)
            assert at is None or at.utcoffset() == timedelta(0)
            assert (f.match.sender is None) == (f.match.message_id is None)


def test_the_limit_holds(runs: dict[str, Run]) -> None:
    for run in runs.values():
        assert len(run.limited) == 2
        assert _keys(run.limited) <= _keys(run.found["b c"])


def test_the_index_follows_edits_renames_and_deletes(runs: dict[str, Run]) -> None:
    for query in EDITED:
        assert _keys(runs["postgres"].edited[query]) == _keys(runs["sqlite"].edited[query]), query
        assert _snippets(runs["postgres"].edited[query]) == _snippets(runs["sqlite"].edited[query]), query
    edited = runs["postgres"].edited
    assert edited["turquoise"] == [] and edited["paint"] == [] and edited["doomed"] == []
    assert edited["vermilion"] == []
    assert [(f.match.chat_id, f.match.snippet) for f in edited["ochre"]] == [
        ("c-edit", "My favourite colour was <mark>ochre</mark>")]
    assert [(f.match.message_id, f.title) for f in edited["galore"]] == [
        (None, "Colours galore")]


def _fts5_snippet(text: str, terms: list[str]) -> str | None:
    with contextlib.closing(sqlite3.connect(":memory:")) as db:
        db.execute('CREATE VIRTUAL TABLE t USING fts5(x, tokenize="unicode61 remove_diacritics 2")')
        db.execute("INSERT INTO t (x) VALUES (?)", (text,))
        expression = " ".join('"' + term + '"*' for term in terms)
        row = db.execute("SELECT snippet(t, 0, '\ue000', '\ue001', '…', ?) FROM t WHERE t MATCH ?",
                         (SNIPPET_WORDS, expression)).fetchone()
    return None if row is None else html.escape(row[0]).replace("\ue000", "<mark>").replace("\ue001", "</mark>")


def test_snippets_pick_the_words_fts5_picks() -> None:
    # Texts longer than a snippet, with sentences, repeated and several terms: where FTS5's choice is subtle.
    words = ["alpha", "Beta", "gamma", "café", "crème", "x", "ab", "abc", "zebra", "14", "v2", "München", "мир"]
    separators = [" ", " ", " ", ", ", ". ", ": ", ".\n", " - ", "(", ") ", ".", "@", "; ", "? "]
    rng = random.Random(14)
    compared = 0
    for _ in range(400):
        text = rng.choice(["", "(", "..."]) + "".join(
            rng.choice(words) + rng.choice(separators) for _ in range(rng.choice([1, 8, 16, 17, 30, 60])))
        terms = [rng.choice(words)[: rng.randint(1, 3)] for _ in range(rng.choice([1, 2, 3]))]
        expected = _fts5_snippet(text, terms)
        if expected is not None:  # FTS5 found the text
            assert snippet(text, terms) == expected, (text, terms)
            compared += 1
    assert compared > 150


def test_snippets_fold_as_postgresql_does() -> None:
    assert snippet("<b>x</b> & y", ["x"]) == "&lt;b&gt;<mark>x</mark>&lt;/b&gt; &amp; y"
    assert snippet("Straße, ŁÓDŹ, Œuvre, 한국어", ["strasse", "lodz", "oeu", "한국"]) == (
        "<mark>Straße</mark>, <mark>ŁÓDŹ</mark>, <mark>Œuvre</mark>, <mark>한국어</mark>")
    assert snippet("각 가", ["가"]) == "각 <mark>가</mark>"  # Hangul syllables are compared whole
    assert snippet("decomposed cre\u0301me", ["creme"]) == "decomposed <mark>cre\u0301me</mark>"
