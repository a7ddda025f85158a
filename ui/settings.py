"""UI settings, read from ``LLMCHAT_*`` environment variables (pydantic-settings).

``LLMCHAT_AUTH``, ``LLMCHAT_COOKIE_SECURE`` and ``LLMCHAT_SESSION_MAX_S`` are the API's
variables too: one value configures both servers.
"""

from __future__ import annotations

import ipaddress
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class UiSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LLMCHAT_", extra="ignore")

    api_url: str = Field("http://127.0.0.1:8000", description="Base URL the UI calls the API at.")
    api_timeout_s: float = Field(900.0, gt=0, description="Longest the UI waits for a load or a reply.")
    ui_host: str = Field("127.0.0.1", description="Address the UI binds to.")
    ui_port: int = Field(5006, ge=1, le=65535, description="UI port.")
    ui_origins: list[str] = Field(
        default_factory=list,
        description="Extra host:port values browsers may open the UI from (behind a proxy, say).",
    )
    auth: Literal["on", "off"] = Field(
        "on", description="Sign-in: 'off' is the single-user local mode, allowed on loopback only."
    )
    cookie_secure: bool = Field(False, description="Mark the sign-in cookie Secure (served over TLS).")
    session_max_s: float = Field(30 * 86400, gt=0, description="How long the browser keeps the sign-in cookie.")

    def refuse_open_local_mode(self) -> None:
        """Without sign-in, anyone who reaches the port reads every chat: bind loopback only."""
        if self.auth == "off" and not is_loopback(self.ui_host):
            raise SystemExit(
                f"LLMCHAT_AUTH=off serves every chat to whoever reaches the dashboard, so it binds loopback "
                f"only, and LLMCHAT_UI_HOST is {self.ui_host}: bind 127.0.0.1, or leave sign-in on"
            )


def is_loopback(host: str) -> bool:
    if host.strip("[]").lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
