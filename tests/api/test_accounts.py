"""Accounts through the real app (fake runtime): who may do what, on every route.

The route matrix is generated from ``/openapi.json``, so a new route is covered without
editing this file: without a credential every operation but the public ones answers 401;
with user B's credential, anything about user A's chat answers 404 (its existence is not
revealed) and leaves A's chat as it was; a revoked key, a signed-out session and a
disabled user's session answer 401; a non-administrator gets 403 where an administrator's
right is needed.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from openai import OpenAI
from quart.typing import TestAppProtocol as QuartTestApp
from quart.typing import TestClientProtocol as QuartClient

from api import accounts
from api.app import create_app
from api.settings import ApiSettings
from api.store import User
from runtime.default_model import GGUF_NAME
from runtime.fake import FakeRuntime, fake_model
from tests.api.test_bad_input import HTTP_METHODS, _resolve, _sample
from tests.auth import PASSWORD, add_user, bearer, signed_in
from tests.databases import everything_stored, raw_rows
from tests.servers import ApiServer, survivors

MODEL, OTHER = "fake.gguf", "other.gguf"
A_CHAT = "alice-chat"
PUBLIC = {"GET /openapi.json", "GET /docs", "POST /auth/login", "POST /auth/signup", "GET /metrics"}  # /metrics checks its own
ADMIN_ONLY = {"GET /metrics"}


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory, db_url: str) -> ApiSettings:
    home = tmp_path_factory.mktemp("accounts")
    return ApiSettings(models_dir=home / "models", db_url=db_url, logs_dir=home / "logs",
                       state_dir=home, session_idle_s=3600)


@pytest.fixture(scope="module")
def fake() -> FakeRuntime:
    return FakeRuntime([fake_model(MODEL), fake_model(OTHER)], token_delay_s=0.0, reply_words=5)


@pytest.fixture(scope="module")
async def app(settings: ApiSettings, fake: FakeRuntime) -> AsyncIterator[QuartTestApp]:
    async with create_app(settings, runtime=fake).test_app() as running:
        yield running


@pytest.fixture(scope="module")
async def alice(app: QuartTestApp) -> QuartClient:
    client = await signed_in(app, "alice", "user")
    assert (await client.post("/load", json={"chat_id": A_CHAT, "model": MODEL})).status_code == 200
    assert (await client.post("/chat", json={"chat_id": A_CHAT, "message": "hello"})).status_code == 200
    return client


@pytest.fixture(scope="module")
async def bob_key(app: QuartTestApp) -> str:
    await add_user("bob", "user")
    _, key = await accounts.create_key(await User.get(name="bob"), "tests")
    return key


@pytest.fixture(scope="module")
async def spec(app: QuartTestApp) -> dict[str, Any]:
    response = await app.test_client().get("/openapi.json")
    assert response.status_code == 200
    document: dict[str, Any] = await response.get_json()
    return document


def _operations(spec: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(m.upper(), path, op) for path, ops in spec["paths"].items() for m, op in ops.items() if m in HTTP_METHODS]


def _request(spec: dict[str, Any], method: str, template: str, op: dict[str, Any], chat_id: str) -> dict[str, Any]:
    """A well-formed request for the operation, naming ``chat_id`` wherever it takes a chat id."""
    path = re.sub(r"\{chat_id\}", chat_id, template)
    path = re.sub(r"\{[^}]+\}", "some-id", path)
    query = {p["name"]: chat_id if p["name"] == "chat_id" else _sample(spec, p.get("schema", {}))
             for p in op.get("parameters", []) if p["in"] == "query" and p.get("required")}
    if any(p["name"] == "chat_id" for p in op.get("parameters", []) if p["in"] == "query"):
        query["chat_id"] = chat_id
    schema = op.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema")
    body = None
    if schema is not None:
        body = _sample(spec, schema)
        if "chat_id" in _resolve(spec, schema).get("properties", {}):
            body["chat_id"] = chat_id
        if "model" in body:
            body["model"] = MODEL
        if "message" in body:
            body["message"] = "from someone else"
    return {"path": path, "method": method, "query_string": query, **({"json": body} if body is not None else {})}


def _chat_scoped(spec: dict[str, Any], template: str, op: dict[str, Any]) -> bool:
    if "{chat_id}" in template or any(p["name"] == "chat_id" for p in op.get("parameters", [])):
        return True
    schema = op.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema")
    return schema is not None and "chat_id" in _resolve(spec, schema).get("properties", {})


def _error(body: dict[str, Any]) -> str:
    """The error's name, in the API's shape or OpenAI's (under /v1)."""
    error = body.get("error")
    return str(error["type"] if isinstance(error, dict) else error)


