"""Signing in, for tests: users made in process (the test app's store is open) or through
the real CLI (``python -m api.users``), and clients that carry their credential."""

from __future__ import annotations

from quart.typing import TestAppProtocol as QuartTestApp
from quart.typing import TestClientProtocol as QuartClient

from api import accounts
from api.accounts import Role
from api.store import User

PASSWORD = "correct horse battery"


async def add_user(name: str, role: Role = "user", password: str = PASSWORD) -> User:
    existing = await User.get_or_none(name=name)
    return existing if existing is not None else await accounts.create_user(name, password, role)


async def signed_in(app: QuartTestApp, name: str, role: Role = "admin") -> QuartClient:
    """A test client with a session of user ``name`` (made if missing) in its cookie jar."""
    await add_user(name, role)
    client = app.test_client()
    response = await client.post("/auth/login", json={"username": name, "password": PASSWORD})
    assert response.status_code == 200, await response.get_data(as_text=True)
    return client


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}
