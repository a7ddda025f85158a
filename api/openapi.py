"""The OpenAPI document: quart-schema's, plus what it cannot infer.

Streaming routes (marked with :func:`streams_events`) also answer ``text/event-stream``;
their events' payloads (:data:`api.schemas.STREAM_EVENTS`) are declared as components and
listed per event name under ``x-events``, and every error response shares :class:`ErrorBody`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from pydantic import BaseModel
from quart_schema import OpenAPIProvider
from werkzeug.routing import Rule

from api.schemas import STREAM_EVENTS, ErrorBody

F = TypeVar("F", bound=Callable[..., Any])
_STREAMS = "_llmchat_streams_events"


def streams_events(func: F) -> F:
    """Mark a route that answers with the chat events when the client asks for a stream."""
    setattr(func, _STREAMS, True)
    return func


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


class LlmchatOpenAPI(OpenAPIProvider):
    """Adds the event stream and the shared error body to quart-schema's document."""

    def schema(self) -> dict[str, Any]:
        document = super().schema()
        components = document["components"]["schemas"]
        models: list[type[BaseModel]] = [*STREAM_EVENTS.values(), ErrorBody]
        for model in models:  # once for the document, not per route
            schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
            components.update(schema.pop("$defs", {}))
            components[model.__name__] = schema
        return document

    def build_paths(self, rule: Rule) -> tuple[dict[str, Any], dict[str, Any]]:
        paths, components = super().build_paths(rule)
        func = self._app.view_functions[rule.endpoint]
        for operations in paths.values():
            for operation in operations.values():
                # quart-schema keys responses by int; OpenAPI's "4XX" is a string: use strings throughout.
                responses = operation["responses"] = {str(k): v for k, v in operation.get("responses", {}).items()}
                if not rule.rule.startswith("/v1/"):  # the OpenAI surface answers in OpenAI's error shape
                    responses.setdefault("4XX", {"description": "The request was refused; nothing was stored.",
                                                 "content": {"application/json": {"schema": _ref("ErrorBody")}}})
                if getattr(func, _STREAMS, False):
                    ok = responses.setdefault("200", {"description": "The reply."})
                    ok.setdefault("content", {})["text/event-stream"] = {
                        "schema": {"oneOf": [_ref(m.__name__) for m in STREAM_EVENTS.values()]},
                        "x-events": {event: _ref(m.__name__) for event, m in STREAM_EVENTS.items()},
                    }
        return paths, components
