"""Continuous batching: our API against llama.cpp's own llama-server, N streams at once, one run.

    python -m tests.benchmarks.bench_batching [--parallel 8] [--n 1,2,4,8,16] [--runs 3]
        [--max-tokens 128] [--no-serial-baseline] [--gap] [--json results.json]

Starts, on loopback ports, our API (``python -m api``, ``LLMCHAT_PARALLEL=<P>``, a throw-away
database, a queue deep enough that no request gets 429) and ``llama-server -m <gguf> -np <P>
-c <P * 8192> -t <threads>`` on the same default GGUF, with the thread count our workers use.
The binary is built once, from the sdist of the installed llama-cpp-python with the same
CPU features (see :mod:`tests.benchmarks.llama_server`). With -np given, llama-server keeps
one KV cache per slot (kv_unified false), so each slot has our 8192-token context per
sequence; everything else is its default (continuous batching on, flash attention auto,
weight repacking on, prompt cache on). ``--llama-server-args`` adds flags: with ``-fa off``
it uses the attention kernel our worker uses on a CPU, and its greedy text matches ours.
With ``--serial-baseline`` (the default) a second API with ``LLMCHAT_PARALLEL=1``, the
one-at-a-time path, serves single streams for comparison. An API that does not report its
worker's parallel sequences in ``/status`` (before batching) is measured all the same.

Each load level starts N streaming requests at once: greedy, ``max_tokens`` new tokens,
distinct prompts (their own system line, a base-model prompt that lists numbers, so replies
run to the limit). Ours get ``POST /v1/chat/completions``; llama-server gets ``POST
/completion`` with the token ids our backend feeds llama.cpp for the same messages (the
plain transcript, tokenized with BOS and special tokens), our stop strings, temperature 0.
Levels and servers alternate, each level ``--runs`` times; the report takes medians:
aggregate tokens/s (completion tokens as each server counts them / first request sent to
last stream ended), the median stream's decode speed (tokens after the first / time after
the first), and time to first token (p50, max). ``--gap`` also measures the longest pause
between two tokens of a running stream while the server takes in a ~2,000-token prompt.
On a shared machine the numbers mean little while other processes run: the CPU they take
is watched, a run during which they took more than ``--max-others-cpu`` of the machine is
done again (``--retries`` times at most), and the report gives their share.

Goals (the continuous-batching issue): aggregate at N=8 ours / llama-server >= 1.0;
ours N=8 / ours N=1 >= 2.0; slowest first token at N=8 ours / llama-server <= 1.5;
single stream with P=8 / with parallel 1 >= 0.97; longest gap during a prefill < 300 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import platform
import shlex
import shutil
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil
from httpx_sse import aconnect_sse

from runtime.default_model import GGUF_NAME
from runtime.prompt import TRANSCRIPT_STOPS, plain_transcript
from runtime.protocol import ChatMessage
from runtime.settings import RuntimeSettings
from tests.benchmarks.llama_server import LlamaServer, ensure_llama_server, installed_version
from tests.servers import ApiServer

CONTEXT_PER_SEQUENCE = 8192  # our worker's n_ctx (LLMCHAT_N_CTX default) for every sequence
GOALS = {"ours_vs_llama_server_n8": 1.0, "ours_n8_vs_ours_n1": 2.0, "slowest_first_token_n8": 1.5,
         "single_stream_parallel_vs_serial": 0.97, "gap_ms": 300.0}


class BenchmarkError(RuntimeError):
    """A server refused or failed a request: the numbers of that run would mean nothing."""


@dataclass
class Stream:
    """One streamed reply as the client saw it (``perf_counter`` seconds)."""

    sent: float
    ended: float = 0.0
    first: float | None = None  # first chunk with visible text
    chunk_times: list[float] = field(default_factory=list)
    tokens: int = 0  # completion tokens as the server counts them
    text: str = ""

    @property
    def ttft(self) -> float:
        return (self.first or self.ended) - self.sent

    @property
    def decode_tps(self) -> float:
        """Tokens after the first / time after the first: the speed a reader watches."""
        if self.first is None or self.tokens < 2 or self.ended <= self.first:
            return 0.0
        return (self.tokens - 1) / (self.ended - self.first)


@dataclass
class Level:
    """N streams started at once."""

    n: int
    wall_s: float
    tokens: list[int]
    aggregate_tps: float
    median_stream_tps: float
    ttft_p50_s: float
    ttft_max_s: float
    others_cpu: float = 0.0  # share of the machine's CPU that other processes used meanwhile


def level_of(streams: Sequence[Stream]) -> Level:
    start, end = min(s.sent for s in streams), max(s.ended for s in streams)
    ttfts = [s.ttft for s in streams]
    return Level(
        n=len(streams), wall_s=end - start, tokens=[s.tokens for s in streams],
        aggregate_tps=sum(s.tokens for s in streams) / (end - start),
        median_stream_tps=statistics.median(s.decode_tps for s in streams),
        ttft_p50_s=statistics.median(ttfts), ttft_max_s=max(ttfts),
    )


def _median_level(levels: Sequence[Level]) -> dict[str, float]:
    return {
        "aggregate_tps": statistics.median(x.aggregate_tps for x in levels),
        "median_stream_tps": statistics.median(x.median_stream_tps for x in levels),
        "ttft_p50_s": statistics.median(x.ttft_p50_s for x in levels),
        "ttft_max_s": statistics.median(x.ttft_max_s for x in levels),
        "tokens": statistics.median(sum(x.tokens) for x in levels),
        "others_cpu": statistics.median(x.others_cpu for x in levels),
    }


# The two servers' wire formats


class Target:
    """A server under test: how one streamed request is sent to it."""

    name = ""

    def __init__(self, url: str) -> None:
        self.http = httpx.AsyncClient(base_url=url, timeout=httpx.Timeout(900, connect=10),
                                      limits=httpx.Limits(max_connections=256, max_keepalive_connections=0))

    async def stream(self, messages: list[ChatMessage], max_tokens: int, live: Stream | None = None) -> Stream:
        """Stream one reply; ``live``, when given, fills while the reply runs."""
        raise NotImplementedError

    async def close(self) -> None:
        await self.http.aclose()


async def _events(http: httpx.AsyncClient, path: str, body: dict[str, Any], who: str) -> AsyncIterator[Any]:
    """The JSON ``data:`` payloads of an SSE response."""
    async with aconnect_sse(http, "POST", path, json=body) as source:
        if source.response.status_code != 200:
            detail = (await source.response.aread()).decode(errors="replace")[:400]
            raise BenchmarkError(f"{who} answered {source.response.status_code}: {detail}")
        async for sse in source.aiter_sse():
            if sse.data == "[DONE]":
                return
            if sse.data:
                yield json.loads(sse.data)


class Ours(Target):
    """Our API: streaming ``POST /v1/chat/completions``, usage in the last chunk."""

    def __init__(self, url: str, name: str) -> None:
        super().__init__(url)
        self.name = name

    async def stream(self, messages: list[ChatMessage], max_tokens: int, live: Stream | None = None) -> Stream:
        body = {
            "model": GGUF_NAME, "stream": True, "stream_options": {"include_usage": True},
            "messages": [{"role": m.role, "content": m.content} for m in messages],
            "max_tokens": max_tokens, "temperature": 0,
        }
        result = _begin(live)
        parts: list[str] = []
        async for data in _events(self.http, "/v1/chat/completions", body, self.name):
            if "error" in data:
                raise BenchmarkError(f"{self.name}: {data['error']}")
            if data.get("usage"):
                result.tokens = int(data["usage"]["completion_tokens"])
            for choice in data.get("choices", []):
                if text := choice.get("delta", {}).get("content"):
                    _arrived(result, text, parts)
        return _end(result, parts)

    async def parallel(self) -> int | None:
        """The parallel sequences the API reports for the model's worker (None: it does not say)."""
        workers = (await self.http.get("/status")).json().get("workers", [])
        reported = [w.get("parallel") for w in workers if w.get("model") == GGUF_NAME]
        return int(reported[0]) if reported and reported[0] is not None else None


