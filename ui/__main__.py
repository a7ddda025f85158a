"""Serve the dashboard: ``python -m ui`` (binds ``LLMCHAT_UI_HOST``:``LLMCHAT_UI_PORT``)."""

from __future__ import annotations

import panel as pn

from ui.app import create_dashboard
from ui.settings import UiSettings


def main() -> None:
    settings = UiSettings()
    origins = [f"{settings.ui_host}:{settings.ui_port}", f"localhost:{settings.ui_port}", *settings.ui_origins]
    print(f"llmchat UI on http://{settings.ui_host}:{settings.ui_port}/ (API at {settings.api_url})", flush=True)
    pn.serve(
        {"/": create_dashboard},
        address=settings.ui_host,
        port=settings.ui_port,
        websocket_origin=origins,
        show=False,
        title="llmchat",
    )


if __name__ == "__main__":
    main()
