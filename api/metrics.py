"""Prometheus metrics (prometheus-client), served by ``GET /metrics``.

Runtime state (loaded workers, queue depths, worker deaths) is read when scraped;
per-reply and per-load figures are observed as they happen.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from runtime.interface import ModelRuntime, WorkerInfo


class _RuntimeCollector(Collector):
    def __init__(self, runtime: ModelRuntime) -> None:
        self._runtime = runtime

    def collect(self) -> Iterator[Metric]:
        workers = self._runtime.workers()
        yield GaugeMetricFamily("llmchat_loaded_workers", "Model worker processes running.", value=len(workers))
        depth = GaugeMetricFamily(
            "llmchat_queue_depth", "Requests waiting for a worker.", labels=["model", "device", "backend"]
        )
        for w in workers:
            depth.add_metric([w.key.model, w.key.requested_device, w.key.backend], w.queued)
        yield depth
        yield CounterMetricFamily(
            "llmchat_worker_deaths", "Workers that died instead of being unloaded.", value=self._runtime.worker_deaths()
        )


class Metrics:
    """The app's own registry, so several apps in one process never share series."""

    def __init__(self, runtime: ModelRuntime) -> None:
        self.registry = CollectorRegistry()
        self.registry.register(_RuntimeCollector(runtime))
        self.tokens = Counter("llmchat_tokens_generated", "Completion tokens generated.", ["model"],
                              registry=self.registry)
        self.replies = Counter("llmchat_replies", "Replies by final status.", ["status"], registry=self.registry)
        self.ttft = Histogram("llmchat_time_to_first_token_seconds", "Time to the first token of a reply.",
                              ["model"], registry=self.registry,
                              buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30))
        self.tps = Histogram("llmchat_tokens_per_second", "Generation speed of a reply.", ["model"],
                             registry=self.registry, buckets=(1, 2, 5, 10, 20, 30, 50, 100, 200, 500))
        self.loads = Histogram("llmchat_load_seconds", "Time to load a model into a new worker.", ["model"],
                               registry=self.registry, buckets=(0.5, 1, 2, 5, 10, 30, 60, 120, 300))

    def observe_reply(self, model: str, status: str, tokens: int, ttft_s: float, tokens_per_s: float) -> None:
        self.replies.labels(status).inc()
        self.tokens.labels(model).inc(tokens)
        if status == "complete":
            self.ttft.labels(model).observe(ttft_s)
            self.tps.labels(model).observe(tokens_per_s)

    def observe_load(self, worker: WorkerInfo) -> None:
        self.loads.labels(worker.key.model).observe(worker.load_time_s)


def render(recorder: Metrics) -> tuple[bytes, str]:
    """The scrape body and its content type."""
    return generate_latest(recorder.registry), CONTENT_TYPE_LATEST
