"""Terminal chat on top of the runtime, using it exactly as the API does.

    python -m runtime.cli models
    python -m runtime.cli chat [--model NAME] [--device auto|cpu|gpu] [--system TEXT]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys

from runtime import backends
from runtime.default_model import GGUF_NAME
from runtime.errors import ModelRuntimeError
from runtime.interface import ModelRuntime
from runtime.manager import Runtime
from runtime.protocol import ChatMessage, Finished, GenerationParams, TokenChunk

HOLDER = "terminal"


async def _print_models(runtime: ModelRuntime) -> None:
    models = await runtime.models()
    if not models:
        print("No models found. Put a .gguf file or a model folder into the models folder.")
        return
    print(f"{'name':40} {'backend':13} {'size':>9} {'context':>8}")
    for m in models:
        print(f"{m.name:40} {m.backend:13} {m.size_bytes / 2**20:8.0f}M {m.context_length or '?':>8}")


async def _chat(runtime: ModelRuntime, args: argparse.Namespace) -> None:
    info = await runtime.load(HOLDER, args.model, args.device, args.backend)
    print(
        f"Loaded {info.key.model} with {info.key.backend} on {info.running_on} in {info.load_time_s:.2f} s "
        f"(context {info.context_length} tokens). Empty line or Ctrl-D quits; Ctrl-C stops a reply."
    )
    history: list[ChatMessage] = [ChatMessage("system", args.system)] if args.system else []
    params = GenerationParams(max_new_tokens=args.max_new_tokens, temperature=args.temperature)
    while True:
        try:
            line = await asyncio.to_thread(input, "\nyou> ")
        except EOFError:
            return
        if not line.strip():
            return
        history.append(ChatMessage("user", line))
        fitted = await runtime.fit(HOLDER, history, params.max_new_tokens)
        reply = await _stream_reply(runtime, list(fitted.messages), params)
        history.append(ChatMessage("assistant", reply))
        if fitted.dropped:
            print(f"  ({fitted.dropped} earlier messages left out to fit the context)")


async def _stream_reply(runtime: ModelRuntime, messages: list[ChatMessage], params: GenerationParams) -> str:
    print("bot> ", end="", flush=True)
    parts: list[str] = []
    try:
        async with contextlib.aclosing(runtime.generate(HOLDER, messages, params)) as events:
            async for event in events:
                if isinstance(event, TokenChunk):
                    parts.append(event.text)
                    print(event.text, end="", flush=True)
                elif isinstance(event, Finished):
                    m = event.metrics
                    print(
                        f"\n  [{m.completion_tokens} tokens, {m.total_time_s:.2f} s, "
                        f"{m.tokens_per_s:.1f} tokens/s, first token {m.time_to_first_token_s * 1000:.0f} ms, "
                        f"prompt {m.prompt_tokens} tokens, {event.finish_reason}]"
                    )
    except asyncio.CancelledError:
        print("\n  [stopped]")
    return "".join(parts)


async def _main(args: argparse.Namespace) -> int:
    runtime = await asyncio.to_thread(Runtime)
    try:
        if args.command == "models":
            await _print_models(runtime)
        else:
            await _chat(runtime, args)
    except ModelRuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        await runtime.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="llmchat", description="Chat with local models in the terminal.")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("models", help="list the models found in the models folder")
    chat = sub.add_parser("chat", help="chat with a model")
    chat.add_argument("--model", default=GGUF_NAME)
    chat.add_argument("--device", choices=("auto", "cpu", "gpu"), default="auto")
    chat.add_argument("--backend", choices=backends.NAMES, default=None)
    chat.add_argument("--system", default="", help="system prompt")
    chat.add_argument("--max-new-tokens", type=int, default=256)
    chat.add_argument("--temperature", type=float, default=0.7)
    args = parser.parse_args(argv)
    try:
        return asyncio.run(_main(args))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
