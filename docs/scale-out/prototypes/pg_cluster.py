"""A throwaway PostgreSQL 15 cluster for tests: initdb + pg_ctl as the `postgres` user in a
temporary folder, on a free loopback port; one role and one database; removed afterwards.

Usage as a script:  python pg_cluster.py   (starts, prints the DSN and timings, stops)
As a library:       with PgCluster() as pg: pg.dsn ...
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

PGBIN = Path("/usr/lib/postgresql/15/bin")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PgCluster:
    def __init__(self, role: str = "llmchat", password: str = "test-secret", database: str = "llmchat") -> None:
        self.role, self.password, self.database = role, password, database
        self.port = free_port()
        self.timings: dict[str, float] = {}

    def _as_postgres(self, *args: str, **kw: object) -> subprocess.CompletedProcess[str]:
        # The server refuses to run as root: every cluster command runs as the postgres user.
        cmd = ["runuser", "-u", "postgres", "--", *args] if os.geteuid() == 0 else list(args)
        return subprocess.run(cmd, check=True, capture_output=True, text=True, **kw)  # type: ignore[call-overload]

    def start(self) -> "PgCluster":
        t0 = time.perf_counter()
        self.home = Path(tempfile.mkdtemp(prefix="llmchat-pg-"))
        pw = pwd.getpwnam("postgres")
        os.chown(self.home, pw.pw_uid, pw.pw_gid)
        pwfile = self.home / "pw"
        pwfile.write_text("postgres-admin\n")
        os.chown(pwfile, pw.pw_uid, pw.pw_gid)
        data = self.home / "data"
        self._as_postgres(
            str(PGBIN / "initdb"), "-D", str(data), "-U", "postgres", f"--pwfile={pwfile}",
            "--auth-local=trust", "--auth-host=scram-sha-256", "--encoding=UTF8", "--locale=C.UTF-8",
            "--no-sync",  # a throwaway cluster: no fsync of the new files
        )
        self.timings["initdb_s"] = time.perf_counter() - t0
        t1 = time.perf_counter()
        options = " ".join([
            "-c listen_addresses=127.0.0.1", f"-c port={self.port}", f"-c unix_socket_directories={self.home}",
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off",  # test data: speed over durability
            "-c shared_buffers=32MB -c max_connections=60",
        ])
        self._as_postgres(str(PGBIN / "pg_ctl"), "-D", str(data), "-l", str(self.home / "log"), "-w", "-t", "30",
                          "-o", options, "start")
        self.timings["pg_ctl_start_s"] = time.perf_counter() - t1
        t2 = time.perf_counter()
        # Two calls: CREATE DATABASE cannot run inside the transaction psql -c makes of several statements.
        self.psql("postgres", f"CREATE ROLE {self.role} LOGIN PASSWORD '{self.password}'")
        self.psql("postgres", f"CREATE DATABASE {self.database} OWNER {self.role} ENCODING 'UTF8' "
                              "LC_COLLATE 'C.UTF-8' LC_CTYPE 'C.UTF-8' TEMPLATE template0")
        self.timings["create_role_db_s"] = time.perf_counter() - t2
        self.timings["total_start_s"] = time.perf_counter() - t0
        return self

    def psql(self, database: str, sql: str) -> str:
        # Over the Unix socket in the cluster's own folder, as the superuser (trust on local).
        return self._as_postgres(str(PGBIN / "psql"), "-h", str(self.home), "-p", str(self.port), "-U", "postgres",
                                 "-d", database, "-v", "ON_ERROR_STOP=1", "-Atc", sql).stdout

    @property
    def dsn(self) -> str:
        return f"postgres://{self.role}:{self.password}@127.0.0.1:{self.port}/{self.database}"

    def stop(self) -> None:
        t0 = time.perf_counter()
        with contextlib.suppress(subprocess.CalledProcessError):
            self._as_postgres(str(PGBIN / "pg_ctl"), "-D", str(self.home / "data"), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.home, ignore_errors=True)
        self.timings["stop_and_remove_s"] = time.perf_counter() - t0

    def __enter__(self) -> "PgCluster":
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()


if __name__ == "__main__":
    with PgCluster() as pg:
        print("dsn", pg.dsn)
        print(pg.psql("llmchat", "SELECT version()"))
        print(pg.psql("llmchat", "SELECT name, default_version, installed_version FROM pg_available_extensions "
                                  "WHERE name IN ('unaccent','pg_trgm') ORDER BY name"))
        home = pg.home
    print(pg.timings, "removed:", not home.exists())
