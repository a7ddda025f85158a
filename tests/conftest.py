"""Fixtures shared by every test folder."""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from runtime.default_model import GGUF_NAME, TRANSFORMERS_NAME
from runtime.settings import PROJECT_ROOT, RuntimeSettings
from runtime.supervisor import pid_running
from tests.pg import PgCluster

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


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PgCluster]:
    """A real PostgreSQL server for the session (removed afterwards, no process left)."""
    with PgCluster() as cluster:
        yield cluster
        pids = cluster.server_pids()
    left = [pid for pid in pids if pid_running(pid)]
    assert not left, f"PostgreSQL processes outlived the cluster: {left}"


@pytest.fixture(scope="session")
def pg_database(pg_cluster: PgCluster) -> Callable[[], str]:
    """Makes a new empty database on the session's server and gives its URL."""
    names = itertools.count(1)
    return lambda: pg_cluster.create_database(f"test_{os.getpid()}_{next(names)}")