class LlamaServerTarget(Target):
    """llama-server: streaming ``POST /completion`` with the prompt tokens our backend would feed."""

    name = "llama-server"

    def __init__(self, url: str, tokenize: Callable[[str], list[int]]) -> None:
        super().__init__(url)
        self.tokenize = tokenize

    async def stream(self, messages: list[ChatMessage], max_tokens: int, live: Stream | None = None) -> Stream:
        body = {
            # Token ids tokenized as our llama.cpp backend does (add_bos=True, special=True); a
            # string would be tokenized by the server, its BOS decided by the GGUF's metadata.
            "prompt": self.tokenize(plain_transcript(messages).text),
            "n_predict": max_tokens, "temperature": 0, "stop": list(TRANSCRIPT_STOPS), "stream": True,
            "repeat_penalty": 1.0,  # llama-cpp-python's generate() default
        }
        result = _begin(live)
        parts: list[str] = []
        async for data in _events(self.http, "/completion", body, self.name):
            if "error" in data:
                raise BenchmarkError(f"{self.name}: {data['error']}")
            if text := data.get("content"):
                _arrived(result, text, parts)
            if data.get("stop"):
                result.tokens = int(data.get("tokens_predicted") or data.get("timings", {}).get("predicted_n", 0))
        return _end(result, parts)


