"""Create today's schema on a throwaway PostgreSQL through Tortoise + aerich, and show what changed.

1. aerich init_db on PG with the project's models -> generates a PG 0_init migration (PG DDL)
2. compare its MODELS_STATE with the SQLite migrations' last MODELS_STATE
3. append the search DDL (pg_search_ddl.sql) to that migration, apply it on a fresh database
   with Command.upgrade (what open_store does), and check the pool settings and a few ORM calls
4. a model change: aerich migrate --offline for both dialect folders from the same MODELS_STATE
"""
import asyncio, json, shutil, sys, time, re
from pathlib import Path
sys.path.insert(0, "/work/main"); sys.path.insert(0, "/tmp/i14")
from pg_cluster import PgCluster
from db_config import tortoise_config
from tortoise import Tortoise, connections
from aerich import Command
from aerich.utils import decompress_dict
from aerich.migrate import Migrate

OUT = Path("/tmp/i14/migrations")
SEARCH_DDL = Path("/tmp/i14/pg_search_ddl.sql").read_text()

def last_state(folder: Path) -> dict:
    files = sorted(folder.glob("[0-9]*_*.py"), key=lambda p: int(p.name.split("_")[0]))
    ns: dict = {}
    exec(files[-1].read_text(), ns)
    return decompress_dict(ns["MODELS_STATE"])

async def phase1(dsn: str) -> None:
    pgdir = OUT / "postgres"
    if True:
        url = dsn + "?maxsize=7"
        cfg = tortoise_config(url)
        print("credentials", {k: v for k, v in cfg["connections"]["default"]["credentials"].items() if k != "password"})
        # 1. generate the PG initial migration from today's models
        t = time.perf_counter()
        command = Command(tortoise_config=cfg, app="models", location=str(pgdir))
        await command.init_db(safe=True)
        await Tortoise.close_connections()
        print(f"aerich init_db on PG: {time.perf_counter()-t:.2f}s")
        init = next((pgdir / "models").glob("0_*_init.py"))
        print("generated", init.name)
        text = init.read_text()
        print(text[: text.index("MODELS_STATE")])
        # 2. same models state as the SQLite chain?
        sqlite_state = last_state(Path("/work/main/api/migrations/models"))
        pg_state = last_state(pgdir / "models")
        print("MODELS_STATE equal to SQLite migration 6:", sqlite_state == pg_state)
        if sqlite_state != pg_state:
            for k in sorted(set(sqlite_state) | set(pg_state)):
                if sqlite_state.get(k) != pg_state.get(k):
                    print("  differs:", k)
        from tortoise.utils import get_schema_sql  # noqa
        # 3. hand-append the search DDL, apply on a fresh database with upgrade()
        up_end = text.index('"""', text.index("return") + 10)
        text = text[:up_end].rstrip() + "\n" + SEARCH_DDL.strip() + "\n" + text[up_end:]
        init.write_text(text)

