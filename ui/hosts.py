"""Refuse every dashboard request whose ``Host`` is not one of the dashboard's names (DNS rebinding).

A page at ``http://evil.example:5006/`` whose name the attacker then points at 127.0.0.1
loads the dashboard in the visitor's browser as its own origin. Bokeh checks a websocket's
``Origin`` against ``websocket_origin``, but Tornado (6.5 and later) skips that check when
the ``Origin`` matches the ``Host``, which is what such a page sends (``Host:
evil.example:5006``, ``Origin: http://evil.example:5006``), and the page and its files are
served to any ``Host``. So every request, page, files and websocket alike, must name the
dashboard by one of :func:`allowed_names`: the loopback names, the address it binds to when
that is a specific one, and the names in ``LLMCHAT_UI_ORIGINS`` (``*`` patterns as Bokeh
reads them there); any other answers 403.
"""

from __future__ import annotations

import ipaddress
from fnmatch import fnmatchcase
from typing import Any

from bokeh.server.server import Server
from tornado.httputil import HTTPServerRequest
from tornado.routing import Matcher, Rule
from tornado.web import RequestHandler

from ui.settings import UiSettings

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")


def host_name(value: str) -> str | None:
    """The name in a ``Host`` value (or a ``host:port`` setting), lowercased, without the port,
    IPv6 brackets or a trailing dot; ``None`` when there is none."""
    value = value.strip().lower()
    if value.startswith("["):
        name, bracket, rest = value[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            return None
    elif value.count(":") == 1:
        name = value.partition(":")[0]
    else:  # a name, or an IPv6 address without brackets
        name = value
    return name.rstrip(".") or None


def allowed_names(settings: UiSettings) -> list[str]:
    """The names (or ``*`` patterns) the dashboard answers to, loopback names first."""
    names = list(LOOPBACK_NAMES)
    try:
        specific = not ipaddress.ip_address(settings.ui_host.strip("[]")).is_unspecified
    except ValueError:
        specific = bool(settings.ui_host.strip())
    for value in ([settings.ui_host] if specific else []) + settings.ui_origins:
        name = host_name(value)
        if name is not None and name not in names:
            names.append(name)
    return names


class _ForeignHost(Matcher):
    """Matches the requests whose ``Host`` names none of ``names``."""

    def __init__(self, names: list[str]) -> None:
        self.names = names

    def match(self, request: HTTPServerRequest) -> dict[str, Any] | None:
        name = host_name(request.headers.get("Host", ""))
        if name is not None and any(fnmatchcase(name, allowed) for allowed in self.names):
            return None
        return {}


class _Refuse(RequestHandler):
    def initialize(self, names: list[str]) -> None:
        self.names = names

    def prepare(self) -> None:
        self.set_status(403)
        self.set_header("Content-Type", "text/plain; charset=utf-8")
        self.finish(
            f"This dashboard answers only to {', '.join(self.names)}, and the address this request "
            "was sent to names none of them. LLMCHAT_UI_ORIGINS (a JSON list of host:port) adds a name.\n"
        )


def refuse_foreign_hosts(server: Server, settings: UiSettings) -> None:
    """Make ``server`` answer 403 to requests that do not name it, before any of its routes."""
    names = allowed_names(settings)
    # Bokeh keeps its Tornado application private; its router is Tornado's public API.
    server._tornado.default_router.rules.insert(0, Rule(_ForeignHost(names), _Refuse, {"names": names}))
