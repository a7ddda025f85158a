"""Waves of the Transformers backend, driven in-process through submit, step and cancel.

Both the Transformers checkpoint and its ONNX export run, since the ONNX backend shares the
Transformers backend's decode loop and differs in its cache. The int8 export, whose rows
would change each other's quantisation, serves one row at a time.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from runtime.backends.base import Output
from runtime.backends.hf import TransformersBackend
from runtime.backends.ort import OnnxBackend
from runtime.default_model import ONNX_INT8_NAME, ONNX_NAME, TRANSFORMERS_NAME
from runtime.errors import ContextOverflow
from runtime.protocol import ChatMessage, Failed, Finished, Generate, GenerationParams, TokenChunk, WorkerSpec
from runtime.settings import PROJECT_ROOT

GREEDY = GenerationParams(max_new_tokens=16, temperature=0)
# Distinct lengths (prompts of 94, 101 and 128 tokens, so two rows are padded) and distinct
# ends: a stop sequence after 5 tokens, one after 13, the token budget.
PROMPTS = {
    "france": "What is the capital of France?",
    "colours": "List three primary colours and explain why they are called primary in painting.",
    "count": "Continue: 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12,",
}
BACKENDS = {"transformers": (TransformersBackend, TRANSFORMERS_NAME), "onnx": (OnnxBackend, ONNX_NAME)}
MODELS = PROJECT_ROOT / "models"


@dataclass
class Replies:
    """What steps sent, by request id."""

    texts: dict[str, str] = field(default_factory=dict)
    finished: dict[str, Finished] = field(default_factory=dict)
    steps: int = 0

    def take(self, outputs: list[Output]) -> None:
        for output in outputs:
            assert not isinstance(output, Failed), output
            assert output.request_id not in self.finished, f"{output} after its Finished"
            if isinstance(output, TokenChunk):
                self.texts[output.request_id] = self.texts.get(output.request_id, "") + output.text
            else:
                self.finished[output.request_id] = output


def request(name: str, params: GenerationParams = GREEDY) -> Generate:
    return Generate(name, (ChatMessage("user", PROMPTS[name]),), params)


def run(backend: TransformersBackend, replies: Replies, steps: int | None = None) -> Replies:
    """Step until the backend has no work left, or ``steps`` times."""
    while backend.has_work and (steps is None or steps > 0):
        replies.take(backend.step())
        replies.steps += 1
        steps = None if steps is None else steps - 1
    return replies


def spec(name: str, kind: str) -> WorkerSpec:
    """Four rows at once from a model of the models folder (the test skips if it is missing)."""
    if not (MODELS / name).is_dir():
        pytest.skip(f"{name} is missing: run deploy/local.sh setup")
    return WorkerSpec(str(MODELS / name), kind, "cpu", n_ctx=2048, n_threads=2, parallel=4)


@pytest.fixture(scope="module", params=sorted(BACKENDS))
def backend(request: pytest.FixtureRequest) -> Iterator[TransformersBackend]:
    kind, cls, name = request.param, *BACKENDS[request.param]
    loaded_backend = cls()
    assert loaded_backend.load(spec(name, kind)).parallel == 4
    yield loaded_backend
    loaded_backend.close()


@pytest.fixture(scope="module")
def alone(backend: TransformersBackend) -> dict[str, Replies]:
    """Each prompt's greedy reply, generated on its own."""
    replies = {}
    for name in PROMPTS:
        backend.submit(request(name))
        replies[name] = run(backend, Replies())
    return replies


def test_a_batch_gives_each_greedy_reply_it_gives_alone(
    backend: TransformersBackend, alone: dict[str, Replies]
) -> None:
    for name in PROMPTS:
        backend.submit(request(name))
    together = run(backend, Replies())
    assert together.texts == {name: alone[name].texts[name] for name in PROMPTS}
    for name in PROMPTS:
        mine, theirs = together.finished[name], alone[name].finished[name]
        assert mine.finish_reason == theirs.finish_reason
        assert mine.metrics.prompt_tokens == theirs.metrics.prompt_tokens
        assert mine.metrics.completion_tokens == theirs.metrics.completion_tokens
    assert {f.finish_reason for f in together.finished.values()} == {"stop", "length"}
    # One wave: every step advanced every live row, so it lasted as long as its longest row.
    assert together.steps == max(replies.steps for replies in alone.values())


def test_cancelling_one_row_leaves_the_others_complete(
    backend: TransformersBackend, alone: dict[str, Replies]
) -> None:
    for name in PROMPTS:
        backend.submit(request(name))
    replies = run(backend, Replies(), steps=3)
    aborted = backend.cancel("colours")
    assert isinstance(aborted, Finished) and aborted.finish_reason == "aborted"
    assert aborted.metrics.completion_tokens == 3
    assert backend.cancel("colours") is None
    run(backend, replies)
    assert "colours" not in replies.finished
    assert replies.texts["colours"] == alone["colours"].texts["colours"][: len(replies.texts["colours"])]
    for name in ("france", "count"):
        assert replies.texts[name] == alone[name].texts[name]
        assert replies.finished[name].finish_reason == alone[name].finished[name].finish_reason


def test_a_row_that_hits_its_stop_sequence_ends_while_the_others_go_on(
    backend: TransformersBackend, alone: dict[str, Replies]
) -> None:
    count = alone["count"].texts["count"]
    assert "3," in count
    backend.submit(request("count", GenerationParams(max_new_tokens=16, temperature=0, stop=("3,",))))
    backend.submit(request("colours"))
    replies = run(backend, Replies())
    assert replies.texts["count"] == count[: count.index("3,")]
    assert replies.finished["count"].finish_reason == "stop"
    assert replies.texts["colours"] == alone["colours"].texts["colours"]
    stopped = replies.finished["count"].metrics.completion_tokens
    assert stopped < replies.finished["colours"].metrics.completion_tokens


def test_sampling_settings_split_waves_and_a_seed_repeats_a_reply(backend: TransformersBackend) -> None:
    sampled = GenerationParams(max_new_tokens=8, temperature=0.8, top_p=0.9, seed=7)
    backend.submit(request("france", GenerationParams(max_new_tokens=8, temperature=0)))
    backend.submit(request("count", sampled))
    backend.submit(request("colours", GenerationParams(max_new_tokens=8, temperature=0, top_p=0.5)))
    replies = run(backend, Replies())
    order = list(replies.finished)
    assert order.index("count") == 2  # the greedy pair ran first, whatever their top_p
    backend.submit(request("count", sampled))
    assert run(backend, Replies()).texts["count"] == replies.texts["count"]


def test_a_prompt_that_fills_the_context_is_refused_at_submit(backend: TransformersBackend) -> None:
    flood = Generate("flood", (ChatMessage("user", "word " * 40_000),), GREEDY)
    with pytest.raises(ContextOverflow, match="32768-token context"):
        backend.submit(flood)
    assert not backend.has_work


def test_a_dynamically_quantised_export_serves_one_row_at_a_time() -> None:
    int8 = OnnxBackend()
    assert int8.load(spec(ONNX_INT8_NAME, "onnx")).parallel == 1
    int8.close()