async def _history(client: QuartClient) -> list[dict[str, Any]]:
    response = await client.get("/history", query_string={"chat_id": A_CHAT})
    assert response.status_code == 200
    messages: list[dict[str, Any]] = (await response.get_json())["messages"]
    return messages


async def test_without_a_credential_every_route_but_the_public_ones_is_401(
    app: QuartTestApp, spec: dict[str, Any]
) -> None:
    anonymous = app.test_client()
    operations = _operations(spec)
    assert len(operations) >= 20
    for method, template, op in operations:
        if f"{method} {template}" in PUBLIC:
            continue
        response = await anonymous.open(**_request(spec, method, template, op, "anything"))
        assert response.status_code == 401, f"{method} {template}: {response.status_code}"
        assert _error(await response.get_json()) == "Unauthenticated"
        assert "Bearer" in response.headers["WWW-Authenticate"]
    assert (await anonymous.get("/no/such/route")).status_code == 401  # nothing is learnt without one
    assert (await anonymous.get("/metrics")).status_code == 401


async def test_another_users_chat_is_not_found_on_every_chat_route(
    app: QuartTestApp, alice: QuartClient, bob_key: str, spec: dict[str, Any]
) -> None:
    before = await _history(alice)
    bob = app.test_client()
    scoped = [(m, t, op) for m, t, op in _operations(spec) if _chat_scoped(spec, t, op)]
    assert len(scoped) >= 10
    for method, template, op in scoped:
        response = await bob.open(**_request(spec, method, template, op, A_CHAT), headers=bearer(bob_key))
        body = await response.get_json() if response.mimetype == "application/json" else {}
        assert response.status_code == 404, f"{method} {template}: {response.status_code} {body}"
        assert _error(body) == "ChatNotFound"
    # Alice's chat is as it was, and still loaded for her.
    assert await _history(alice) == before
    status = await (await alice.get("/status", query_string={"chat_id": A_CHAT})).get_json()
    assert status["loaded"] is True
    listed = await (await bob.get("/chats", headers=bearer(bob_key))).get_json()
    assert A_CHAT not in [c["chat_id"] for c in listed["chats"]]


async def test_status_shows_every_worker_but_other_users_chats_only_to_admins(
    app: QuartTestApp, alice: QuartClient, bob_key: str
) -> None:
    bob_status = await (await app.test_client().get("/status", headers=bearer(bob_key))).get_json()
    assert bob_status["workers"] and all(A_CHAT not in w["chats"] for w in bob_status["workers"])
    admin = await signed_in(app, "root", "admin")
    admin_status = await (await admin.get("/status")).get_json()
    assert any(A_CHAT in w["chats"] for w in admin_status["workers"])
    assert (await admin.get("/metrics")).status_code == 200
    assert (await alice.get("/metrics")).status_code == 403


async def test_keys_are_shown_once_stored_hashed_and_revoked_at_once(
    app: QuartTestApp, alice: QuartClient, settings: ApiSettings
) -> None:
    created = await alice.post("/auth/keys", json={"name": "laptop"})
    assert created.status_code == 201
    key = (await created.get_json())["key"]
    client = app.test_client()
    me = await (await client.get("/auth/me", headers=bearer(key))).get_json()
    assert me["name"] == "alice" and me["via"] == "key"
    listed = await (await alice.get("/auth/keys")).get_json()
    assert "key" not in listed["keys"][0] and listed["keys"][0]["name"] == "laptop"
    assert key.encode() not in await everything_stored(settings.db_url)
    key_id = key.split("_")[1]
    assert (await alice.delete(f"/auth/keys/{key_id}")).status_code == 200
    assert (await client.get("/chats", headers=bearer(key))).status_code == 401
    assert (await app.test_client().delete(f"/auth/keys/{key_id}", headers=bearer(key))).status_code == 401


