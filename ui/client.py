"""The UI's only way to the backend: the HTTP API, through httpx and httpx-sse."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
from httpx_sse import aconnect_sse

from ui.settings import UiSettings


class ApiProblem(Exception):
    """The API answered with an error, or could not be reached; ``str()`` is for people."""

    def __init__(self, message: str, status: int | None = None, message_id: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message_id = message_id  # a reply the API stored (with status error) before failing

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
    return ApiProblem(str(detail), response.status_code, message_id if isinstance(message_id, int) else None)


class ApiClient:
    """Async calls to the llmchat API. One instance per browser session."""

    def __init__(self, settings: UiSettings | None = None) -> None:
        self.settings = settings or UiSettings()
        self._http = httpx.AsyncClient(base_url=self.settings.api_url, timeout=self.settings.api_timeout_s)

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

    async def stream_chat(self, chat_id: str, message: str) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        """Yield ``(event, data)`` pairs: ``start``, ``token``..., then ``done`` or ``error``."""
        try:
            async with aconnect_sse(
                self._http, "POST", "/chat", json={"chat_id": chat_id, "message": message, "stream": True}
            ) as source:
                if source.response.status_code >= 400:
                    await source.response.aread()
                    raise _problem(source.response)
                async for sse in source.aiter_sse():
                    yield sse.event, json.loads(sse.data)
        except httpx.TransportError as exc:
            raise ApiProblem(f"the API at {self.settings.api_url} cannot be reached ({exc})") from exc
