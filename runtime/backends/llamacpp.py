"""llama.cpp backend (llama-cpp-python) for GGUF files; on a GPU every layer is offloaded.

Generation drives ``Llama.generate`` token by token, so token counts are exact, stop
sequences are cut by the shared :class:`~runtime.prompt.StopFilter`, and the KV cache is
reused for the prompt prefix a chat shares with its previous turn.
"""

from __future__ import annotations

import codecs
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import llama_cpp
from jinja2 import TemplateError
from llama_cpp.llama_chat_format import Jinja2ChatFormatter

from runtime import gpu
from runtime.backends.base import Backend, Loaded, Usage, resolve_device
from runtime.errors import ContextOverflow, GenerationFailed, ModelLoadFailed
from runtime.prompt import Prompt, StopFilter, merge_system_into_user, plain_transcript
from runtime.protocol import ChatMessage, GenerationParams, WorkerSpec


class LlamaCppBackend(Backend):
    """Serves one GGUF file."""

    def __init__(self) -> None:
        self._llm: llama_cpp.Llama | None = None
        self._formatter: Jinja2ChatFormatter | None = None

    def load(self, spec: WorkerSpec) -> Loaded:
        if not llama_cpp.llama_supports_gpu_offload():
            usable, hint = False, "llama-cpp-python was built without GPU support (reinstall with CMAKE_ARGS=-DGGML_CUDA=on)"
        else:
            usable, hint = gpu.device_count() > 0, "no NVIDIA GPU is visible to the worker"
        device = resolve_device(spec.device, usable, hint)
        try:
            self._llm = llama_cpp.Llama(
                model_path=spec.model_path,
                n_ctx=spec.n_ctx,
                n_threads=spec.n_threads,
                n_gpu_layers=-1 if device == "cuda" else 0,
                verbose=False,
            )
        except (ValueError, RuntimeError, OSError) as exc:
            raise ModelLoadFailed(f"llama.cpp could not load {Path(spec.model_path).name}: {exc}") from exc
        template = self._llm.metadata.get("tokenizer.chat_template")
        if template:
            model = self._llm._model  # noqa: SLF001 - token texts are only exposed here
            eos, bos = self._llm.token_eos(), self._llm.token_bos()
            self._formatter = Jinja2ChatFormatter(
                template=template,
                eos_token=model.token_get_text(eos) if eos != -1 else "",
                bos_token=model.token_get_text(bos) if bos != -1 else "",
            )
        return Loaded(device, self._llm.n_ctx(), self._formatter is not None)

    def render(self, messages: Sequence[ChatMessage]) -> Prompt:
        if self._formatter is None:
            return plain_transcript(messages)
        try:
            response = self._format(messages)
        except (TemplateError, ValueError):  # e.g. templates that reject a system role
            response = self._format(merge_system_into_user(messages))
        stops = response.stop if isinstance(response.stop, list) else [response.stop or ""]
        return Prompt(response.prompt, tuple(s for s in stops if s), templated=True)

    def count_tokens(self, messages: Sequence[ChatMessage]) -> int:
        return len(self._tokenize(self.render(messages)))

    def stream(
        self, messages: Sequence[ChatMessage], params: GenerationParams, usage: Usage
    ) -> Iterator[str]:
        llm = self._require()
        prompt = self.render(messages)
        tokens = self._tokenize(prompt)
        usage.prompt_tokens = len(tokens)
        room = llm.n_ctx() - len(tokens)
        if room <= 0:
            raise ContextOverflow(f"prompt of {len(tokens)} tokens fills the {llm.n_ctx()}-token context")
        max_new = min(params.max_new_tokens, room)
        stops = StopFilter((*prompt.stops, *params.stop))
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        vocab = llm._model.vocab  # noqa: SLF001 - needed to recognise end-of-generation tokens
        usage.finish_reason = "length"
        for token in llm.generate(tokens, temp=params.temperature, top_p=params.top_p, reset=True):
            if llama_cpp.llama_vocab_is_eog(vocab, token):
                usage.finish_reason = "stop"
                break
            usage.completion_tokens += 1
            text, hit = stops.feed(decoder.decode(llm.detokenize([token])))
            yield text
            if hit:
                usage.finish_reason = "stop"
                return
            if usage.completion_tokens >= max_new:
                break
        if tail := stops.feed(decoder.decode(b"", final=True))[0] + stops.flush():
            yield tail

    def close(self) -> None:
        if self._llm is not None:
            self._llm.close()
            self._llm = None

    def _format(self, messages: Sequence[ChatMessage]) -> Any:
        assert self._formatter is not None
        turns = [{"role": m.role, "content": m.content} for m in messages]
        return self._formatter(messages=turns)

    def _tokenize(self, prompt: Prompt) -> list[int]:
        return self._require().tokenize(prompt.text.encode("utf-8"), add_bos=not prompt.templated, special=True)

    def _require(self) -> llama_cpp.Llama:
        if self._llm is None:
            raise GenerationFailed("the model is not loaded")
        return self._llm
