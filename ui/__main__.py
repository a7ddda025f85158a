"""Serve the dashboard (``/``), its admin view (``/admin``) and the Machine page (``/machine``):
``python -m ui`` (binds ``LLMCHAT_UI_HOST``:``LLMCHAT_UI_PORT``)."""

from __future__ import annotations

from typing import Any

from bokeh.util.token import generate_secret_key
from panel.io.server import get_server

from ui import hosts
from ui.admin import create_admin_page
from ui.app import create_dashboard
from ui.auth import EXCLUDED_COOKIES, EXCLUDED_HEADERS, DashboardAuth
from ui.machine import create_machine_page
from ui.settings import UiSettings


def main() -> None:
    settings = UiSettings()
    settings.refuse_open_local_mode()
    origins = [f"{settings.ui_host}:{settings.ui_port}", f"localhost:{settings.ui_port}", *settings.ui_origins]
    # Sign-in (DashboardAuth) unless in local mode; in both, Bokeh embeds no cookie and no
    # Authorization header of the browser's in the page's session token.
    # Session tokens are signed with a key of this process's, so that nobody attaches to
    # another browser's dashboard (which acts for its user) by making up a token for its id.
    signing: dict[str, Any] = {"exclude_cookies": EXCLUDED_COOKIES, "exclude_headers": EXCLUDED_HEADERS,
                               "sign_sessions": True, "secret_key": generate_secret_key().encode()}
    if settings.auth == "on":
        signing["auth_provider"] = DashboardAuth(settings, origins)
    mode = "sign-in on" if settings.auth == "on" else "local mode, no sign-in"
    print(f"llmchat UI on http://{settings.ui_host}:{settings.ui_port}/ (API at {settings.api_url}; {mode})", flush=True)
    server = get_server(
        {"/": create_dashboard, "/admin": create_admin_page, "/machine": create_machine_page},  # one sign-in
        address=settings.ui_host,
        port=settings.ui_port,
        websocket_origin=origins,
        show=False,
        start=False,  # not before the Host check is in place
        title="llmchat",
        verbose=True,
        **signing,
    )
    hosts.refuse_foreign_hosts(server, settings)
    server.start()
    server.io_loop.start()


if __name__ == "__main__":
    main()
