"""Host and Origin checks (api/hosts.py): a request that does not name this server, or a
browser request from another site's page, is refused with 403 before any route or
credential check; DNS rebinding (a page whose name is re-pointed at 127.0.0.1) is one."""

from __future__ import annotations

import socket
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from quart.typing import TestClientProtocol as QuartClient

from api.hosts import allowed_hosts, normalize_origin, same_origin, split_host
from api.settings import ApiSettings
from tests.servers import ApiServer, survivors

FOREIGN_HOSTS = [
    "evil.example", "evil.example:8000", "EVIL.example", "localhost.evil.example", "127.0.0.1.nip.io",
    "[::2]:8000", "0.0.0.0:8000", "localhost:notaport", "",  # "[::1": the test client cannot send it
]


# The parsing, alone


@pytest.mark.parametrize(("value", "expected"), [
    ("localhost", ("localhost", None)),
    ("LocalHost:8000", ("localhost", 8000)),
    ("localhost.:8000", ("localhost", 8000)),
    ("127.0.0.1:1", ("127.0.0.1", 1)),
    ("[::1]:8000", ("::1", 8000)),
    ("[::1]", ("::1", None)),
    ("::1", ("::1", None)),
    ("evil.example", ("evil.example", None)),
    ("", None), (":8000", None), ("localhost:", None), ("localhost:x", None), ("localhost:99999", None),
    ("[::1", None), ("[::1]x", None), ("[::1]:", None),
])
def test_split_host(value: str, expected: tuple[str, int | None] | None) -> None:
    assert split_host(value) == expected


def test_allowed_hosts_are_loopback_the_bind_address_and_the_setting() -> None:
    assert allowed_hosts(ApiSettings()) == ["localhost", "127.0.0.1", "::1"]
    assert allowed_hosts(ApiSettings(host="0.0.0.0")) == ["localhost", "127.0.0.1", "::1"]
    assert allowed_hosts(ApiSettings(host="::")) == ["localhost", "127.0.0.1", "::1"]
    assert allowed_hosts(ApiSettings(host="192.0.2.7")) == ["localhost", "127.0.0.1", "::1", "192.0.2.7"]
    assert allowed_hosts(ApiSettings(allowed_hosts=["Chat.Example.org:443", "[fd00::5]"])) == [
        "localhost", "127.0.0.1", "::1", "chat.example.org", "fd00::5"]


def test_the_settings_read_json_lists_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLMCHAT_ALLOWED_HOSTS", '["chat.example.org"]')
    monkeypatch.setenv("LLMCHAT_ALLOWED_ORIGINS", '["https://app.example.org"]')
    settings = ApiSettings()
    assert settings.allowed_hosts == ["chat.example.org"]
    assert settings.allowed_origins == ["https://app.example.org"]


@pytest.mark.parametrize(("origin", "host", "same"), [
    ("http://localhost:8000", "localhost:8000", True),
    ("https://localhost:8000", "localhost:8000", True),  # any scheme: a TLS proxy needs no setting
    ("http://LOCALHOST:8000", "localhost:8000", True),
    ("http://[::1]:8000", "[::1]:8000", True),
    ("https://chat.example.org", "chat.example.org", True),
    ("https://chat.example.org", "chat.example.org:443", True),
    ("http://chat.example.org:443", "chat.example.org:443", True),
    ("http://localhost", "localhost:80", True),
    ("http://localhost:8001", "localhost:8000", False),
    ("http://localhost", "localhost:8000", False),
    ("https://chat.example.org", "chat.example.org:80", False),
    ("http://evil.example:8000", "localhost:8000", False),
    ("null", "localhost:8000", False),
    ("http://localhost:8000/path", "localhost:8000", False),
    ("garbage", "localhost:8000", False),
    ("http://localhost:8000", "", False),
])
def test_same_origin(origin: str, host: str, same: bool) -> None:
    assert same_origin(origin, host) is same


@pytest.mark.parametrize(("value", "expected"), [
    ("https://App.Example.org/", "https://app.example.org"),
    ("https://app.example.org:443", "https://app.example.org"),
    ("http://app.example.org:8080", "http://app.example.org:8080"),
    ("http://[FD00::5]:8080", "http://[fd00::5]:8080"),
    ("null", "null"),
    ("app.example.org", None), ("https://app.example.org/x", None), ("https://u@app.example.org", None),
    ("http://app.example.org:x", None),
])
def test_normalize_origin(value: str, expected: str | None) -> None:
    assert normalize_origin(value) == expected


