"""The local runtime serves from one API process: a second one on the same state folder, or on
the same PostgreSQL database from another folder (another host), is refused at start and says why."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import httpx

from tests.servers import ApiServer, free_port, survivors


def _second(first: ApiServer, **env: str) -> subprocess.CompletedProcess[str]:
    """``python -m api`` started beside ``first`` on another port; it must exit by itself."""
    return subprocess.run(
        [sys.executable, "-m", "api"], env={**first.env, "LLMCHAT_PORT": str(free_port()), **env},
        capture_output=True, text=True, timeout=60, check=False,
    )


def test_a_second_api_process_on_the_same_state_folder_is_refused(tmp_path: Path, models_dir: Path) -> None:
    first = ApiServer(tmp_path / "a", models_dir, auth="off")
    first.start(quiet=True)
    try:
        second = _second(first)
        assert second.returncode != 0
        assert "Traceback" not in second.stderr, second.stderr[-3000:]
        assert f"llmchat: the API did not start: another API process (pid {_pid(first)} on " in second.stderr, second.stderr[-3000:]
        assert f"already serves the state folder {tmp_path / 'a'}" in second.stderr
        assert "run a single one" in second.stderr
        assert httpx.get(f"{first.url}/status", timeout=10).status_code == 200  # the first one goes on
    finally:
        assert not survivors(first.stop())
    first.start(quiet=True)  # its own restart finds the lock free
    assert not survivors(first.stop())


def test_a_second_api_process_on_the_same_postgres_database_is_refused(
    tmp_path: Path, models_dir: Path, pg_database: Callable[[], str]
) -> None:
    url = pg_database()
    first = ApiServer(tmp_path / "a", models_dir, auth="off", db_url=url)
    first.start(quiet=True)
    try:
        other_host = tmp_path / "b"  # its own state folder, as on another machine
        second = _second(first, LLMCHAT_STATE_DIR=str(other_host))
        assert second.returncode != 0
        assert f"(llmchat-api pid {_pid(first)} on " in second.stderr, second.stderr[-3000:]
        assert "already serves the database postgres://llmchat:***@127.0.0.1:" in second.stderr
        assert "test-secret" not in second.stderr + second.stdout
    finally:
        assert not survivors(first.stop())


def _pid(server: ApiServer) -> int:
    assert server.process is not None
    return server.process.pid