def _begin(live: Stream | None) -> Stream:
    result = live or Stream(sent=0.0)
    result.sent = time.perf_counter()
    return result


def _arrived(stream: Stream, text: str, parts: list[str]) -> None:
    now = time.perf_counter()
    stream.chunk_times.append(now)
    parts.append(text)
    if stream.first is None and text.strip():  # ours drops the reply's leading space: count visible text
        stream.first = now


def _end(stream: Stream, parts: list[str]) -> Stream:
    stream.ended = time.perf_counter()
    stream.text = "".join(parts)
    return stream


# Prompts


class Tokenizer:
    """The GGUF's vocabulary (no weights), tokenizing as our llama.cpp backend does."""

    def __init__(self, gguf: Path) -> None:
        import llama_cpp

        self._llm = llama_cpp.Llama(str(gguf), vocab_only=True, verbose=False)

    def __call__(self, text: str) -> list[int]:
        return list(self._llm.tokenize(text.encode("utf-8"), add_bos=True, special=True))


class Prompts:
    """Distinct prompts: each its own system line and its own list of numbers to continue."""

    def __init__(self) -> None:
        self.count = 0

    def next(self) -> list[ChatMessage]:
        self.count += 1
        start = 1 + 37 * self.count % 500
        numbers = ", ".join(str(start + i) for i in range(4))
        return [ChatMessage("system", f"Request {self.count}."),
                ChatMessage("user", f"Count from {start} to {start + 300}, separated by commas: {numbers},")]

    def long(self, tokenize: Callable[[str], list[int]], target_tokens: int) -> tuple[list[ChatMessage], int]:
        """A prompt of about ``target_tokens`` tokens (a log to summarise), and its exact size."""
        self.count += 1
        lines: list[str] = []
        while True:
            i = len(lines)
            lines.append(f"Entry {i}: {i * 13 % 97} boxes moved from shelf {i % 40} to shelf {i * 7 % 40}.")
            messages = [ChatMessage("system", f"Request {self.count}."),
                        ChatMessage("user", "Here is a log:\n" + "\n".join(lines) + "\nSummarise it.")]
            size = len(tokenize(plain_transcript(messages).text))
            if size >= target_tokens:
                return messages, size


