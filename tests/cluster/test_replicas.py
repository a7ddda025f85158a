"""Past one machine, for real: two API processes (replicas A and B) on one PostgreSQL database,
model workers on a two-node Ray cluster, the default GGUF. Any replica serves any chat; a stop
sent to one stops a reply another streams; an unload is proven; a killed worker, a killed
replica and a lost node each leave the rest serving. The last test takes node b away (and
starts it again)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from httpx_sse import connect_sse

from runtime.default_model import GGUF_NAME
from tests.ray_cluster import RayCluster, worker_actors
from tests.servers import ApiServer, survivors

ENDLESS = "Continue: 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12,"


def _replica(home: Path, models: Path, cluster: RayCluster, db_url: str, **more: str) -> ApiServer:
    return ApiServer(home, models, runtime="ray", ray_address=cluster.address, db_url=db_url, n_ctx="1024",
                     n_threads="1", parallel="2", ray_prefer_resource="node_b", **more)


@pytest.fixture(scope="module")
def replicas(
    tmp_path_factory: pytest.TempPathFactory, ray_cluster: RayCluster, ray_models: tuple[Path, Path],
    pg_database: Callable[[], str],
) -> Iterator[tuple[ApiServer, ApiServer]]:
    url = pg_database()
    a = _replica(tmp_path_factory.mktemp("replica-a"), ray_models[0], ray_cluster, url)
    b = _replica(tmp_path_factory.mktemp("replica-b"), ray_models[0], ray_cluster, url)
    a.start(quiet=True)
    b.key, b.headers = a.key, a.headers  # one database: the account A's set-up made serves both
    b.start(quiet=True)
    yield a, b
    for server in (a, b):
        assert not survivors(server.stop())


def _http(server: ApiServer) -> httpx.Client:
    return httpx.Client(base_url=server.url, timeout=60, headers=server.headers)


def _worker(http: httpx.Client, chat_id: str) -> dict[str, object]:
    return next(w for w in http.get("/status").json()["workers"] if chat_id in w["chats"])


def _last(http: httpx.Client, chat_id: str) -> dict[str, object]:
    messages: list[dict[str, object]] = http.get("/history", params={"chat_id": chat_id}).json()["messages"]
    return messages[-1]


def _stream_tokens(http: httpx.Client, chat_id: str) -> None:
    with contextlib.suppress(httpx.HTTPError), connect_sse(
        http, "POST", "/chat", json={"chat_id": chat_id, "message": ENDLESS, "stream": True}
    ) as source:
        for _ in source.iter_sse():
            pass


def _ray_connected(cluster: RayCluster) -> None:
    import ray

    if not ray.is_initialized():
        ray.init(address=cluster.address, namespace="llmchat", logging_level="WARNING", log_to_driver=False)


def test_load_on_a_chat_on_b_stop_on_a_unload_on_b(replicas: tuple[ApiServer, ApiServer], ray_cluster: RayCluster) -> None:
    a, b = (_http(r) for r in replicas)
    assert a.post("/chats", json={"chat_id": "shared", "max_new_tokens": 400, "temperature": 0}).status_code == 201
    loaded = a.post("/load", json={"chat_id": "shared", "model": GGUF_NAME, "device": "cpu"})
    assert loaded.status_code == 200, loaded.text
    status = b.get("/status", params={"chat_id": "shared"}).json()
    assert status["loaded"] and status["node"], status  # B sees what A loaded, and where
    worker = _worker(b, "shared")
    assert worker["node"] == status["node"]
    shown = b.get("/machine").json()["models"][0]  # memory measured on the worker's node
    assert shown["node"] == status["node"] and shown["memory_mb"] > 100, shown
    # B streams; a stop sent to A ends it, and B stores it as stopped.
    tokens, ended = 0, None
    stopped_at = 0.0
    with connect_sse(b, "POST", "/chat", json={"chat_id": "shared", "message": ENDLESS, "stream": True}) as source:
        for sse in source.iter_sse():
            if sse.event == "token":
                tokens += 1
                if tokens == 5:
                    answer = a.post("/chats/shared/stop").json()
                    assert answer["stopped"] and answer["message_id"], answer
                    stopped_at = time.monotonic()
            elif sse.event in ("done", "error"):
                ended = json.loads(sse.data)
    assert ended is not None and time.monotonic() - stopped_at < 2.0
    last = a.get("/history", params={"chat_id": "shared"}).json()["messages"][-1]
    assert last["status"] == "stopped" and last["text"], last
    # Unloaded through B: the actor is dead in Ray and its process gone.
    unloaded = b.post("/unload", json={"chat_id": "shared"}).json()
    assert unloaded["status"] == "unloaded" and unloaded["process_exited"] is True, unloaded
    assert not a.get("/status", params={"chat_id": "shared"}).json()["loaded"]
    pid = int(worker["pid"])  # type: ignore[call-overload]
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, 0)
        pytest.fail(f"the worker's process {pid} is still running")
    _ray_connected(ray_cluster)
    assert {actor.state for actor in worker_actors(GGUF_NAME)} == {"DEAD"}


def test_a_killed_worker_ends_the_stream_with_an_error_within_a_second(replicas: tuple[ApiServer, ApiServer]) -> None:
    a, b = (_http(r) for r in replicas)
    a.post("/chats", json={"chat_id": "kill", "max_new_tokens": 400, "temperature": 0})
    assert a.post("/load", json={"chat_id": "kill", "model": GGUF_NAME, "device": "cpu"}).status_code == 200
    pid = int(_worker(b, "kill")["pid"])  # type: ignore[call-overload]
    tokens, killed_at, error, waited = 0, 0.0, None, None
    with connect_sse(b, "POST", "/chat", json={"chat_id": "kill", "message": ENDLESS, "stream": True}) as source:
        for sse in source.iter_sse():
            if sse.event == "token":
                tokens += 1
                if tokens == 5:
                    os.kill(pid, signal.SIGKILL)
                    killed_at = time.monotonic()
            elif sse.event == "error":
                waited = time.monotonic() - killed_at
                error = json.loads(sse.data)
    assert error is not None and error["status"] == 503 and waited is not None
    assert waited < 1.0, f"the stream ended {waited:.2f} s after the kill"
    deadline = time.monotonic() + 10
    while a.get("/status", params={"chat_id": "kill"}).json()["loaded"] and time.monotonic() < deadline:
        time.sleep(0.1)
    status = a.get("/status", params={"chat_id": "kill"}).json()
    assert not status["loaded"] and "died" in (status["reason"] or ""), status
    assert b.post("/load", json={"chat_id": "kill", "model": GGUF_NAME, "device": "cpu"}).status_code == 200
    b.post("/unload", json={"chat_id": "kill"})


def test_a_killed_replica_leaves_the_other_serving_and_its_reply_is_ended(
    replicas: tuple[ApiServer, ApiServer],
) -> None:
    a_server, b_server = replicas
    a, b = _http(a_server), _http(b_server)
    a.post("/chats", json={"chat_id": "orphan", "max_new_tokens": 600, "temperature": 0})
    assert a.post("/load", json={"chat_id": "orphan", "model": GGUF_NAME, "device": "cpu"}).status_code == 200
    tokens = 0

    def stream() -> None:
        nonlocal tokens
        with contextlib.suppress(httpx.HTTPError), connect_sse(
            a, "POST", "/chat", json={"chat_id": "orphan", "message": ENDLESS, "stream": True}
        ) as source:
            for sse in source.iter_sse():
                tokens += sse.event == "token"

    reader = threading.Thread(target=stream, daemon=True)
    reader.start()
    deadline = time.monotonic() + 30
    while tokens < 5 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert a_server.process is not None
    os.kill(a_server.process.pid, signal.SIGKILL)
    a_server.process.wait()
    # B goes on serving the same chat, the dead replica's reply stops taking a slot, and B
    # stores it as cut short (it was left streaming).
    deadline = time.monotonic() + 10
    while _worker(b, "orphan")["running"] and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _worker(b, "orphan")["running"] == 0, "the dead replica's reply kept generating"
    deadline = time.monotonic() + 15
    while _last(b, "orphan")["status"] == "streaming" and time.monotonic() < deadline:
        time.sleep(0.2)
    cut = _last(b, "orphan")
    assert cut["status"] == "error" and cut["error"] == "the API replica streaming this reply stopped", cut
    done = b.post("/chat", json={"chat_id": "orphan", "message": "Say hi.", "stream": False})
    assert done.status_code == 200, done.text
    # A comes back while B streams a reply: A must not cut it; a stop through A ends it as stopped.
    b.post("/chats", json={"chat_id": "long", "max_new_tokens": 600, "temperature": 0})
    assert b.post("/load", json={"chat_id": "long", "model": GGUF_NAME, "device": "cpu"}).status_code == 200
    reader = threading.Thread(target=lambda: _stream_tokens(b, "long"), daemon=True)
    reader.start()
    deadline = time.monotonic() + 30
    while not b.get("/history", params={"chat_id": "long"}).json()["messages"] and time.monotonic() < deadline:
        time.sleep(0.05)
    a_server.start(quiet=True)
    assert a.get("/status", params={"chat_id": "orphan"}).json()["loaded"]
    assert _last(a, "long")["status"] == "streaming"
    assert a.post("/chats/long/stop").json()["stopped"]
    reader.join(timeout=30)
    assert _last(a, "long")["status"] == "stopped"
    b.post("/unload", json={"chat_id": "long"})
    unloaded = b.post("/unload", json={"chat_id": "orphan"})
    assert unloaded.status_code == 200 and unloaded.json()["process_exited"], unloaded.text


def test_idle_unload_happens_once_for_the_cluster(replicas: tuple[ApiServer, ApiServer], ray_cluster: RayCluster) -> None:
    a, b = (_http(r) for r in replicas)
    _ray_connected(ray_cluster)
    before = len(worker_actors(GGUF_NAME))
    for chat in ("idle-1", "idle-2"):
        a.post("/chats", json={"chat_id": chat})
    assert a.post("/load", json={"chat_id": "idle-1", "model": GGUF_NAME, "device": "cpu",
                                 "idle_unload_s": 2}).status_code == 200
    assert b.post("/load", json={"chat_id": "idle-2", "model": GGUF_NAME, "device": "cpu"}).status_code == 200
    deadline = time.monotonic() + 15
    while b.get("/status", params={"chat_id": "idle-1"}).json()["loaded"] and time.monotonic() < deadline:
        time.sleep(0.2)
    for http in (a, b):
        for chat in ("idle-1", "idle-2"):
            status = http.get("/status", params={"chat_id": chat}).json()
            assert not status["loaded"] and status["reason"] == "unloaded after 2 s without use", status
    # One worker was started for both chats, through both replicas, and ended once.
    actors = worker_actors(GGUF_NAME)
    assert len(actors) == before + 1 and {actor.state for actor in actors} == {"DEAD"}, actors


def _node_of_worker() -> str:
    alive = [x for x in worker_actors(GGUF_NAME) if x.state == "ALIVE"]
    assert len(alive) == 1, alive
    return str(alive[0].node_id)


def test_disabling_a_user_on_one_replica_stops_their_reply_on_another(replicas: tuple[ApiServer, ApiServer]) -> None:
    a_server, b_server = replicas
    _, key = a_server.add_user("dora")
    dora = httpx.Client(base_url=b_server.url, timeout=60, headers={"Authorization": f"Bearer {key}"})
    dora.post("/chats", json={"chat_id": "dora", "max_new_tokens": 600, "temperature": 0})
    assert dora.post("/load", json={"chat_id": "dora", "model": GGUF_NAME, "device": "cpu"}).status_code == 200
    reader = threading.Thread(target=lambda: _stream_tokens(dora, "dora"), daemon=True)
    reader.start()
    deadline = time.monotonic() + 30
    while not dora.get("/history", params={"chat_id": "dora"}).json()["messages"] and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)
    assert _last(dora, "dora")["status"] == "streaming"
    admin = _http(a_server)
    assert admin.patch("/admin/users/dora", json={"disabled": True}).status_code == 200
    reader.join(timeout=30)
    assert not reader.is_alive()
    admin.patch("/admin/users/dora", json={"disabled": False})
    assert _last(dora, "dora")["status"] == "stopped"
    dora.post("/unload", json={"chat_id": "dora"})


def test_hypercorn_with_several_worker_processes_serves_with_the_ray_runtime(
    tmp_path: Path, ray_cluster: RayCluster, ray_models: tuple[Path, Path], pg_database: Callable[[], str]
) -> None:
    """``hypercorn --workers 2``: two replicas in one command, both serving the same chats."""
    from tests.pg import free_port

    port = free_port()
    env = {**os.environ, "LLMCHAT_RUNTIME": "ray", "LLMCHAT_RAY_ADDRESS": ray_cluster.address,
           "LLMCHAT_DB_URL": pg_database(), "LLMCHAT_AUTH": "off", "LLMCHAT_STATE_DIR": str(tmp_path),
           "LLMCHAT_LOGS_DIR": str(tmp_path / "logs"), "LLMCHAT_MODELS_DIR": str(ray_models[0]),
           "LLMCHAT_N_CTX": "1024", "LLMCHAT_N_THREADS": "1", "LLMCHAT_PARALLEL": "2"}
    server = subprocess.Popen(
        [sys.executable, "-m", "hypercorn", "--workers", "2", "--bind", f"127.0.0.1:{port}", "api.app:create_app()"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        http = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                if http.get("/openapi.json").status_code == 200:
                    break
            time.sleep(0.3)
        assert http.post("/chats", json={"chat_id": "hyper", "temperature": 0, "max_new_tokens": 8}).status_code == 201
        assert http.post("/load", json={"chat_id": "hyper", "model": GGUF_NAME, "device": "cpu"}).status_code == 200
        for i in range(4):  # new connections: both processes take some
            answer = httpx.post(f"http://127.0.0.1:{port}/chat", timeout=60,
                                json={"chat_id": "hyper", "message": f"Say {i}.", "stream": False})
            assert answer.status_code == 200, answer.text
        assert http.post("/unload", json={"chat_id": "hyper"}).json()["process_exited"] is True
    finally:
        server.terminate()
        try:
            output = server.communicate(timeout=30)[0]
        except subprocess.TimeoutExpired:
            server.kill()
            output = server.communicate()[0]
    assert output.count("serving; database postgres://") == 2, output[-3000:]


def test_a_lost_node_is_named_and_a_reload_lands_on_the_head(
    replicas: tuple[ApiServer, ApiServer], ray_cluster: RayCluster
) -> None:
    a, b = (_http(r) for r in replicas)
    a.post("/chats", json={"chat_id": "node"})
    assert a.post("/load", json={"chat_id": "node", "model": GGUF_NAME, "device": "cpu"}).status_code == 200
    _ray_connected(ray_cluster)
    import ray

    node_b = next(n["NodeID"] for n in ray.nodes() if n["Alive"] and "node_b" in n["Resources"])
    head = next(n["NodeID"] for n in ray.nodes() if n["Alive"] and "node_a" in n["Resources"])
    assert _node_of_worker() == node_b
    ray_cluster.kill_node_b()
    try:
        deadline = time.monotonic() + 30
        while b.get("/status", params={"chat_id": "node"}).json()["loaded"] and time.monotonic() < deadline:
            time.sleep(0.2)
        status = b.get("/status", params={"chat_id": "node"}).json()
        assert not status["loaded"] and "left the cluster" in (status["reason"] or ""), status
        assert b.post("/load", json={"chat_id": "node", "model": GGUF_NAME, "device": "cpu"}).status_code == 200
        assert _node_of_worker() == head
        b.post("/unload", json={"chat_id": "node"})
    finally:
        ray_cluster.start_node_b()  # for the tests after this one
