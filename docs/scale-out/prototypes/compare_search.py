"""Same corpus, same queries: the project's Fts5Search on SQLite against PgSearch on PostgreSQL.

Run: venv/bin/python compare_search.py  (starts and removes its own PG cluster)
Prints, per query, whether the found (chat, message) sets agree, and both snippets.
"""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, "/work/main")
sys.path.insert(0, "/tmp/i14")

from aerich import Command  # noqa: E402
from tortoise import Tortoise  # noqa: E402

from db_config import tortoise_config  # noqa: E402
from pg_cluster import PgCluster  # noqa: E402

LONG = " ".join(f"word{i}" for i in range(40)) + " the needle sits here " + " ".join(f"tail{i}" for i in range(40))
CORPUS = {
    "c-creme": ("Crème brûlée recipe", ["How do I make crème brûlée?", "Heat the cream; caramelise the sugar."]),
    "c-py": ("Python notes", ["Configuring Python logging", "snake_case_name and CamelCase"]),
    "c-fr": (None, ["ÉTÉ à Paris", "Café au lait, naïve approach"]),
    "c-de": (None, ["Straße in München", "Œuvre and Æsir, łódź"]),
    "c-tech": (None, ["e-mail bob@example.com about v2.0 release 3.14", "see https://docs.example.org/a_b/c.html"]),
    "c-intl": ("中文 测试", ["Ελληνικά ΑΘΗΝΑ", "Привет МИР", "decomposed cre\u0301me bru\u0302le\u0301e"]),
    "c-ops": ("NEAR AND OR NOT", ["rowid messages_fts \"quoted\" (paren) a*b", LONG]),
    "c-html": (None, ["<b>bold</b> & <script>x</script> tag"]),
}
OTHER = {"o-creme": ("crème", ["crème brûlée for bob"])}
QUERIES = ["creme brulee", "Crème brûlée", "crem brul", "conf pyth", "ete", "ÉTÉ", "cafe", "naive", "strasse",
           "straße", "munchen", "oeuvre", "lodz", "example", "com", "bob", "v2", "14", "snake", "case", "camelcase",
           "中文", "αθηνα", "ΑΘΗΝΑ", "мир", "cre\u0301me", "NEAR", "AND OR", "rowid", "messages", "fts", "zzz",
           "e mail", "needle", "https", "html", "script", "a_b", "b c"]


async def fill(config: dict, location: str) -> dict[str, int]:
    async with Command(tortoise_config=config, app="models", location=location) as command:
        await command.init()
        await command.upgrade(run_in_transaction=True)
    await Tortoise.init(config=config, _enable_global_fallback=True)
    from api.store import Chat, Message, User

    ids = {}
    for owner_name, corpus in (("alice", CORPUS), ("bob", OTHER)):
        owner = await User.create(name=owner_name, password_hash="x")
        ids[owner_name] = owner.id
        for chat_id, (title, texts) in corpus.items():
            chat = await Chat.create(id=chat_id, title=title, owner=owner)
            parent = None
            for i, text in enumerate(texts):
                parent = await Message.create(chat=chat, role="user" if i % 2 == 0 else "assistant", text=text,
                                              parent_id=parent.id if parent else None)
    return ids


async def run(engine_name: str, config: dict, location: str) -> dict[str, list]:
    from api import search as search_module

    ids = await fill(config, location)
    engine = search_module.Fts5Search() if engine_name == "sqlite" else __import__("pg_search").PgSearch()
    out: dict[str, list] = {}
    t = time.perf_counter()
    for q in QUERIES:
        found = await search_module.find(ids["alice"], q, 20, engine)
        out[q] = [[f.match.chat_id, f.match.message_id is not None and f.match.message_id, f.match.snippet] for f in found]
    elapsed = time.perf_counter() - t
    await Tortoise.close_connections()
    print(f"{engine_name}: {len(QUERIES)} queries in {elapsed * 1000:.0f} ms")
    return out


def key(rows: list) -> set:
    return {(r[0], r[1]) for r in rows}


def in_child(engine: str, url: str) -> dict:
    import subprocess

    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        subprocess.run([sys.executable, __file__, engine, url, out.name], check=True)
        return json.loads(Path(out.name).read_text())


async def main() -> None:
    # One engine per interpreter: Tortoise keeps process-wide state.
    with tempfile.TemporaryDirectory() as tmp:
        sqlite = in_child("sqlite", f"{tmp}/s.sqlite3")
    with PgCluster() as pg:
        pgres = in_child("postgres", pg.dsn)
    agree = 0
    for q in QUERIES:
        same = key(sqlite[q]) == key(pgres[q]) and len(sqlite[q]) == len(pgres[q])
        agree += same
        print(f"{'SAME' if same else 'DIFF'} {q!r}: sqlite {len(sqlite[q])} pg {len(pgres[q])}")
        for a in sorted(sqlite[q]):
            print("   sqlite", a[0], a[2])
        for b in sorted(pgres[q]):
            print("   pg    ", b[0], b[2])
    print(f"{agree}/{len(QUERIES)} queries find the same matches")
    Path("/tmp/i14/compare_search.json").write_text(json.dumps({"sqlite": sqlite, "pg": pgres}, ensure_ascii=False, indent=1))


if len(sys.argv) == 4:
    engine, url, out = sys.argv[1:]
    location = "/work/main/api/migrations" if engine == "sqlite" else "/tmp/i14/migrations/postgres"
    result = asyncio.run(run(engine, tortoise_config(url), location))
    Path(out).write_text(json.dumps(result, ensure_ascii=False, default=str))
elif __name__ == "__main__":
    asyncio.run(main())
