"""Prometheus metrics (prometheus-client), served by ``GET /metrics``.

Runtime state (loaded workers, their running replies, slots and queue depths, worker
deaths) is read when scraped: :func:`render` awaits it from the runtime into a snapshot
just before the exposition, because prometheus-client calls collectors synchronously and
the runtime's accessors are coroutines. Per-reply figures (queue wait, batch size, speed)
and per-load figures are observed as they happen.
"""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Iterator

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from runtime.interface import ModelRuntime, Queued, WorkerInfo


class _RuntimeCollector(Collector):
    """Reports the runtime as of the last :meth:`refresh` (nothing loaded before the first)."""

    def __init__(self, runtime: ModelRuntime) -> None:
        self._runtime = runtime
        self._workers: list[WorkerInfo] = []
        self._deaths = 0

    async def refresh(self) -> None:
        """Read the runtime's state now, for the next :meth:`collect`."""
        self._workers = await self._runtime.workers()
        self._deaths = await self._runtime.worker_deaths()

    def collect(self) -> Iterator[Metric]:
        workers = self._workers
        yield GaugeMetricFamily("llmchat_loaded_workers", "Model worker processes running.", value=len(workers))
        labels = ["model", "device", "backend"]
        depth = GaugeMetricFamily("llmchat_queue_depth", "Requests waiting for a free slot of a worker.", labels=labels)
        running = GaugeMetricFamily("llmchat_running_sequences", "Replies a worker is generating now.", labels=labels)
        slots = GaugeMetricFamily("llmchat_parallel_slots", "Replies a worker can generate at once.", labels=labels)
        for w in workers:
            key = [w.key.model, w.key.requested_device, w.key.backend]
            depth.add_metric(key, w.queued)
            running.add_metric(key, w.running)
            slots.add_metric(key, w.parallel)
        yield depth
        yield running
        yield slots
        yield CounterMetricFamily(
            "llmchat_worker_deaths", "Workers that died instead of being unloaded.", value=self._deaths
        )


class Metrics:
    """The app's own registry, so several apps in one process never share series."""

    def __init__(self, runtime: ModelRuntime) -> None:
        self.registry = CollectorRegistry()
        self._state = _RuntimeCollector(runtime)
        self.registry.register(self._state)
        self.tokens = Counter("llmchat_tokens_generated", "Completion tokens generated.", ["model"],
                              registry=self.registry)
        self.replies = Counter("llmchat_replies", "Replies by final status.", ["status"], registry=self.registry)
        self.ttft = Histogram("llmchat_time_to_first_token_seconds", "Time to the first token of a reply.",
                              ["model"], registry=self.registry,
                              buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30))
        self.tps = Histogram("llmchat_tokens_per_second", "Generation speed of a reply.", ["model"],
                             registry=self.registry, buckets=(1, 2, 5, 10, 20, 30, 50, 100, 200, 500))
        self.queue_wait = Histogram("llmchat_queue_wait_seconds", "Time a request waited for a free slot.",
                                    ["model"], registry=self.registry,
                                    buckets=(0, 0.05, 0.25, 1, 2.5, 5, 10, 30, 60, 120))
        self.batch = Histogram("llmchat_batch_size", "Replies generating together when a reply started, itself included.",
                               ["model"], registry=self.registry, buckets=(1, 2, 4, 8, 16, 32, 64))
        # Tokens per model as they stream (every reply, /chat and /v1): the Machine page's tokens/s.
        self.streamed: Tally[str] = Tally()
        self.loads = Histogram("llmchat_load_seconds", "Time to load a model into a new worker.", ["model"],
                               registry=self.registry, buckets=(0.5, 1, 2, 5, 10, 30, 60, 120, 300))

    async def refresh(self) -> None:
        """Read the runtime's state for the next exposition of :attr:`registry`."""
        await self._state.refresh()

    def observe_reply(self, model: str, status: str, tokens: int, ttft_s: float, tokens_per_s: float) -> None:
        self.replies.labels(status).inc()
        self.tokens.labels(model).inc(tokens)
        if status == "complete":
            self.ttft.labels(model).observe(ttft_s)
            self.tps.labels(model).observe(tokens_per_s)

    def observe_token(self, model: str) -> None:
        """One token of a reply in progress reached its client."""
        self.streamed[model] += 1

    def observe_start(self, model: str, started: Queued) -> None:
        """A reply got its slot: how long it waited, and how many replies now run together."""
        self.queue_wait.labels(model).observe(started.waited_s)
        self.batch.labels(model).observe(started.batch)

    def observe_load(self, worker: WorkerInfo) -> None:
        self.loads.labels(worker.key.model).observe(worker.load_time_s)


async def render(recorder: Metrics) -> tuple[bytes, str]:
    """The scrape body and its content type, with the runtime's state read now."""
    await recorder.refresh()
    # No await between the refresh and the exposition, so no other scrape's refresh lands in between.
    return generate_latest(recorder.registry), CONTENT_TYPE_LATEST
