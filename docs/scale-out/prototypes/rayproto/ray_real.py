"""The real llama.cpp backend inside the Ray actor (the project's own _Server, RequestChannel and
LlamaCppBackend), against the local runtime (spawned worker), same prompt, greedy, same machine.

  local: /work/main/.venv/bin/python ray_real.py local
  ray:   /tmp/i14/venv/bin/python ray_real.py ray      (starts and stops a one-node cluster)
llama_cpp comes from the project's venv through a .pth file appended after this venv's packages.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = ["/work/main", str(HERE)]

from runtime.default_model import GGUF_NAME  # noqa: E402
from runtime.protocol import ChatMessage, Finished, GenerationParams, TokenChunk  # noqa: E402

MODELS = Path("/work/main/models")
# Lists the base model keeps continuing, so replies run to N_NEW tokens rather than stopping at a turn marker.
PROMPTS = ["Continue counting: 1, 2, 3, 4, 5, 6, 7, 8, 9, 10,", "Continue the list: a, b, c, d, e, f, g,",
           "Continue: 2, 4, 6, 8, 10, 12, 14, 16,", "Continue counting: 100, 101, 102, 103, 104,"]
N_NEW, RUNS, THREADS = 96, 5, 2


async def measure(generate) -> dict:
    """Single stream (RUNS times), then 4 at once; consumer-side times."""
    singles = []
    for i in range(RUNS):
        t = time.perf_counter()
        first = None
        count = 0
        async for event in generate(PROMPTS[i % len(PROMPTS)], f"s{i}"):
            if isinstance(event, TokenChunk):
                first = first or time.perf_counter() - t
            if isinstance(event, Finished):
                count = event.metrics.completion_tokens
                worker_tps = event.metrics.tokens_per_s
        total = time.perf_counter() - t
        singles.append({"ttft_s": first, "tokens": count, "tps": count / total, "worker_tps": worker_tps})

    async def one(i: int) -> tuple[int, float]:
        t = time.perf_counter()
        n = 0
        async for event in generate(PROMPTS[i], f"c{i}"):
            if isinstance(event, Finished):
                n = event.metrics.completion_tokens
        return n, time.perf_counter() - t

    t = time.perf_counter()
    done = await asyncio.gather(*(one(i) for i in range(4)))
    wall = time.perf_counter() - t
    return {"single_tps_median": statistics.median(s["tps"] for s in singles),
            "single_ttft_median_s": statistics.median(s["ttft_s"] for s in singles),
            "single_worker_tps_median": statistics.median(s["worker_tps"] for s in singles),
            "four_streams_aggregate_tps": sum(n for n, _ in done) / wall, "runs": singles}


async def local() -> dict:
    from runtime.manager import Runtime
    from runtime.settings import RuntimeSettings

    runtime = await asyncio.to_thread(Runtime, RuntimeSettings(models_dir=MODELS, n_ctx=2048, n_threads=THREADS,
                                                               state_dir=Path("/tmp/i14/state"), parallel=4))
    await runtime.load("bench", GGUF_NAME, "cpu")

    async def generate(prompt: str, session: str):
        async for e in runtime.generate("bench", [ChatMessage("user", prompt)],
                                        GenerationParams(max_new_tokens=N_NEW, temperature=0.0), session):
            yield e

    try:
        async for _ in generate("warm up", "w"):
            pass
        return await measure(generate)
    finally:
        await runtime.close()


async def on_ray() -> dict:
    import subprocess

    from ray_proto import ENV, VENV, free_port

    port = free_port()
    env = dict(ENV)
    subprocess.run([str(VENV / "ray"), "start", "--head", f"--port={port}", "--num-cpus=1", "--num-gpus=0",
                    "--object-store-memory=80000000", "--temp-dir=/tmp/i14/raytmp", "--disable-usage-stats",
                    "--include-dashboard=false"], env=env, check=True, capture_output=True)
    try:
        import ray

        from llm_actor import ModelWorker, Refused
        from runtime.protocol import WorkerSpec

        ray.init(address=f"127.0.0.1:{port}", namespace="llmchat", logging_level="ERROR", log_to_driver=False)
        worker = ray.remote(ModelWorker).options(name="w-real", lifetime="detached", num_cpus=0,
                                                  max_concurrency=1000).remote()
        spec = WorkerSpec(str(MODELS / GGUF_NAME), "llama.cpp", "cpu", 2048, THREADS, parallel=4)
        t = time.perf_counter()
        ready = await worker.start.remote(spec, "w-real", 16)
        load_s = time.perf_counter() - t

        async def generate(prompt: str, session: str):
            gen = worker.generate.remote((ChatMessage("user", prompt),),
                                         GenerationParams(max_new_tokens=N_NEW, temperature=0.0), session)
            async for ref in gen:
                event = await ref
                if isinstance(event, Refused):
                    raise RuntimeError(event)
                yield event

        async for _ in generate("warm up", "w"):
            pass
        result = await measure(generate)
        result["load_s"] = load_s
        result["ready"] = {"pid": ready.pid, "parallel": ready.parallel, "load_time_s": ready.load_time_s}
        ray.kill(worker)
        ray.shutdown()
        return result
    finally:
        subprocess.run([str(VENV / "ray"), "stop", "--force"], env=env, capture_output=True)


if __name__ == "__main__":
    which = sys.argv[1]
    result = asyncio.run(local() if which == "local" else on_ray())
    print(json.dumps(result, indent=1))
    (HERE / f"real_{which}.json").write_text(json.dumps(result, indent=1))
