"""llama.cpp backend (llama-cpp-python's low-level API) for GGUF files: continuous batching.

One context holds ``parallel`` sequences, each with its own slot of the KV cache (the
per-sequence context). Every step is one ``llama_decode`` of a batch whose tokens carry
their sequence ids, the next token of every running reply (in slot order, short gaps
bridged, so llama.cpp makes one pass over the weights), then one of a chunk of a new
reply's prompt. Chunks are sized so one step takes about :data:`STEP_TARGET_S`, which
keeps the running streams flowing while a long prompt is read. Each reply samples with its own
llama.cpp sampler chain (greedy at temperature 0, else top-k, top-p, min-p, temperature
and a seeded distribution, as ``Llama.generate`` does; argmax and top-k with numpy), stops at EOS, a stop sequence or
its token limit, and is cut at a stop sequence by the shared :class:`~runtime.prompt.StopFilter`.
A reply starts in a free slot: the one its chat used last, else one whose cached tokens
share most of its prompt; only the part of the prompt the slot does not hold is decoded.
On a CPU, only kernels that compute a row the same way whatever else is in the batch are
used, so batching never changes a greedy reply. On a GPU every layer is offloaded (CUDA's
kernels for one row and for many differ, so there a greedy reply may vary with its batch).
"""

from __future__ import annotations

import codecs
import ctypes
import logging
import os
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import llama_cpp
import numpy as np
from jinja2 import TemplateError
from llama_cpp.llama_chat_format import Jinja2ChatFormatter

from runtime import gpu
from runtime.backends.base import Backend, Loaded, Output, Track, resolve_device
from runtime.errors import ContextOverflow, GenerationFailed, ModelLoadFailed
from runtime.prompt import Prompt, StopFilter, merge_system_into_user, plain_transcript
from runtime.protocol import ChatMessage, Generate, GenerationParams, WorkerSpec

N_BATCH = 512  # most tokens in one llama_decode
STEP_TARGET_S = 0.2  # a step that reads a prompt chunk while others stream takes about this long
SETTLED_TOKENS = 4  # a reply that has streamed this many tokens is kept from pausing longer
BURST_STEP_S = 1.5  # the longest step while every generating reply has only begun
_ALL_LAYERS = 0x7FFFFFFF
# As Llama.generate samples (its defaults), so a reply reads the same as before batching.
_TOP_K, _MIN_P = 40, 0.05
_REUSE_SHARE = 0.5  # a slot of another chat is reused for its cached prefix if it covers this much
_FIRST_PREFILL_BUDGET = 64  # prompt tokens in the first step that also streams, before any is measured
# llama.cpp computes the sequences of a batch in one pass only while their ids run without a
# gap (one KV stream each); a gap of up to this many idle slots is bridged with throw-away
# rows. Measured on the 2-core CPU: a row costs about 4.5 ms, another pass about 18 ms.
_GAP_FILL = 3


@dataclass(eq=False)
class _Slot:
    """One sequence of the KV cache and the tokens it holds (positions 0..n-1)."""

    seq_id: int
    cached: list[int] = field(default_factory=list)
    prefilled: int = 0  # the leading cached tokens that were read as a prompt (not generated)
    session: str | None = None  # the chat whose reply it served last
    used_at: float = 0.0
    busy: bool = False


@dataclass(eq=False)
class _Reply:
    """A request from submission to its end."""

    request: Generate
    tokens: list[int]  # the prompt
    stops: tuple[str, ...]
    max_new: int
    track: Track
    slot: _Slot | None = None
    pending: list[int] = field(default_factory=list)  # prompt tokens still to decode
    next_token: int | None = None  # sampled, decoded at the next step
    sampler: Any = None
    stop_filter: StopFilter | None = None
    decoder: codecs.IncrementalDecoder = field(default_factory=lambda: codecs.getincrementaldecoder("utf-8")("replace"))


