"""Ray 2.60 prototype on a two-node loopback cluster: (a) named detached actors with resources,
found from another driver; (b) streaming generators consumed from asyncio, cancellation;
(c) ray.kill + the state API; (d) kill -9 of the actor mid-stream; plus start time, streaming
overhead and memory. Run: /tmp/i14/venv/bin/python ray_proto.py  (starts and stops its own cluster)
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil

HERE = Path(__file__).resolve().parent
sys.path[:0] = ["/work/main", str(HERE)]
VENV = Path("/tmp/i14/venv/bin")
TEMP = "/tmp/i14/raytmp"
ENV = {**os.environ, "PYTHONPATH": f"/work/main:{HERE}", "RAY_USAGE_STATS_ENABLED": "0",
       # Detect a lost node in ~3 s rather than the default ~30 s (the fixture's setting)
       "RAY_health_check_period_ms": "1000", "RAY_health_check_failure_threshold": "3",
       "RAY_health_check_timeout_ms": "1000", "RAY_health_check_initial_delay_ms": "1000"}
RESULTS: dict[str, object] = {}
DASHBOARD = os.environ.get("PROTO_DASHBOARD", "1") == "1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ray_cli(*args: str) -> tuple[float, str]:
    t = time.perf_counter()
    p = subprocess.run([str(VENV / "ray"), *args], env=ENV, capture_output=True, text=True)
    if p.returncode:
        print(p.stdout, p.stderr)
        raise SystemExit(f"ray {args[0]} failed")
    return time.perf_counter() - t, p.stdout


def ray_processes() -> list[psutil.Process]:
    me = os.getpid()
    found = []
    for p in psutil.process_iter(["pid", "cmdline", "name"]):
        try:
            cmd = " ".join(p.info["cmdline"] or [])
            if p.pid != me and (TEMP in cmd or "ray::" in (p.info["name"] or "") or "ray::" in cmd
                                or ("/tmp/i14/venv" in cmd and "ray" in cmd and "ray_proto" not in cmd)):
                found.append(p)
        except psutil.Error:
            pass
    return found


def memory(label: str) -> None:
    rows, rss, pss = [], 0, 0
    for p in ray_processes():
        try:
            m = p.memory_full_info()
            name = (p.info["cmdline"] or [p.name()])
            short = " ".join(name)[:70]
            rows.append((round(m.rss / 2**20), round(m.pss / 2**20), short))
            rss += m.rss
            pss += m.pss
        except psutil.Error:
            pass
    RESULTS[f"memory_{label}"] = {"processes": len(rows), "rss_mb": round(rss / 2**20), "pss_mb": round(pss / 2**20)}
    print(f"[{label}] {len(rows)} ray processes, RSS {rss / 2**20:.0f} MB, PSS {pss / 2**20:.0f} MB")
    for r in sorted(rows, reverse=True):
        print("   ", r)


CREATE = r"""
import functools, sys, time, ray
from runtime.protocol import WorkerSpec
from llm_actor import ModelWorker
from paced_backend import PacedBackend
t = time.perf_counter()
ray.init(address=sys.argv[1], namespace="llmchat", logging_level="ERROR", log_to_driver=False)
t_init = time.perf_counter() - t
Worker = ray.remote(ModelWorker)
handle = Worker.options(name=sys.argv[2], lifetime="detached", num_cpus=0, memory=200 * 2**20,
                        resources={sys.argv[3]: 0.01}, max_restarts=0, max_concurrency=1000).remote()
