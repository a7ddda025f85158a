"""Fixtures shared by every test folder."""

from __future__ import annotations

import itertools
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest

from runtime.default_model import GGUF_NAME, TRANSFORMERS_NAME
from runtime.settings import PROJECT_ROOT, RuntimeSettings
from tests.pg import PgCluster
from tests.ray_cluster import RayCluster

TWIN = "twin.gguf"  # the same model file, except on the second Ray node (see ray_models)

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
    left = [pid for pid in pids if _alive(pid)]
    assert not left, f"PostgreSQL processes outlived the cluster: {left}"


@pytest.fixture(scope="session")
def pg_database(pg_cluster: PgCluster) -> Callable[[], str]:
    """Makes a new empty database on the session's server and gives its URL."""
    names = itertools.count(1)
    return lambda: pg_cluster.create_database(f"test_{os.getpid()}_{next(names)}")


def _alive(pid: int) -> bool:
    """Running, not a zombie waiting for init to reap it."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.fixture(scope="session")
def ray_models(tmp_path_factory: pytest.TempPathFactory, models_dir: Path) -> tuple[Path, Path]:
    """Two machines' models folders: the default GGUF in both, and ``twin.gguf``, whose copy on
    the second node differs by one byte (as a folder synced badly would)."""
    head, node_b = tmp_path_factory.mktemp("models-a"), tmp_path_factory.mktemp("models-b")
    for folder in (head, node_b):  # links would resolve outside the folder, which discovery refuses
        for name in (GGUF_NAME, TWIN):
            try:
                os.link(models_dir / GGUF_NAME, folder / name)
            except OSError:  # another file system
                shutil.copyfile(models_dir / GGUF_NAME, folder / name)
    (node_b / TWIN).unlink()
    shutil.copyfile(models_dir / GGUF_NAME, node_b / TWIN)
    with (node_b / TWIN).open("r+b") as twin:
        twin.seek(-16, os.SEEK_END)
        last = twin.read(1)
        twin.seek(-16, os.SEEK_END)
        twin.write(bytes([last[0] ^ 0xFF]))
    return head, node_b


@pytest.fixture(scope="session")
def ray_cluster(ray_models: tuple[Path, Path]) -> Iterator[RayCluster]:
    """A real Ray cluster of two nodes on loopback for the session; no Ray process outlives it."""
    cluster = RayCluster(*ray_models)
    try:
        cluster.start()
        yield cluster
    finally:
        import ray

        if ray.is_initialized():
            ray.shutdown()
        left = cluster.stop()
    assert not left, f"Ray processes outlived the cluster: {left}"
