"""Serve the API with Hypercorn: ``python -m api`` (binds ``LLMCHAT_HOST``:``LLMCHAT_PORT``).

SIGINT and SIGTERM shut down gracefully: the app's ``after_serving`` stops every worker.
"""

from __future__ import annotations

import asyncio
import signal

from hypercorn.asyncio import serve
from hypercorn.config import Config
from hypercorn.utils import LifespanFailureError

from api.app import create_app
from api.settings import ApiSettings


async def _serve(settings: ApiSettings) -> None:
    config = Config()
    config.bind = [f"{settings.host}:{settings.port}"]
    config.accesslog = "-"
    config.graceful_timeout = 5.0
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await serve(create_app(settings), config, shutdown_trigger=stop.wait)  # type: ignore[arg-type]


def main() -> None:
    settings = ApiSettings()
    settings.refuse_open_local_mode()
    try:
        asyncio.run(_serve(settings))
    except LifespanFailureError as failure:  # the app refused to start (api.database.StartRefused): say why
        reason = str(failure).removeprefix("Lifespan failure in startup. ").strip("'")
        raise SystemExit(f"llmchat: the API did not start: {reason}") from None


if __name__ == "__main__":
    main()