async def phase3(dsn: str) -> None:
    pgdir = OUT / "postgres"
    if True:
        pg.psql("postgres", "CREATE DATABASE fresh OWNER llmchat TEMPLATE template0 ENCODING 'UTF8' "
                            "LC_COLLATE 'C.UTF-8' LC_CTYPE 'C.UTF-8'")
        cfg2 = tortoise_config(dsn.rsplit("/", 1)[0] + "/fresh?minsize=2&maxsize=7")
        t = time.perf_counter()
        async with Command(tortoise_config=cfg2, app="models", location=str(pgdir)) as c:
            await c.init()
            print("applied", await c.upgrade(run_in_transaction=True))
        print(f"upgrade on a fresh PG db: {time.perf_counter()-t:.2f}s")
        await Tortoise.init(config=cfg2, _enable_global_fallback=True)
        client = connections.get("default")
        await client.execute_query("SELECT 1")
        print("pool", type(client).__name__, client._pool.get_min_size(), client._pool.get_max_size())
        from api.store import Chat, Message, User, UsageDay
        u = await User.create(name="alice", password_hash="x")
        c = await Chat.create(id="c1", owner=u, title="Crème brûlée")
        m = await Message.create(chat=c, role="user", text="How do I make crème brûlée?")
        await Chat.filter(id=c.id).update(current_message_id=m.id)
        print("orm ok", await Message.filter(chat_id="c1").count(), (await Chat.get(id="c1")).updated_at.tzinfo)
        print(pg.psql("fresh", "SELECT id, search FROM messages"))
        # things api/ does with raw SQL that SQLite accepts and asyncpg does not
        db = connections.get("default")
        for sql, args in [('SELECT "id" FROM "messages" WHERE "id" > ?', [0]),
                          ('SELECT "id" FROM "messages" WHERE "id" > $1', [0]),
                          ('INSERT INTO "chats" ("id","created_at","updated_at","system_prompt","temperature","top_p","max_new_tokens") VALUES ($1,$2,$2,$3,0.7,0.9,5)',
                           ["c2", "2026-01-01 00:00:00+00:00", ""])]:
            try:
                print("OK  ", sql[:60], await db.execute_query(sql, args))
            except Exception as e:
                print("FAIL", sql[:60], type(e).__name__, str(e)[:120])
        await Tortoise.close_connections()
        print(pg.psql("fresh", "SELECT version, app FROM aerich ORDER BY id"))
        print(pg.psql("fresh", "\\d messages"))

async def both_dialects_next_migration(only: str) -> None:
    store = Path("/work/main/api/store.py").read_text()
    Path("/tmp/i14/store_next.py").write_text(store.replace(
        'current_message_id = fields.IntField(null=True)',
        'current_message_id = fields.IntField(null=True)\n    pinned = fields.BooleanField(default=False)'
    ).replace('"models.', '"models.'))
    sq = OUT / "sqlite"
    if only == "sqlite":
        shutil.copytree("/work/main/api/migrations/models", sq / "models")
    for name, folder, url in [("sqlite", sq, "/tmp/i14/migrations/offline.sqlite3"),
                              ("postgres", OUT / "postgres", "postgres://nobody@127.0.0.1:1/none")]:
        if name != only:
            continue
        cfg = tortoise_config(url, models=["store_next", "aerich.models"])
        try:
            c = Command(tortoise_config=cfg, app="models", location=str(folder))
            await c.init(offline=True)  # no database: diff from the last file's MODELS_STATE
            made = await c.migrate("pinned", offline=True, no_input=True)
            print(name, "->", made)
            f = next((folder / "models").glob(f"*_pinned.py"))
            src = f.read_text()
            print(src[src.index("async def upgrade"): src.index("MODELS_STATE")])
        except Exception as e:
            import traceback; traceback.print_exc()
        finally:
            await Tortoise.close_connections()
    if only == "postgres":
        print("next states equal:", last_state(sq / "models") == last_state(OUT / "postgres" / "models"))

if __name__ == "__main__":
    import subprocess
    if len(sys.argv) == 1:
        shutil.rmtree(OUT, ignore_errors=True)
        with PgCluster() as pg:
            print("PG start timings", pg.timings)
            for phase in ("phase1", "phase3", "phase4sqlite", "phase4postgres"):
                print(f"===== {phase}", flush=True)
                subprocess.run([sys.executable, __file__, phase, pg.dsn, str(pg.port), str(pg.home)], check=True)
    else:
        phase, dsn = sys.argv[1], sys.argv[2]
        class _Pg:  # psql on the running cluster
            def __init__(self, port, home):
                self.port, self.home = int(port), Path(home)
            psql = PgCluster.psql
            _as_postgres = PgCluster._as_postgres
        pg = _Pg(sys.argv[3], sys.argv[4])
        if phase.startswith("phase4"):
            asyncio.run(both_dialects_next_migration(phase[6:]))
        else:
            asyncio.run(globals()[phase](dsn))
