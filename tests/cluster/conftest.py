"""Fixtures of the cluster tests: a real two-node Ray cluster, started for this folder's tests
only (its processes would take CPU from the timing-sensitive tests of the other folders)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from runtime.default_model import GGUF_NAME
from tests.ray_cluster import RayCluster

TWIN = "twin.gguf"  # the same model file, except on the second Ray node (see ray_models)


@pytest.fixture(scope="package")
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


@pytest.fixture(scope="package")
def ray_cluster(ray_models: tuple[Path, Path]) -> Iterator[RayCluster]:
    """A real Ray cluster of two nodes on loopback for this folder; no Ray process outlives it."""
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
