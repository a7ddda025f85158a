"""Sign-in for the dashboard: the sign-in and sign-out pages, and whom each request acts for.

It plugs into Bokeh's ``AuthProvider`` hook (``get_server(auth_provider=...)``): every
page, websocket and Bokeh route asks :meth:`DashboardAuth.get_user_async` first, and a
browser without a working sign-in is sent to ``/login`` (a websocket gets 403).

Signing in posts the name and password to the API's ``POST /auth/login``; the session
token the API answers with is kept in this server's own cookie (:data:`COOKIE`: HttpOnly,
SameSite=Lax, Secure with ``LLMCHAT_COOKIE_SECURE``), never in a URL or in the page. Each
request's token is checked with ``GET /auth/me`` and handed, with the user's name, to the
dashboard that request builds (:func:`signed_in_user`), whose API calls then carry it as
``Authorization: Bearer``: the dashboard acts for that user only, and holds no credential
of its own. When the API stops taking the token (signed out, expired, user disabled) the
next page or call lands on ``/login``.

Bokeh copies a page request's cookies and headers into the session token it embeds,
unencrypted, in the page: :data:`EXCLUDED_COOKIES` and :data:`EXCLUDED_HEADERS` are to be
passed to ``get_server`` so that no credential reaches it.

The sign-in and sign-out forms refuse a POST whose ``Origin`` is another site's (the
``Host`` itself is checked for every route by :mod:`ui.hosts`).
"""

from __future__ import annotations

import html
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode, urlsplit

import panel as pn
from bokeh.server.auth_provider import AuthProvider
from bokeh.server.util import check_allowlist
from tornado.web import HTTPError, RequestHandler

from ui.client import API_SESSION_COOKIE, ApiClient, ApiProblem
from ui.settings import UiSettings

COOKIE = "llmchat_ui_session"
# The API's own cookie too: the browser sends it here when it signed in to the API at the
# same host name (cookies do not tell ports apart).
EXCLUDED_COOKIES = [COOKIE, API_SESSION_COOKIE]
EXCLUDED_HEADERS = ["Cookie", "Authorization"]
LOGIN_URL, LOGOUT_URL = "/login", "/logout"
WRONG = "Wrong user name or password."
SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
                               "frame-ancestors 'none'; base-uri 'none'",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",  # "no-referrer" would make the forms' Origin "null"
}


@dataclass(frozen=True)
class SignedIn:
    """The user a request was signed in as, and their session token at the API."""

    name: str
    role: str
    token: str = field(repr=False)


def signed_in_user() -> SignedIn | None:
    """Whom the dashboard being built acts for: what :class:`DashboardAuth` found for the
    request that opened this Bokeh session; None when there is none (then sign in)."""
    document = pn.state.curdoc
    context = document.session_context if document is not None else None
    request = context.request if context is not None else None
    # Bokeh's request proxy hands attributes it does not filter on to the real request.
    found = getattr(request, "llmchat_user", None) if request is not None else None
    return found if isinstance(found, SignedIn) else None


def failure_message(problem: ApiProblem) -> str:
    """What the sign-in page says when the API refused the name and password."""
    if problem.status == 401:
        return WRONG
    if problem.status == 429:
        wait = problem.retry_after_s if problem.retry_after_s is not None else 60
        return f"Too many failed sign-ins; try again in {wait} s."
    return f"Signing in failed: {problem}"


def safe_next(value: str | None) -> str:
    """Where to go after signing in: a path on this server only (never another site)."""
    if not value or not value.startswith("/") or value.startswith(("//", "/\\")):
        return "/"
    if any(ord(c) < 0x20 or c == "\\" for c in value) or urlsplit(value).scheme or urlsplit(value).netloc:
        return "/"
    if urlsplit(value).path in (LOGIN_URL, LOGOUT_URL):
        return "/"
    return value