async def test_passwords_are_argon2id_and_sessions_end_on_sign_out_disable_and_reset(
    app: QuartTestApp, settings: ApiSettings
) -> None:
    carol = await signed_in(app, "carol", "user")
    hashes = [row[0] for row in await raw_rows(settings.db_url, "SELECT password_hash FROM users")]
    assert hashes and all(h.startswith("$argon2id$") for h in hashes)
    assert not any(PASSWORD in h for h in hashes)
    assert (await carol.get("/chats")).status_code == 200
    assert (await carol.post("/auth/logout")).status_code == 200
    assert (await carol.get("/chats")).status_code == 401  # the cookie is gone...
    again = await signed_in(app, "carol", "user")
    cookie = next(c for c in again.cookie_jar if c.name == "llmchat_session")  # type: ignore[attr-defined]
    assert cookie.has_nonstandard_attr("HttpOnly") or cookie._rest.get("HttpOnly") is not None  # type: ignore[attr-defined]
    stolen = {"Authorization": f"Bearer {cookie.value}"}
    await again.post("/auth/logout")
    assert (await app.test_client().get("/chats", headers=stolen)).status_code == 401  # ...and ended server-side
    dave = await signed_in(app, "dave", "user")
    await accounts.set_disabled(await User.get(name="dave"), True)
    assert (await dave.get("/chats")).status_code == 401
    assert (await app.test_client().post("/auth/login", json={"username": "dave", "password": PASSWORD})
            ).status_code == 401
    erin = await signed_in(app, "erin", "user")
    changed = await erin.post("/auth/password", json={"current": PASSWORD, "new": "another good password"})
    assert changed.status_code == 200
    assert (await erin.get("/chats")).status_code == 401


async def test_the_sixth_failed_sign_in_within_a_minute_is_429(app: QuartTestApp) -> None:
    await add_user("frank", "user")
    client = app.test_client()

    async def login(name: str, password: str, address: str) -> Any:
        return await client.post("/auth/login", json={"username": name, "password": password},
                                 scope_base={"client": (address, 40000)})

    answers = [await login("frank", "not the password", "10.0.0.1") for _ in range(6)]
    assert [a.status_code for a in answers] == [401] * 5 + [429]
    assert int(answers[-1].headers["Retry-After"]) > 0
    # Even the right password, from elsewhere, waits while the account is limited.
    assert (await login("frank", PASSWORD, "10.0.0.2")).status_code == 429
    # An address that tries many names is limited too; an unknown name answers as a wrong password.
    tries = [await login(f"nobody{i}", "x" * 8, "10.0.0.3") for i in range(6)]
    assert [a.status_code for a in tries] == [401] * 5 + [429]
    assert {(await a.get_json())["detail"] for a in tries[:5]} == {accounts.WRONG}


async def test_a_new_chat_id_of_another_user_is_refused_and_leaves_their_model_loaded(
    app: QuartTestApp, alice: QuartClient, bob_key: str
) -> None:
    bob = app.test_client()
    for route, body in (("/chats", {"chat_id": A_CHAT}), ("/load", {"chat_id": A_CHAT, "model": MODEL})):
        response = await bob.post(route, json=body, headers=bearer(bob_key))
        assert response.status_code == 404
    status = await (await alice.get("/status", query_string={"chat_id": A_CHAT})).get_json()
    assert status["loaded"] is True
    own = await bob.post("/chats", json={"chat_id": "bobs-own"}, headers=bearer(bob_key))
    assert own.status_code == 201


def test_local_mode_refuses_to_start_on_a_non_loopback_address(tmp_path: Path) -> None:
    env = {**os.environ, "LLMCHAT_AUTH": "off", "LLMCHAT_HOST": "0.0.0.0", "LLMCHAT_PORT": "1",
           "LLMCHAT_DB_PATH": str(tmp_path / "db.sqlite3"), "LLMCHAT_LOGS_DIR": str(tmp_path / "logs")}
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "api"], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0 and time.monotonic() - started < 30
    assert "LLMCHAT_AUTH=off" in done.stderr and "loopback" in done.stderr
    assert not (tmp_path / "db.sqlite3").exists()  # it stopped before opening anything