spec = WorkerSpec("/none", "paced", "cpu", 2048, 1, parallel=8)
ready = ray.get(handle.start.remote(spec, sys.argv[2], 16, functools.partial(PacedBackend, float(sys.argv[4]), 8)))
print("READY", ready.pid, round(t_init, 2), round(time.perf_counter() - t, 2), flush=True)
"""


def create_in_other_driver(address: str, name: str, resource: str, step_s: float) -> dict:
    t = time.perf_counter()
    p = subprocess.run([str(VENV / "python"), "-c", CREATE, address, name, resource, str(step_s)], env=ENV,
                       capture_output=True, text=True, cwd=HERE)
    line = next((ln for ln in p.stdout.splitlines() if ln.startswith("READY")), None)
    if line is None:
        print(p.stdout, p.stderr)
        raise SystemExit("create failed")
    _, pid, init_s, total_s = line.split()
    return {"pid": int(pid), "driver_init_s": float(init_s), "create_and_load_s": float(total_s),
            "subprocess_s": round(time.perf_counter() - t, 2)}


async def consume(handle, n: int, session: str | None = None, first: list | None = None) -> tuple[int, float]:
    from runtime.protocol import ChatMessage, Finished, GenerationParams, TokenChunk

    t = time.perf_counter()
    gen = handle.generate.remote((ChatMessage("user", "hi"),), GenerationParams(max_new_tokens=n), session)
    count = 0
    async for ref in gen:
        event = await ref
        if isinstance(event, TokenChunk):
            if count == 0 and first is not None:
                first.append(time.perf_counter() - t)
            count += 1
        elif isinstance(event, Finished):
            break
        elif type(event).__name__ == "Refused":
            raise RuntimeError(f"refused: {event}")
    return count, time.perf_counter() - t


async def streaming_benchmarks(ray, handle) -> None:
    # warm-up
    await consume(handle, 50)
    first: list[float] = []
    n, s = await consume(handle, 3000, first=first)
    RESULTS["single_stream_items_per_s"] = round(n / s)
    RESULTS["first_item_s_unpaced"] = round(first[0], 4)
    print(f"single stream: {n} items in {s:.2f}s = {n / s:.0f}/s, first {first[0] * 1000:.1f} ms")
    t = time.perf_counter()
    results = await asyncio.gather(*(consume(handle, 1000) for _ in range(8)))
    total = sum(r[0] for r in results)
    el = time.perf_counter() - t
    RESULTS["eight_streams_items_per_s"] = round(total / el)
    print(f"8 streams: {total} items in {el:.2f}s = {total / el:.0f}/s aggregate")
    lats = []
    for _ in range(10):
        f: list[float] = []
        await consume(handle, 1, first=f)
        lats.append(f[0])
    lats.sort()
    RESULTS["first_token_roundtrip_ms_median"] = round(lats[5] * 1000, 2)
    print(f"first token round trip (1-token request) median {lats[5] * 1000:.2f} ms, max {lats[-1] * 1000:.2f} ms")


async def cancel_test(ray, handle) -> None:
    from runtime.protocol import ChatMessage, GenerationParams

    before = await handle.stats.remote()
    gen = handle.generate.remote((ChatMessage("user", "hi"),), GenerationParams(max_new_tokens=10**7), "chat-c")
    got = 0
    async for ref in gen:
        await ref
        got += 1
        if got == 20:
            break
    t = time.perf_counter()
    ray.cancel(gen)
    seen = None
    try:
        async for ref in gen:  # what the consumer sees after cancelling
            await ref
    except Exception as exc:  # noqa: BLE001
        seen = type(exc).__name__
    after_cancel = time.perf_counter() - t
    for _ in range(50):
        stats = await handle.stats.remote()
        if stats["running"] == 0 and len(stats["aborted"]) > len(before["aborted"]):
            break
        await asyncio.sleep(0.02)
    RESULTS["cancel"] = {"consumer_sees": seen, "consumer_sees_after_s": round(after_cancel, 3),
                         "actor_cancelled_streams": stats["cancelled_streams"] - before["cancelled_streams"],
                         "backend_aborts": len(stats["aborted"]) - len(before["aborted"]),
                         "running_after": stats["running"], "abort_seen_within_s": round(time.perf_counter() - t, 3)}
    print("cancel:", RESULTS["cancel"])
    # the session's slot is free again: a new request for the same chat is accepted
    n, _ = await consume(handle, 5, session="chat-c")
    RESULTS["cancel"]["same_session_again_tokens"] = n  # type: ignore[index]
    # one session, two requests at once: the second is refused by the actor's Slots
    gen1 = handle.generate.remote((ChatMessage("user", "x"),), GenerationParams(max_new_tokens=200), "chat-d")
    first_event = await (await gen1.__anext__())
    gen2 = handle.generate.remote((ChatMessage("user", "y"),), GenerationParams(max_new_tokens=5), "chat-d")
    refused = await (await gen2.__anext__())
    RESULTS["same_session_twice"] = {"first": type(first_event).__name__, "second": repr(refused)[:140]}
    print("same session twice:", RESULTS["same_session_twice"])
    ray.cancel(gen1)


async def kill9_test(ray, handle, pid: int) -> None:
    from runtime.protocol import ChatMessage, GenerationParams

    gen = handle.generate.remote((ChatMessage("user", "hi"),), GenerationParams(max_new_tokens=10**6), "chat-k")
    got, killed_at, error = 0, None, None
    try:
        async for ref in gen:
            await ref
            got += 1
            if got == 20:
                killed_at = time.perf_counter()
                os.kill(pid, signal.SIGKILL)
    except Exception as exc:  # noqa: BLE001
        error = exc
    latency = time.perf_counter() - (killed_at or 0)
    RESULTS["kill9_mid_stream"] = {"error": type(error).__name__, "latency_s": round(latency, 3),
                                   "tokens_before": got, "message": str(error)[:200]}
    print("kill -9 mid-stream:", RESULTS["kill9_mid_stream"])
    t = time.perf_counter()
    try:
        await handle.stats.remote()
    except Exception as exc:  # noqa: BLE001
        RESULTS["call_after_death"] = {"error": type(exc).__name__, "s": round(time.perf_counter() - t, 3)}
    print("call after death:", RESULTS.get("call_after_death"))


CONSUMER = r"""
import sys, ray
from runtime.protocol import ChatMessage, GenerationParams
ray.init(address=sys.argv[1], namespace="llmchat", logging_level="ERROR", log_to_driver=False)
h = ray.get_actor("w-paced")
gen = h.generate.remote((ChatMessage("user", "hi"),), GenerationParams(max_new_tokens=10**7), "chat-owner")
for i, ref in enumerate(gen):
    ray.get(ref)
    if i == 50:
        print("STREAMING", flush=True)