# The in-process app (Quart's test client sends Host: localhost and no Origin)


def _refusal(body: dict[str, Any], name: str) -> str:
    assert body["error"] == name and body["status"] == 403, body
    return str(body["detail"])


async def test_the_test_clients_own_host_passes(client: QuartClient) -> None:
    assert (await client.get("/chats")).status_code == 200


LOOPBACK_HOSTS = ["localhost", "localhost:8000", "LOCALHOST", "127.0.0.1:8000", "[::1]:8000", "::1"]


@pytest.mark.parametrize("host", LOOPBACK_HOSTS)
async def test_loopback_names_pass(client: QuartClient, host: str) -> None:
    assert (await client.get("/chats", headers={"Host": host})).status_code == 200


@pytest.mark.parametrize("host", FOREIGN_HOSTS)
async def test_a_foreign_host_is_refused(client: QuartClient, host: str) -> None:
    response = await client.get("/chats", headers={"Host": host})
    assert response.status_code == 403
    detail = _refusal(await response.get_json(), "HostNotAllowed")
    assert "localhost, 127.0.0.1, ::1" in detail and "LLMCHAT_ALLOWED_HOSTS" in detail
    assert ("no Host header" in detail) if not host else (repr(host) in detail)


async def test_a_foreign_host_learns_nothing_of_any_route(client: QuartClient) -> None:
    evil = {"Host": "evil.example:8000"}
    for method, path in [("GET", "/status"), ("GET", "/no-such-route"), ("POST", "/load"),
                         ("GET", "/openapi.json"), ("POST", "/auth/login"), ("DELETE", "/chats/x")]:
        response = await client.open(path, method=method, headers=evil, json={})
        assert response.status_code == 403, (method, path)
        _refusal(await response.get_json(), "HostNotAllowed")
    openai = await client.get("/v1/models", headers=evil)
    assert openai.status_code == 403
    assert (await openai.get_json())["error"]["type"] == "HostNotAllowed"


@pytest.mark.parametrize("host", [".".join(["a" * 60] * 80), "a" * 5000 + ".example", "a" * 64, "a..b"])
async def test_a_long_or_unroutable_host_is_refused_too(client: QuartClient, host: str) -> None:
    # The last three are names IDNA cannot encode: Quart's routing fails on them before any check.
    response = await client.get("/chats", headers={"Host": host})
    assert response.status_code == 403
    detail = _refusal(await response.get_json(), "HostNotAllowed")
    assert len(detail) < 400 and "LLMCHAT_ALLOWED_HOSTS" in detail
    openai = await client.get("/v1/models", headers={"Host": host})
    assert openai.status_code == 403 and (await openai.get_json())["error"]["type"] == "HostNotAllowed"


