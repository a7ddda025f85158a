"""A throwaway PostgreSQL cluster for tests: the Debian server's initdb and pg_ctl in a temporary folder.

The server refuses to run as root, so under root every cluster command runs as the ``postgres``
user. It listens on a free loopback port, skips fsync (test data), and holds one role that owns
the databases the tests create; :meth:`PgCluster.stop` ends it and removes the folder.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path
from typing import Self

def _server_binaries() -> Path:
    """LLMCHAT_TEST_PGBIN, else the newest Debian PostgreSQL installed."""
    if named := os.environ.get("LLMCHAT_TEST_PGBIN"):
        return Path(named)
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parent.parent.name))
    return found[-1].parent if found else Path("/usr/lib/postgresql/15/bin")


PGBIN = _server_binaries()
ROLE, PASSWORD = "llmchat", "test-secret"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class PgCluster:
    """One PostgreSQL server with the role ``llmchat``; databases are made with :meth:`create_database`."""

    def __init__(self) -> None:
        self.port = free_port()
        self.home = Path(tempfile.mkdtemp(prefix="llmchat-pg-"))

    def _run(self, *args: str) -> str:
        command = ["runuser", "-u", "postgres", "--", *args] if os.geteuid() == 0 else list(args)
        done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
        if done.returncode:
            raise RuntimeError(f"{' '.join(args[:2])} failed ({done.returncode}): {done.stderr.strip()}")
        return done.stdout

    def start(self) -> Self:
        if not (PGBIN / "initdb").exists():
            raise RuntimeError(f"PostgreSQL's server binaries are not in {PGBIN}: install the postgresql package")
        if os.geteuid() == 0:
            owner = pwd.getpwnam("postgres")
            os.chown(self.home, owner.pw_uid, owner.pw_gid)
        data = self.home / "data"
        self._run(
            str(PGBIN / "initdb"), "-D", str(data), "-U", "postgres", "--auth-local=trust",
            "--auth-host=trust", "--encoding=UTF8", "--locale=C.UTF-8", "--no-sync",
        )
        options = " ".join([
            "-c listen_addresses=127.0.0.1", f"-c port={self.port}", f"-c unix_socket_directories={self.home}",
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off",
            "-c shared_buffers=32MB -c max_connections=100",
        ])
        self._run(str(PGBIN / "pg_ctl"), "-D", str(data), "-l", str(self.home / "log"), "-w", "-t", "30",
                  "-o", options, "start")
        self.psql(f"CREATE ROLE {ROLE} LOGIN PASSWORD '{PASSWORD}'")
        return self

    def psql(self, sql: str, database: str = "postgres") -> str:
        """Run ``sql`` as the superuser over the cluster's own Unix socket."""
        return self._run(str(PGBIN / "psql"), "-h", str(self.home), "-p", str(self.port), "-U", "postgres",
                         "-d", database, "-v", "ON_ERROR_STOP=1", "-Atc", sql)

    def create_database(self, name: str, ctype: str = "C.UTF-8") -> str:
        """A new empty database owned by the test role; its URL."""
        self.psql(f"CREATE DATABASE {name} OWNER {ROLE} ENCODING 'UTF8' LC_COLLATE '{ctype}' "
                  f"LC_CTYPE '{ctype}' TEMPLATE template0")
        return self.url(name)

    def url(self, database: str) -> str:
        return f"postgres://{ROLE}:{PASSWORD}@127.0.0.1:{self.port}/{database}"

    def server_pids(self) -> set[int]:
        """The postmaster and its children, to check that none outlives :meth:`stop`."""
        pidfile = self.home / "data" / "postmaster.pid"
        if not pidfile.exists():
            return set()
        postmaster = int(pidfile.read_text().split()[0])
        import psutil

        with contextlib.suppress(psutil.NoSuchProcess):
            parent = psutil.Process(postmaster)
            return {postmaster, *(child.pid for child in parent.children(recursive=True))}
        return set()

    def stop(self) -> None:
        if (self.home / "data" / "postmaster.pid").exists():
            with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
                self._run(str(PGBIN / "pg_ctl"), "-D", str(self.home / "data"), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.home, ignore_errors=True)

    def __enter__(self) -> Self:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()
