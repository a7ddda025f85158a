"""Single-replica duties with a PostgreSQL advisory lock, and a cross-replica stop with LISTEN/NOTIFY.

Two "replica" processes each hold one dedicated asyncpg connection (outside Tortoise's pool):
they LISTEN on llmchat_stop and try pg_try_advisory_lock every 0.2 s; the one holding it is
the leader. The test sends a NOTIFY (latency to both), then kill -9s the leader and measures how
long until the other takes over. Run: venv/bin/python proto_leader.py
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time

sys.path.insert(0, "/tmp/i14")
from pg_cluster import PgCluster  # noqa: E402

REPLICA = r'''
import asyncio, os, sys, time, asyncpg
LEADER_LOCK = 0x6C6C6D63  # "llmc": one bigint key for the whole app

async def main(dsn):
    conn = await asyncpg.connect(dsn, server_settings={"application_name": f"llmchat-replica-{os.getpid()}"})
    def on_stop(connection, pid, channel, payload):
        sent = float(payload.split("|")[1])
        print(f"NOTIFY {os.getpid()} {time.time() - sent:.4f}", flush=True)
    await conn.add_listener("llmchat_stop", on_stop)
    leader = False
    print(f"UP {os.getpid()}", flush=True)
    while True:
        if not leader:
            leader = await conn.fetchval("SELECT pg_try_advisory_lock($1)", LEADER_LOCK)
            if leader:
                print(f"LEADER {os.getpid()} {time.time():.4f}", flush=True)
        await asyncio.sleep(0.2)

asyncio.run(main(sys.argv[1]))
'''


async def main() -> None:
    import asyncpg

    with PgCluster() as pg:
        procs = [subprocess.Popen([sys.executable, "-c", REPLICA, pg.dsn], stdout=subprocess.PIPE, text=True)
                 for _ in range(2)]
        try:
            await scenario(pg, procs)
        finally:
            for p in procs:
                p.kill()
                p.wait()


async def scenario(pg: PgCluster, procs: list) -> None:
    import asyncpg
    import threading

    if True:
        lines: asyncio.Queue[str] = asyncio.Queue()
        loop = asyncio.get_running_loop()

        def pump(p) -> None:  # one reader thread per child: lines to the loop
            for line in p.stdout:
                loop.call_soon_threadsafe(lines.put_nowait, line.strip())

        for p in procs:
            threading.Thread(target=pump, args=(p,), daemon=True).start()
        ups, leader = 0, None
        while leader is None:
            line = await asyncio.wait_for(lines.get(), 10)
            ups += line.startswith("UP")
            if line.startswith("LEADER"):
                leader = int(line.split()[1])
        await asyncio.sleep(0.5)
        conn = await asyncpg.connect(pg.dsn)
        # What the stopping replica does: any connection of the pool would do.
        await conn.execute("SELECT pg_notify('llmchat_stop', $1)", f"chat-1:42|{time.time()}")
        latencies = []
        while len(latencies) < 2:
            line = await asyncio.wait_for(lines.get(), 5)
            if line.startswith("NOTIFY"):
                latencies.append(float(line.split()[2]))
        victim = next(p for p in procs if p.pid == leader)
        t_kill = time.time()
        victim.send_signal(signal.SIGKILL)
        new_leader, took = None, None
        while new_leader is None:
            line = await asyncio.wait_for(lines.get(), 10)
            if line.startswith("LEADER"):
                new_leader, took = int(line.split()[1]), float(line.split()[2]) - t_kill
        held = await conn.fetch("SELECT pid, granted FROM pg_locks WHERE locktype = 'advisory'")
        result = {"notify_latency_s": latencies, "first_leader": leader, "new_leader": new_leader,
                  "takeover_after_kill9_s": round(took, 3), "advisory_locks_now": [dict(r) for r in held],
                  "note": "takeover includes the 0.2 s polling period"}
        print(json.dumps(result, indent=1))
        await conn.close()


asyncio.run(main())
