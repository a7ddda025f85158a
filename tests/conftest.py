"""Fixtures shared by every test folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from runtime.default_model import GGUF_NAME, TRANSFORMERS_NAME
from runtime.settings import PROJECT_ROOT, RuntimeSettings

MODELS_DIR = PROJECT_ROOT / "models"


@pytest.fixture(scope="session")
def models_dir() -> Path:
    """The real models folder, with the default model that set-up put there."""
    for name in (GGUF_NAME, TRANSFORMERS_NAME):
        if not (MODELS_DIR / name).exists():
            pytest.fail(f"{name} is missing from {MODELS_DIR}: run deploy/local.sh setup")
    return MODELS_DIR


@pytest.fixture(scope="session")
def runtime_settings(models_dir: Path) -> RuntimeSettings:
    return RuntimeSettings(models_dir=models_dir, n_ctx=2048, shutdown_timeout_s=5.0)
