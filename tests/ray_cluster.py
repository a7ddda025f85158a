"""A real two-node Ray cluster on loopback for tests: a head (``node_a``) and a second node
(``node_b``) started with ``ray start``, each with its own custom resource so placement can be
forced, and ended with every process it started.

Ray notices a lost node in about 3 s here instead of its default 30 (health checks each second).
The second node can be given its own models folder (``node_b_models``), as another machine has.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Self

import psutil

from runtime.settings import PROJECT_ROOT
from runtime.supervisor import pid_running
from tests.pg import free_port

RAY = str(Path(sys.executable).with_name("ray"))
HEALTH = {
    "RAY_health_check_period_ms": "1000",
    "RAY_health_check_failure_threshold": "5",  # a loaded 2-core CI box must not lose a node by mistake
    "RAY_health_check_timeout_ms": "1000",
    "RAY_health_check_initial_delay_ms": "1000",
}


# What Ray's own processes run (raylet, GCS, dashboard and its agents, log monitors, workers and actors).
_RAY_PROCESS = ("/raylet", "gcs_server", "ray/dashboard/", "ray/_private/", "default_worker.py", "ray::",
                "ray/autoscaler/", "runtime_env/agent", "ray/util/client/server")


def _ray_pids() -> set[int]:
    mine = {os.getpid(), *(p.pid for p in psutil.Process().parents())}
    found = set()
    for process in psutil.process_iter(["pid", "cmdline"]):
        with contextlib.suppress(psutil.Error):
            line = " ".join(process.info["cmdline"] or [])
            if process.info["pid"] not in mine and any(part in line for part in _RAY_PROCESS):
                found.add(process.info["pid"])
    return found


class RayCluster:
    """``ray start --head`` plus ``ray start --address=…``; :meth:`stop` leaves nothing running."""

    def __init__(self, head_models: Path | None = None, node_b_models: Path | None = None) -> None:
        self.temp = Path(tempfile.mkdtemp(prefix="llmchat-ray-"))
        self.port = free_port()
        self.dashboard_port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT), "RAY_USAGE_STATS_ENABLED": "0", **HEALTH,
                    **({"LLMCHAT_MODELS_DIR": str(head_models)} if head_models else {})}
        self.node_b_env = {**self.env, **({"LLMCHAT_MODELS_DIR": str(node_b_models)} if node_b_models else {})}
        self.node_b_pids: set[int] = set()
        self.started: set[int] = set()

    def _ray(self, *args: str, env: dict[str, str] | None = None) -> None:
        done = subprocess.run([RAY, *args], env=env or self.env, capture_output=True, text=True, timeout=120,
                              check=False)
        if done.returncode:
            raise RuntimeError(f"ray {args[0]} failed ({done.returncode}): {done.stderr[-2000:]}")

    def start(self, second_node: bool = True) -> Self:
        before = _ray_pids()
        self._ray(
            "start", "--head", f"--port={self.port}", "--node-ip-address=127.0.0.1", "--num-cpus=2", "--num-gpus=0",
            '--resources={"node_a": 1}', "--object-store-memory=100000000", f"--temp-dir={self.temp}",
            "--disable-usage-stats", "--include-dashboard=true", "--dashboard-host=127.0.0.1",
            f"--dashboard-port={self.dashboard_port}",
        )
        self.started = _ray_pids() - before
        if second_node:
            self.start_node_b()
        return self

    def start_node_b(self) -> None:
        before = _ray_pids()
        self._ray("start", f"--address={self.address}", "--node-ip-address=127.0.0.1", "--num-cpus=2",
                  "--num-gpus=0", '--resources={"node_b": 1}', "--object-store-memory=100000000",
                  env=self.node_b_env)
        self.node_b_pids = _ray_pids() - before
        self.started |= self.node_b_pids

    def kill_node_b(self) -> None:
        """The second machine goes away at once: its raylet and everything under it are killed."""
        victims = set(self.node_b_pids)
        for pid in list(victims):
            with contextlib.suppress(psutil.Error):
                victims |= {child.pid for child in psutil.Process(pid).children(recursive=True)}
        for pid in victims:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.node_b_pids = set()

    def stop(self) -> set[int]:
        """Stop every node (its processes, and the workers and agents under them): the pids of
        those still alive afterwards (none expected). Other Ray clusters on the machine are left
        alone, as ``ray stop`` would not."""
        ours = set(self.started)
        for pid in list(ours):
            with contextlib.suppress(psutil.Error):
                ours |= {child.pid for child in psutil.Process(pid).children(recursive=True)}
        for pid in ours:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        alive = {pid for pid in ours if pid_running(pid)}
        while alive and time.monotonic() < deadline:
            time.sleep(0.1)
            alive = {pid for pid in alive if pid_running(pid)}
        for pid in alive:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.2)
        import shutil

        if not os.environ.get("LLMCHAT_TEST_KEEP_RAY_LOGS"):  # set it to read the actors' logs after a run
            shutil.rmtree(self.temp, ignore_errors=True)
        return {pid for pid in alive if pid_running(pid)}

    def __enter__(self) -> Self:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()


def worker_actors(model: str, device: str = "cpu", backend: str = "llama.cpp") -> list[object]:
    """Every actor (alive or dead) started for this worker key, from Ray's state API."""
    from ray.util.state import list_actors

    from runtime.interface import WorkerKey
    from runtime.ray_coordinator import actor_name

    start = actor_name(WorkerKey(model, device, backend)) + "#"  # type: ignore[arg-type]
    return [a for a in list_actors(limit=10_000) if (a.name or "").startswith(start)]
