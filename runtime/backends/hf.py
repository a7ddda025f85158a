"""Transformers (torch) backend: ``AutoModelForCausalLM`` on CPU, or CUDA in fp16/bf16.

Concurrent requests are generated together in waves (static batches). When no wave runs,
up to ``parallel`` waiting requests that share their sampling settings (temperature and
top_p; the oldest waiting request picks them) start one, their prompts left-padded to the
longest under an attention mask. Each step runs the model once over the wave: the prompts
at its first step, then one token per row, so every live row gets its next token. A row
ends on EOS, a stop sequence, its token budget or an abort, and leaves the batch (and the
cache) at once; when the last row has ended the next wave starts. Requests that arrive
while a wave runs wait for the next one.

Why waves and not requests joining a running batch: a newcomer would need its prompt
prefilled beside the others' single tokens and its cache padded and spliced into theirs,
which neither a ``DynamicCache`` nor the ONNX export's cache offers. Transformers' own
continuous batching (``init_continuous_batching``/``generate_batch``, experimental in the
pinned 4.57.6) does not fit either: it takes one ``GenerationConfig`` for all its requests
(no per-request temperature, top_p or seed), needs a paged-attention model, runs its own
thread, fails on CPU (it sizes its paged cache from GPU memory, and the CPU has none to
report), and knows nothing of Optimum's ONNX models, which share this decode loop.
"""

from __future__ import annotations

import inspect
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from jinja2 import TemplateError
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    LogitsProcessorList,
    PreTrainedTokenizerBase,
    TemperatureLogitsWarper,
    TopPLogitsWarper,
)

from runtime.backends.base import Backend, Loaded, Output, Track, resolve_device
from runtime.errors import ContextOverflow, GenerationFailed, ModelLoadFailed, ModelRuntimeError
from runtime.prompt import Prompt, StopFilter, merge_system_into_user, plain_transcript
from runtime.protocol import ChatMessage, Finished, FinishReason, Generate, GenerationParams, WorkerSpec

# A row adds little to a step (ONNX fp32 on 2 CPU cores: 150 ms a step for 1 row, 250 ms
# for 8, 350 ms for 16), but each prompt is padded to the wave's longest, so a wave's first
# step costs rows x its longest prompt and every row of it waits that long for its first
# token, as do requests that arrive meanwhile, for the whole wave.
MAX_PARALLEL = 8
_PAD_ID = 0  # left padding sits under a zero attention mask: any token id will do


@dataclass(eq=False, slots=True)
class _Row:
    """One request's state while it waits and while it generates."""

    track: Track
    prompt: list[int]
    params: GenerationParams
    max_new: int
    decoder: _IncrementalDecoder
    stops: StopFilter
    generator: torch.Generator | None  # sampling only


@dataclass(eq=False, slots=True)
class _Wave:
    """Rows generated together: their next input, attention mask and cache."""

    rows: list[_Row]
    inputs: torch.Tensor  # (rows, n): what the next forward reads
    mask: torch.Tensor  # (rows, cached + n)
    warpers: LogitsProcessorList | None  # None: greedy
    past: Any = None


def _sampling(params: GenerationParams) -> tuple[float, float]:
    """The settings a wave's rows share; greedy requests share one whatever their top_p."""
    return (params.temperature, params.top_p) if params.temperature > 0 else (0.0, 1.0)


