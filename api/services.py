"""What routes need, built once per app in its serving lifecycle."""

from __future__ import annotations

from dataclasses import dataclass

from quart import current_app

from api.chatlog import ChatLog
from api.conversation import Conversations
from api.metrics import Metrics
from api.settings import ApiSettings
from runtime.interface import ModelRuntime


@dataclass(slots=True)
class Services:
    settings: ApiSettings
    runtime: ModelRuntime
    conversations: Conversations
    chatlog: ChatLog
    metrics: Metrics


def services() -> Services:
    """The running app's services (available between ``before_serving`` and ``after_serving``)."""
    found: Services = current_app.extensions["llmchat"]
    return found
