"""The search tests' hostile queries against PgSearch (no 500s), and why LC_CTYPE must be a UTF-8 locale."""
import asyncio, sys, subprocess, json
sys.path[:0] = ["/work/main", "/tmp/i14"]
from pg_cluster import PgCluster
from db_config import tortoise_config

MAX_TERMS = 32
HOSTILE = [
    '"', '""', '"unclosed', "'", "*", "**", "-", "-word", "(", ")", "()", "(a OR b", "AND", "OR", "NOT", "NEAR",
    "a AND", "AND OR NOT", "x NEAR/2 y", "NEAR(a b, 3)", "{text}:x", "text:x", "col:", "^start", "a + b", "a - b",
    "\\", "%", "%%", "_", "'; DROP TABLE messages; --", "\" OR 1=1 --", "*" * 100, "a" * 500,
    "🙂", "\u0301", "\u200b", "\ufeff", "\ue000", "x\ty", "a\nb", "ünïcödé*", "中文", "rowid", "messages_fts",
    " ".join(["w"] * MAX_TERMS), "x²", "½", "Ⅻ", "a:*|b", "a' | 'b", "a\\'b",
]

async def child(dsn):
    from aerich import Command
    from tortoise import Tortoise
    cfg = tortoise_config(dsn)
    async with Command(tortoise_config=cfg, app="models", location="/tmp/i14/migrations/postgres") as c:
        await c.init(); await c.upgrade(run_in_transaction=True)
    await Tortoise.init(config=cfg, _enable_global_fallback=True)
    from api.store import Chat, Message, User
    from api import search
    from pg_search import PgSearch
    u = await User.create(name="a", password_hash="x")
    c = await Chat.create(id="c", owner=u, title="x² and ½ Ⅻ")
    await Message.create(chat=c, role="user", text="ünïcödé rowid messages_fts word a b x² Ⅻ Ελληνικά ΑΘΗΝΑ")
    bad = {}
    for q in HOSTILE:
        try:
            found = await search.find(u.id, q, 20, PgSearch())
        except Exception as e:  # MalformedRequest is a 400, anything else would be a 500
            if type(e).__name__ != "MalformedRequest":
                bad[q] = f"{type(e).__name__}: {e}"
    greek = await search.find(u.id, "αθηνα ελληνικα", 20, PgSearch())
    print(json.dumps({"errors": bad, "greek_found": len(greek),
                      "x2_found": len(await search.find(u.id, "x²", 20, PgSearch()))}, ensure_ascii=False))
    await Tortoise.close_connections()

if len(sys.argv) > 1:
    asyncio.run(child(sys.argv[1]))
else:
    with PgCluster() as pg:
        for ctype in ("C.UTF-8", "C"):
            db = ("t_" + ctype.replace(".", "_").replace("-", "")).lower()
            pg.psql("postgres", f"CREATE DATABASE {db} OWNER llmchat TEMPLATE template0 ENCODING 'UTF8' "
                                f"LC_COLLATE '{ctype}' LC_CTYPE '{ctype}'")
            print("LC_CTYPE", ctype, end=": ", flush=True)
            subprocess.run([sys.executable, __file__, pg.dsn.rsplit("/", 1)[0] + "/" + db], check=True)