"""


async def owner_dies_test(ray, address: str, handle) -> None:
    """An API replica killed mid-stream: does the actor stop generating for it?"""
    before = await handle.stats.remote()
    p = subprocess.Popen([str(VENV / "python"), "-c", CONSUMER, address], env=ENV, stdout=subprocess.PIPE, text=True,
                         cwd=HERE)
    assert p.stdout is not None
    while "STREAMING" not in p.stdout.readline():
        pass
    mid = await handle.stats.remote()
    t = time.perf_counter()
    p.kill()
    p.wait()
    stopped_after = None
    while time.perf_counter() - t < 20:
        s = await handle.stats.remote()
        if s["running"] == 0:
            stopped_after = time.perf_counter() - t
            break
        await asyncio.sleep(0.05)
    RESULTS["owner_killed_mid_stream"] = {"running_during": mid["running"], "sequence_ended_after_s":
                                          round(stopped_after, 3) if stopped_after else "still running after 20 s",
                                          "backend_aborts": len(s["aborted"]) - len(before["aborted"])}
    print("consumer driver killed:", RESULTS["owner_killed_mid_stream"])


def state_of(actor_id: str) -> dict:
    from ray.util.state import get_actor

    s = get_actor(actor_id)
    return {"state": s.state, "node_id": s.node_id[:8] if s.node_id else None, "pid": s.pid,
            "death_cause": str(getattr(s, "death_cause", None))[:160]} if s else {}


def wait_dead(actor_id: str, limit_s: float = 20) -> float:
    t = time.perf_counter()
    while time.perf_counter() - t < limit_s:
        if state_of(actor_id).get("state") == "DEAD":
            return time.perf_counter() - t
        time.sleep(0.05)
    return -1


async def main() -> None:
    port, dash = free_port(), free_port()
    address = f"127.0.0.1:{port}"
    memory("before")
    dash_args = ([f"--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}"]
                 if DASHBOARD else ["--include-dashboard=false"])
    head_s, _ = ray_cli("start", "--head", f"--port={port}", "--node-ip-address=127.0.0.1", "--num-cpus=1",
                        "--num-gpus=0", '--resources={"node_a": 1}', "--object-store-memory=80000000",
                        f"--temp-dir={TEMP}", "--disable-usage-stats", *dash_args)
    before_b = {p.pid for p in ray_processes()}
    worker_s, _ = ray_cli("start", f"--address={address}", "--node-ip-address=127.0.0.1", "--num-cpus=1",
                          "--num-gpus=0", '--resources={"node_b": 1}', "--object-store-memory=80000000")
    node_b_pids = {p.pid for p in ray_processes()} - before_b
    RESULTS["start_head_s"], RESULTS["start_second_node_s"] = round(head_s, 2), round(worker_s, 2)
    print(f"ray start --head {head_s:.2f}s, second node {worker_s:.2f}s")
    time.sleep(2)
    memory("idle_two_nodes")
    raylets = {p.pid: p for p in ray_processes() if "raylet/raylet" in " ".join(p.cmdline())}
    import threading

    def watch() -> None:
        while raylets:
            for pid, p in list(raylets.items()):
                if not p.is_running() or p.status() == psutil.STATUS_ZOMBIE:
                    print(f"!!! raylet {pid} gone at {time.strftime('%H:%M:%S')}", flush=True)
                    del raylets[pid]
            time.sleep(0.1)

    threading.Thread(target=watch, daemon=True).start()
    try:
        await body(address, node_b_pids)
    except BaseException:
        import traceback

        traceback.print_exc()
        raise
    finally:
        if "ray" in sys.modules:
            sys.modules["ray"].shutdown()
        t = time.perf_counter()
        ray_cli("stop", "--force")
        RESULTS["ray_stop_s"] = round(time.perf_counter() - t, 2)
        time.sleep(1)
        left = ray_processes()
        RESULTS["processes_left_after_stop"] = len(left)
        print("left after ray stop:", [(p.pid, p.info["cmdline"][:2]) for p in left])
        print(json.dumps(RESULTS, indent=1))
        Path(HERE / f"results{'' if DASHBOARD else '_nodash'}.json").write_text(json.dumps(RESULTS, indent=1))


async def body(address: str, node_b_pids: set[int]) -> None:
    created = create_in_other_driver(address, "w-paced", "node_b", 0.0)
    RESULTS["create_from_other_driver"] = created
    print("created by another driver:", created)
    rss0 = psutil.Process().memory_info().rss
    t = time.perf_counter()
    import ray

    ray.init(address=address, namespace="llmchat", logging_level="ERROR", log_to_driver=False)
    RESULTS["driver_ray_init_s"] = round(time.perf_counter() - t, 2)
    RESULTS["driver_rss_added_mb"] = round((psutil.Process().memory_info().rss - rss0) / 2**20)
    handle = ray.get_actor("w-paced")  # found by name from this (another) driver
    stats = await handle.stats.remote()
    node_ids = {n["NodeID"]: n["Resources"] for n in ray.nodes() if n["Alive"]}
    RESULTS["actor_on_node_b"] = "node_b" in node_ids.get(stats["node_id"], {})
    print("actor stats:", stats, "on node_b:", RESULTS["actor_on_node_b"])
    memory("one_actor")
    if DASHBOARD:
        from ray.util.state import list_actors

        listed = list_actors(filters=[("name", "=", "w-paced")])
        RESULTS["state_api_alive"] = {"state": listed[0].state, "pid": listed[0].pid}
        print("state api:", RESULTS["state_api_alive"])
    await streaming_benchmarks(ray, handle)
    await cancel_test(ray, handle)

    await owner_dies_test(ray, address, handle)

    # (d) kill -9 mid-stream
    actor_id = handle._actor_id.hex()
    await kill9_test(ray, handle, stats["pid"])
    if DASHBOARD:
        RESULTS["state_after_kill9"] = {**state_of(actor_id), "dead_after_s": round(wait_dead(actor_id), 2)}
        print("state after kill -9:", RESULTS["state_after_kill9"])
    try:
        ray.get_actor("w-paced")
        RESULTS["name_after_death"] = "still resolvable"
    except ValueError:
        RESULTS["name_after_death"] = "released (ValueError)"

    # (c) ray.kill, then prove it
    created = create_in_other_driver(address, "w-kill", "node_a", 0.0)
    handle = ray.get_actor("w-kill")
    actor_id = handle._actor_id.hex()
    pid = created["pid"]
    t = time.perf_counter()
    ray.kill(handle, no_restart=True)
    gone = None
    while time.perf_counter() - t < 10:
        if not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
            gone = time.perf_counter() - t
            break
        time.sleep(0.01)
    RESULTS["ray_kill"] = {"pid_gone_after_s": round(gone or -1, 3)}
    if DASHBOARD:
        RESULTS["ray_kill"].update({"state_dead_after_s": round(wait_dead(actor_id), 3), **state_of(actor_id)})  # type: ignore[union-attr]
    print("ray.kill:", RESULTS["ray_kill"])

    # placement that fits nowhere: Ray does not refuse, it waits (PENDING_CREATION)
    Worker = ray.remote(__import__("llm_actor").ModelWorker)
    pending = Worker.options(name="w-nowhere", lifetime="detached", resources={"node_c": 1}, num_gpus=0).remote()
    try:
        await asyncio.wait_for(pending.stats.remote(), 3)
        RESULTS["infeasible"] = "scheduled?!"
    except (asyncio.TimeoutError, Exception) as exc:  # noqa: BLE001
        state = state_of(pending._actor_id.hex()).get("state") if DASHBOARD else None
        RESULTS["infeasible"] = {"after_3s": type(exc).__name__, "state": state}
    print("infeasible:", RESULTS["infeasible"])
    ray.kill(pending)

    # losing node b mid-stream (its raylet and everything it started are killed)
    created = create_in_other_driver(address, "w-b", "node_b", 0.01)
    handle = ray.get_actor("w-b")
    from runtime.protocol import ChatMessage, GenerationParams

    gen = handle.generate.remote((ChatMessage("user", "hi"),), GenerationParams(max_new_tokens=10**6), "chat-n")
    got, t_kill, err = 0, 0.0, None
    try:
        async for ref in gen:
            await ref
            got += 1
            if got == 20:
                t_kill = time.perf_counter()
                for pid in node_b_pids:
                    try:
                        p = psutil.Process(pid)
                        if "raylet" in " ".join(p.cmdline()):
                            p.kill()
                    except psutil.Error:
                        pass
    except Exception as exc:  # noqa: BLE001
        err = exc
    RESULTS["node_b_lost_mid_stream"] = {"error": type(err).__name__, "latency_s": round(time.perf_counter() - t_kill, 3),
                                         "message": str(err)[:200]}
    t = time.perf_counter()
    dead_node_s = None
    while time.perf_counter() - t < 30:
        if not any(n["Alive"] and "node_b" in n["Resources"] for n in ray.nodes()):
            dead_node_s = time.perf_counter() - t
            break
        await asyncio.sleep(0.1)
    RESULTS["node_b_lost_mid_stream"]["node_marked_dead_after_s"] = round(dead_node_s or -1, 2)  # type: ignore[index]
    print("node b lost:", RESULTS["node_b_lost_mid_stream"])
    ray.shutdown()


if __name__ == "__main__":
    asyncio.run(main())
