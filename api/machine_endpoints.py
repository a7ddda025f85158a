"""``GET /machine``: the shared machine for every signed-in user, and who holds what for administrators.

The bodies are here rather than in :mod:`api.schemas` because only this route uses them;
:class:`api.schemas.Holder` is shared with the admin workers list.
"""

from __future__ import annotations

import time
from typing import Literal

from pydantic import BaseModel, Field
from quart import Blueprint
from quart_schema import validate_response

from api.auth import current_identity
from api.holders import holders_of
from api.machine import Sample, Sampler, memory_kind, sampler
from api.schemas import DeviceName, Holder, RunningOn
from api.services import services
from runtime.interface import WorkerInfo, WorkerKey

blueprint = Blueprint("machine", __name__)


class MachineModel(BaseModel):
    """A loaded model's worker as it is now."""

    model: str
    backend: str
    device: DeviceName = Field(description="The device its load asked for.")
    running_on: RunningOn = Field(description="What it runs on.")
    node: str | None = Field(None, description="The machine it runs on (Ray runtime); null: the API's.")
    memory_mb: float | None = Field(
        description="Memory it holds: resident RAM of its process, or on CUDA the GPU memory NVML charges to it "
                    "(from the newest sample); null when it cannot be measured."
    )
    memory_kind: Literal["RAM", "VRAM"]
    running: int = Field(description="Replies being generated now.")
    queued: int = Field(description="Requests waiting for a free slot.")
    parallel: int = Field(description="Replies it generates at once.")
    idle_s: float = Field(description="Seconds since it last served a request (0 while busy).")
    idle_unload_s: float = Field(description="It is unloaded after this long unused (0: never).")
    idle_unload_in_s: float | None = Field(
        description="Seconds left before it is unloaded for being idle; null while busy or when it never is."
    )
    holders: list[Holder] | None = Field(
        None, description="Administrators only: each chat that holds it with its owner, and users of /v1; "
                          "null for everyone else."
    )


class ModelRate(BaseModel):
    """One model's tokens per second (all its workers together), one value per timestamp."""

    model: str
    values: list[float | None] = Field(description="Tokens streamed per second over the interval before each "
                                                   "timestamp; null where the model was not loaded.")


class WorkerSeries(BaseModel):
    """One worker's memory and queue, one value per timestamp (null where it was not loaded)."""

    model: str
    device: DeviceName
    backend: str
    memory_kind: Literal["RAM", "VRAM"]
    memory_mb: list[float | None]
    queued: list[int | None]


class MachineSeries(BaseModel):
    """The sampled past, oldest first: every list lines up with ``timestamps``."""

    interval_s: float = Field(description="Seconds between samples (LLMCHAT_MACHINE_SAMPLE_S).")
    window_s: float = Field(description="How far back the samples go at most.")
    timestamps: list[float] = Field(description="Unix time of each sample.")
    queued: list[int] = Field(description="Requests waiting for a slot, every model together.")
    running: list[int] = Field(description="Replies being generated, every model together.")
    tokens_per_s: list[ModelRate]
    workers: list[WorkerSeries]


class MachineOut(BaseModel):
    at: float = Field(description="Unix time of this answer.")
    models: list[MachineModel]
    series: MachineSeries


@blueprint.get("/machine")
@validate_response(MachineOut)
async def machine() -> MachineOut:
    """The shared machine: the loaded models now, and the last 15 minutes sampled.

    Each loaded model's worker with its backend, device, memory, running and queued requests
    and the time left before its idle unload; every ``LLMCHAT_MACHINE_SAMPLE_S`` seconds
    tokens/s per model, memory and queue per worker, and the total queue. Every signed-in
    user sees these; administrators also see who holds each worker.
    """
    admin = current_identity().admin
    recorder = sampler()
    workers = await services().runtime.workers()
    memory = await recorder.memory_now(workers)
    models = [_model(w, memory.get(w.key), await holders_of(w) if admin else None) for w in workers]
    return MachineOut(at=time.time(), models=models, series=_series(recorder.recent(), recorder))


def _model(w: WorkerInfo, memory_mb: float | None, holders: list[Holder] | None) -> MachineModel:
    busy = w.running > 0 or w.queued > 0
    left = None if busy or w.idle_unload_s <= 0 else round(max(0.0, w.idle_unload_s - w.idle_s), 1)
    return MachineModel(
        model=w.key.model, backend=w.key.backend, device=w.key.requested_device, running_on=w.running_on,
        node=w.node, memory_mb=memory_mb, memory_kind=memory_kind(w), running=w.running, queued=w.queued, parallel=w.parallel,
        idle_s=round(w.idle_s, 1), idle_unload_s=w.idle_unload_s, idle_unload_in_s=left, holders=holders,
    )


def _series(samples: list[Sample], recorder: Sampler) -> MachineSeries:
    models = sorted({m for s in samples for m in s.tokens_per_s})
    keys: list[WorkerKey] = []
    for s in samples:
        keys.extend(w.key for w in s.workers if w.key not in keys)
    by_sample = [{w.key: w for w in s.workers} for s in samples]
    workers = []
    for key in keys:
        seen = [at.get(key) for at in by_sample]
        kind = next(w.memory_kind for w in reversed(seen) if w is not None)
        workers.append(WorkerSeries(
            model=key.model, device=key.requested_device, backend=key.backend, memory_kind=kind,
            memory_mb=[None if w is None else w.memory_mb for w in seen],
            queued=[None if w is None else w.queued for w in seen],
        ))
    return MachineSeries(
        interval_s=recorder.interval_s, window_s=recorder.window_s,
        timestamps=[round(s.at, 3) for s in samples],
        queued=[s.queued for s in samples], running=[s.running for s in samples],
        tokens_per_s=[ModelRate(model=m, values=[s.tokens_per_s.get(m) for s in samples]) for m in models],
        workers=workers,
    )