# Measurements


class CpuWatch:
    """How much CPU processes other than the benchmark and its servers take while it measures.

    llama.cpp's threads wait for each other at every step, so a machine shared with other
    work slows it far more than the CPU those take: a run during which others used more than
    ``limit`` of the machine is done again (``retries`` times at most), and every run keeps its
    share for the report.
    """

    def __init__(self, pids: Sequence[int], limit: float, retries: int) -> None:
        self.roots = [psutil.Process(pid) for pid in pids]
        self.limit, self.retries = limit, retries

    def snapshot(self) -> tuple[float, float, float]:
        """Now, the machine's busy CPU seconds (steal included), and ours."""
        t = psutil.cpu_times()
        busy = t.user + t.nice + t.system + t.irq + t.softirq + getattr(t, "steal", 0.0)
        procs: dict[int, psutil.Process] = {}
        for root in self.roots:  # the servers are the benchmark's children too: count each once
            with contextlib.suppress(psutil.Error):
                procs |= {proc.pid: proc for proc in (root, *root.children(recursive=True))}
        ours = 0.0
        for proc in procs.values():
            with contextlib.suppress(psutil.Error):
                used = proc.cpu_times()
                ours += used.user + used.system
        return time.monotonic(), busy, ours

    @staticmethod
    def others_share(before: tuple[float, float, float], after: tuple[float, float, float]) -> float:
        wall, busy, ours = (a - b for a, b in zip(after, before, strict=True))
        return max(0.0, busy - ours) / (wall * (psutil.cpu_count() or 1)) if wall > 0 else 0.0


async def run_level(target: Target, batch: list[list[ChatMessage]], max_tokens: int,
                    watch: CpuWatch, prompts: Prompts) -> tuple[Level, list[str] | None]:
    """The streams of ``batch`` started at once on ``target``: the level, and their texts.

    A run that others disturbed is done again with fresh prompts (a prompt already seen would
    come from the cache); its texts are then None, as they no longer answer ``batch``.
    """
    for attempt in range(watch.retries + 1):
        before = watch.snapshot()
        streams = await asyncio.gather(*(target.stream(m, max_tokens) for m in batch))
        level = level_of(streams)
        level.others_cpu = watch.others_share(before, watch.snapshot())
        if level.others_cpu <= watch.limit or attempt == watch.retries:
            return level, [s.text.strip() for s in streams] if attempt == 0 else None
        _say(f"{target.name}, N={len(batch)}: other processes took {level.others_cpu:.0%} of the CPU; again")
        batch = [prompts.next() for _ in batch]
    raise AssertionError("unreachable")


@dataclass
class Gap:
    """A running stream while a long prompt arrives beside it."""

    long_prompt_tokens: int
    longest_gap_ms: float  # between two chunks of the running stream, while the long prompt was prefilled
    usual_gap_ms: float  # median gap of the running stream before the long prompt was sent
    long_ttft_s: float
    running_ended_first: bool  # the running stream ended before the long prompt's first token
    others_cpu: float = 0.0  # share of the machine's CPU that other processes used meanwhile


async def run_gap(target: Target, running_messages: list[ChatMessage], long_messages: list[ChatMessage],
                  long_tokens: int, head_start_chunks: int = 16) -> Gap:
    """Start one stream; once ``head_start_chunks`` of its chunks arrived, send the long prompt."""
    running = Stream(sent=0.0)
    task = asyncio.create_task(target.stream(running_messages, 512, running))
    while len(running.chunk_times) < head_start_chunks:
        if task.done():
            await task  # raises its error, if any
            raise BenchmarkError(f"{target.name}: the running stream ended after {len(running.chunk_times)} chunks")
        await asyncio.sleep(0.005)
    long_sent = time.perf_counter()
    long_stream = await target.stream(long_messages, 8)
    await task
    prefill_end = long_stream.first or long_stream.ended
    times = running.chunk_times
    during = [b - a for a, b in itertools.pairwise(times) if b > long_sent and a < prefill_end]
    before = [b - a for a, b in itertools.pairwise(times) if b <= long_sent]
    return Gap(
        long_prompt_tokens=long_tokens,
        longest_gap_ms=1000 * max(during, default=0.0),
        usual_gap_ms=1000 * statistics.median(before) if before else 0.0,
        long_ttft_s=long_stream.ttft,
        running_ended_first=running.ended < prefill_end,
    )


