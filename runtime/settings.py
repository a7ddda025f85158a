"""Runtime settings, read from ``LLMCHAT_*`` environment variables (pydantic-settings)."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parent.parent


class RuntimeSettings(BaseSettings):
    """Where models live and how workers are started and stopped."""

    model_config = SettingsConfigDict(env_prefix="LLMCHAT_", extra="ignore")

    models_dir: Path = Field(PROJECT_ROOT / "models", description="Folder scanned for models.")
    n_ctx: int = Field(
        8192, ge=256, description="llama.cpp context size cap; the model's trained size if smaller."
    )
    n_threads: int = Field(
        default_factory=lambda: max(1, os.cpu_count() or 1),
        ge=1,
        description="CPU threads per worker.",
    )
    onnx_on_cpu: bool = Field(
        True,
        description="Run a Transformers model on CPU from its ONNX export (<name>-onnx) when one exists.",
    )
    load_timeout_s: float = Field(600.0, gt=0, description="Longest a worker may take to load.")
    shutdown_timeout_s: float = Field(
        5.0, gt=0, description="Grace period for a worker to exit before it is killed."
    )
