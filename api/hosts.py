"""Refuse requests that do not name this server (``Host``) or that come from another site's page (``Origin``).

DNS rebinding: a page at ``http://evil.example:8000/`` whose name the attacker then points
at 127.0.0.1 reaches this API from the visitor's browser as its own origin, past any
same-origin rule; only the ``Host`` header (``evil.example:8000``) tells it apart. So every
request, in every mode and before any credential is looked at, must name this server by
one of its names (:func:`allowed_hosts`): the loopback names, the address it binds to when
that is a specific one, and ``LLMCHAT_ALLOWED_HOSTS`` (a proxy's public name, say).

A browser request made by a page carries that page's ``Origin``. When a request has one
(``null`` included), it must be this server's own origin (the same host and port as the
``Host`` header; the scheme is not compared, so a TLS proxy in front needs no setting) or
one listed in ``LLMCHAT_ALLOWED_ORIGINS``. Clients that send no ``Origin`` (curl, the
``openai`` client, the dashboard's server-side calls) pass.

Both refusals are 403s of :mod:`api.errors` (``HostNotAllowed``, ``OriginNotAllowed``).
"""

from __future__ import annotations

import ipaddress
import json
from typing import Any
from urllib.parse import urlsplit

from quart import Quart, request

from api.errors import HostNotAllowed, OriginNotAllowed, describe, error_payload
from api.services import services
from api.settings import ApiSettings

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}
SHOWN_CHARS = 100  # of a refused header, in the message


def split_host(value: str) -> tuple[str, int | None] | None:
    """``(name, port)`` of a ``Host`` value: the name lowercased, without IPv6 brackets or a
    trailing dot; ``None`` when it is no host (empty, a bad port, an unclosed bracket)."""
    value = value.strip().lower()
    port: str | None
    if value.startswith("["):  # [IPv6] or [IPv6]:port
        name, bracket, rest = value[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            return None
        port = rest[1:] if rest else None
    elif value.count(":") == 1:
        name, _, port = value.partition(":")
    else:  # a name, or an IPv6 address without brackets (so no port)
        name, port = value, None
    name = name.rstrip(".")
    if not name or (port is not None and not (port.isascii() and port.isdigit() and int(port) <= 65535)):
        return None
    return name, None if port is None else int(port)


def _specific(address: str) -> bool:
    """Whether a bind address names one interface (not 0.0.0.0, ::, or empty)."""
    try:
        return not ipaddress.ip_address(address.strip("[]")).is_unspecified
    except ValueError:
        return bool(address.strip())  # a name such as "myhost"


def allowed_hosts(settings: ApiSettings) -> list[str]:
    """The names this server answers to, lowercased, loopback names first."""
    names = list(LOOPBACK_NAMES)
    extra = [settings.host] if _specific(settings.host) else []
    for value in [*extra, *settings.allowed_hosts]:
        parsed = split_host(value)
        if parsed is not None and parsed[0] not in names:
            names.append(parsed[0])
    return names


def normalize_origin(value: str) -> str | None:
    """An origin as browsers write it (``scheme://host[:port]``, lowercased, no default port),
    ``"null"`` for ``null``; ``None`` when it is not an origin."""
    value = value.strip().lower().rstrip("/")
    if value == "null":
        return value
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError:
        return None
    if not (parts.scheme and parts.hostname) or parts.path or parts.query or parts.fragment or parts.username:
        return None
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    if port is not None and port != DEFAULT_PORTS.get(parts.scheme):
        host += f":{port}"
    return f"{parts.scheme}://{host}"


def same_origin(origin: str, host: str) -> bool:
    """Whether ``origin`` (an ``Origin`` value) is the server that ``host`` (a ``Host``
    value) names: the same name and port, whatever the scheme."""
    called = split_host(host)
    if called is None or normalize_origin(origin) in (None, "null"):
        return False
    parts = urlsplit(origin.strip().lower())
    default = DEFAULT_PORTS.get(parts.scheme)
    ports = {parts.port} if parts.port not in (None, default) else {None, default}
    return (parts.hostname or "").rstrip(".") == called[0] and called[1] in ports


def _shown(value: str) -> str:
    return repr(value[:SHOWN_CHARS] + ("..." if len(value) > SHOWN_CHARS else ""))


def _host_refusal(value: str, names: list[str]) -> HostNotAllowed:
    said = f"the Host header names {_shown(value)}" if value else "the request has no Host header"
    return HostNotAllowed(
        f"{said}, and this server answers only to {', '.join(names)}; "
        "LLMCHAT_ALLOWED_HOSTS (a JSON list) adds a name, such as the one a proxy serves it under"
    )


async def refuse_foreign_hosts() -> None:
    """403 unless the ``Host`` header names this server (see the module docstring)."""
    names = allowed_hosts(services().settings)
    value = request.headers.get("Host", "")
    parsed = split_host(value)
    if parsed is None or parsed[0] not in names:
        raise _host_refusal(value, names)


async def refuse_foreign_origins() -> None:
    """403 when an ``Origin`` header names another site than this server or an allowed one."""
    origin = request.headers.get("Origin")
    if origin is None or same_origin(origin, request.headers.get("Host", "")):
        return
    allowed = {normalize_origin(value) for value in services().settings.allowed_origins} - {None}
    if normalize_origin(origin) in allowed:
        return
    raise OriginNotAllowed(
        f"browser requests from pages of {_shown(origin)} are refused: this API accepts them only "
        "from its own origin and from LLMCHAT_ALLOWED_ORIGINS"
    )


class _RefuseUnroutableHosts:
    """Quart routes by ``Host`` while it makes a request's context, before any ``before_request``
    function runs, and a name IDNA cannot encode (a label over 63 characters, say) fails there
    with a bare 500 and a traceback in the log: this ASGI wrapper answers those 403 first."""

    def __init__(self, app: Quart, asgi_app: Any) -> None:
        self.app = app
        self.asgi_app = asgi_app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            raw = next((value for key, value in scope["headers"] if key.lower() == b"host"), b"")
            value = raw.decode("latin-1")
            try:  # what werkzeug's routing does with it
                value.lower().partition(":")[0].encode("idna")
            except UnicodeError:
                names = allowed_hosts(self.app.extensions["llmchat"].settings)
                body = json.dumps(error_payload(describe(_host_refusal(value, names)),
                                                openai=scope["path"].startswith("/v1/"))).encode()
                headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
                await send({"type": "http.response.start", "status": 403, "headers": headers})
                await send({"type": "http.response.body", "body": body, "more_body": False})
                return
        await self.asgi_app(scope, receive, send)


def register(app: Quart) -> None:
    """Check every request's ``Host``, then its ``Origin``, before any route sees it."""
    app.asgi_app = _RefuseUnroutableHosts(app, app.asgi_app)  # type: ignore[method-assign]
    app.before_request(refuse_foreign_hosts)
    app.before_request(refuse_foreign_origins)