async def test_names_from_the_settings_pass(client: QuartClient, api_settings: ApiSettings,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    assert (await client.get("/chats", headers={"Host": "chat.example.org"})).status_code == 403
    monkeypatch.setattr(api_settings, "allowed_hosts", ["chat.example.org"])
    assert (await client.get("/chats", headers={"Host": "Chat.Example.org:443"})).status_code == 200
    monkeypatch.setattr(api_settings, "host", "192.0.2.7")  # a specific bind address is a name
    assert (await client.get("/chats", headers={"Host": "192.0.2.7:8000"})).status_code == 200
    monkeypatch.setattr(api_settings, "host", "0.0.0.0")  # "every address" is none
    assert (await client.get("/chats", headers={"Host": "0.0.0.0:8000"})).status_code == 403


async def test_a_foreign_origin_is_refused_and_changes_nothing(client: QuartClient) -> None:
    chat_id = uuid.uuid4().hex
    for origin in ["http://evil.example", "http://evil.example:8000", "null", "http://localhost:9999",
                   "http://localhost.evil.example", "not an origin"]:
        response = await client.post("/chats", json={"chat_id": chat_id}, headers={"Origin": origin})
        assert response.status_code == 403, origin
        detail = _refusal(await response.get_json(), "OriginNotAllowed")
        assert repr(origin) in detail and "LLMCHAT_ALLOWED_ORIGINS" in detail
    assert (await client.get(f"/chats/{chat_id}")).status_code == 404
    # Safe methods too: another site's script reads nothing.
    assert (await client.get("/chats", headers={"Origin": "http://evil.example"})).status_code == 403


async def test_the_servers_own_origin_passes(client: QuartClient) -> None:
    for host, origin in [("localhost", "http://localhost"), ("localhost:8000", "http://localhost:8000"),
                         ("127.0.0.1:8000", "https://127.0.0.1:8000")]:
        response = await client.post("/chats", json={}, headers={"Host": host, "Origin": origin})
        assert response.status_code == 201, (host, origin, await response.get_data(as_text=True))


async def test_origins_from_the_settings_pass(client: QuartClient, api_settings: ApiSettings,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    headers = {"Origin": "https://app.example.org"}
    assert (await client.post("/chats", json={}, headers=headers)).status_code == 403
    monkeypatch.setattr(api_settings, "allowed_origins", ["https://App.Example.org:443/"])
    assert (await client.post("/chats", json={}, headers=headers)).status_code == 201
    other_scheme = {"Origin": "http://app.example.org"}
    assert (await client.post("/chats", json={}, headers=other_scheme)).status_code == 403


# A real server (Hypercorn), as a browser and curl reach it


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, models_dir: Path) -> Iterator[ApiServer]:
    running = ApiServer(tmp_path_factory.mktemp("hosts"), models_dir, auth="off",
                        allowed_hosts='["chat.example.org"]', allowed_origins='["https://app.example.org"]')
    running.start(quiet=True)
    yield running
    assert not survivors(running.stop())


def test_a_rebinding_host_is_refused_by_the_real_server(server: ApiServer) -> None:
    refused = httpx.get(f"{server.url}/chats", headers={"Host": "evil.example"})
    assert refused.status_code == 403
    body = refused.json()
    assert body["error"] == "HostNotAllowed"
    assert body["detail"] == (
        "the Host header names 'evil.example', and this server answers only to localhost, 127.0.0.1, ::1, "
        "chat.example.org; LLMCHAT_ALLOWED_HOSTS (a JSON list) adds a name, "
        "such as the one a proxy serves it under"
    )
    for host in ["a" * 70, "[::1", f"localhost:{server.port}x"]:
        refused = httpx.get(f"{server.url}/chats", headers={"Host": host})
        assert refused.status_code == 403 and refused.json()["error"] == "HostNotAllowed", host
    for host in [f"localhost:{server.port}", f"127.0.0.1:{server.port}", "chat.example.org"]:
        assert httpx.get(f"{server.url}/chats", headers={"Host": host}).status_code == 200, host


def test_a_request_without_host_is_refused_by_the_real_server(server: ApiServer) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as raw:
        raw.sendall(b"GET /chats HTTP/1.0\r\n\r\n")
        answer = b""
        while chunk := raw.recv(65536):
            answer += chunk
    assert answer.startswith((b"HTTP/1.0 403", b"HTTP/1.1 403")), answer[:200]
    assert b"no Host header" in answer


def test_origins_at_the_real_server(server: ApiServer) -> None:
    url = f"{server.url}/chats"
    refused = httpx.post(url, json={}, headers={"Origin": "http://evil.example"})
    assert refused.status_code == 403 and refused.json()["error"] == "OriginNotAllowed"
    # DNS rebinding: the page's origin matches its Host, and the Host check refuses it.
    rebound = httpx.post(url, json={}, headers={"Host": "evil.example", "Origin": "http://evil.example"})
    assert rebound.status_code == 403 and rebound.json()["error"] == "HostNotAllowed"
    assert httpx.post(url, json={}, headers={"Origin": server.url}).status_code == 201
    assert httpx.post(url, json={}, headers={"Origin": f"http://localhost:{server.port}",
                                             "Host": f"localhost:{server.port}"}).status_code == 201
    assert httpx.post(url, json={}, headers={"Origin": "https://app.example.org"}).status_code == 201
    assert httpx.post(url, json={}).status_code == 201  # curl, the openai client, the dashboard: no Origin
