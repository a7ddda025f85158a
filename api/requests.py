"""What the API accepts before any route sees a request: strict JSON bodies and clean URLs.

Routes read their bodies through quart-schema's ``validate_request``, which calls
``request.get_json()``; :class:`ApiRequest` makes that one call strict, so every route
refuses the same bad bodies with the same 4xx (:mod:`api.errors`) instead of failing
later in the ORM, a log file or a filesystem call:

- a body that is not JSON (another or no ``Content-Type``): 415;
- empty, not UTF-8, not JSON, ``NaN``/``Infinity`` or a number no float or sane int holds,
  nested deeper than :data:`MAX_DEPTH`, or a string with a NUL or an unpaired surrogate
  (SQLite and UTF-8 files cannot take one): 400.

A body that is JSON but not an object is left to the route's schema (422). URLs with a NUL
in the path or the query are refused by :func:`refuse_bad_urls` (400).
"""

from __future__ import annotations

import json
import math
from typing import Any
from urllib.parse import unquote_to_bytes

from quart import Quart, Request, request

from api.errors import MalformedRequest, UnsupportedMediaType

MAX_DEPTH = 64  # far beyond any body of this API (OpenAI tool schemas included), far below the stack
MAX_INT_DIGITS = 30


class _BadNumber(ValueError):
    """A number JSON does not allow (NaN, Infinity) or that no float or sane int holds."""


def _reject_constant(name: str) -> Any:
    raise _BadNumber(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _BadNumber(f"the number {text[:40]} is out of range")
    return value


def _bounded_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise _BadNumber(f"the number {text[:20]}... is out of range")
    return int(text)


def parse_json(raw: bytes) -> Any:
    """Decode a request body as strict JSON; raise :class:`MalformedRequest` saying why not."""
    if not raw.strip():
        raise MalformedRequest("the body is empty; this operation takes a JSON object")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MalformedRequest(f"the body is not valid UTF-8 (byte {exc.start})") from exc
    try:
        value = json.loads(
            text, parse_constant=_reject_constant, parse_float=_finite_float, parse_int=_bounded_int
        )
    except _BadNumber as exc:
        raise MalformedRequest(f"the body is not valid JSON: {exc}") from exc
    except RecursionError as exc:
        raise MalformedRequest(f"the body nests deeper than {MAX_DEPTH} levels") from exc
    except ValueError as exc:  # json.JSONDecodeError: says where
        raise MalformedRequest(f"the body is not valid JSON: {exc}") from exc
    _check_values(value)
    return value


def _check_values(value: Any) -> None:
    """Refuse strings no store or log can take, and nesting deeper than :data:`MAX_DEPTH`."""
    pending: list[tuple[Any, int]] = [(value, 0)]
    while pending:
        item, depth = pending.pop()
        if isinstance(item, str):
            _check_text(item)
        elif isinstance(item, dict | list):
            if depth >= MAX_DEPTH:
                raise MalformedRequest(f"the body nests deeper than {MAX_DEPTH} levels")
            if isinstance(item, dict):
                for key, child in item.items():
                    _check_text(key)
                    pending.append((child, depth + 1))
            else:
                pending.extend((child, depth + 1) for child in item)


def _check_text(text: str) -> None:
    if "\x00" in text:
        raise MalformedRequest("strings in the body may not contain NUL characters (\\u0000)")
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise MalformedRequest(
                f"strings in the body may not contain unpaired surrogates (\\u{ord(text[exc.start]):04x})"
            ) from exc


class ApiRequest(Request):
    """Quart's request, with the strict JSON body parsing described in the module docstring."""

    async def get_json(self, force: bool = False, silent: bool = False, cache: bool = True) -> Any:
        if not (force or self.is_json):
            if silent:
                return None
            got = f"Content-Type {self.mimetype[:100]!r}" if self.mimetype else "no Content-Type"
            raise UnsupportedMediaType(f"this operation takes a JSON body (Content-Type: application/json); got {got}")
        raw = await self.get_data(cache=cache, as_text=False, parse_form_data=False)
        try:
            return parse_json(raw)
        except MalformedRequest:
            if silent:
                return None
            raise


async def refuse_bad_urls() -> None:
    """A NUL in the path or the query, or a query that is not UTF-8, is no id, name or value
    this API has: refuse it early. (Werkzeug keeps bytes that are not UTF-8 percent-encoded,
    so they would otherwise reach a route as literal text such as ``%FF``.)"""
    if "\x00" in request.path or any(
        "\x00" in key or "\x00" in value for key, value in request.args.items(multi=True)
    ):
        raise MalformedRequest("the URL may not contain NUL characters (%00)")
    try:
        unquote_to_bytes(request.query_string).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MalformedRequest("the query string is not UTF-8 once percent-decoded") from exc


def register(app: Quart) -> None:
    """Make ``app`` parse bodies with :class:`ApiRequest` and check every URL first."""
    app.request_class = ApiRequest
    app.before_request(refuse_bad_urls)
