"""Bad input answers a clear 4xx, never a 5xx.

The requests are generated from the app's own ``/openapi.json``, so a route added later is
covered without editing this file: every operation gets every kind of bad body (if it takes
one), bad query values (if it has query parameters) and bad path ids (if it has path
parameters). Each answer must be a 4xx, JSON in the error shape of its surface (the API's
``{"error", "detail", "status"}``, OpenAI's ``{"error": {"message", "type", "code"}}`` under
``/v1/``), and name no server path. Every request goes through Quart's test client and, so
that raw bytes and percent-escapes travel exactly as a real client sends them, through a
real Hypercorn server too. Bad input never loads a model: no name used here exists.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from quart.typing import TestClientProtocol as QuartClient
from quart_schema import hide

from api.app import create_app
from api.settings import ApiSettings
from runtime.settings import PROJECT_ROOT
from tests.auth import signed_in
from tests.servers import ApiServer, survivors

GOOD_ID = "bad-input-probe"
NO_SUCH_MODEL = "no-such-model-bad-input"
LONG = "a" * 10_000
SECRET = "/srv/internal-state/of-the-server"
JSON_TYPE = {"Content-Type": "application/json"}
HTTP_METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}

# Bad values for a path id or a query value, percent-encoded as they travel.
BAD_URL_VALUES = {
    "10,000-character value": LONG,
    "NUL in the value": "a%00b",
    "invalid UTF-8 in the value": "%FF%FEab",
}
BAD_NUMBERS = ["1e999", "-1e999", "NaN", "Infinity", "-Infinity"]
NOT_OBJECTS = [b"[]", b'[{"a": 1}]', b'"a string"', b"null", b"42", b"true"]


@dataclass(frozen=True, slots=True)
class Probe:
    """One bad request: ``path`` and ``query`` are as they go on the wire (percent-encoded)."""

    label: str
    method: str
    path: str
    query: str = ""
    body: bytes | None = None
    headers: tuple[tuple[str, str], ...] = ()
    operation: str = ""  # as the schema names it, e.g. "PATCH /chats/{chat_id}"

    @property
    def url(self) -> str:
        return f"{self.path}?{self.query}" if self.query else self.path

    def __str__(self) -> str:
        return f"{self.method} {self.path[:60]}{'?' + self.query[:40] if self.query else ''}: {self.label}"


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    content_type: str
    text: str


# Building the probes from the schema


def _resolve(spec: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        node: Any = spec
        for part in schema["$ref"].removeprefix("#/").split("/"):
            node = node[part]
        schema = node
    for key in ("anyOf", "oneOf"):  # optional fields: the first alternative that is not null
        if key in schema:
            return _resolve(spec, next(s for s in schema[key] if s.get("type") != "null"))
    return schema


def _sample(spec: dict[str, Any], schema: dict[str, Any]) -> Any:
    """A value that looks valid for ``schema`` (required fields only), naming nothing that exists."""
    schema = _resolve(spec, schema)
    if "enum" in schema:
        return schema["enum"][0]
    kind = schema.get("type")
    if kind == "object":
        props = schema.get("properties", {})
        return {name: _sample(spec, props[name]) for name in schema.get("required", [])}
    if kind == "array":
        return [_sample(spec, schema.get("items", {}))] * max(1, schema.get("minItems", 1))
    if kind in ("integer", "number"):
        return max(1, schema.get("minimum", 1))
    if kind == "boolean":
        return False
    return GOOD_ID  # fits every id pattern; no model has this name


def _body_probes(spec: dict[str, Any], operation: str, path: str, schema: dict[str, Any]) -> Iterator[Probe]:
    valid = _sample(spec, schema)
    props = {name: _resolve(spec, s) for name, s in _resolve(spec, schema).get("properties", {}).items()}

    def with_field(name: str, literal: str | bytes) -> bytes:
        """The valid body with ``name`` set to ``literal``, written into the JSON as it is."""
        raw = literal.encode() if isinstance(literal, str) else literal
        return json.dumps({**valid, name: "\x01"}).encode().replace(b'"\\u0001"', raw)

    def probe(label: str, body: bytes, headers: dict[str, str] = JSON_TYPE) -> Probe:
        return Probe(label, operation.split()[0], path, body=body, headers=tuple(headers.items()), operation=operation)

    encoded = json.dumps(valid).encode()
    yield probe("invalid UTF-8", b'{"chat_id": "\xff\xfe\xfd", "x": "\xc3("}')
    yield probe("invalid UTF-8 in an otherwise valid body", with_field("z", b'"\xed\xa0\x80"'))
    yield probe("UTF-16", json.dumps(valid).encode("utf-16"))
    yield probe("truncated JSON", encoded[: max(1, len(encoded) // 2)])
    yield probe("JSON nested 10,000 deep", b"[" * 10_000 + b"]" * 10_000)
    yield probe("objects nested 10,000 deep", b'{"a": ' * 10_000 + b"1" + b"}" * 10_000)
    yield probe("JSON nested 100 deep", b"[" * 100 + b"]" * 100)
    numeric = [n for n, s in props.items() if s.get("type") in ("integer", "number")] or ["n"]
    for number in BAD_NUMBERS:
        for name in numeric:
            yield probe(f"{number} in {name}", with_field(name, number))
    yield probe("a 5,000-digit integer", with_field(numeric[0], "9" * 5000))
    strings = [n for n, s in props.items() if s.get("type") == "string"] or ["s"]
    for name in strings:
        yield probe(f"NUL in {name}", with_field(name, '"a\\u0000b"'))
        yield probe(f"unpaired surrogate in {name}", with_field(name, '"a\\ud800b"'))
        if name.endswith("id") or props.get(name, {}).get("maxLength", 10**9) < len(LONG):
            yield probe(f"10,000-character {name}", with_field(name, json.dumps(LONG)))
        if name == "model":  # allowed in characters, too long in bytes for any file name
            longest = props[name].get("maxLength", 255)
            yield probe(f"{longest} two-byte characters in {name}", with_field(name, json.dumps("\u00e9" * longest)))
    yield probe("NUL byte in the raw JSON", with_field("z", b'"a\x00b"'))
    yield probe("NUL in a key", with_field("a\x00b", "1"))
    yield probe("text/plain", encoded, {"Content-Type": "text/plain"})
    yield probe("form data", b"chat_id=x&message=y", {"Content-Type": "application/x-www-form-urlencoded"})
    multipart = b'--b\r\nContent-Disposition: form-data; name="chat_id"\r\n\r\nx\r\n--b--\r\n'
    yield probe("multipart form data", multipart, {"Content-Type": "multipart/form-data; boundary=b"})
    yield probe("JSON without a Content-Type", encoded, {})
    yield probe("empty body", b"")
    yield probe("empty body without a Content-Type", b"", {})
    yield probe("whitespace body", b" \n ")
    for body in NOT_OBJECTS:
        yield probe(f"not an object: {body.decode()[:12]}", body)


def _fill(template: str, names: list[str], value: str) -> str:
    for name in names:
        template = template.replace("{" + name + "}", value)
    return template


def probes(spec: dict[str, Any]) -> list[Probe]:
    """Every bad request for every operation of ``spec``."""
    found: list[Probe] = []
    for template, operations in spec["paths"].items():
        for method, op in operations.items():
            if method not in HTTP_METHODS:
                continue
            method = method.upper()
            operation = f"{method} {template}"
            params = op.get("parameters", [])
            in_path = [p["name"] for p in params if p["in"] == "path"]
            in_query = [p["name"] for p in params if p["in"] == "query"]
            body_schema = op.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema")
            body = json.dumps(_sample(spec, body_schema)).encode() if body_schema else None
            headers = tuple(JSON_TYPE.items()) if body_schema else ()
            good_path = _fill(template, in_path, GOOD_ID)
            for label, value in BAD_URL_VALUES.items() if in_path else ():
                bad_path = _fill(template, in_path, value)
                found.append(Probe(f"path id: {label}", method, bad_path, "", body, headers, operation))
            for name in in_query:
                for label, value in BAD_URL_VALUES.items():
                    query = f"{name}={value}"
                    found.append(Probe(f"query {name}: {label}", method, good_path, query, body, headers, operation))
            if body_schema is not None:
                found.extend(_body_probes(spec, operation, good_path, body_schema))
    return found


# Checking the answers


def problems(probe: Probe, answer: Answer, server_paths: list[str]) -> list[str]:
    """What is wrong with ``answer`` (nothing: an empty list)."""
    found = []
    if not 400 <= answer.status < 500:
        found.append(f"status {answer.status}")
    if not answer.content_type.startswith("application/json"):
        return [*found, f"content type {answer.content_type!r}: {answer.text[:200]!r}"]
    try:
        body = json.loads(answer.text)
    except ValueError:
        return [*found, f"not JSON: {answer.text[:200]!r}"]
    if probe.path.startswith("/v1/"):
        error = body.get("error") if isinstance(body, dict) else None
        if not (isinstance(error, dict) and isinstance(error.get("message"), str)
                and isinstance(error.get("type"), str) and error.get("code") == answer.status):
            found.append(f"not OpenAI's error shape: {answer.text[:200]}")
    elif not (isinstance(body, dict) and isinstance(body.get("error"), str)
              and isinstance(body.get("detail"), str) and body.get("status") == answer.status):
        found.append(f"not the API's error shape: {answer.text[:200]}")
    named = next((path for path in server_paths if path in answer.text), None)
    if named is not None:
        found.append(f"names the server path {named}: {answer.text[:300]}")
    if "Traceback" in answer.text:
        found.append("carries a traceback")
    return found


def report(failures: list[str], sent: int) -> str:
    return f"{len(failures)} of {sent} bad requests were answered wrongly:\n" + "\n".join(failures[:80])


def forbidden_paths(*roots: Path) -> list[str]:
    paths = {str(PROJECT_ROOT), sys.prefix}
    for root in roots:
        paths |= {str(root), str(root.resolve())}
    return sorted(paths, key=len, reverse=True)


# Fixtures


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("bad-input")


@pytest.fixture(scope="module")
def settings(home: Path, models_dir: Path, db_url: str) -> ApiSettings:
    return ApiSettings(models_dir=models_dir, db_url=db_url, logs_dir=home / "logs", state_dir=home,
                       max_message_chars=4000)


@hide
async def broken() -> dict[str, Any]:
    """A route with a bug, standing in for any unexpected error."""
    raise KeyError(SECRET)


@pytest.fixture(scope="module")
async def client(settings: ApiSettings) -> AsyncIterator[QuartClient]:
    app = create_app(settings)
    app.add_url_rule("/broken", "broken", broken)
    app.add_url_rule("/v1/broken", "v1-broken", broken)
    async with app.test_app() as running:
        yield await signed_in(running, "tester")


@pytest.fixture(scope="module")
async def spec(client: QuartClient) -> dict[str, Any]:
    response = await client.get("/openapi.json")
    assert response.status_code == 200
    document: dict[str, Any] = await response.get_json()
    return document


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, models_dir: Path) -> Iterator[ApiServer]:
    running = ApiServer(tmp_path_factory.mktemp("bad-input-server"), models_dir, max_message_chars="4000")
    running.start(quiet=True)
    yield running
    assert not survivors(running.stop())


async def _ask(client: QuartClient, probe: Probe) -> Answer:
    response = await client.open(  # type: ignore[call-arg]  # quart.typing omits json's default
        probe.url, method=probe.method, data=probe.body, headers=dict(probe.headers)
    )
    return Answer(response.status_code, response.headers.get("Content-Type", ""), await response.get_data(as_text=True))


# Tests


def test_the_probes_cover_every_operation(spec: dict[str, Any]) -> None:
    operations = {(m.upper(), p) for p, ops in spec["paths"].items() for m in ops if m in HTTP_METHODS}
    generated = probes(spec)
    probed = {p.operation for p in generated}
    assert len(operations) >= 15 and len(generated) > 10 * len(operations)
    for method, template in operations:
        op = spec["paths"][template][method.lower()]
        if op.get("parameters") or op.get("requestBody"):
            assert f"{method} {template}" in probed, f"no probe for {method} {template}"


async def test_bad_input_through_the_test_client(client: QuartClient, spec: dict[str, Any], home: Path,
                                                 models_dir: Path) -> None:
    sent = probes(spec)
    failures = []
    for probe in sent:
        answer = await _ask(client, probe)
        failures += [f"{probe}: {p}" for p in problems(probe, answer, forbidden_paths(home, models_dir))]
    assert not failures, report(failures, len(sent))


def test_bad_input_through_a_real_server(server: ApiServer, spec: dict[str, Any], models_dir: Path) -> None:
    sent = probes(spec)
    failures = []
    server_home = Path(server.env["LLMCHAT_DB_URL"]).parent
    with httpx.Client(base_url=server.url, timeout=30) as http:
        for probe in sent:
            response = http.request(probe.method, httpx.URL(server.url + probe.url), content=probe.body,
                                    headers={**server.headers, **dict(probe.headers)})
            answer = Answer(response.status_code, response.headers.get("Content-Type", ""), response.text)
            failures += [f"{probe}: {p}" for p in problems(probe, answer, forbidden_paths(server_home, models_dir))]
    assert not failures, report(failures, len(sent))


async def test_an_unknown_model_is_a_404_that_names_no_server_path(client: QuartClient, home: Path,
                                                                   models_dir: Path) -> None:
    requests = [
        Probe("unknown model", "POST", "/load", body=json.dumps({"chat_id": GOOD_ID, "model": NO_SUCH_MODEL}).encode(),
              headers=tuple(JSON_TYPE.items())),
        Probe("unknown model", "POST", "/v1/chat/completions", headers=tuple(JSON_TYPE.items()),
              body=json.dumps({"model": NO_SUCH_MODEL, "messages": [{"role": "user", "content": "hi"}]}).encode()),
        Probe("unknown model", "POST", "/chat", f"model={NO_SUCH_MODEL}", headers=tuple(JSON_TYPE.items()),
              body=json.dumps({"chat_id": GOOD_ID, "message": "hi"}).encode()),
    ]
    failures = []
    for probe in requests:
        answer = await _ask(client, probe)
        if answer.status != 404:
            failures.append(f"{probe}: status {answer.status}")
        failures += [f"{probe}: {p}" for p in problems(probe, answer, forbidden_paths(home, models_dir))]
    assert not failures, report(failures, len(requests))


async def test_a_bug_answers_500_with_a_reference_and_logs_the_traceback(
    client: QuartClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR):
        plain = await client.get("/broken")
        openai = await client.get("/v1/broken")
    body, openai_body = await plain.get_json(), await openai.get_json()
    assert plain.status_code == openai.status_code == 500
    reference = body["reference"]
    assert body == {"error": "InternalError", "status": 500, "reference": reference,
                    "detail": f"an unexpected error occurred; reference {reference}"}
    assert openai_body["error"]["type"] == "InternalError" and openai_body["error"]["code"] == 500
    assert openai_body["error"]["reference"] != reference  # each error its own reference
    for text in (await plain.get_data(as_text=True), await openai.get_data(as_text=True)):
        assert "KeyError" not in text and "internal-state" not in text and "Traceback" not in text
    logged = [r for r in caplog.records if reference in r.getMessage()]
    assert logged and logged[0].exc_info is not None and logged[0].exc_info[0] is KeyError