def _say(message: str) -> None:
    print(f"[bench] {time.strftime('%H:%M:%S')} {message}", file=sys.stderr, flush=True)


async def measure(args: argparse.Namespace, ours: Ours, llama: LlamaServerTarget, serial: Ours | None,
                  tokenize: Callable[[str], list[int]], watch: CpuWatch) -> dict[str, Any]:
    prompts = Prompts()
    for target in (ours, llama, *([serial] if serial else [])):
        await target.stream(prompts.next(), 8)  # warm up: our API loads its worker on first use
    reported = await ours.parallel()
    results: dict[str, Any] = {"parallel_reported": reported}
    _say(f"parallel reported by our API: {reported if reported is not None else 'not reported'}")

    levels: dict[str, dict[int, list[Level]]] = {t.name: {n: [] for n in args.n} for t in (ours, llama)}
    same_text = {n: [0, 0] for n in args.n}  # streams whose greedy text matched across the two, of all
    for run in range(args.runs):
        for index, n in enumerate(args.n):
            batch = [prompts.next() for _ in range(n)]  # the same prompts for both servers
            order: list[Target] = [ours, llama] if (run + index) % 2 == 0 else [llama, ours]
            texts: dict[str, list[str] | None] = {}
            for target in order:
                level, texts[target.name] = await run_level(target, batch, args.max_tokens, watch, prompts)
                levels[target.name][n].append(level)
                _say(f"run {run + 1}/{args.runs} N={n:<2} {target.name:14} {level.aggregate_tps:6.1f} tok/s, "
                     f"first token max {level.ttft_max_s:5.2f} s, tokens {sum(level.tokens)}, "
                     f"others' CPU {level.others_cpu:.0%}")
            ours_texts, llama_texts = texts[ours.name], texts[llama.name]
            if ours_texts is None or llama_texts is None:
                continue
            pairs = list(zip(ours_texts, llama_texts, strict=True))
            same_text[n][0] += sum(a == b for a, b in pairs)
            same_text[n][1] += n
            differing = [(a, b) for a, b in pairs if a != b]
            if differing and "first_different_texts" not in results:
                results["first_different_texts"] = {ours.name: differing[0][0], llama.name: differing[0][1]}
    results["levels"] = {name: {str(n): [asdict(x) for x in runs] for n, runs in by_n.items()}
                         for name, by_n in levels.items()}
    results["medians"] = {name: {str(n): _median_level(runs) for n, runs in by_n.items()}
                          for name, by_n in levels.items()}
    results["same_greedy_text"] = {str(n): f"{a}/{b}" for n, (a, b) in same_text.items()}

    if serial is not None:
        single: dict[str, list[Level]] = {ours.name: [], serial.name: []}
        for run in range(args.serial_runs):
            batch = [prompts.next()]
            for target in (ours, serial) if run % 2 == 0 else (serial, ours):
                level, _ = await run_level(target, batch, args.max_tokens, watch, prompts)
                single[target.name].append(level)
            _say(f"single stream {run + 1}/{args.serial_runs}: P={args.parallel} "
                 f"{single[ours.name][-1].aggregate_tps:.1f} tok/s, parallel 1 {single[serial.name][-1].aggregate_tps:.1f}")
        results["serial_baseline"] = {name: {"runs": [asdict(x) for x in runs], "median": _median_level(runs)}
                                      for name, runs in single.items()}

    if args.gap:
        gaps: dict[str, list[Gap]] = {ours.name: [], llama.name: []}
        for run in range(args.runs):
            long_messages, long_tokens = prompts.long(tokenize, args.gap_prompt_tokens)
            running = prompts.next()
            for target in (ours, llama) if run % 2 == 0 else (llama, ours):
                before = watch.snapshot()
                gap = await run_gap(target, running, long_messages, long_tokens)
                gap.others_cpu = watch.others_share(before, watch.snapshot())
                gaps[target.name].append(gap)
                _say(f"gap {run + 1}/{args.runs} {target.name:14} longest {gap.longest_gap_ms:6.0f} ms "
                     f"(usual {gap.usual_gap_ms:.0f} ms), long prompt's first token {gap.long_ttft_s:.2f} s, "
                     f"others' CPU {gap.others_cpu:.0%}")
        results["gap"] = {name: {"runs": [asdict(g) for g in runs],
                                 "median_longest_gap_ms": statistics.median(g.longest_gap_ms for g in runs)}
                          for name, runs in gaps.items()}
    return results