def test_the_openai_client_works_with_a_key_and_refuses_a_wrong_one(
    tmp_path_factory: pytest.TempPathFactory, models_dir: Path
) -> None:
    server = ApiServer(tmp_path_factory.mktemp("accounts-server"), models_dir, n_ctx="1024")
    server.start(quiet=True)
    try:
        _, key = server.add_user("grace")
        client = OpenAI(base_url=server.url + "/v1", api_key=key)
        reply = client.chat.completions.create(
            model=GGUF_NAME, messages=[{"role": "user", "content": "Say hi."}], max_tokens=4, temperature=0
        )
        assert reply.choices[0].message.content
        machine = httpx.get(server.url + "/admin/workers", headers=server.headers).json()["workers"]
        assert [h["user"] for h in machine[0]["holders"]] == ["grace"]  # her /v1 hold, by name
        assert machine[0]["memory_mb"] > 50  # the worker process's resident memory
        with pytest.raises(openai.AuthenticationError):
            OpenAI(base_url=server.url + "/v1", api_key="llmk_000000000000_wrong").models.list()
        assert httpx.get(server.url + "/chats").status_code == 401
    finally:
        assert not survivors(server.stop())


async def test_administrators_routes_are_403_for_everyone_else(
    app: QuartTestApp, bob_key: str, spec: dict[str, Any]
) -> None:
    admin_only = [(m, t, op) for m, t, op in _operations(spec) if t.startswith("/admin")]
    assert len(admin_only) >= 7
    for method, template, op in admin_only:
        response = await app.test_client().open(**_request(spec, method, template, op, "x"), headers=bearer(bob_key))
        assert response.status_code == 403, f"{method} {template}: {response.status_code}"


async def test_an_administrator_manages_users_and_every_action_is_audited(app: QuartTestApp) -> None:
    admin = await signed_in(app, "root", "admin")
    made = await admin.post("/admin/users", json={"name": "Heidi"})
    assert made.status_code == 201
    heidi = await made.get_json()
    assert heidi["name"] == "heidi" and heidi["role"] == "user" and len(heidi["password"]) >= 12
    client = app.test_client()
    signed = await client.post("/auth/login", json={"username": "heidi", "password": heidi["password"]})
    assert signed.status_code == 200
    assert (await admin.patch("/admin/users/heidi", json={"disabled": True})).status_code == 200
    assert (await client.get("/chats")).status_code == 401  # her session ended with the disable
    assert (await admin.patch("/admin/users/heidi", json={"disabled": False, "role": "admin"})).status_code == 200
    reset = await (await admin.post("/admin/users/heidi/password", json={})).get_json()
    assert (await client.post("/auth/login", json={"username": "heidi", "password": reset["password"]})
            ).status_code == 200
    # No administrator can lock everyone out, starting with themselves.
    assert (await admin.patch("/admin/users/root", json={"disabled": True})).status_code == 409
    assert (await admin.patch("/admin/users/root", json={"role": "user"})).status_code == 409
    assert (await admin.patch("/admin/users/nobody", json={"role": "user"})).status_code == 404
    listed = {u["name"]: u for u in (await (await admin.get("/admin/users")).get_json())["users"]}
    assert listed["heidi"]["role"] == "admin" and listed["alice"]["chats"] >= 1
    entries = (await (await admin.get("/admin/audit", query_string={"limit": 1000})).get_json())["entries"]
    actions = [(e["action"], e["actor"], e["target"]) for e in entries]
    for expected in (("user_created", "root", "heidi"), ("user_updated", "root", "heidi"),
                     ("password_reset", "root", "heidi"), ("sign_in", "heidi", None),
                     ("sign_in_failed", "frank", None), ("key_revoked", "alice", None)):
        assert expected[:2] in [a[:2] for a in actions], expected
    assert not any(heidi["password"] in str(e) or reset["password"] in str(e) for e in entries)
    older = (await (await admin.get("/admin/audit", query_string={"before_id": entries[0]["id"], "limit": 1})
                    ).get_json())["entries"]
    assert [e["id"] for e in older] == [entries[1]["id"]]


async def test_an_administrator_force_unloads_a_worker_and_its_chats_say_why(
    app: QuartTestApp, alice: QuartClient
) -> None:
    admin = await signed_in(app, "root", "admin")
    machine = (await (await admin.get("/admin/workers")).get_json())["workers"]
    worker = next(w for w in machine if any(h["chat_id"] == A_CHAT for h in w["holders"]))
    assert {"user": "alice", "chat_id": A_CHAT, "title": None} in worker["holders"]
    body = {"model": worker["model"], "device": worker["device"], "backend": worker["backend"]}
    forced = await (await admin.post("/admin/workers/unload", json=body)).get_json()
    assert forced["unloaded"] and forced["holders"] >= 1
    status = await (await alice.get("/status", query_string={"chat_id": A_CHAT})).get_json()
    assert status["loaded"] is False and status["reason"] == "unloaded by an administrator"
    assert (await admin.post("/admin/workers/unload", json=body)).status_code == 404  # nothing runs it now
    entries = (await (await admin.get("/admin/audit")).get_json())["entries"]
    assert any(e["action"] == "force_unload" and e["actor"] == "root" for e in entries)
    # Alice loads it again for her chat.
    assert (await alice.post("/load", json={"chat_id": A_CHAT, "model": MODEL})).status_code == 200


