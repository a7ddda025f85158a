"""ONNX Runtime vs torch on CPU: the default model through the runtime, in one run.

    python -m tests.benchmarks.bench_onnx [--runs 3] [--max-new-tokens 64]

Transformers (torch fp32), the Optimum ONNX fp32 export and its int8 copy each run in
their own worker, one after the other, on the same prompt with greedy decoding. Reported:
load time, median tokens/s and its ratio to torch, resident memory of the worker, and for
int8 the first token where its text departs from fp32. Goals (issue 5): ONNX fp32 >= 2.0x
torch, int8 >= 3.0x torch.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics

import psutil

from runtime.default_model import ONNX_INT8_NAME, ONNX_NAME, TRANSFORMERS_NAME
from runtime.manager import Runtime
from runtime.protocol import ChatMessage, Finished, GenerationParams, TokenChunk
from runtime.settings import RuntimeSettings

PROMPT = [ChatMessage("user", "Continue: 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12,")]
STORY = [ChatMessage("user", "Write a short story about a lighthouse keeper.")]
PATHS = [("torch fp32", TRANSFORMERS_NAME, "transformers"), ("onnx fp32", ONNX_NAME, None), ("onnx int8", ONNX_INT8_NAME, None)]


async def _run(rt: Runtime, holder: str, messages: list[ChatMessage], max_new: int) -> tuple[list[str], Finished]:
    chunks: list[str] = []
    finished = None
    async for event in rt.generate(holder, messages, GenerationParams(max_new_tokens=max_new, temperature=0)):
        if isinstance(event, TokenChunk):
            chunks.append(event.text)
        else:
            finished = event
    assert finished is not None
    return chunks, finished


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    args = parser.parse_args()
    rt = Runtime(RuntimeSettings())
    rows = []
    texts: dict[str, list[str]] = {}
    for label, model, backend in PATHS:
        info = await rt.load(label, model, "cpu", backend=backend)
        await _run(rt, label, PROMPT, 8)  # warm-up
        speeds = []
        for _ in range(args.runs):
            _, done = await _run(rt, label, PROMPT, args.max_new_tokens)
            speeds.append(done.metrics.tokens_per_s)
        texts[label] = (await _run(rt, label, STORY, args.max_new_tokens))[0]
        rss = psutil.Process(info.pid).memory_info().rss / 2**20
        rows.append((label, info.key.backend, info.load_time_s, statistics.median(speeds), rss))
        await rt.unload(label)
    await rt.close()
    torch_tps = rows[0][3]
    print(f"default model, CPU, greedy, {args.max_new_tokens} new tokens, median of {args.runs} runs")
    print(f"{'path':12} {'backend':13} {'load s':>7} {'tokens/s':>9} {'vs torch':>9} {'RSS MB':>8}")
    for label, backend, load_s, tps, rss in rows:
        print(f"{label:12} {backend:13} {load_s:7.1f} {tps:9.2f} {tps / torch_tps:8.2f}x {rss:8.0f}")
    fp32, int8 = texts["onnx fp32"], texts["onnx int8"]
    print(f"torch and onnx fp32 text identical: {texts['torch fp32'] == fp32}")
    first = next((i for i, (a, b) in enumerate(zip(fp32, int8)) if a != b), None)
    if first is None and len(fp32) == len(int8):
        print("int8 text identical to fp32")
    else:
        first = first if first is not None else min(len(fp32), len(int8))
        print(f"int8 departs from fp32 at generated token {first}: fp32 {''.join(fp32[first:first + 4])!r} "
              f"vs int8 {''.join(int8[first:first + 4])!r} (common prefix {''.join(fp32[:first])!r})")
    for label, backend, _, tps, _ in rows[1:]:
        goal = 2.0 if label == "onnx fp32" else 3.0
        print(f"{label}: {tps / torch_tps:.2f}x torch (goal >= {goal}): {'ok' if tps / torch_tps >= goal else 'MISSED'}")


if __name__ == "__main__":
    asyncio.run(main())
