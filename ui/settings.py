"""UI settings, read from ``LLMCHAT_*`` environment variables (pydantic-settings)."""

from __future__ import annotations

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