async def _limited(app: QuartTestApp, name: str, **limits: int) -> QuartClient:
    """A signed-in user whose limits an administrator set."""
    user = await signed_in(app, name, "user")
    admin = await signed_in(app, "root", "admin")
    assert (await admin.patch(f"/admin/users/{name}", json=limits)).status_code == 200
    return user


async def test_the_largest_limits_are_stored_and_larger_ones_refused(app: QuartTestApp) -> None:
    """Limits are INTEGER columns (4 bytes on PostgreSQL): the API bounds them so, not the database."""
    await signed_in(app, "lena", "user")
    admin = await signed_in(app, "root", "admin")
    largest = {"limit_tokens_per_day": 2**31 - 1, "limit_loaded_models": 1000, "limit_concurrent_replies": 10_000}
    stored = await admin.patch("/admin/users/lena", json=largest)
    assert stored.status_code == 200, await stored.get_data()
    assert (await stored.get_json())["limits"] == {"tokens_per_day": 2**31 - 1, "loaded_models": 1000,
                                                   "concurrent_replies": 10_000}
    for field, value in largest.items():
        refused = await admin.patch("/admin/users/lena", json={field: value + 1})
        assert refused.status_code == 422 and field in (await refused.get_json())["detail"]


async def test_a_user_over_their_models_limit_gets_429_naming_it(app: QuartTestApp) -> None:
    ivan = await _limited(app, "ivan", limit_loaded_models=1)
    assert (await ivan.post("/load", json={"chat_id": "ivan-1", "model": MODEL})).status_code == 200
    assert (await ivan.post("/load", json={"chat_id": "ivan-2", "model": MODEL})).status_code == 200  # the same one
    refused = await ivan.post("/load", json={"chat_id": "ivan-3", "model": OTHER})
    assert refused.status_code == 429 and "models loaded" in (await refused.get_json())["detail"]
    assert (await ivan.get("/chats/ivan-3")).status_code == 404  # nothing was stored
    # A chat may swap its own model: its old hold does not count against the new one.
    assert (await ivan.post("/unload", json={"chat_id": "ivan-2"})).status_code == 200
    assert (await ivan.post("/load", json={"chat_id": "ivan-1", "model": OTHER})).status_code == 200
    key = (await (await ivan.post("/auth/keys", json={"name": "v1"})).get_json())["key"]
    v1 = await app.test_client().post("/v1/chat/completions", headers=bearer(key),
                                      json={"model": MODEL, "messages": [{"role": "user", "content": "hi"}]})
    assert v1.status_code == 429  # the /v1 hold counts too


async def test_a_user_over_their_replies_at_once_gets_429_until_one_ends(
    app: QuartTestApp, fake: FakeRuntime
) -> None:
    judy = await _limited(app, "judy", limit_concurrent_replies=1)
    for chat in ("judy-1", "judy-2"):
        assert (await judy.post("/load", json={"chat_id": chat, "model": MODEL})).status_code == 200
    fake.token_delay_s = 0.05
    try:
        first = asyncio.ensure_future(judy.post("/chat", json={"chat_id": "judy-1", "message": "a long one"}))
        while not app.app.extensions["llmchat"].conversations.answering("judy-1"):
            await asyncio.sleep(0.01)
        second = await judy.post("/chat", json={"chat_id": "judy-2", "message": "and this"})
        assert second.status_code == 429 and "replies being generated" in (await second.get_json())["detail"]
        assert second.headers["Retry-After"]
        assert (await first).status_code == 200
    finally:
        fake.token_delay_s = 0.0
    assert (await judy.post("/chat", json={"chat_id": "judy-2", "message": "now"})).status_code == 200


