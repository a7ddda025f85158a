"""The dashboard's sign-in (ui/auth.py) over plain HTTP: who gets sent to sign in, what the
sign-in form refuses, and local mode's refusal to listen beyond loopback. The browser side
(sign in, chat, sign out, another user's link) is in test_dashboard.py."""

from __future__ import annotations

import asyncio
import re
import socket
import subprocess
import sys
from collections.abc import Iterator

import httpx
import pytest
from bokeh.util.token import generate_jwt_token, get_session_id, get_token_payload
from tornado.httpclient import HTTPRequest
from tornado.websocket import websocket_connect

from tests.servers import UiServer, free_port
from ui.auth import COOKIE, SECURITY_HEADERS, WRONG, failure_message, safe_next
from ui.client import ApiProblem

NO_API = "http://127.0.0.1:9"  # nothing listens there


@pytest.fixture(scope="module")
def ui() -> Iterator[UiServer]:
    running = UiServer(NO_API)
    running.start(quiet=True)
    yield running
    running.stop()


def test_where_to_go_after_signing_in() -> None:
    assert safe_next("/?chat_id=abc") == "/?chat_id=abc"
    for unsafe in [None, "", "https://evil.example/", "//evil.example/", "/\\evil.example", "evil", "/login",
                   "/logout?x=1", "/\r\nSet-Cookie: x=1", "javascript:alert(1)"]:
        assert safe_next(unsafe) == "/", unsafe


def test_what_a_refused_sign_in_says() -> None:
    assert failure_message(ApiProblem("wrong user name or password", 401)) == WRONG == "Wrong user name or password."
    assert failure_message(ApiProblem("too many", 429, retry_after_s=42)) == "Too many failed sign-ins; try again in 42 s."


def test_signed_out_browsers_are_sent_to_sign_in(ui: UiServer) -> None:
    response = httpx.get(f"{ui.url}/?chat_id=abc")
    assert response.status_code == 302 and response.headers["Location"] == "./login?next=%2F%3Fchat_id%3Dabc"
    page = httpx.get(f"{ui.url}/login", params={"next": "/?chat_id=abc"})
    assert page.status_code == 200 and 'name="password"' in page.text and 'value="/?chat_id=abc"' in page.text
    assert all(page.headers[name] == value for name, value in SECURITY_HEADERS.items())
    # A cookie the API cannot vouch for (it is away here) gets no dashboard either.
    away = httpx.get(f"{ui.url}/", cookies={COOKIE: "llms_made_up"})
    assert away.status_code == 502 and "The API cannot be reached" in away.text and "bokeh" not in away.text.lower()


def test_a_websocket_needs_a_sign_in(ui: UiServer) -> None:
    with socket.create_connection(("127.0.0.1", ui.port), timeout=10) as raw:
        own = f"127.0.0.1:{ui.port}"
        raw.sendall(
            f"GET /ws HTTP/1.1\r\nHost: {own}\r\nOrigin: http://{own}\r\nConnection: Upgrade\r\n"
            "Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            "Sec-WebSocket-Protocol: bokeh, token\r\n\r\n".encode()
        )
        assert raw.recv(65536).startswith(b"HTTP/1.1 403")


def test_the_forms_refuse_other_sites(ui: UiServer) -> None:
    form = {"username": "alice", "password": "correct horse battery", "next": "/"}
    for origin in ["http://evil.example", "null", f"http://127.0.0.1:{free_port()}"]:
        for path in ["/login", "/logout"]:
            response = httpx.post(f"{ui.url}{path}", data=form, headers={"Origin": origin})
            assert response.status_code == 403 and "another site" in response.text, (origin, path)
            assert "set-cookie" not in response.headers
    # A foreign Host gets nothing at all (ui/hosts.py), sign-in pages included.
    for path in ["/login", "/logout"]:
        assert httpx.get(f"{ui.url}{path}", headers={"Host": "evil.example"}).status_code == 403
    # The page's own origin passes the check, and then needs the API, which is away here.
    own = httpx.post(f"{ui.url}/login", data=form, headers={"Origin": ui.url})
    assert own.status_code == 502 and "cannot be reached" in own.text
    # A link to /logout signs nobody out: GET only shows the button.
    assert 'method="post"' in httpx.get(f"{ui.url}/logout").text


def test_an_empty_form_is_answered_without_asking_the_api(ui: UiServer) -> None:
    response = httpx.post(f"{ui.url}/login", data={"username": "", "password": ""})
    assert response.status_code == 400 and "Enter your user name and your password." in response.text


def test_local_mode_refuses_to_listen_beyond_loopback() -> None:
    env = {"LLMCHAT_AUTH": "off", "LLMCHAT_UI_HOST": "0.0.0.0", "LLMCHAT_UI_PORT": str(free_port())}
    done = subprocess.run([sys.executable, "-m", "ui"], env={**UiServer(NO_API).env, **env},
                          capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert "LLMCHAT_AUTH=off" in done.stderr and "LLMCHAT_UI_HOST is 0.0.0.0" in done.stderr


def test_a_made_up_session_token_attaches_to_nothing() -> None:
    # The page's token is signed with the server's key: a token made up for the same session
    # id (someone else's dashboard, acting for its user) is refused.
    ui = UiServer(NO_API, auth="off")  # local mode: the page loads without an API
    ui.start(quiet=True)
    try:
        page = httpx.get(f"{ui.url}/").text
        match = re.search(r'"token":\s*"([^"]+)"', page)
        assert match is not None
        real = match.group(1)
        forged = generate_jwt_token(get_session_id(real), signed=False, extra_payload=get_token_payload(real))
        assert asyncio.run(_first_message(ui, real)) is not None  # the page's own token is served
        assert asyncio.run(_first_message(ui, forged)) is None  # closed without a word
    finally:
        ui.stop()


async def _first_message(ui: UiServer, token: str) -> str | bytes | None:
    request = HTTPRequest(f"ws://127.0.0.1:{ui.port}/ws", headers={"Origin": ui.url})
    connection = await websocket_connect(request, subprotocols=["bokeh", token])
    try:
        return await asyncio.wait_for(connection.read_message(), timeout=10)
    finally:
        connection.close()
