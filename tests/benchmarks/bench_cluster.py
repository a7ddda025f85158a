"""The Ray runtime against the local runtime, and two API replicas against one, through the API, in one run.

    python -m tests.benchmarks.bench_cluster [--runs 3] [--n 8] [--max-tokens 128] [--json out.json]

Starts on loopback: a throwaway PostgreSQL (:mod:`tests.pg`), a one-node Ray cluster
(``ray start --head``, as :mod:`tests.ray_cluster` does), and three APIs on the default GGUF:
``local`` (LLMCHAT_RUNTIME=local, SQLite) and replicas ``A`` and ``B`` (LLMCHAT_RUNTIME=ray, the
same PostgreSQL database, so they share one worker actor). Every worker gets the same threads
and parallel slots. Levels alternate, each ``--runs`` times; medians are reported:

- single stream (N=1): the stream's decode speed, and its first token, local vs Ray;
- N streams at once: aggregate tokens/s, local vs Ray through A, and Ray through A alone vs the
  same N split between A and B.

Goals (issue 14): single-stream tokens/s Ray / local >= 0.9; first-token overhead Ray - local
<= 30 ms; N=8 aggregate with two replicas / one >= 1.0 (no loss).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from runtime.default_model import GGUF_NAME
from runtime.settings import RuntimeSettings
from tests.benchmarks.bench_batching import Level, Ours, Prompts, level_of
from tests.pg import PgCluster
from tests.ray_cluster import RayCluster
from tests.servers import ApiServer


async def _level(targets: list[Ours], n: int, max_tokens: int, prompts: Prompts) -> Level:
    """N streams at once, dealt round-robin over the targets."""
    streams = await asyncio.gather(*(targets[i % len(targets)].stream(prompts.next(), max_tokens) for i in range(n)))
    return level_of(streams)


async def measure(urls: dict[str, str], args: argparse.Namespace) -> dict[str, Any]:
    local, a, b = Ours(urls["local"], "local"), Ours(urls["a"], "ray A"), Ours(urls["b"], "ray B")
    prompts = Prompts()
    plan: list[tuple[str, list[Ours], int]] = [
        ("local N=1", [local], 1), ("ray N=1", [a], 1),
        (f"local N={args.n}", [local], args.n), (f"ray A N={args.n}", [a], args.n),
        (f"ray A+B N={args.n}", [a, b], args.n),
    ]
    results: dict[str, list[Level]] = {name: [] for name, _, _ in plan}
    try:
        for target in (local, a, b):  # load the model, warm the caches
            await target.stream(prompts.next(), 8)
        for run in range(args.runs):
            for name, targets, n in plan:
                level = await _level(targets, n, args.max_tokens, prompts)
                results[name].append(level)
                print(f"run {run + 1}: {name}: {level.aggregate_tps:.1f} tok/s aggregate, "
                      f"stream {level.median_stream_tps:.1f} tok/s, first token {level.ttft_p50_s * 1000:.0f} ms",
                      flush=True)
    finally:
        for target in (local, a, b):
            await target.close()
    return {name: {
        "aggregate_tps": statistics.median(x.aggregate_tps for x in levels),
        "stream_tps": statistics.median(x.median_stream_tps for x in levels),
        "ttft_p50_ms": statistics.median(x.ttft_p50_s for x in levels) * 1000,
        "runs": [x.aggregate_tps for x in levels],
    } for name, levels in results.items()}


def report(results: dict[str, Any], n: int) -> dict[str, float]:
    ratios = {
        "single stream tok/s, Ray / local (goal >= 0.9)":
            results["ray N=1"]["stream_tps"] / results["local N=1"]["stream_tps"],
        "first-token overhead, Ray - local, ms (goal <= 30)":
            results["ray N=1"]["ttft_p50_ms"] - results["local N=1"]["ttft_p50_ms"],
        f"N={n} aggregate, Ray / local":
            results[f"ray A N={n}"]["aggregate_tps"] / results[f"local N={n}"]["aggregate_tps"],
        f"N={n} aggregate, two replicas / one (goal >= 1.0)":
            results[f"ray A+B N={n}"]["aggregate_tps"] / results[f"ray A N={n}"]["aggregate_tps"],
    }
    print("\n| level | aggregate tok/s | stream tok/s | first token |\n| --- | --- | --- | --- |")
    for name, r in results.items():
        print(f"| {name} | {r['aggregate_tps']:.1f} | {r['stream_tps']:.1f} | {r['ttft_p50_ms']:.0f} ms |")
    print()
    for name, value in ratios.items():
        print(f"{name}: {value:.2f}")
    return ratios


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--n", type=int, default=8, help="concurrent streams of the batched levels")
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--threads", type=int, default=RuntimeSettings().n_threads, help="llama.cpp threads, both runtimes")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    models = RuntimeSettings().models_dir
    common = {"n_threads": str(args.threads), "parallel": str(args.n), "max_queue": str(4 * args.n), "n_ctx": "2048"}
    homes = [Path(tempfile.mkdtemp(prefix="llmchat-bench-")) for _ in range(3)]
    pg, ray_cluster = PgCluster(), RayCluster(head_models=models)
    servers: list[ApiServer] = []
    try:
        pg.start()
        ray_cluster.start(second_node=False)
        url = pg.create_database("bench")
        ray = {"runtime": "ray", "ray_address": ray_cluster.address, "db_url": url}
        local = ApiServer(homes[0], models, auth="off", **common)
        a = ApiServer(homes[1], models, auth="off", **ray, **common)
        b = ApiServer(homes[2], models, auth="off", **ray, **common)
        for server in (local, a, b):
            server.start(quiet=True)
            servers.append(server)
        load_before = os.getloadavg()[0]
        results = asyncio.run(measure({"local": local.url, "a": a.url, "b": b.url}, args))
    finally:
        for server in reversed(servers):
            server.stop()
        ray_cluster.stop()
        pg.stop()
        for home in homes:
            shutil.rmtree(home, ignore_errors=True)
    ratios = report(results, args.n)
    print(f"\nload average before {load_before:.2f}, after {os.getloadavg()[0]:.2f}")
    if args.json:
        args.json.write_text(json.dumps({
            "results": results, "ratios": ratios, "settings": vars(args) | {"json": str(args.json), "gguf": GGUF_NAME},
            "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "date": time.strftime("%Y-%m-%d %H:%M"),
                        "load_average_before": load_before},
        }, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