class DashboardAuth(AuthProvider):
    """Bokeh's sign-in hook, backed by the API's accounts. ``origins`` are the ``host:port``
    values browsers may post the forms from besides the page's own (as for the websocket)."""

    def __init__(self, settings: UiSettings, origins: list[str]) -> None:
        self.ui_settings = settings
        self.origins = origins
        self.api = ApiClient(settings)  # no token of its own: each call names the browser's
        super().__init__()

    @property
    def get_user_async(self) -> Callable[[Any], Awaitable[str | None]]:
        return self._user

    @property
    def login_url(self) -> str:
        return LOGIN_URL

    @property
    def login_handler(self) -> type[RequestHandler]:
        return LoginHandler

    @property
    def logout_url(self) -> str:
        return LOGOUT_URL

    @property
    def logout_handler(self) -> type[RequestHandler]:
        return LogoutHandler

    @property
    def endpoints(self) -> list[tuple[str, type[RequestHandler], dict[str, Any]]]:  # type: ignore[override]
        return [(LOGIN_URL, LoginHandler, {"auth": self}), (LOGOUT_URL, LogoutHandler, {"auth": self})]

    async def _user(self, handler: RequestHandler) -> str | None:
        """The signed-in user's name, or None (Bokeh then sends the browser to sign in)."""
        found = await self.check(handler.get_cookie(COOKIE))
        if found is None:
            return None
        handler.request.llmchat_user = found  # type: ignore[attr-defined]  # read by signed_in_user()
        return found.name

    async def check(self, token: str | None) -> SignedIn | None:
        """Whose session ``token`` is at the API; None if nobody's (any more)."""
        if not token:
            return None
        try:
            me = await self.api.me(token)
        except ApiProblem as problem:
            if problem.signed_out:
                return None
            reason = "The API cannot be reached" if problem.status is None else f"The API answered {problem.status}"
            raise HTTPError(502, "the API did not say who is signed in: %s", problem, reason=reason) from problem
        return SignedIn(str(me["name"]), str(me["role"]), token)

    def origin_allowed(self, handler: RequestHandler) -> bool:
        """A form post comes from a page of this dashboard (or from no page: curl, say)."""
        origin = handler.request.headers.get("Origin")
        if origin is None:
            return True
        parts = urlsplit(origin.strip().lower())
        if parts.scheme not in ("http", "https") or not parts.netloc:
            return False  # "null" (a sandboxed frame, a file) among them
        if parts.netloc == handler.request.headers.get("Host", "").strip().lower():
            return True
        return check_allowlist(parts.netloc, self.origins)


class _Page(RequestHandler):
    auth: DashboardAuth

    def initialize(self, auth: DashboardAuth) -> None:
        self.auth = auth

    def set_default_headers(self) -> None:
        for name, value in SECURITY_HEADERS.items():
            self.set_header(name, value)

    def refuse_foreign_origin(self) -> bool:
        if self.auth.origin_allowed(self):
            return False
        self.set_status(403)
        self.write(_page("Refused", '<p class="error" role="alert">This form was sent from a page of another '
                                    "site, so it is refused. Open the dashboard itself and try again.</p>"))
        return True


class LoginHandler(_Page):
    """``GET /login``: the form; ``POST /login``: sign in at the API, keep the session in
    the cookie, and go on to ``next`` (a path on this server)."""

    async def get(self) -> None:
        target = safe_next(self.get_argument("next", None))
        token = self.get_cookie(COOKIE)
        if await self.auth.check(token) is not None:
            self.redirect(target)  # signed in already (a reload of this page, say)
            return
        notice = ""
        if token:  # the API no longer takes it: signed out elsewhere, expired, or disabled
            self.clear_cookie(COOKIE, path="/")
            notice = "Your session has ended; sign in again."
        elif self.get_argument("signed_out", None):
            notice = "You are signed out."
        self.write(_login_form(target, notice=notice))

    async def post(self) -> None:
        if self.refuse_foreign_origin():
            return
        target = safe_next(self.get_body_argument("next", None))
        username = self.get_body_argument("username", "").strip()
        password = self.get_body_argument("password", "")
        if not username or not password:
            self.set_status(400)
            self.write(_login_form(target, username, error="Enter your user name and your password."))
            return
        try:
            _, token = await self.auth.api.sign_in(username, password, self.request.remote_ip or "unknown")
        except ApiProblem as problem:
            self.set_status(problem.status if problem.status in (400, 401, 429) else 502)
            if problem.retry_after_s is not None:
                self.set_header("Retry-After", str(problem.retry_after_s))
            self.write(_login_form(target, username, error=failure_message(problem)))
            return
        settings = self.auth.ui_settings
        self.set_cookie(COOKIE, token, path="/", httponly=True, samesite="Lax", secure=settings.cookie_secure,
                        max_age=int(settings.session_max_s))
        self.redirect(target, status=303)