class TransformersBackend(Backend):
    """Serves a Transformers checkpoint folder."""

    def __init__(self) -> None:
        self._model: Any = None
        self._tokenizer: PreTrainedTokenizerBase | None = None
        self._device = "cpu"
        self._context_length = 0
        self._eos_ids: set[int] = set()
        self._parallel = 1
        self._forward_kwargs: dict[str, Any] = {}
        self._waiting: deque[_Row] = deque()
        self._wave: _Wave | None = None

    # Hooks the ONNX backend overrides.

    def _cuda_available(self) -> tuple[bool, str]:
        return torch.cuda.is_available(), "torch.cuda.is_available() is False in the worker"

    def _load_model(self, path: str, device: str, spec: WorkerSpec) -> Any:
        if device == "cuda":
            if spec.gpu_memory_fraction is not None:
                torch.cuda.set_per_process_memory_fraction(spec.gpu_memory_fraction, 0)
            dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
            return AutoModelForCausalLM.from_pretrained(path, dtype=dtype).to("cuda").eval()
        return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()

    def _max_parallel(self, path: str) -> int:
        """The most rows a wave of this model may hold."""
        return MAX_PARALLEL

    def _select_rows(self, past: Any, index: torch.Tensor) -> Any:
        """The cache narrowed to the rows at ``index`` (here a ``DynamicCache``, in place)."""
        past.batch_select_indices(index)
        return past

    # Backend interface.

    def load(self, spec: WorkerSpec) -> Loaded:
        torch.set_num_threads(spec.n_threads)
        available, hint = self._cuda_available()
        self._device = resolve_device(spec.device, available, hint)
        try:
            # transformers 4.57.6 warns about a Mistral regex for any local checkpoint saved by
            # 4.57.3+, whatever its model; saying so explicitly silences that false alarm.
            self._tokenizer = AutoTokenizer.from_pretrained(spec.model_path, fix_mistral_regex=False)
            self._model = self._load_model(spec.model_path, self._device, spec)
        except ModelRuntimeError:
            raise
        except torch.cuda.OutOfMemoryError as exc:
            raise ModelLoadFailed(f"out of GPU memory while loading: {exc}") from exc
        except Exception as exc:  # noqa: BLE001 - any library failure is a failed load
            raise ModelLoadFailed(f"{type(exc).__name__}: {exc}") from exc
        config = self._model.config
        text_config = getattr(config, "text_config", None) or config
        self._context_length = int(
            getattr(text_config, "max_position_embeddings", None) or spec.n_ctx
        )
        eos = getattr(self._model.generation_config, "eos_token_id", None)
        self._eos_ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
        if self._tokenizer.eos_token_id is not None:
            self._eos_ids.add(self._tokenizer.eos_token_id)
        # As generate() does: where the model can, it computes logits for the last position
        # only, not a 262k-word vocabulary row for every prompt token.
        if "logits_to_keep" in inspect.signature(self._model.forward).parameters:
            self._forward_kwargs = {"logits_to_keep": 1}
        self._parallel = min(spec.parallel, self._max_parallel(spec.model_path))
        return Loaded(self._device, self._context_length, bool(self._tokenizer.chat_template), self._parallel)

    def render(self, messages: Sequence[ChatMessage]) -> Prompt:
        tokenizer = self._require_tokenizer()
        if not tokenizer.chat_template:
            return plain_transcript(messages)
        try:
            text = self._apply_template(tokenizer, messages)
        except TemplateError:  # e.g. templates that reject a system role
            text = self._apply_template(tokenizer, merge_system_into_user(messages))
        return Prompt(text, (), templated=True)

    def count_tokens(self, messages: Sequence[ChatMessage]) -> int:
        return len(self._encode(self.render(messages)))

    def submit(self, request: Generate) -> None:
        prompt = self.render(request.messages)
        ids = self._encode(prompt)
        room = self._context_length - len(ids)
        if room <= 0:
            raise ContextOverflow(
                f"prompt of {len(ids)} tokens fills the {self._context_length}-token context"
            )
        params = request.params
        track = Track(request.request_id)
        track.usage.prompt_tokens = len(ids)
        self._waiting.append(
            _Row(
                track,
                ids,
                params,
                min(params.max_new_tokens, room),
                _IncrementalDecoder(self._require_tokenizer()),
                StopFilter((*prompt.stops, *params.stop)),
                self._generator(params),
            )
        )

    def cancel(self, request_id: str) -> Output | None:
        for row in self._waiting:
            if row.track.request_id == request_id:
                self._waiting.remove(row)
                return None
        running = self._wave.rows if self._wave is not None else []
        for row in running:
            if row.track.request_id == request_id:
                self._keep([r for r in running if r is not row])
                return row.track.finished("aborted")
        return None

    @property
    def has_work(self) -> bool:
        return self._wave is not None or bool(self._waiting)

    def step(self) -> list[Output]:
        wave = self._wave or self._start_wave()
        try:
            tokens = self._next_tokens(wave)
        except Exception as exc:  # noqa: BLE001 - fails this wave's requests; the worker lives on
            self._wave = None
            return [row.track.failed(exc) for row in wave.rows]
        outputs: list[Output] = []
        live: list[_Row] = []
        for row, token in zip(wave.rows, tokens.tolist(), strict=True):
            produced = self._advance(row, token)
            outputs += produced
            if not (produced and isinstance(produced[-1], Finished)):
                live.append(row)
        self._keep(live)
        return outputs

    # Helpers.

    def _start_wave(self) -> _Wave:
        sampling = _sampling(self._waiting[0].params)
        rows = [row for row in self._waiting if _sampling(row.params) == sampling][: self._parallel]
        for row in rows:
            self._waiting.remove(row)
        width = max(len(row.prompt) for row in rows)
        padded = [[_PAD_ID] * (width - len(row.prompt)) + row.prompt for row in rows]
        mask = [[0] * (width - len(row.prompt)) + [1] * len(row.prompt) for row in rows]
        temperature, top_p = sampling
        warpers = None
        if temperature > 0:
            warpers = LogitsProcessorList([TemperatureLogitsWarper(temperature)])
            if top_p < 1:
                warpers.append(TopPLogitsWarper(top_p))
        self._wave = _Wave(
            rows, torch.tensor(padded, device=self._device), torch.tensor(mask, device=self._device), warpers
        )
        return self._wave

    @torch.inference_mode()
    def _next_tokens(self, wave: _Wave) -> torch.Tensor:
        """One forward over the wave: each row's next token id, shape (rows,), its next input."""
        # Positions count each row's own tokens, so padding shifts none of them.
        positions = (wave.mask.cumsum(-1) - 1).masked_fill(wave.mask == 0, 1)[:, -wave.inputs.shape[1] :]
        out = self._model(
            input_ids=wave.inputs,
            attention_mask=wave.mask,
            position_ids=positions,
            past_key_values=wave.past,
            use_cache=True,
            **self._forward_kwargs,
        )
        wave.past = out.past_key_values
        logits: torch.Tensor = out.logits[:, -1, :].float()
        if wave.warpers is None:
            tokens = logits.argmax(-1)
        else:
            probs = wave.warpers(wave.inputs, logits).softmax(-1)  # type: ignore[arg-type]  # int64 ids
            rows = zip(probs, wave.rows, strict=True)
            tokens = torch.cat([torch.multinomial(p, 1, generator=row.generator) for p, row in rows])
        wave.inputs = tokens[:, None]
        wave.mask = torch.cat([wave.mask, torch.ones_like(wave.inputs)], dim=1)
        return tokens

    @torch.inference_mode()
    def _keep(self, rows: list[_Row]) -> None:
        """Narrow the running wave (its cache too) to ``rows``; with none left, it is over."""
        wave = self._wave
        if wave is None or not rows:
            self._wave = None
            return
        if len(rows) < len(wave.rows):
            index = torch.tensor([wave.rows.index(row) for row in rows], device=self._device)
            wave.inputs, wave.mask = wave.inputs[index], wave.mask[index]
            wave.past = self._select_rows(wave.past, index)
            wave.rows = rows

    def _advance(self, row: _Row, token: int) -> list[Output]:
        """What one new token of a row sends; ends with the row's ``Finished`` if it ended."""
        if token in self._eos_ids:
            return self._finish(row, "stop")
        row.track.usage.completion_tokens += 1
        text, hit = row.stops.feed(row.decoder.push(token))
        chunk = row.track.chunk(text)
        outputs: list[Output] = [chunk] if chunk else []
        if hit:
            return [*outputs, row.track.finished("stop")]
        if row.track.usage.completion_tokens >= row.max_new:
            return [*outputs, *self._finish(row, "length")]
        return outputs

    @staticmethod
    def _finish(row: _Row, reason: FinishReason) -> list[Output]:
        tail = row.track.chunk(row.stops.flush())
        return [*([tail] if tail else []), row.track.finished(reason)]

    def _generator(self, params: GenerationParams) -> torch.Generator | None:
        if params.temperature <= 0:
            return None
        generator = torch.Generator(self._device)
        if params.seed is None:
            generator.seed()
        else:
            generator.manual_seed(params.seed)
        return generator

    def _encode(self, prompt: Prompt) -> list[int]:
        encoded = self._require_tokenizer()(prompt.text, add_special_tokens=not prompt.templated)
        return list(encoded["input_ids"])

    def _require_tokenizer(self) -> PreTrainedTokenizerBase:
        if self._tokenizer is None:
            raise GenerationFailed("the model is not loaded")
        return self._tokenizer

    @staticmethod
    def _apply_template(tokenizer: PreTrainedTokenizerBase, messages: Sequence[ChatMessage]) -> str:
        turns = [{"role": m.role, "content": m.content} for m in messages]
        text = tokenizer.apply_chat_template(turns, tokenize=False, add_generation_prompt=True)
        return str(text)


class _IncrementalDecoder:
    """Decodes one token at a time without splitting multi-byte characters or word spaces.

    It decodes a short window of recent tokens and emits only the new suffix, holding
    text back while it ends in an incomplete character (U+FFFD).
    """

    def __init__(self, tokenizer: PreTrainedTokenizerBase) -> None:
        self._tokenizer = tokenizer
        self._ids: list[int] = []
        self._prefix = 0
        self._read = 0

    def push(self, token: int) -> str:
        self._ids.append(token)
        decode = self._tokenizer.decode
        before = decode(self._ids[self._prefix : self._read], skip_special_tokens=True)
        after = decode(self._ids[self._prefix :], skip_special_tokens=True)
        if len(after) > len(before) and not after.endswith("\ufffd"):
            self._prefix, self._read = self._read, len(self._ids)
            return after[len(before) :]
        return ""
