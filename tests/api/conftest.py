"""Fixtures for the API tests: a real app on a temporary SQLite file with the real runtime."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from quart.typing import TestAppProtocol as QuartTestApp
from quart.typing import TestClientProtocol as QuartClient

from api.app import create_app
from api.settings import ApiSettings
from runtime.default_model import GGUF_NAME
from tests.auth import signed_in

GGUF = GGUF_NAME


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A new empty database: each module that asks for one runs once on SQLite, once on PostgreSQL."""
    if request.param == "sqlite":
        return str(tmp_path_factory.mktemp("db") / "chat.sqlite3")
    make: Callable[[], str] = request.getfixturevalue("pg_database")
    return make()


@pytest.fixture(scope="module")
def api_settings(tmp_path_factory: pytest.TempPathFactory, models_dir: Path) -> ApiSettings:
    home = tmp_path_factory.mktemp("api")
    return ApiSettings(
        models_dir=models_dir,
        db_path=home / "chat.sqlite3",
        logs_dir=home / "logs",
        state_dir=home,
        n_ctx=1024,
        max_message_chars=4000,
        default_temperature=0.0,
        default_max_new_tokens=48,
    )


@pytest.fixture(scope="module")
async def test_app(api_settings: ApiSettings) -> AsyncIterator[QuartTestApp]:
    app = create_app(api_settings)
    async with app.test_app() as running:  # runs before_serving / after_serving
        yield running


@pytest.fixture(scope="module")
async def client(test_app: QuartTestApp) -> QuartClient:
    """Signed in as an administrator (some tests read every worker's chats in /status)."""
    return await signed_in(test_app, "tester")


def sse_events(body: bytes) -> list[tuple[str, dict[str, Any]]]:
    """Parse a complete ``text/event-stream`` body into (event, data) pairs."""
    events = []
    for block in body.decode().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        if "data" in fields:
            events.append((fields.get("event", "message"), json.loads(fields["data"])))
    return events
