"""ONNX Runtime vs torch on CPU: the default model through the runtime, in one run.

    python -m tests.benchmarks.bench_onnx [--runs 5] [--max-new-tokens 64]

Transformers (torch fp32), the Optimum ONNX fp32 export and its int8 copy each run in
their own worker on the same prompt with greedy decoding. The three workers are loaded one
after the other (load time is measured alone), then the runs go round-robin, so a slow
spell of a shared machine hits every path alike; each ratio is the median over rounds of
that round's tokens/s against torch's. Tokens/s is the user's figure: completion tokens
over the whole request, prompt processing included. Also reported: time to first token,
resident memory of each worker, and for int8 the first token where its greedy text departs
from fp32's, on several prompts. Goals (issue 5): ONNX fp32 >= 2.0x torch, int8 >= 3.0x torch.
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
# Prompts on which int8's greedy text is compared with fp32's, token by token.
COMPARE = [
    "Write a short story about a lighthouse keeper.",
    "Explain why the sky is blue.",
    "List ten fruits and their colours.",
    "Write a poem about autumn rain.",
    "What is the capital of France? Tell me about its history.",
    "Describe how a bicycle works.",
    "Tell me a joke about computers.",
]
PATHS = [
    ("torch fp32", TRANSFORMERS_NAME, "transformers"),
    ("onnx fp32", ONNX_NAME, "onnx"),
    ("onnx int8", ONNX_INT8_NAME, "onnx"),
]
GOALS = {"onnx fp32": 2.0, "onnx int8": 3.0}


async def _run(rt: Runtime, holder: str, messages: list[ChatMessage], max_new: int) -> tuple[list[str], Finished]:
    chunks: list[str] = []
    finished = None
    async for event in rt.generate(holder, messages, GenerationParams(max_new_tokens=max_new, temperature=0)):
        if isinstance(event, TokenChunk):
            chunks.append(event.text)
        elif isinstance(event, Finished):
            finished = event
    assert finished is not None
    return chunks, finished


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    args = parser.parse_args()
    rt = Runtime(RuntimeSettings(max_workers=len(PATHS)))
    try:
        infos = {}
        for label, model, backend in PATHS:
            infos[label] = await rt.load(label, model, "cpu", backend=backend)
            await _run(rt, label, PROMPT, 8)  # warm-up
        speeds: dict[str, list[float]] = {label: [] for label, _, _ in PATHS}
        ttft: dict[str, list[float]] = {label: [] for label, _, _ in PATHS}
        for _ in range(args.runs):
            for label, _, _ in PATHS:
                _, done = await _run(rt, label, PROMPT, args.max_new_tokens)
                speeds[label].append(done.metrics.tokens_per_s)
                ttft[label].append(done.metrics.time_to_first_token_s)
        texts: dict[str, list[list[str]]] = {label: [] for label, _, _ in PATHS}
        for prompt in COMPARE:
            for label, _, _ in PATHS:
                chunks, _ = await _run(rt, label, [ChatMessage("user", prompt)], args.max_new_tokens)
                texts[label].append(chunks)
        rss = {label: psutil.Process(info.pid).memory_info().rss / 2**20 for label, info in infos.items()}
    finally:
        await rt.close()
    torch_runs = speeds["torch fp32"]
    print(f"default model, CPU, greedy, {args.max_new_tokens} new tokens, {args.runs} rounds (medians)")
    print(f"{'path':11} {'load s':>7} {'first token ms':>15} {'tokens/s':>9} {'vs torch':>9} {'RSS MB':>7}")
    ratios = {}
    for label, _, _ in PATHS:
        ratios[label] = statistics.median(s / t for s, t in zip(speeds[label], torch_runs))
        print(f"{label:11} {infos[label].load_time_s:7.1f} {statistics.median(ttft[label]) * 1000:15.0f} "
              f"{statistics.median(speeds[label]):9.2f} {ratios[label]:8.2f}x {rss[label]:7.0f}")
    print("tokens/s per round: " + "; ".join(
        f"{label} {', '.join(f'{s:.1f}' for s in speeds[label])}" for label, _, _ in PATHS))
    same = sum(t == f for t, f in zip(texts["torch fp32"], texts["onnx fp32"]))
    print(f"torch and onnx fp32 greedy text identical on {same} of {len(COMPARE)} prompts")
    print("int8 against fp32, greedy, per prompt:")
    for prompt, fp32, int8 in zip(COMPARE, texts["onnx fp32"], texts["onnx int8"]):
        first = next((i for i, (a, b) in enumerate(zip(fp32, int8)) if a != b), None)
        if first is None and len(fp32) == len(int8):
            print(f"  {prompt[:40]!r}: identical ({len(fp32)} tokens)")
            continue
        first = first if first is not None else min(len(fp32), len(int8))
        print(f"  {prompt[:40]!r}: departs at generated token {first} of {len(fp32)}: fp32 "
              f"{''.join(fp32[first:first + 3])!r} vs int8 {''.join(int8[first:first + 3])!r}")
    for label, goal in GOALS.items():
        print(f"{label}: {ratios[label]:.2f}x torch (goal >= {goal}): {'ok' if ratios[label] >= goal else 'MISSED'}")


if __name__ == "__main__":
    asyncio.run(main())
