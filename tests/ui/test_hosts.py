"""The dashboard answers only to its own names (ui/hosts.py): a DNS-rebinding page, whose
``Origin`` matches its ``Host``, gets neither the page nor a websocket."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import httpx
import pytest

from tests.servers import UiServer
from ui.hosts import allowed_names, host_name
from ui.settings import UiSettings


@pytest.fixture(scope="module")
def ui() -> Iterator[UiServer]:
    # No API: the page asks it nothing before the websocket opens. Local mode (no sign-in), so
    # that the page and a websocket are served: tests/ui/test_sign_in.py has the signed-in side.
    running = UiServer("http://127.0.0.1:9", auth="off")
    running.env["LLMCHAT_UI_ORIGINS"] = '["chat.example.org", "*.team.example:443"]'
    running.start(quiet=True)
    yield running
    running.stop()


def _upgrade(ui: UiServer, host: str, origin: str) -> bytes:
    """The first line of the answer to a websocket handshake, as a browser would send it."""
    with socket.create_connection(("127.0.0.1", ui.port), timeout=10) as raw:
        raw.sendall(
            f"GET /ws HTTP/1.1\r\nHost: {host}\r\nOrigin: {origin}\r\nConnection: Upgrade\r\n"
            "Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            "Sec-WebSocket-Protocol: bokeh, token\r\n\r\n".encode()
        )
        return raw.recv(65536).split(b"\r\n", 1)[0]


def test_names() -> None:
    assert host_name("LocalHost:5006") == "localhost" and host_name("[::1]:5006") == "::1"
    assert host_name("") is None and host_name("[::1") is None
    assert allowed_names(UiSettings(ui_host="0.0.0.0")) == ["localhost", "127.0.0.1", "::1"]
    assert allowed_names(UiSettings(ui_host="192.0.2.7", ui_origins=["chat.example.org:443"])) == [
        "localhost", "127.0.0.1", "::1", "192.0.2.7", "chat.example.org"]


def test_own_names_get_the_page(ui: UiServer) -> None:
    for host in [f"127.0.0.1:{ui.port}", f"localhost:{ui.port}", "chat.example.org", "a.team.example"]:
        response = httpx.get(f"{ui.url}/", headers={"Host": host})
        assert response.status_code == 200 and "llmchat" in response.text, host


def test_a_foreign_host_gets_nothing(ui: UiServer) -> None:
    for host in [f"evil.example:{ui.port}", "evil.example", "team.example", "chat.example.org.evil.example"]:
        for path in ["/", "/?chat_id=x", "/static/js/bokeh.min.js", "/no-such-page"]:
            response = httpx.get(f"{ui.url}{path}", headers={"Host": host})
            assert response.status_code == 403, (host, path)
            assert "LLMCHAT_UI_ORIGINS" in response.text and "evil" not in response.text


def test_a_rebinding_page_gets_no_websocket(ui: UiServer) -> None:
    # Tornado skips Bokeh's websocket_origin check when Origin matches Host: this one did get 101.
    rebound = f"evil.example:{ui.port}"
    assert _upgrade(ui, rebound, f"http://{rebound}").startswith(b"HTTP/1.1 403")
    own = f"127.0.0.1:{ui.port}"
    assert _upgrade(ui, own, f"http://{own}").startswith(b"HTTP/1.1 101")  # the dashboard's own page
    # Another site's page at the right name: Bokeh's own check still refuses it.
    assert _upgrade(ui, f"127.0.0.1:{ui.port}", "http://evil.example").startswith(b"HTTP/1.1 403")