async def test_a_user_over_their_tokens_a_day_gets_429_until_midnight_utc(app: QuartTestApp) -> None:
    karl = await _limited(app, "karl", limit_tokens_per_day=8)
    assert (await karl.post("/load", json={"chat_id": "karl-1", "model": MODEL})).status_code == 200
    first = await (await karl.post("/chat", json={"chat_id": "karl-1", "message": "one"})).get_json()
    assert first["tokens"] == 5
    second = await (await karl.post("/chat", json={"chat_id": "karl-1", "message": "two"})).get_json()
    assert second["tokens"] == 3  # capped at what was left
    refused = await karl.post("/chat", json={"chat_id": "karl-1", "message": "three"})
    assert refused.status_code == 429 and "00:00 UTC" in (await refused.get_json())["detail"]
    assert 0 < int(refused.headers["Retry-After"]) <= 86400
    me = await (await karl.get("/auth/me")).get_json()
    assert me["limits"]["tokens_per_day"] == 8 and me["today"]["completion_tokens"] == 8
    assert me["today"]["replies"] == 2
    admin = await signed_in(app, "root", "admin")
    listed = {u["name"]: u for u in (await (await admin.get("/admin/users")).get_json())["users"]}
    assert listed["karl"]["today"]["completion_tokens"] == 8 and listed["karl"]["overrides"]["tokens_per_day"] == 8


async def test_sign_up_is_closed_until_an_administrator_opens_it(app: QuartTestApp) -> None:
    client = app.test_client()

    async def sign_up(name: str, address: str) -> Any:
        return await client.post("/auth/signup", json={"username": name, "password": PASSWORD},
                                 scope_base={"client": (address, 40000)})

    closed = await sign_up("mallory", "10.0.1.1")
    assert closed.status_code == 403 and "closed" in (await closed.get_json())["detail"]
    admin = await signed_in(app, "root", "admin")
    assert (await (await admin.get("/admin/settings")).get_json()) == {"open_signup": False}
    assert (await (await admin.patch("/admin/settings", json={"open_signup": True})).get_json())["open_signup"]
    made = await sign_up("niaj", "10.0.1.2")
    assert made.status_code == 201 and (await made.get_json())["role"] == "user"
    assert (await client.get("/auth/me")).status_code == 200  # signed in at once, as a user
    taken = await sign_up("niaj", "10.0.1.3")
    assert taken.status_code == 400
    answers = [await sign_up(f"spam{i}", "10.0.1.4") for i in range(6)]
    assert [a.status_code for a in answers] == [201] * 5 + [429]  # one address cannot make accounts by the hundred
    await admin.patch("/admin/settings", json={"open_signup": False})
    assert (await sign_up("olivia", "10.0.1.5")).status_code == 403
    entries = (await (await admin.get("/admin/audit", query_string={"limit": 1000})).get_json())["entries"]
    assert any(e["action"] == "settings_changed" and e["actor"] == "root" for e in entries)
    assert any(e["action"] == "signed_up" and e["actor"] == "niaj" for e in entries)


async def test_the_dashboard_names_the_browser_so_one_bad_password_does_not_lock_everyone(app: QuartTestApp) -> None:
    """Sign-ins through the dashboard all come from loopback: X-Forwarded-For says whose they are."""
    await add_user("peggy", "user")
    client = app.test_client()

    async def login(password: str, peer: str, browser: str) -> int:
        response = await client.post("/auth/login", json={"username": "peggy", "password": password},
                                     headers={"X-Forwarded-For": browser}, scope_base={"client": (peer, 40000)})
        return response.status_code

    assert [await login("wrong password", "127.0.0.1", f"192.0.2.{i}") for i in range(4)] == [401] * 4
    assert [await login("wrong password", "127.0.0.1", "198.51.100.7") for _ in range(6)][-1] == 429
    # That browser waits; another one, through the same dashboard, signs in (peggy's account limit
    # counts 10 failures here: her name is the attacker's target, so it locks too, until it clears).
    assert await login(PASSWORD, "127.0.0.1", "203.0.113.9") == 429
    await add_user("quinn", "user")
    other = await client.post("/auth/login", json={"username": "quinn", "password": PASSWORD},
                              headers={"X-Forwarded-For": "203.0.113.9"}, scope_base={"client": ("127.0.0.1", 40000)})
    assert other.status_code == 200
    # A peer that is not trusted cannot pick the address it is counted under.
    spoofed = [(await client.post("/auth/login", json={"username": f"rita{i}", "password": "wrong password"},
                                  headers={"X-Forwarded-For": f"192.0.2.{100 + i}"},
                                  scope_base={"client": ("10.7.7.7", 40000)})).status_code for i in range(6)]
    assert spoofed == [401] * 5 + [429]
