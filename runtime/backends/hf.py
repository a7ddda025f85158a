"""Transformers (torch) backend: ``AutoModelForCausalLM`` on CPU, or CUDA in fp16/bf16.

``generate`` runs in a helper thread and hands each new token to a queue; the worker's
thread decodes and yields them. Closing the stream sets an event that a stopping
criterion checks at every step, so an abort ends the generation within one token.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from jinja2 import TemplateError
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedTokenizerBase,
    StoppingCriteria,
    StoppingCriteriaList,
)
from transformers.generation.streamers import BaseStreamer

from runtime.backends.base import Backend, Loaded, Usage, resolve_device
from runtime.errors import ContextOverflow, GenerationFailed, ModelLoadFailed, ModelRuntimeError
from runtime.prompt import Prompt, StopFilter, merge_system_into_user, plain_transcript
from runtime.protocol import ChatMessage, GenerationParams, WorkerSpec

_END = object()


class TransformersBackend(Backend):
    """Serves a Transformers checkpoint folder."""

    def __init__(self) -> None:
        self._model: Any = None
        self._tokenizer: PreTrainedTokenizerBase | None = None
        self._device = "cpu"
        self._context_length = 0
        self._eos_ids: set[int] = set()

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
        return Loaded(self._device, self._context_length, bool(self._tokenizer.chat_template))

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

    def stream(
        self, messages: Sequence[ChatMessage], params: GenerationParams, usage: Usage
    ) -> Iterator[str]:
        tokenizer = self._require_tokenizer()
        prompt = self.render(messages)
        ids = self._encode(prompt)
        usage.prompt_tokens = len(ids)
        room = self._context_length - len(ids)
        if room <= 0:
            raise ContextOverflow(
                f"prompt of {len(ids)} tokens fills the {self._context_length}-token context"
            )
        max_new = min(params.max_new_tokens, room)
        tokens: queue.Queue[Any] = queue.Queue()
        cancel = threading.Event()
        errors: list[BaseException] = []
        kwargs = self._generate_kwargs(ids, params, max_new, tokens, cancel)
        thread = threading.Thread(target=self._run, args=(kwargs, tokens, errors), daemon=True)
        thread.start()
        decoder = _IncrementalDecoder(tokenizer)
        stops = StopFilter((*prompt.stops, *params.stop))
        try:
            while (token := tokens.get()) is not _END:
                if token in self._eos_ids:
                    continue
                usage.completion_tokens += 1
                text, hit = stops.feed(decoder.push(token))
                yield text
                if hit:
                    usage.finish_reason = "stop"
                    return
            if errors:
                raise GenerationFailed(f"{type(errors[0]).__name__}: {errors[0]}") from errors[0]
            usage.finish_reason = "length" if usage.completion_tokens >= max_new else "stop"
            if tail := stops.flush():
                yield tail
        finally:
            cancel.set()
            thread.join()

    # Helpers.

    def _generate_kwargs(
        self,
        ids: list[int],
        params: GenerationParams,
        max_new: int,
        tokens: queue.Queue[Any],
        cancel: threading.Event,
    ) -> dict[str, Any]:
        input_ids = torch.tensor([ids], device=self._device)
        kwargs: dict[str, Any] = {
            "input_ids": input_ids,
            "attention_mask": torch.ones_like(input_ids),
            "max_new_tokens": max_new,
            "streamer": _QueueStreamer(tokens),
            "stopping_criteria": StoppingCriteriaList([_StopOnEvent(cancel)]),
            "pad_token_id": self._require_tokenizer().pad_token_id or next(iter(self._eos_ids), 0),
        }
        if params.temperature > 0:
            kwargs.update(do_sample=True, temperature=params.temperature, top_p=params.top_p, top_k=0)
        else:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        return kwargs

    def _run(self, kwargs: dict[str, Any], tokens: queue.Queue[Any], errors: list[BaseException]) -> None:
        try:
            with torch.inference_mode():
                self._model.generate(**kwargs)
        except BaseException as exc:  # noqa: BLE001 - handed to the streaming thread
            errors.append(exc)
        finally:
            tokens.put(_END)

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


class _QueueStreamer(BaseStreamer):
    """Puts each generated token id on a queue (the first ``put`` is the prompt: skipped)."""

    def __init__(self, tokens: queue.Queue[Any]) -> None:
        self._tokens = tokens
        self._prompt_seen = False

    def put(self, value: Any) -> None:
        if not self._prompt_seen:
            self._prompt_seen = True
            return
        for token in value.reshape(-1).tolist():
            self._tokens.put(int(token))

    def end(self) -> None:
        pass  # _run puts _END once generate has returned, errors included


class _StopOnEvent(StoppingCriteria):
    def __init__(self, cancel: threading.Event) -> None:
        self._cancel = cancel

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **_: Any) -> torch.BoolTensor:
        stop = self._cancel.is_set()
        return torch.full((input_ids.shape[0],), stop, dtype=torch.bool, device=input_ids.device)  # type: ignore[return-value]


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
