"""What routes need, built once per app in its serving lifecycle."""

from __future__ import annotations

from dataclasses import dataclass

from quart import current_app

from api.accounts import FailureLimiter
from api.chatlog import ChatLog
from api.conversation import Conversations
from api.limits import Limits
from api.metrics import Metrics
from api.settings import ApiSettings
from api.store import User
from runtime.interface import ModelRuntime


@dataclass(slots=True)
class Services:
    settings: ApiSettings
    runtime: ModelRuntime
    conversations: Conversations
    chatlog: ChatLog
    metrics: Metrics
    limiter: FailureLimiter  # failed sign-ins, per account and per address
    local_user: User  # the first administrator: whom every request acts for with LLMCHAT_AUTH=off
    limits: Limits


def services() -> Services:
    """The running app's services (available between ``before_serving`` and ``after_serving``)."""
    found: Services = current_app.extensions["llmchat"]
    return found
