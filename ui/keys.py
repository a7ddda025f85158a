"""The "Your API keys" card of the dashboard: create a named key (shown once), list the
signed-in user's keys with when they were made and last used, and revoke one.

It talks to the API's ``/auth/keys`` as the signed-in user (:class:`ui.client.ApiClient`),
and asks for the list only when the card is opened.
"""

from __future__ import annotations

import asyncio
import html
from collections.abc import Callable
from datetime import datetime
from typing import Any

import panel as pn

from ui.a11y import readable
from ui.client import ApiClient, ApiProblem

SHOWN_ONCE = "Copy it now: it is not shown again. Send it as <code>Authorization: Bearer &lt;key&gt;</code>."
CONFIRM = "Sure?"
KEY_CSS = """
.new-key { display: block; padding: 6px 8px; margin: 4px 0; background: #f4f6fa; border: 1px solid #c6d7fb;
  border-radius: 4px; font-size: 12px; word-break: break-all; user-select: all; }
.hint { color: #5b6576; font-size: 12px; }
"""


def when(iso: str | None, never: str = "never") -> str:
    """A time the API stored, in the dashboard server's local time, to the minute."""
    if not iso:
        return never
    return datetime.fromisoformat(iso).astimezone().strftime("%Y-%m-%d %H:%M")


class ApiKeys:
    """One browser session's API keys card. ``on_problem`` shows an API refusal (and sends a
    signed-out user to sign in), as the dashboard does for its own calls."""

    def __init__(self, api: ApiClient, on_problem: Callable[[ApiProblem], None]) -> None:
        self.api = api
        self.on_problem = on_problem
        self.name = pn.widgets.TextInput(name="Key name", placeholder="e.g. laptop, openai script",
                                         max_length=100, sizing_mode="stretch_width")
        self.create = pn.widgets.Button(name="Create key", button_type="primary", sizing_mode="stretch_width")
        self.created = pn.pane.HTML("", visible=False, stylesheets=[KEY_CSS], sizing_mode="stretch_width",
                                    css_classes=["created-key"])
        self.error = pn.pane.Alert("", alert_type="danger", visible=False, sizing_mode="stretch_width")
        self.listing = pn.Column(sizing_mode="stretch_width", css_classes=["key-list"])
        self.card = pn.Card(self.name, self.create, self.created, self.error, self.listing,
                            title="Your API keys", collapsed=True, sizing_mode="stretch_width")
        self._loaded = False
        self._shown: str | None = None  # the id of the key shown (once) in ``created``
        self.create.on_click(self._on_create)
        self.card.param.watch(self._on_open, "collapsed")

    def view(self) -> pn.Card:
        return self.card

    async def _on_open(self, event: Any) -> None:
        if not event.new and not self._loaded:
            await self.refresh()

    async def _on_create(self, _: Any) -> None:
        name = (self.name.value_input or self.name.value or "").strip()
        if not name:
            self._show_error("Give the key a name, to tell your keys apart.")
            return
        self.create.disabled = True
        try:
            made = await self._guard(self.api.create_key(name))
        finally:
            self.create.disabled = False
        if made is None:
            return
        self.name.value = self.name.value_input = ""
        self.created.object = (f'<b>New key “{html.escape(made["name"])}”</b>'
                               f'<code class="new-key">{html.escape(made["key"])}</code>'
                               f'<span class="hint">{SHOWN_ONCE}</span>')
        self.created.visible = True
        self._shown = made["id"]
        await self.refresh()

    async def refresh(self) -> None:
        keys = await self._guard(self.api.keys())
        if keys is None:
            return
        self._loaded = True
        active = [k for k in keys if not k.get("revoked")]
        rows: list[Any] = [self._row(k) for k in active]
        self.listing.objects = rows or [pn.pane.HTML('<span class="hint">No keys yet.</span>', stylesheets=[KEY_CSS])]

    def _row(self, key: dict[str, Any]) -> pn.Row:
        about = pn.pane.HTML(
            f'<b>{html.escape(key["name"])}</b><br><span class="hint">created {when(key["created_at"])}'
            f'<br>last used {when(key.get("last_used_at"))}</span>',
            stylesheets=[KEY_CSS], sizing_mode="stretch_width", margin=(2, 5),
        )
        revoke = readable(pn.widgets.Button(name="Revoke", button_type="danger", button_style="outline", width=80,
                                            align="center", css_classes=["revoke-key"]))

        async def on_revoke(_: Any) -> None:
            if revoke.name != CONFIRM:  # a second click revokes: a stray one does not
                revoke.name = CONFIRM
                await asyncio.sleep(4)
                revoke.name = "Revoke"
                return
            revoke.disabled = True
            if await self._guard(self.api.revoke_key(key["id"]), done=True) is not None and self._shown == key["id"]:
                self.created.object, self.created.visible, self._shown = "", False, None
            await self.refresh()

        revoke.on_click(on_revoke)
        return pn.Row(about, revoke, sizing_mode="stretch_width", css_classes=["key-row"])

    def _show_error(self, text: str) -> None:
        self.error.object = text
        self.error.visible = True

    async def _guard(self, call: Any, done: bool = False) -> Any:
        """Await an API call; on a refusal show the API's words and return None. ``done``:
        return True for a call that answers nothing."""
        self.error.visible = False
        try:
            result = await call
        except ApiProblem as problem:
            if problem.signed_out:
                self.on_problem(problem)
            else:
                self._show_error(str(problem))
            return None
        return True if done and result is None else result
