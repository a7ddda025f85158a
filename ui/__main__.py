"""Serve the dashboard: ``python -m ui`` (binds ``LLMCHAT_UI_HOST``:``LLMCHAT_UI_PORT``)."""

from __future__ import annotations

from panel.io.server import get_server

from ui import hosts
from ui.app import create_dashboard
from ui.settings import UiSettings


def main() -> None:
    settings = UiSettings()
    origins = [f"{settings.ui_host}:{settings.ui_port}", f"localhost:{settings.ui_port}", *settings.ui_origins]
    print(f"llmchat UI on http://{settings.ui_host}:{settings.ui_port}/ (API at {settings.api_url})", flush=True)
    server = get_server(
        {"/": create_dashboard},
        address=settings.ui_host,
        port=settings.ui_port,
        websocket_origin=origins,
        show=False,
        start=False,  # not before the Host check is in place
        title="llmchat",
        verbose=True,
    )
    hosts.refuse_foreign_hosts(server, settings)
    server.start()
    server.io_loop.start()


if __name__ == "__main__":
    main()
