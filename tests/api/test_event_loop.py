"""Nothing blocks the event loop: the API with the real runtime, in asyncio's debug mode.

asyncio logs every callback (a step of a task, a reader's hand-over) that runs longer than
``slow_callback_duration``; with 50 ms, any blocking call on the loop in load, a streamed
chat, stop, unload or a worker's death shows up here. On this machine NVML, psutil, the
pid file and the models-folder scan are fast, so they are also watched directly: each
reports a call made from the loop's thread (in a worker thread there is no running loop).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
from pathlib import Path
from typing import Any

import psutil
import pytest

from api.app import create_app
from api.settings import ApiSettings
from runtime import discovery, gpu
from runtime.pidfile import PidFile
from tests.api.conftest import GGUF, sse_events
from tests.auth import signed_in

SLOW_S = 0.05
ENDLESS = "Continue: 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12,"


class _SlowCallbacks(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.seen: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if message.startswith("Executing"):
            self.seen.append(message)


async def _scenario(settings: ApiSettings, slow: _SlowCallbacks) -> None:
    loop = asyncio.get_running_loop()
    loop.slow_callback_duration = SLOW_S
    app = create_app(settings)
    async with app.test_app() as running:
        slow.seen.clear()  # start-up (imports, migrations) is not what this measures
        client = await signed_in(running, "tester")  # the password is checked off the loop
        load = await client.post("/load", json={"chat_id": "loop", "model": GGUF, "device": "cpu"})
        assert load.status_code == 200
        streamed = await client.post("/chat", json={"chat_id": "loop", "message": "Capital of France?", "stream": True})
        assert sse_events(await streamed.get_data())[-1][0] == "done"
        # Each later step has a chat of its own, whose only message runs greedily to the token limit.
        for chat in ("stopper", "doomed"):
            await client.post("/chats", json={"chat_id": chat, "max_new_tokens": 400, "temperature": 0})
        await client.post("/load", json={"chat_id": "stopper", "model": GGUF, "device": "cpu"})

        async def when_busy() -> int:
            for _ in range(600):
                workers = (await (await client.get("/status")).get_json())["workers"]
                if workers and workers[0]["busy"]:
                    return int(workers[0]["pid"])
                await asyncio.sleep(0.02)
            raise AssertionError("the reply never started")

        async def stop_when_busy() -> None:
            await when_busy()
            assert (await (await client.post("/chats/stopper/stop")).get_json())["stopped"]

        stopped, _ = await asyncio.gather(client.post("/chat", json={"chat_id": "stopper", "message": ENDLESS}),
                                          stop_when_busy())
        assert (await stopped.get_json())["status"] == "stopped"
        for path in ("/status", "/status?chat_id=loop", "/chats", "/models", "/history?chat_id=loop", "/metrics"):
            assert (await client.get(path)).status_code == 200
        shared = await (await client.post("/unload", json={"chat_id": "loop"})).get_json()
        unload = await (await client.post("/unload", json={"chat_id": "stopper"})).get_json()
        assert shared["shared"] and unload["process_exited"] is True
        await client.post("/load", json={"chat_id": "doomed", "model": GGUF, "device": "cpu"})

        async def kill_when_busy() -> None:
            os.kill(await when_busy(), signal.SIGKILL)

        died, _ = await asyncio.gather(client.post("/chat", json={"chat_id": "doomed", "message": ENDLESS}),
                                       kill_when_busy())
        assert died.status_code == 503
        status = await (await client.get("/status?chat_id=doomed")).get_json()
        assert not status["loaded"] and "killed" in status["reason"]


def _on_the_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def _watch(monkeypatch: pytest.MonkeyPatch, owner: object, name: str, calls: list[str]) -> None:
    original = getattr(owner, name)

    def watched(*args: Any, **kwargs: Any) -> Any:
        if _on_the_loop():
            calls.append(f"{getattr(owner, '__name__', owner)}.{name}")
        return original(*args, **kwargs)

    monkeypatch.setattr(owner, name, watched)


def test_nothing_blocks_the_event_loop(tmp_path: Path, models_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocking: list[str] = []
    for owner, names in ((gpu, ("device_count", "free_mb", "used_by_mb")), (discovery, ("scan", "resolve")),
                         (psutil, ("virtual_memory",)), (psutil.Process, ("__init__",)), (PidFile, ("add", "discard", "reap_orphans"))):
        for name in names:
            _watch(monkeypatch, owner, name, blocking)
    settings = ApiSettings(
        models_dir=models_dir, db_path=tmp_path / "chat.sqlite3", logs_dir=tmp_path / "logs", state_dir=tmp_path,
        n_ctx=1024, n_threads=1,  # one core stays free for the loop, so time measured is time spent on it
    )
    slow = _SlowCallbacks()
    logger = logging.getLogger("asyncio")
    logger.addHandler(slow)
    # The test process holds the whole suite's imports (torch, transformers, schemathesis...):
    # a full garbage collection of that heap takes about 0.2 s, and would be counted against
    # whichever callback it interrupts. The API's own process holds none of it, so what the
    # suite had before is frozen out of collection; what the scenario allocates is not.
    gc.collect()
    gc.freeze()
    try:
        asyncio.run(_scenario(settings, slow), debug=True)
    finally:
        gc.unfreeze()
        logger.removeHandler(slow)
    assert not slow.seen, "\n".join(slow.seen)
    assert not blocking, f"blocking calls made on the event loop: {sorted(set(blocking))}"
