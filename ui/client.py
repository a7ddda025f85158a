"""The UI's only way to the backend: the HTTP API, through httpx and httpx-sse.

Every call acts for one user: the :class:`ApiClient` of a dashboard carries that user's
own session token (``Authorization: Bearer``), and the sign-in pages pass the token of the
browser they answer. The client keeps no cookie the API sets, so no call ever acts for
whoever signed in before.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from http.cookiejar import CookieJar
from http.cookies import CookieError, SimpleCookie
from typing import Any
from urllib.parse import quote

import httpx
from httpx_sse import aconnect_sse

from ui.settings import UiSettings

API_SESSION_COOKIE = "llmchat_session"  # what POST /auth/login sets


class ApiProblem(Exception):
    """The API answered with an error, or could not be reached; ``str()`` is for people."""

    def __init__(self, message: str, status: int | None = None, message_id: int | None = None,
                 retry_after_s: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message_id = message_id  # a reply the API stored (with status error) before failing
        self.retry_after_s = retry_after_s  # from Retry-After, on a 429

    @property
    def signed_out(self) -> bool:
        """The credential no longer works (signed out, expired, user disabled): sign in again."""
        return self.status == 401

    @property
    def refused(self) -> bool:
        """Nothing was stored: the API refused the message (or was not reached)."""
        return self.message_id is None


def _problem(response: httpx.Response) -> ApiProblem:
    try:
        body = response.json()
        detail = body.get("detail") or body.get("error") or response.text
        message_id = body.get("message_id")
    except ValueError:
        detail, message_id = response.text or response.reason_phrase, None
    retry_after = response.headers.get("Retry-After", "")
    return ApiProblem(str(detail), response.status_code, message_id if isinstance(message_id, int) else None,
                      int(retry_after) if retry_after.isdigit() else None)


class _NoCookies(CookieJar):
    """A cookie jar that keeps nothing: a session cookie the API sets must not ride along
    on the next call (which may be another user's)."""

    def extract_cookies(self, response: Any, request: Any) -> None:
        pass

    def set_cookie(self, cookie: Any) -> None:
        pass


def _session_token(response: httpx.Response) -> str | None:
    """The session token in a sign-in answer's ``Set-Cookie`` (read here, not by a cookie jar,
    which would drop a ``Secure`` cookie sent over plain HTTP)."""
    for header in response.headers.get_list("set-cookie"):
        cookie: SimpleCookie = SimpleCookie()
        try:
            cookie.load(header)
        except CookieError:
            continue
        if API_SESSION_COOKIE in cookie and cookie[API_SESSION_COOKIE].value:
            return cookie[API_SESSION_COOKIE].value
    return None


class ApiClient:
    """Async calls to the llmchat API, as the user whose session ``token`` is (none in local
    mode). One instance per browser session."""

    def __init__(self, settings: UiSettings | None = None, token: str | None = None) -> None:
        self.settings = settings or UiSettings()
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.AsyncClient(base_url=self.settings.api_url, timeout=self.settings.api_timeout_s,
                                       headers=headers, cookies=_NoCookies())

    async def close(self) -> None:
        await self._http.aclose()

    async def _call(self, method: str, url: str, **kwargs: Any) -> Any:
        try:
            response = await self._http.request(method, url, **kwargs)
        except httpx.TransportError as exc:
            raise ApiProblem(f"the API at {self.settings.api_url} cannot be reached ({exc})") from exc
        if response.status_code >= 400:
            raise _problem(response)
        return response.json()

    async def sign_in(self, username: str, password: str, client_address: str) -> tuple[dict[str, Any], str]:
        """The user (``{id, name, role, via}``) and a new session token for a right name and
        password; :class:`ApiProblem` with status 401 or 429 (``retry_after_s``) otherwise."""
        try:
            response = await self._http.post("/auth/login", json={"username": username, "password": password},
                                              headers={"X-Forwarded-For": client_address})
        except httpx.TransportError as exc:
            raise ApiProblem(f"the API at {self.settings.api_url} cannot be reached ({exc})") from exc
        if response.status_code >= 400:
            raise _problem(response)
        token = _session_token(response)
        if token is None:
            raise ApiProblem("the API signed in without setting a session cookie", response.status_code)
        return response.json(), token

    async def sign_out(self, token: str | None = None) -> None:
        """End this client's session (or the one ``token`` names) at the API."""
        await self._call("POST", "/auth/logout", headers=self._bearer(token))

    async def me(self, token: str | None = None) -> dict[str, Any]:
        """Whom this client's token (or ``token``) acts for: ``{id, name, role, via}``."""
        return await self._call("GET", "/auth/me", headers=self._bearer(token))  # type: ignore[no-any-return]

    @staticmethod
    def _bearer(token: str | None) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}"} if token else {}

    async def models(self) -> dict[str, Any]:
        return await self._call("GET", "/models")  # type: ignore[no-any-return]

    async def chats(self) -> list[dict[str, Any]]:
        return (await self._call("GET", "/chats"))["chats"]  # type: ignore[no-any-return]

    async def chat(self, chat_id: str) -> dict[str, Any]:
        return await self._call("GET", f"/chats/{chat_id}")  # type: ignore[no-any-return]

    async def history(self, chat_id: str) -> list[dict[str, Any]]:
        return (await self._call("GET", "/history", params={"chat_id": chat_id}))["messages"]  # type: ignore[no-any-return]

    async def status(self, chat_id: str) -> dict[str, Any]:
        return await self._call("GET", "/status", params={"chat_id": chat_id})  # type: ignore[no-any-return]

    async def create_chat(self, chat_id: str, **settings: Any) -> dict[str, Any]:
        return await self._call("POST", "/chats", json={"chat_id": chat_id, **settings})  # type: ignore[no-any-return]

    async def update_chat(self, chat_id: str, **changes: Any) -> dict[str, Any]:
        return await self._call("PATCH", f"/chats/{chat_id}", json=changes)  # type: ignore[no-any-return]

    async def delete_chat(self, chat_id: str) -> None:
        await self._call("DELETE", f"/chats/{chat_id}")

    async def load(self, chat_id: str, model: str, device: str) -> dict[str, Any]:
        return await self._call("POST", "/load", json={"chat_id": chat_id, "model": model, "device": device})  # type: ignore[no-any-return]

    async def unload(self, chat_id: str) -> dict[str, Any]:
        return await self._call("POST", "/unload", json={"chat_id": chat_id})  # type: ignore[no-any-return]

    async def stream_chat(
        self, chat_id: str, message: str, edit_of: int | None = None
    ) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        """Yield ``(event, data)`` pairs: ``start``, ``token``..., then ``done`` or ``error``.
        With ``edit_of``, the message goes in place of that earlier question (a new branch)."""
        body: dict[str, Any] = {"chat_id": chat_id, "message": message, "stream": True}
        if edit_of is not None:
            body["edit_of"] = edit_of
        async for item in self._events("/chat", body):
            yield item

    async def stream_regenerate(
        self, chat_id: str, message_id: int | None = None
    ) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        """A new reply beside reply ``message_id`` (default: the last one shown), as events."""
        body: dict[str, Any] = {"stream": True}
        if message_id is not None:
            body["message_id"] = message_id
        async for item in self._events(f"/chats/{quote(chat_id, safe='')}/regenerate", body):
            yield item

    async def _events(self, url: str, body: dict[str, Any]) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        try:
            async with aconnect_sse(self._http, "POST", url, json=body) as source:
                if source.response.status_code >= 400:
                    await source.response.aread()
                    raise _problem(source.response)
                async for sse in source.aiter_sse():
                    yield sse.event, json.loads(sse.data)
        except httpx.TransportError as exc:
            raise ApiProblem(f"the API at {self.settings.api_url} cannot be reached ({exc})") from exc

    async def stop(self, chat_id: str) -> dict[str, Any]:
        return await self._call("POST", f"/chats/{quote(chat_id, safe='')}/stop")  # type: ignore[no-any-return]

    async def branch(self, chat_id: str, message_id: int) -> list[dict[str, Any]]:
        """Show the branch through ``message_id``; the messages now shown."""
        shown = await self._call("POST", f"/chats/{quote(chat_id, safe='')}/branch", json={"message_id": message_id})
        return shown["messages"]  # type: ignore[no-any-return]

    async def count_tokens(self, chat_id: str, text: str) -> dict[str, Any]:
        """``{tokens, context_length}``: ``text`` as the chat's loaded model reads it (409: none loaded)."""
        return await self._call("POST", "/tokens", json={"chat_id": chat_id, "text": text})  # type: ignore[no-any-return]

    # Your API keys (/auth/keys)

    async def keys(self) -> list[dict[str, Any]]:
        """Your keys, revoked ones too: ``{id, name, created_at, last_used_at, revoked}``."""
        return (await self._call("GET", "/auth/keys"))["keys"]  # type: ignore[no-any-return]

    async def create_key(self, name: str) -> dict[str, Any]:
        """A new key; ``key`` in the answer is the key itself, shown this once."""
        return await self._call("POST", "/auth/keys", json={"name": name})  # type: ignore[no-any-return]

    async def revoke_key(self, key_id: str) -> None:
        await self._call("DELETE", f"/auth/keys/{quote(key_id, safe='')}")

    # Administrators (/admin): the API answers 403 to anyone else

    async def users(self) -> list[dict[str, Any]]:
        return (await self._call("GET", "/admin/users"))["users"]  # type: ignore[no-any-return]

    async def create_user(self, name: str, role: str) -> dict[str, Any]:
        """A new account; ``password`` in the answer is its generated password, shown this once."""
        return await self._call("POST", "/admin/users", json={"name": name, "role": role})  # type: ignore[no-any-return]

    async def update_user(self, name: str, **changes: Any) -> dict[str, Any]:
        """Change ``role``, ``disabled`` or the ``limit_*`` overrides (None: back to the setting)."""
        return await self._call("PATCH", f"/admin/users/{quote(name, safe='')}", json=changes)  # type: ignore[no-any-return]

    async def reset_password(self, name: str) -> str:
        """A new random password for ``name`` (their sessions end), shown this once."""
        done = await self._call("POST", f"/admin/users/{quote(name, safe='')}/password", json={})
        return str(done["password"])

    async def workers(self) -> list[dict[str, Any]]:
        """Every loaded worker with its ``holders`` (``{user, chat_id, title}``; no chat: ``/v1``)."""
        return (await self._call("GET", "/admin/workers"))["workers"]  # type: ignore[no-any-return]

    async def force_unload(self, model: str, device: str, backend: str) -> dict[str, Any]:
        return await self._call("POST", "/admin/workers/unload",  # type: ignore[no-any-return]
                                json={"model": model, "device": device, "backend": backend})

    async def audit(self, before_id: int | None = None, limit: int = 50) -> list[dict[str, Any]]:
        """Audit entries, newest first; ``before_id`` pages to older ones."""
        params: dict[str, Any] = {"limit": limit}
        if before_id is not None:
            params["before_id"] = before_id
        return (await self._call("GET", "/admin/audit", params=params))["entries"]  # type: ignore[no-any-return]

    # The sidebar: the chat list page by page, search, export and import

    async def chat_page(self, limit: int = 50, cursor: str | None = None) -> dict[str, Any]:
        """One page of your chats, most recently active first: ``{chats, next_cursor}``, where
        ``next_cursor`` (None on the last page) asks for the page after it."""
        params: dict[str, Any] = {"limit": limit}
        if cursor is not None:
            params["cursor"] = cursor
        return await self._call("GET", "/chats", params=params)  # type: ignore[no-any-return]

    async def search(self, query: str, limit: int = 20) -> list[dict[str, Any]]:
        """Your chats' titles and messages that match ``query``: ``{chat_id, title, message_id``
        (None: the title matched) ``, sender, snippet`` (escaped HTML, matches in ``<mark>``) ``, timestamp}``."""
        found = await self._call("GET", "/search", params={"q": query, "limit": limit})
        return found["results"]  # type: ignore[no-any-return]

    async def export_chat(self, chat_id: str, fmt: str) -> tuple[bytes, str | None]:
        """The chat as a file, ``markdown`` or ``json``: its bytes and the file name the API gives it."""
        return await self._file(f"/chats/{quote(chat_id, safe='')}/export", params={"format": fmt})

    async def export_all(self) -> tuple[bytes, str | None]:
        """All your chats as one zip archive, and its file name."""
        return await self._file("/chats/export")

    async def import_chats(self, export: bytes) -> list[dict[str, Any]]:
        """A JSON export made into new chats of yours: ``[{chat_id, title}]``; anything else
        is refused with a 400 that says what is wrong with it."""
        done = await self._call("POST", "/chats/import", content=export, headers={"Content-Type": "application/json"})
        return done["imported"]  # type: ignore[no-any-return]

    async def _file(self, url: str, **kwargs: Any) -> tuple[bytes, str | None]:
        try:
            response = await self._http.get(url, **kwargs)
        except httpx.TransportError as exc:
            raise ApiProblem(f"the API at {self.settings.api_url} cannot be reached ({exc})") from exc
        if response.status_code >= 400:
            raise _problem(response)
        named = re.search(r'filename="?([^";]+)"?', response.headers.get("Content-Disposition", ""))
        return response.content, named.group(1) if named else None

    # The shared machine (/machine)

    async def machine(self) -> dict[str, Any]:
        """The loaded models now (``holders`` only for administrators) and the sampled ``series``."""
        return await self._call("GET", "/machine")  # type: ignore[no-any-return]