class LogoutHandler(_Page):
    """``POST /logout``: end the session at the API, forget the cookie, back to ``/login``.
    ``GET`` only shows the button: a link elsewhere cannot sign anyone out."""

    def get(self) -> None:
        self.write(_page("Sign out", '<form method="post" action="./logout">'
                                     '<button type="submit">Sign out</button></form>'))

    async def post(self) -> None:
        if self.refuse_foreign_origin():
            return
        token = self.get_cookie(COOKIE)
        if token:
            try:
                await self.auth.api.sign_out(token)
            except ApiProblem:
                pass  # ended already, or the API is away: the cookie goes all the same
        self.clear_cookie(COOKIE, path="/")
        self.redirect("./login?" + urlencode({"signed_out": 1}), status=303)


STYLE = """
body { margin: 0; font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; background: #f4f6fa; color: #1d2433; }
header { background: #1f3b73; color: white; padding: 14px 24px; font-size: 22px; }
main { max-width: 360px; margin: 48px auto; background: white; border-radius: 8px; padding: 24px 28px;
  box-shadow: 0 1px 4px rgba(0,0,0,.12); }
h1 { font-size: 20px; margin: 0 0 16px; }
label { display: block; font-size: 14px; margin: 12px 0 4px; }
input { width: 100%; box-sizing: border-box; padding: 8px 10px; font-size: 15px; border: 1px solid #b8c0cc; border-radius: 4px; }
input:focus { outline: 2px solid #2f6fed; border-color: #2f6fed; }
button { margin-top: 20px; width: 100%; padding: 9px; font-size: 15px; color: white; background: #2f6fed;
  border: 0; border-radius: 4px; cursor: pointer; }
button:hover { background: #2559c4; }
.error { background: #fdecea; color: #8a1c12; border: 1px solid #f5c2bd; padding: 8px 10px; border-radius: 4px; font-size: 14px; }
.notice { background: #e8f0fe; color: #1f3b73; border: 1px solid #c6d7fb; padding: 8px 10px; border-radius: 4px; font-size: 14px; }
.hint { color: #5b6576; font-size: 13px; margin-top: 18px; }
code { font-size: 12px; }
@media (max-width: 440px) { main { margin: 24px 12px; padding: 20px; } }
"""


def _page(title: str, body: str) -> str:
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{html.escape(title)} · llmchat</title><style>{STYLE}</style></head>"
            f"<body><header>llmchat</header><main><h1>{html.escape(title)}</h1>{body}</main></body></html>")


def _login_form(target: str, username: str = "", error: str = "", notice: str = "") -> str:
    message = (f'<p class="error" role="alert">{html.escape(error)}</p>' if error
               else f'<p class="notice" role="status">{html.escape(notice)}</p>' if notice else "")
    return _page("Sign in", (
        f'{message}<form method="post" action="./login">'
        f'<input type="hidden" name="next" value="{html.escape(target)}">'
        f'<label for="username">User name</label>'
        f'<input id="username" name="username" autocomplete="username" autocapitalize="none" required '
        f'value="{html.escape(username)}"{"" if username else " autofocus"}>'
        f'<label for="password">Password</label>'
        f'<input id="password" name="password" type="password" autocomplete="current-password" required'
        f'{" autofocus" if username else ""}>'
        f'<button type="submit">Sign in</button></form>'
        f'<p class="hint">No account, or a forgotten password? An administrator adds users and resets '
        f"passwords with <code>python -m api.users</code>.</p>"
    ))