# Report


def ratios(results: dict[str, Any], p: int, names: dict[str, str]) -> list[dict[str, Any]]:
    """The issue's ratios, each with its goal and whether it is met (None: not measured)."""
    medians = results["medians"]
    ours, llama = medians[names["ours"]], medians[names["llama"]]

    def value(side: dict[str, Any], n: int, key: str) -> float | None:
        return float(side[str(n)][key]) if str(n) in side else None

    def divide(a: float | None, b: float | None) -> float | None:
        return a / b if a is not None and b else None

    def ratio(what: str, found: float | None, goal: float, op: str = ">=") -> dict[str, Any]:
        tests = {">=": found is not None and found >= goal, "<=": found is not None and found <= goal,
                 "<": found is not None and found < goal}
        return {"what": what, "value": found, "goal": f"{op} {goal:g}", "met": None if found is None else tests[op]}

    found = [
        ratio(f"aggregate tokens/s at N={p}: ours / llama-server",
              divide(value(ours, p, "aggregate_tps"), value(llama, p, "aggregate_tps")),
              GOALS["ours_vs_llama_server_n8"]),
        ratio(f"aggregate tokens/s: ours N={p} / ours N=1",
              divide(value(ours, p, "aggregate_tps"), value(ours, 1, "aggregate_tps")), GOALS["ours_n8_vs_ours_n1"]),
        ratio(f"slowest first token at N={p}: ours / llama-server",
              divide(value(ours, p, "ttft_max_s"), value(llama, p, "ttft_max_s")),
              GOALS["slowest_first_token_n8"], "<="),
    ]
    if "serial_baseline" in results:
        single = results["serial_baseline"]
        found.append(ratio(f"single stream tokens/s: parallel {p} / parallel 1",
                           divide(single[names["ours"]]["median"]["aggregate_tps"],
                                  single[names["serial"]]["median"]["aggregate_tps"]),
                           GOALS["single_stream_parallel_vs_serial"]))
    if "gap" in results:
        found.append(ratio("longest gap of a running stream during a long prefill, ours (ms)",
                           float(results["gap"][names["ours"]]["median_longest_gap_ms"]), GOALS["gap_ms"], "<"))
    return found