class LlamaCppBackend(Backend):
    """Serves one GGUF file to up to ``parallel`` replies at once."""

    def __init__(self) -> None:
        self._model: Any = None
        self._vocab: Any = None
        self._ctx: Any = None
        self._memory: Any = None
        self._batch: Any = None
        self._formatter: Jinja2ChatFormatter | None = None
        self._n_ctx_seq = 0
        self._n_swa = 0
        self._n_vocab = 0
        self._bos = 0  # a filler row's token
        self._slots: list[_Slot] = []
        self._waiting: deque[_Reply] = deque()
        self._running: dict[str, _Reply] = {}  # in the order they started
        self._prefill_rate: float | None = None  # prompt tokens a second, as last measured

    # Loading

    def load(self, spec: WorkerSpec) -> Loaded:
        if not llama_cpp.llama_supports_gpu_offload():
            usable, hint = False, "llama-cpp-python was built without GPU support (reinstall with CMAKE_ARGS=-DGGML_CUDA=on)"
        else:
            usable, hint = gpu.device_count() > 0, "no NVIDIA GPU is visible to the worker"
        device = resolve_device(spec.device, usable, hint)
        name = Path(spec.model_path).name
        parallel = max(1, min(spec.parallel, llama_cpp.llama_max_parallel_sequences(), N_BATCH))
        # Batching must not change a greedy reply, so on a CPU every row is computed the same
        # way whatever the batch holds: not with ggml's tiled matrix multiply (it takes over for
        # larger batches and sums in another order), not with the CPU flash-attention kernel
        # (off below), no extra buffer types (below). llamafile's sgemm, used for two rows or
        # more, gives what one row gives for the weights, but not for a lone prompt token's
        # attention: prompts are read in chunks of two or more (see _reusable and _chunk).
        # Measured, then tested in tests/runtime/test_batching.py.
        os.environ["GGML_CPU_TILED_MM"] = "0"
        # llama-cpp-python prints every llama.cpp log line (each tensor, at load) unless its
        # logger says otherwise; Llama(verbose=False) did this for the high-level API.
        logging.getLogger("llama-cpp-python").setLevel(logging.ERROR)
        llama_cpp.llama_backend_init()
        model_params = llama_cpp.llama_model_default_params()
        model_params.n_gpu_layers = _ALL_LAYERS if device == "cuda" else 0
        # No "extra buffer types" (AMX, repacked weights): their kernels differ between one row
        # and many (gemv vs gemm), so batching would change a reply; and ggml's AMX matmul in the
        # llama.cpp that llama-cpp-python 0.3.36 vendors crashes with SIGSEGV (seen on a Xeon
        # with AMX here, in llama-cpp-python's own Llama class too).
        model_params.use_extra_bufts = False
        self._model = llama_cpp.llama_model_load_from_file(spec.model_path.encode("utf-8"), model_params)
        if not self._model:
            raise ModelLoadFailed(f"llama.cpp could not load {name}")
        self._vocab = llama_cpp.llama_model_get_vocab(self._model)
        params = llama_cpp.llama_context_default_params()
        params.n_ctx = spec.n_ctx * parallel  # every sequence gets the full per-sequence context
        params.n_seq_max = parallel
        params.n_batch = params.n_ubatch = N_BATCH
        params.n_threads = params.n_threads_batch = spec.n_threads
        params.kv_unified = False  # one KV stream per sequence: faster for distinct prompts
        params.swa_full = False  # sliding-window layers keep only their window, as llama-server does
        params.no_perf = True
        if device == "cpu":
            params.flash_attn_type = llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED
        self._ctx = llama_cpp.llama_init_from_model(self._model, params)
        if not self._ctx:
            raise ModelLoadFailed(
                f"llama.cpp could not create a context of {parallel} x {spec.n_ctx} tokens for {name} "
                "(out of memory? lower LLMCHAT_PARALLEL or LLMCHAT_N_CTX)"
            )
        self._memory = llama_cpp.llama_get_memory(self._ctx)
        self._batch = llama_cpp.llama_batch_init(N_BATCH, 0, 1)
        self._n_ctx_seq = llama_cpp.llama_n_ctx_seq(self._ctx)
        self._n_swa = llama_cpp.llama_model_n_swa(self._model)
        self._n_vocab = llama_cpp.llama_vocab_n_tokens(self._vocab)
        self._bos = max(0, llama_cpp.llama_vocab_bos(self._vocab))
        self._slots = [_Slot(seq_id) for seq_id in range(parallel)]
        self._formatter = self._chat_formatter()
        return Loaded(device, self._n_ctx_seq, self._formatter is not None, parallel)

    def _chat_formatter(self) -> Jinja2ChatFormatter | None:
        template = self._metadata("tokenizer.chat_template")
        if not template:
            return None
        eos, bos = llama_cpp.llama_vocab_eos(self._vocab), llama_cpp.llama_vocab_bos(self._vocab)
        text = lambda token: llama_cpp.llama_vocab_get_text(self._vocab, token).decode("utf-8")  # noqa: E731
        return Jinja2ChatFormatter(
            template=template,
            eos_token=text(eos) if eos != -1 else "",
            bos_token=text(bos) if bos != -1 else "",
        )

    def _metadata(self, key: str) -> str | None:
        size = llama_cpp.llama_model_meta_val_str(self._model, key.encode(), None, 0)
        if size < 0:
            return None
        buffer = ctypes.create_string_buffer(size + 1)
        llama_cpp.llama_model_meta_val_str(self._model, key.encode(), buffer, size + 1)
        return buffer.value.decode("utf-8")

    # Prompts

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

    def _format(self, messages: Sequence[ChatMessage]) -> Any:
        assert self._formatter is not None
        turns = [{"role": m.role, "content": m.content} for m in messages]
        return self._formatter(messages=turns)

    def _tokenize(self, prompt: Prompt) -> list[int]:
        self._require()
        text = prompt.text.encode("utf-8")
        add_bos = not prompt.templated
        size = len(text) + 2
        while True:
            buffer = (llama_cpp.llama_token * size)()
            n = llama_cpp.llama_tokenize(self._vocab, text, len(text), buffer, size, add_bos, True)
            if n >= 0:
                return list(buffer[:n])
            size = -n

    def _piece(self, token: int) -> bytes:
        size = 64
        while True:
            buffer = ctypes.create_string_buffer(size)
            n = llama_cpp.llama_token_to_piece(self._vocab, token, buffer, size, 0, False)
            if n >= 0:
                return buffer.raw[:n]
            size = -n

    # Requests

    def submit(self, request: Generate) -> None:
        self._require()
        prompt = self.render(request.messages)
        tokens = self._tokenize(prompt)
        room = self._n_ctx_seq - len(tokens)
        if room <= 0:
            raise ContextOverflow(f"prompt of {len(tokens)} tokens fills the {self._n_ctx_seq}-token context")
        max_new = min(request.params.max_new_tokens, room)
        stops = (*prompt.stops, *request.params.stop)
        self._waiting.append(_Reply(request, tokens, stops, max_new, Track(request.request_id)))

    def cancel(self, request_id: str) -> Output | None:
        for reply in self._waiting:
            if reply.request.request_id == request_id:
                self._waiting.remove(reply)
                return None
        reply = self._running.get(request_id)
        if reply is None:
            return None
        self._end(reply)
        return reply.track.finished("aborted")

    @property
    def has_work(self) -> bool:
        return bool(self._running or self._waiting)

    # Steps

    def step(self) -> list[Output]:
        """One token for every reply that is generating (one ``llama_decode``), then chunks of
        waiting prompts, oldest first, each in a ``llama_decode`` of its own (llama.cpp splits
        a batch that mixes sequences into equal parts per sequence, which would cut a chunk
        into pieces of one token; see ``_reusable``).

        While replies stream, prompts are read for about :data:`STEP_TARGET_S` a step, so
        no stream pauses for long. Replies that have only begun (fewer than
        :data:`SETTLED_TOKENS` tokens: requests that arrived together) allow a step of up to
        :data:`BURST_STEP_S`, so their prompts are read together rather than in slices
        between their first tokens. With nobody generating, every waiting prompt is read.
        """
        self._start_waiting()
        outputs: list[Output] = []
        decoding = sorted((r for r in self._running.values() if r.next_token is not None), key=_seq_id)
        started = time.perf_counter()
        if decoding:
            failed, rows = self._decode_next(decoding)
            if failed is not None:
                return failed
            outputs += [o for reply, row in zip(decoding, rows) for o in self._sample(reply, row)]
        budget = self._prefill_budget(decoding, time.perf_counter() - started)
        for reply in [r for r in self._running.values() if r.pending]:
            while reply.pending and (take := _chunk(len(reply.pending), min(N_BATCH, budget))):
                chunk, reply.pending = reply.pending[:take], reply.pending[take:]
                chunk_started = time.perf_counter()
                last = len(chunk) - 1
                failed = self._decode([(t, reply, not reply.pending and i == last) for i, t in enumerate(chunk)])
                if failed is not None:
                    return outputs + failed
                self._prefill_rate = take / max(time.perf_counter() - chunk_started, 1e-6)
                assert reply.slot is not None
                reply.slot.prefilled = len(reply.slot.cached)
                if not reply.pending:
                    outputs += self._sample(reply, last)
                budget -= take
                if not decoding:
                    break  # nobody waits on this step: one chunk of each prompt, then a fresh step
        return outputs

    def _prefill_budget(self, decoding: list[_Reply], decode_s: float) -> int:
        """How many prompt tokens this step may read, from the measured reading rate."""
        if not decoding:
            return N_BATCH * len(self._running)
        if any(r.track.usage.completion_tokens >= SETTLED_TOKENS for r in decoding):
            target = STEP_TARGET_S
        else:
            target = BURST_STEP_S
        if self._prefill_rate is None:
            return _FIRST_PREFILL_BUDGET
        return max(16, int(self._prefill_rate * max(target - decode_s, target / 4)))

    def _decode(self, tokens: list[tuple[int, _Reply, bool]]) -> list[Output] | None:
        """One ``llama_decode`` of (token, reply, wants logits); the failures if it failed."""
        for n, (token, reply, logits) in enumerate(tokens):
            assert reply.slot is not None
            self._put(n, token, reply.slot, logits)
            reply.slot.cached.append(token)
        self._batch.n_tokens = len(tokens)
        result = llama_cpp.llama_decode(self._ctx, self._batch)
        return self._decode_failed(result) if result != 0 else None

    def _decode_next(self, decoding: list[_Reply]) -> tuple[list[Output] | None, list[int]]:
        """One ``llama_decode`` of the next token of each reply (in slot order); the failures if
        it failed, and each reply's row in the batch (its logits).

        llama.cpp takes one pass over the weights for each run of sequence ids without a gap,
        so a short gap is bridged: each idle slot in it gets a throw-away row at its next
        position, removed again after the pass. Only a slot holding no more tokens than the
        replies do, so the pass attends over no more of the KV cache than it would anyway.
        """
        rows: list[int] = []
        fillers: list[_Slot] = []
        longest = max(len(r.slot.cached) for r in decoding if r.slot is not None)
        n = 0
        for previous, reply in zip([None, *decoding], decoding):
            slot = reply.slot
            assert slot is not None and reply.next_token is not None
            if previous is not None and previous.slot is not None:
                gap = self._slots[previous.slot.seq_id + 1 : slot.seq_id]
                if len(gap) <= _GAP_FILL and all(len(idle.cached) <= longest for idle in gap):
                    for idle in gap:
                        self._put(n, self._bos, idle, False)
                        fillers.append(idle)
                        n += 1
            self._put(n, reply.next_token, slot, True)
            slot.cached.append(reply.next_token)
            reply.next_token = None
            rows.append(n)
            n += 1
        self._batch.n_tokens = n
        result = llama_cpp.llama_decode(self._ctx, self._batch)
        for idle in fillers:
            llama_cpp.llama_memory_seq_rm(self._memory, idle.seq_id, len(idle.cached), -1)
        return (self._decode_failed(result) if result != 0 else None), rows

    def _put(self, n: int, token: int, slot: _Slot, logits: bool) -> None:
        """Row ``n`` of the batch: ``token`` at the slot's next position."""
        batch = self._batch
        batch.token[n] = token
        batch.pos[n] = len(slot.cached)
        batch.n_seq_id[n] = 1
        batch.seq_id[n][0] = slot.seq_id
        batch.logits[n] = logits

    def _start_waiting(self) -> None:
        while self._waiting and any(not s.busy for s in self._slots):
            reply = self._waiting.popleft()
            slot = self._choose_slot(reply)
            keep = self._reusable(slot, reply.tokens)
            if not llama_cpp.llama_memory_seq_rm(self._memory, slot.seq_id, keep, -1):
                llama_cpp.llama_memory_seq_rm(self._memory, slot.seq_id, -1, -1)
                keep = 0
            del slot.cached[keep:]
            slot.prefilled = keep
            slot.busy, slot.session = True, reply.request.session
            reply.slot = slot
            reply.pending = reply.tokens[keep:]
            reply.sampler = _sampler(reply.request.params)
            reply.stop_filter = StopFilter(reply.stops)
            reply.track.usage.prompt_tokens = len(reply.tokens)
            reply.track.usage.cached_tokens = keep
            reply.track.usage.finish_reason = "length"
            self._running[reply.request.request_id] = reply

    def _choose_slot(self, reply: _Reply) -> _Slot:
        """The chat's own slot if free; else the free slot holding most of the prompt, if that is
        most of it; else the free slot unused longest (so recent chats keep their prefixes)."""
        free = [s for s in self._slots if not s.busy]
        session = reply.request.session
        for slot in free:
            if session is not None and slot.session == session:
                return slot
        best = max(free, key=lambda s: _common_prefix(s.cached, reply.tokens))
        if _common_prefix(best.cached, reply.tokens) >= _REUSE_SHARE * len(reply.tokens):
            return best
        return min(free, key=lambda s: s.used_at)

    def _reusable(self, slot: _Slot, tokens: list[int]) -> int:
        """How many leading prompt tokens the slot's cache can keep.

        Only tokens it read as a prompt count, never ones it generated, and at least two
        are left to read: llama.cpp computes a lone token (as when generating) with other
        kernels than a chunk of several, so this way every prompt token's cache is what
        reading the prompt afresh gives, and a reply does not depend on what ran before it.
        """
        keep = max(0, min(_common_prefix(slot.cached, tokens), slot.prefilled, len(tokens) - 2))
        if keep > 0 and self._n_swa > 0:
            # Sliding-window layers keep only recent positions: the window before ``keep`` must be there.
            if llama_cpp.llama_memory_seq_pos_min(self._memory, slot.seq_id) > max(0, keep - self._n_swa):
                return 0
        return keep

    def _sample(self, reply: _Reply, index: int) -> list[Output]:
        track, stops = reply.track, reply.stop_filter
        assert stops is not None
        token = self._next_token(reply, index)
        if llama_cpp.llama_vocab_is_eog(self._vocab, token):
            track.usage.finish_reason = "stop"
            return self._finish(reply)
        track.usage.completion_tokens += 1
        text, hit = stops.feed(reply.decoder.decode(self._piece(token)))
        chunk = track.chunk(text)
        outputs: list[Output] = [chunk] if chunk else []
        if hit:
            track.usage.finish_reason = "stop"
            self._end(reply)
            return [*outputs, track.finished()]
        if track.usage.completion_tokens >= reply.max_new:
            return [*outputs, *self._finish(reply)]
        reply.next_token = token
        return outputs

    def _next_token(self, reply: _Reply, row: int) -> int:
        """Sample from the logits of batch row ``row``. Greedy is an argmax, top-k is taken
        with numpy, and only those candidates go through the reply's llama.cpp chain
        (top-p, min-p, temperature, seeded draw): ``llama_sampler_sample`` would copy all
        262,144 logits of Gemma's vocabulary into a fresh array for every token, measured at
        0.8 ms a token, a tenth of a step of eight."""
        logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(self._ctx, row), shape=(self._n_vocab,))
        if reply.sampler is None:
            return int(logits.argmax())  # the first of equal maxima, as llama.cpp's greedy sampler
        top = np.argpartition(logits, -_TOP_K)[-_TOP_K:]
        top = top[np.argsort(-logits[top], kind="stable")]
        candidates = (llama_cpp.llama_token_data * len(top))()
        for i, token in enumerate(top.tolist()):
            candidates[i].id, candidates[i].logit, candidates[i].p = token, float(logits[token]), 0.0
        array = llama_cpp.llama_token_data_array(candidates, len(top), -1, True)
        llama_cpp.llama_sampler_apply(reply.sampler, ctypes.byref(array))
        token = int(candidates[array.selected].id)
        llama_cpp.llama_sampler_accept(reply.sampler, token)
        return token

    def _finish(self, reply: _Reply) -> list[Output]:
        """End a reply that ran out (EOS or its limit): what the decoder and filter held back, then Finished."""
        stops = reply.stop_filter
        assert stops is not None
        tail = stops.feed(reply.decoder.decode(b"", final=True))[0] + stops.flush()
        self._end(reply)
        chunk = reply.track.chunk(tail) if tail else None
        return [*([chunk] if chunk else []), reply.track.finished()]

    def _end(self, reply: _Reply) -> None:
        self._running.pop(reply.request.request_id, None)
        if reply.sampler is not None:
            llama_cpp.llama_sampler_free(reply.sampler)
            reply.sampler = None
        if reply.slot is not None:  # what its cache holds (a prefix, if it ended mid-prompt) stays valid
            reply.slot.busy, reply.slot.used_at = False, time.monotonic()

    def _decode_failed(self, result: int) -> list[Output]:
        """A failed ``llama_decode`` fails the replies in the batch; their slots are emptied."""
        what = "no room in the KV cache" if result == 1 else f"llama_decode returned {result}"
        outputs: list[Output] = []
        for reply in list(self._running.values()):
            error = GenerationFailed(f"llama.cpp could not continue the reply: {what}")
            self._end(reply)
            if reply.slot is not None:
                llama_cpp.llama_memory_seq_rm(self._memory, reply.slot.seq_id, -1, -1)
                reply.slot.cached.clear()
                reply.slot.prefilled = 0
            outputs.append(reply.track.failed(error))
        return outputs

    def close(self) -> None:
        for reply in list(self._running.values()):
            self._end(reply)
        if self._batch is not None:
            llama_cpp.llama_batch_free(self._batch)
            self._batch = None
        if self._ctx is not None:
            llama_cpp.llama_free(self._ctx)
            self._ctx = None
        if self._model is not None:
            llama_cpp.llama_model_free(self._model)
            self._model = None

    def _require(self) -> None:
        if self._ctx is None:
            raise GenerationFailed("the model is not loaded")


def _sampler(params: GenerationParams) -> Any:
    """The reply's chain after top-k (which ``_next_token`` takes first); None when greedy."""
    if params.temperature <= 0:
        return None
    chain = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())
    seed = llama_cpp.LLAMA_DEFAULT_SEED if params.seed is None else params.seed & 0xFFFFFFFF
    for sampler in (
        llama_cpp.llama_sampler_init_top_p(params.top_p, 1),
        llama_cpp.llama_sampler_init_min_p(_MIN_P, 1),
        llama_cpp.llama_sampler_init_temp(params.temperature),
        llama_cpp.llama_sampler_init_dist(seed),
    ):
        llama_cpp.llama_sampler_chain_add(chain, sampler)
    return chain


def _seq_id(reply: _Reply) -> int:
    assert reply.slot is not None
    return reply.slot.seq_id


def _chunk(pending: int, budget: int) -> int:
    """How many of a prompt's ``pending`` tokens to read this step within ``budget``: never
    a lone token of a longer prompt, and never leave one behind (see ``_reusable``)."""
    take = min(pending, budget)
    if pending - take == 1:
        take -= 1
    if take == 1 and pending > 1:
        return 0
    return max(take, 0)


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n
