"""Placement pieces: a probe actor pinned to each node (NodeAffinitySchedulingStrategy) that answers
free memory, pid liveness and file checks on its node; a worker placed on a chosen node; two
drivers racing to create the same named actor (get_if_exists). No dashboard needed.
Run: /tmp/i14/venv/bin/python ray_proto2.py
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = ["/work/main", str(HERE)]
from ray_proto import ENV, VENV, free_port, ray_cli  # noqa: E402

RACE = r"""
import sys, time, ray
ray.init(address=sys.argv[1], namespace="llmchat", logging_level="ERROR", log_to_driver=False)
from llm_actor import ModelWorker
W = ray.remote(ModelWorker)
h = W.options(name="w-race", lifetime="detached", get_if_exists=True, num_cpus=0, resources={"node_b": 0.01}).remote()
print("ACTOR", h._actor_id.hex(), flush=True)
"""

PROBE = r'''
import hashlib, os, time
import psutil, ray

class NodeProbe:
    """One per node, pinned there: what only that node can answer."""
    def node(self):
        return ray.get_runtime_context().get_node_id()
    def free_mb(self):
        return psutil.virtual_memory().available / 2**20
    def pid_running(self, pid):
        try:
            return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return False
    def file_digest(self, path):
        t = time.perf_counter()
        h = hashlib.sha256()
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
        return os.path.getsize(path), h.hexdigest(), time.perf_counter() - t
'''


def main() -> None:
    port = free_port()
    address = f"127.0.0.1:{port}"
    results: dict[str, object] = {}
    ray_cli("start", "--head", f"--port={port}", "--num-cpus=1", "--num-gpus=0", '--resources={"node_a": 1}',
            "--object-store-memory=80000000", "--temp-dir=/tmp/i14/raytmp", "--disable-usage-stats",
            "--include-dashboard=false")
    ray_cli("start", f"--address={address}", "--num-cpus=1", "--num-gpus=0", '--resources={"node_b": 1}',
            "--object-store-memory=80000000")
    try:
        import ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        ray.init(address=address, namespace="llmchat", logging_level="ERROR", log_to_driver=False)
        ns: dict = {}
        exec(PROBE, ns)
        Probe = ray.remote(num_cpus=0)(ns["NodeProbe"])
        nodes = [n for n in ray.nodes() if n["Alive"]]
        probes = {}
        t = time.perf_counter()
        for n in nodes:
            label = "node_a" if "node_a" in n["Resources"] else "node_b"
            probes[label] = Probe.options(
                name=f"probe-{n['NodeID'][:12]}", lifetime="detached", get_if_exists=True,
                scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)).remote()
        answers = {label: ray.get(p.node.remote()) for label, p in probes.items()}
        results["probes_ready_s"] = round(time.perf_counter() - t, 2)
        results["probe_on_its_node"] = all(
            answers[label] == n["NodeID"] for n in nodes
            for label in ["node_a" if "node_a" in n["Resources"] else "node_b"])
        results["free_mb"] = {label: round(ray.get(p.free_mb.remote())) for label, p in probes.items()}
        gguf = "/work/main/models/gemma-3-270m-q4_k_m.gguf"
        if os.path.exists(gguf):
            size, digest, took = ray.get(probes["node_b"].file_digest.remote(gguf))
            results["sha256_253MB_on_node_s"] = round(took, 2)
        # two drivers race to create the same named worker
        procs = [subprocess.Popen([str(VENV / "python"), "-c", RACE, address], env=ENV, stdout=subprocess.PIPE,
                                  text=True, cwd=HERE) for _ in range(2)]
        ids = [next(ln.split()[1] for ln in p.stdout if ln.startswith("ACTOR")) for p in procs]  # type: ignore[union-attr]
        for p in procs:
            p.wait()
        results["race_same_actor"] = ids[0] == ids[1]
        results["named_actors"] = sorted(ray.util.list_named_actors())
        # pid check from the probe on the worker's node, after ray.kill
        h = ray.get_actor("w-race")
        import functools

        from paced_backend import PacedBackend
        from runtime.protocol import WorkerSpec

        ready = ray.get(h.start.remote(WorkerSpec("/none", "paced", "cpu", 2048, 1, parallel=4), "w-race", 16,
                                       functools.partial(PacedBackend, 0.0, 4)))
        before = ray.get(probes["node_b"].pid_running.remote(ready.pid))
        ray.kill(h, no_restart=True)
        t = time.perf_counter()
        while ray.get(probes["node_b"].pid_running.remote(ready.pid)) and time.perf_counter() - t < 10:
            time.sleep(0.01)
        results["probe_pid_check"] = {"running_before_kill": before, "gone_after_s": round(time.perf_counter() - t, 3)}
        for p in probes.values():
            ray.kill(p)
        ray.shutdown()
    finally:
        ray_cli("stop", "--force")
    print(json.dumps(results, indent=1))
    (HERE / "results2.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