def report(results: dict[str, Any], names: dict[str, str]) -> None:
    s = results["settings"]
    machine = results["machine"]
    print(f"\n{GGUF_NAME}, greedy, max_tokens {s['max_tokens']}, P={s['parallel']}, {s['n_threads']} threads, "
          f"{machine['cpus']} cores (load average {machine['load_average_before']:.1f} before, "
          f"{machine['load_average_after']:.1f} after); {s['runs']} runs per level, medians")
    reported = results["parallel_reported"]
    print(f"our API reports parallel = {reported}" if reported is not None else
          "our API does not report parallel: its worker serves one request at a time (the 'before' picture)")
    print(f"llama-server from llama-cpp-python {s['llama_server_version']}: {' '.join(s['llama_server_args'])}")
    for line in results["llama_server_log"]["slots"]:
        print(f"    {line}")
    print()
    print("| server | N | aggregate tok/s | median stream tok/s | first token p50 | first token max | tokens "
          "| others' CPU |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for name, by_n in results["medians"].items():
        for n, m in by_n.items():
            print(f"| {name} | {n} | {m['aggregate_tps']:.1f} | {m['median_stream_tps']:.1f} | "
                  f"{m['ttft_p50_s']:.2f} s | {m['ttft_max_s']:.2f} s | {m['tokens']:.0f} | {m['others_cpu']:.0%} |")
    print(f"\nstreams with the same greedy text on both servers, by N: {results['same_greedy_text']}")
    if "serial_baseline" in results:
        single = results["serial_baseline"]
        print(f"single stream, {s['serial_runs']} alternating runs: parallel {s['parallel']} "
              f"{single[names['ours']]['median']['aggregate_tps']:.1f} tok/s, parallel 1 "
              f"{single[names['serial']]['median']['aggregate_tps']:.1f} tok/s")
    if "gap" in results:
        print("\n| server | long prompt tokens | longest gap in the running stream | its usual gap | "
              "long prompt's first token | running stream ended first |")
        print("| --- | --- | --- | --- | --- | --- |")
        for name, gap in results["gap"].items():
            runs = gap["runs"]
            print(f"| {name} | {runs[0]['long_prompt_tokens']} | {gap['median_longest_gap_ms']:.0f} ms | "
                  f"{statistics.median(r['usual_gap_ms'] for r in runs):.0f} ms | "
                  f"{statistics.median(r['long_ttft_s'] for r in runs):.2f} s | "
                  f"{sum(r['running_ended_first'] for r in runs)}/{len(runs)} |")
    print("\n| ratio | value | goal | |\n| --- | --- | --- | --- |")
    for r in results["ratios"]:
        shown = "not measured" if r["value"] is None else f"{r['value']:.2f}"
        print(f"| {r['what']} | {shown} | {r['goal']} | {'' if r['met'] is None else 'ok' if r['met'] else 'MISSED'} |")


# Entry point


async def _measure_servers(args: argparse.Namespace, urls: dict[str, str], names: dict[str, str],
                           tokenize: Tokenizer, watch: CpuWatch) -> dict[str, Any]:
    ours = Ours(urls["ours"], names["ours"])
    llama = LlamaServerTarget(urls["llama"], tokenize)
    serial = Ours(urls["serial"], names["serial"]) if "serial" in urls else None
    try:
        return await measure(args, ours, llama, serial, tokenize, watch)
    finally:
        for target in (ours, llama, serial):
            if target is not None:
                await target.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parallel", type=int, default=8, help="P: LLMCHAT_PARALLEL and llama-server's -np")
    parser.add_argument("--n", type=lambda text: [int(x) for x in text.split(",")], default=[1, 2, 4, 8, 16],
                        help="concurrent streams per level, comma-separated")
    parser.add_argument("--runs", type=int, default=3, help="runs of each level (and of --gap)")
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--serial-baseline", action=argparse.BooleanOptionalAction, default=True,
                        help="also time single streams on an API with LLMCHAT_PARALLEL=1")
    parser.add_argument("--serial-runs", type=int, default=5, help="alternating single-stream runs per side")
    parser.add_argument("--gap", action="store_true", help="also measure a running stream's gap during a long prefill")
    parser.add_argument("--gap-prompt-tokens", type=int, default=2000)
    parser.add_argument("--max-others-cpu", type=float, default=0.2,
                        help="do a run again when other processes took more than this share of the CPU")
    parser.add_argument("--retries", type=int, default=2, help="most repeats of a disturbed run")
    parser.add_argument("--llama-server-args", default="", help="extra llama-server flags, e.g. '-fa off'")
    parser.add_argument("--server-logs", action="store_true", help="show our API's output (llama-server's goes to a log)")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args()

    settings = RuntimeSettings()
    gguf = settings.models_dir / GGUF_NAME
    if not gguf.is_file():
        raise SystemExit(f"{gguf} is missing: python -m runtime.default_model --gguf-only")
    binary = ensure_llama_server()
    tokenize = Tokenizer(gguf)
    p, threads = args.parallel, settings.n_threads
    # Our worker's queue must hold every stream of a level: a 429 would void the run.
    common = {"n_threads": str(threads), "max_queue": str(max(64, 4 * max(args.n)))}
    homes = [Path(tempfile.mkdtemp(prefix="llmchat-bench-")) for _ in range(2)]  # throw-away databases and logs
    # Local mode: what is measured is batching (loopback only; accounts cost one lookup a request).
    api = ApiServer(homes[0], settings.models_dir, auth="off", parallel=str(p), **common)
    serial_api = ApiServer(homes[1], settings.models_dir, auth="off", parallel="1", **common)
    llama_args = ["-m", str(gguf), "-np", str(p), "-c", str(p * CONTEXT_PER_SEQUENCE), "-t", str(threads),
                  *shlex.split(args.llama_server_args)]
    llama = LlamaServer(binary, llama_args, Path(tempfile.mkdtemp(prefix="llmchat-bench-")) / "llama-server.log")
    names = {"ours": f"ours (P={p})", "llama": "llama-server", "serial": "ours (parallel 1)"}
    servers: list[ApiServer | LlamaServer] = [api, llama, *([serial_api] if args.serial_baseline else [])]
    urls = {"ours": api.url, "llama": llama.url, **({"serial": serial_api.url} if args.serial_baseline else {})}
    load_before = os.getloadavg()
    probe = CpuWatch([os.getpid()], args.max_others_cpu, 0)
    first = probe.snapshot()
    time.sleep(2)
    if (busy := probe.others_share(first, probe.snapshot())) > args.max_others_cpu:
        _say(f"other processes take {busy:.0%} of the CPU now: disturbed runs will be done again, "
             f"up to {args.retries} times each")
    started: list[ApiServer | LlamaServer] = []
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop the servers on a kill too
    try:
        for server in servers:
            if isinstance(server, LlamaServer):
                server.start()
            else:
                server.start(quiet=not args.server_logs)
            started.append(server)
        pids = [os.getpid(), *(server.process.pid for server in started if server.process is not None)]
        watch = CpuWatch(pids, args.max_others_cpu, args.retries)
        results = asyncio.run(_measure_servers(args, urls, names, tokenize, watch))
    finally:
        for server in reversed(started):
            server.stop()
        for home in homes:
            shutil.rmtree(home, ignore_errors=True)
    results["llama_server_log"] = {"path": str(llama.log), "slots": llama.logged("n_slots =")}
    results["settings"] = {
        "parallel": p, "n": args.n, "runs": args.runs, "max_tokens": args.max_tokens, "n_threads": threads,
        "serial_runs": args.serial_runs if args.serial_baseline else 0, "gguf": GGUF_NAME,
        "llama_server_version": installed_version(), "llama_server_args": [binary.name, *llama_args[2:]],
    }
    results["machine"] = {"cpus": os.cpu_count(), "platform": platform.platform(), "processor": platform.processor(),
                          "date": time.strftime("%Y-%m-%d %H:%M"), "load_average_before": load_before[0],
                          "load_average_after": os.getloadavg()[0]}
    results["ratios"] = ratios(results, p, names)
    report(results, names)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2), encoding="utf-8")
        print(f"\nresults written to {args.json}")


if __name__ == "__main__":
    main()
