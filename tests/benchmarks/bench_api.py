"""API overhead: the default GGUF through Hypercorn + SSE vs llama-cpp-python in-process.

    python -m tests.benchmarks.bench_api [--runs 5] [--max-new-tokens 128]

Starts the real server (``python -m api``) on a loopback port with a throw-away database,
and streams each reply with httpx-sse, timing the first token where the client sees it.
The in-process side and the prompts are those of ``bench_runtime``; runs alternate and
each uses a new chat whose system line makes the prompt distinct (no prefix-cache help).
Goals (issue 3): tokens/s ratio >= 0.95, first-token overhead <= 25 ms.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import httpx
import llama_cpp
from httpx_sse import connect_sse

from runtime.default_model import GGUF_NAME
from runtime.settings import RuntimeSettings
from tests.benchmarks.bench_runtime import PROMPT, Run, in_process, report
from tests.servers import ApiServer


def through_api(http: httpx.Client, n: int, max_new: int) -> Run:
    chat_id = f"bench-{n}-{time.time_ns()}"
    http.post("/chats", json={"chat_id": chat_id, "system_prompt": f"Session {n}.", "temperature": 0,
                              "max_new_tokens": max_new}).raise_for_status()
    http.post("/load", json={"chat_id": chat_id, "model": GGUF_NAME, "device": "cpu"}).raise_for_status()
    started = time.perf_counter()
    first = None
    done: dict[str, object] = {}
    with connect_sse(http, "POST", "/chat", json={"chat_id": chat_id, "message": PROMPT, "stream": True}) as source:
        for sse in source.iter_sse():
            if sse.event == "token" and first is None:
                first = time.perf_counter()
            elif sse.event == "done":
                done = json.loads(sse.data)
    total = time.perf_counter() - started
    return (first or time.perf_counter()) - started, total, int(done["tokens"]), str(done["text"]).strip()  # type: ignore[call-overload]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--max-new-tokens", type=int, default=128)
    args = parser.parse_args()
    settings = RuntimeSettings()
    server = ApiServer(Path(tempfile.mkdtemp(prefix="llmchat-bench-")), settings.models_dir)
    server.start(quiet=True)
    try:
        http = httpx.Client(base_url=server.url, timeout=120, headers=server.headers)  # accounts on, as by default
        n_ctx = min(settings.n_ctx, 32768)
        llm = llama_cpp.Llama(str(settings.models_dir / GGUF_NAME), n_ctx=n_ctx, n_threads=settings.n_threads, verbose=False)
        in_process(llm, -1, 8)
        through_api(http, -1, 8)  # warm up: loads the shared worker
        raw: list[Run] = []
        ours: list[Run] = []
        for n in range(args.runs):
            raw.append(in_process(llm, n, args.max_new_tokens))
            ours.append(through_api(http, n, args.max_new_tokens))
    finally:
        server.stop()
    report(raw, ours, "API: Hypercorn + SSE", args.max_new_tokens, min_ratio=0.95, max_overhead_ms=25)

if __name__ == "__main__":
    main()
