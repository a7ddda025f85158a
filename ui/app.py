"""The Panel dashboard: chat list, model and device pickers, a load/unload toggle, the
streaming transcript with timestamps and metrics, per-chat settings, and the chat id kept
in the URL (``?chat_id=``) for deep links and hard refreshes; with sign-in on, the user's
name, a sign-out button and (administrators) the link to the admin view in the header, and
the user's API keys in the sidebar. While the open chat's model is loaded its status is
asked again every few seconds, so a model stopped elsewhere (by an administrator, say)
shows as unloaded, with the reason, without a reload.

Everything it knows comes from the API over HTTP (:mod:`ui.client`), as the signed-in user
(:mod:`ui.auth`): when the API stops taking their session, the page reloads, and a reload
without a working sign-in lands on the sign-in page.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime
from typing import Any

import panel as pn

from ui.a11y import MESSAGE_CSS, PageFixes, readable
from ui.auth import SignedIn, signed_in_user
from ui.client import ApiClient, ApiProblem
from ui.draft import DraftCounter
from ui.header import account_box
from ui.keys import ApiKeys
from ui.render import plain_markdown, reply_body, show_reply
from ui.settings import UiSettings
from ui.shortcuts import Shortcuts
from ui.sidebar import ChatSidebar

ASSISTANT = "Assistant"
USER = "You"
TIMESTAMP_FORMAT = "%Y-%m-%d %H:%M:%S"
# Re-rendering the transcript costs CPU that the model needs on small machines, so a
# streaming reply is redrawn at most this often (every token still arrives).
REDRAW_EVERY_S = 0.1
# While the open chat's model is loaded, its status is asked this often (one small GET
# /status per open dashboard; none while nothing is loaded).
STATUS_EVERY_MS = 3000
AVATARS = {USER: "U", ASSISTANT: "A"}
# ‹ › between a message's versions: arrows, not boxes; the one that leads nowhere fades.
VERSION_CSS = """
:host .bk-btn { background: transparent; border: 0; font-size: 18px; line-height: 18px; padding: 0 4px; }
:host .bk-btn:hover:not(:disabled) { background: rgba(47, 111, 237, .12); }
:host .bk-btn:disabled { opacity: .3; }
"""
# Phones and narrow windows: the sidebar starts folded away and the menu button opens it
# as a drawer over the transcript. The template's own toggle sets "hidden"; below 700 px
# that class means "open" and its absence "folded", so no script is needed.
NARROW_CSS = """
@media (max-width: 700px) {
  #sidebar:not(.hidden) { max-width: 0; min-width: 0; padding: 0; border: 0; overflow: hidden; }
  #sidebar.hidden { position: absolute; z-index: 100; min-width: 85vw; max-width: 85vw;
    height: calc(100% - 64px); overflow-y: auto; padding: 15px 10px 5px 5px;
    background: var(--neutral-layer-2, #f7f7f7); box-shadow: 2px 2px 10px silver; }
  #header .title { font-size: 22px; margin-left: 0.2em; }  /* room for the user's name */
}
@media (max-width: 420px) {
  #header .title { font-size: 19px; margin-left: 0; }  /* and for an administrator's Admin link */
}
"""


def _when(iso: str) -> datetime:
    return datetime.fromisoformat(iso).astimezone()


def _later(action: Callable[[int], Awaitable[None]], message_id: int) -> Callable[[Any], Awaitable[None]]:
    """A click handler that runs ``action(message_id)`` (Panel awaits only coroutine functions)."""
    async def clicked(_: Any) -> None:
        await action(message_id)
    return clicked


def metrics_line(message: dict[str, Any]) -> str:
    """The footer of a reply: tokens, time, tokens/s, first token, and anything unusual."""
    parts = []
    if message.get("tokens") is not None:
        parts.append(f"{message['tokens']} tokens")
    if message.get("time_s") is not None:
        parts.append(f"{message['time_s']:.2f} s")
    if message.get("tps") is not None:
        parts.append(f"{message['tps']:.1f} tokens/s")
    if message.get("time_to_first_token_s") is not None:
        parts.append(f"first token {message['time_to_first_token_s'] * 1000:.0f} ms")
    if message.get("model"):
        parts.append(f"{message['model']} on {message.get('running_on') or '?'}")
    if message.get("dropped_messages"):
        parts.append(f"{message['dropped_messages']} earlier messages left out to fit the context")
    status = message.get("status", "complete")
    if status == "stopped":
        parts.append("stopped")
    elif status == "error":
        parts.append(f"failed: {message.get('error') or 'unknown error'}")
    return " · ".join(parts)


class Dashboard:
    """One browser session's dashboard, acting for ``user`` (None in local mode)."""

    def __init__(self, api: ApiClient, user: SignedIn | None = None) -> None:
        self.api = api
        self.user = user
        self.loaded = False
        self.models_dir = ""
        # Refreshes overlap (a reply ends while a chat opens): only the newest may draw.
        self._refreshes = {"status": 0, "open": 0}
        self.chat_id = pn.widgets.TextInput(name="chat_id", visible=False)
        self.new_chat = pn.widgets.Button(name="New chat", button_type="primary", icon="plus", sizing_mode="stretch_width")
        self.sidebar = ChatSidebar(api, self.open_chat, lambda: str(self.chat_id.value or ""), self._on_problem)
        self.title = pn.widgets.TextInput(name="Chat name", placeholder="Name this chat", sizing_mode="stretch_width")
        self.rename = pn.widgets.Button(name="Rename", sizing_mode="stretch_width")
        self.delete = readable(pn.widgets.Button(name="Delete chat", button_type="danger", button_style="outline",
                                                  sizing_mode="stretch_width"))
        self.model = pn.widgets.Select(name="Model", options=[], min_width=200, max_width=420, sizing_mode="stretch_width")
        self.device = pn.widgets.RadioButtonGroup(name="Device", options=["auto", "cpu", "gpu"], value="auto", button_type="default")
        self.toggle = readable(pn.widgets.Button(name="Load", button_type="success", width=110, align="end"))
        self.state = pn.pane.Markdown("", css_classes=["load-state"], margin=(0, 10))
        self.alert = pn.pane.Alert("", alert_type="danger", visible=False, sizing_mode="stretch_width")
        self.no_models = pn.pane.Alert("", alert_type="warning", visible=False, sizing_mode="stretch_width")
        self.preparing = pn.pane.Markdown("", visible=False, css_classes=["preparing"], margin=(0, 10))
        self._watch_builds: Any = None  # a periodic refresh of the model list while models are being built
        self._watch_status: Any = None  # the periodic status check of the open chat (see STATUS_EVERY_MS)
        self._checking = False
        self.keys = ApiKeys(api, self._on_problem) if user is not None else None
        self.system_prompt = pn.widgets.TextAreaInput(name="System prompt", rows=3, sizing_mode="stretch_width")
        self.temperature = pn.widgets.FloatSlider(name="Temperature", start=0, end=2, step=0.05, value=0.7, sizing_mode="stretch_width")
        self.max_new_tokens = pn.widgets.IntSlider(name="Max new tokens", start=16, end=4096, step=16, value=256, sizing_mode="stretch_width")
        self.save = pn.widgets.Button(name="Save settings", sizing_mode="stretch_width")
        self.missing = pn.Column(visible=False, sizing_mode="stretch_width")
        self.feed = pn.chat.ChatInterface(
            callback=self._respond,
            callback_user=ASSISTANT,
            callback_avatar=AVATARS[ASSISTANT],
            user=USER,
            avatar=AVATARS[USER],
            show_rerun=False,
            show_undo=False,
            show_clear=False,
            show_button_name=True,
            sizing_mode="stretch_both",
            min_height=420,
            css_classes=["transcript"],
            message_params={"show_timestamp": True, "timestamp_format": TIMESTAMP_FORMAT, "show_copy_icon": True,
                            "stylesheets": [MESSAGE_CSS]},
            renderers=[plain_markdown],  # every message it draws: no raw HTML, also while a reply streams
            widgets=pn.chat.ChatAreaInput(placeholder="Send a message (Shift+Enter: new line)"),
        )
        self.new_chat.on_click(self._on_new_chat)
        self.toggle.on_click(self._on_toggle)
        self.rename.on_click(self._on_rename)
        self.delete.on_click(self._on_delete)
        self.save.on_click(self._on_save)
        self.chat_id.param.watch(self._on_chat_id, "value")
        self._shown: list[dict[str, Any]] = []  # the messages in the transcript, as /history gave them
        self._opening: str | None = None  # a chat open_chat is opening (the id watcher leaves it alone)
        self._opens: dict[str, asyncio.Future[None]] = {}  # opens under way, by chat
        self._opened: str | None = None  # the chat whose transcript is shown
        self._editing: int | None = None  # the question being edited (the next message replaces it)
        self._regenerating: asyncio.Task[Any] | None = None
        cancel_edit = pn.widgets.Button(name="Cancel", button_type="light", height=28, css_classes=["edit-cancel"])
        cancel_edit.on_click(self._end_edit)
        self.editing_note = pn.Row(
            pn.pane.Markdown("Editing an earlier message: sending it starts a new branch from there "
                             "(the old one stays, under ‹ ›).", margin=(4, 10)),
            cancel_edit, visible=False, css_classes=["editing-note"], sizing_mode="stretch_width")
        self.shortcuts = Shortcuts(on_new_chat=self._on_new_chat, on_stop=self._stop_reply)
        self.draft = DraftCounter(lambda text: self.api.count_tokens(self.chat_id.value, text))
        self.draft.watch(self.feed.active_widget)
        # Another chat, or its model loaded or unloaded (the toggle's name flips): count again.
        self.chat_id.param.watch(self.draft.refresh, "value")
        self.toggle.param.watch(self.draft.refresh, "name")

    # Layout

    def view(self) -> pn.template.BaseTemplate:
        controls = pn.FlexBox(
            self.model,
            # Labelled the way the Select labels itself: in its type, just above the buttons.
            pn.Column(pn.pane.HTML("Device", margin=(5, 10, 0, 10), stylesheets=[":host { line-height: 1.2; }"]),
                      self.device, margin=0),
            self.toggle, flex_wrap="wrap", align_items="end", sizing_mode="stretch_width")
        settings = pn.Card(self.system_prompt, self.temperature, self.max_new_tokens, self.save,
                           title="Chat settings", collapsed=True, sizing_mode="stretch_width")
        sidebar = [self.new_chat, self.sidebar.view(), pn.layout.Divider(), self.title,
                   pn.Row(self.rename, self.delete, sizing_mode="stretch_width"), self.sidebar.transfers, self.chat_id]
        if self.keys is not None:
            sidebar += [pn.layout.Divider(), self.keys.view()]
        main = [pn.Column(self.alert, self.no_models, self.missing, controls, self.preparing, self.state, settings, self.feed,
                          self.editing_note, self.draft.view, self.shortcuts, PageFixes(),
                          sizing_mode="stretch_both")]
        template = pn.template.FastListTemplate(
            title="llmchat", sidebar=sidebar, main=main, sidebar_width=300, main_layout=None,
            accent="#2f6fed", header_background="#1f3b73", header=account_box(self.user),
        )
        template.config.raw_css.append(NARROW_CSS)
        return template

    # Lifecycle

    async def start(self) -> None:
        """Runs once the page is shown: fill the pickers and open the chat in the URL."""
        self._watch_status = pn.state.add_periodic_callback(self._check_status, period=STATUS_EVERY_MS)
        await self._refresh_chats()  # the list first: with many chats it is what takes longest to see
        await self._refresh_models()
        if self.chat_id.value:
            if self._opened != self.chat_id.value:  # not opened already as the URL's value arrived
                await self._open(self.chat_id.value)
            return
        newest = self.sidebar.newest()
        if newest is not None:
            self.chat_id.value = newest  # the most recent chat; the URL follows
        else:
            await self._on_new_chat()

    def stop(self) -> None:
        """The browser session ended: no more status checks."""
        if self._watch_status is not None:
            self._watch_status.stop()
            self._watch_status = None
        if self._watch_builds is not None:
            self._watch_builds.stop()
            self._watch_builds = None

    # Events

    async def _on_chat_id(self, event: Any) -> None:
        if event.new and event.new == self._opening:
            self._opening = None  # open_chat opens it itself
        elif event.new:
            await self._open(event.new)

    async def open_chat(self, chat_id: str, message_id: int | None = None) -> None:
        """Open a chat (a search result, say); with ``message_id``, on the branch through that
        message, scrolled to it and marked."""
        if chat_id != self.chat_id.value:
            self._opening = chat_id
            self.chat_id.value = chat_id  # the URL follows
            await self._open(chat_id)
        if message_id is None or chat_id != self.chat_id.value:
            return
        if not any(m["id"] == message_id for m in self._shown):  # on another branch: show that one
            shown = await self._guard(self.api.branch(chat_id, message_id))
            if shown is None:
                return
            self._show_history(shown)
        at = next((i for i, m in enumerate(self._shown) if m["id"] == message_id), None)
        if at is not None:
            found = self.feed.objects[at]
            found.css_classes = [*found.css_classes, "found"]
            found.styles = {"outline": "2px solid #f0b400", "border-radius": "6px"}
            self.feed.scroll_to(at)

    async def _on_new_chat(self, _: Any = None) -> None:
        chat_id = uuid.uuid4().hex
        if await self._guard(self.api.create_chat(chat_id)) is not None:
            self.chat_id.value = chat_id

    async def _on_toggle(self, _: Any) -> None:
        chat_id = self.chat_id.value
        if not chat_id:
            return
        self.toggle.loading = True
        self.toggle.disabled = True
        try:
            if self.loaded:
                self.state.object = "Unloading…"
                result = await self._guard(self.api.unload(chat_id))
                if result is not None:
                    exited = result.get("process_exited")
                    self.state.object = (
                        "Unloaded: the model's process has exited and its memory is free." if exited
                        else "Unloaded for this chat (another chat still uses the model)."
                    )
            else:
                if not self.model.value:
                    self._show_error("Choose a model first.")
                    return
                self.state.object = f"Loading **{self.model.value}** on {self.device.value}…"
                result = await self._guard(self.api.load(chat_id, self.model.value, self.device.value))
                if result is not None:
                    self.state.object = (
                        f"Loaded **{result['model']}** with {result['backend']} on {result['running_on']} "
                        f"in {result['load_time_s']:.2f} s (context {result['context_length']} tokens)."
                    )
                else:
                    self.state.object = ""
        finally:
            self.toggle.loading = False
            self.toggle.disabled = False
            await self._refresh_status()
            await self._refresh_chats()

    async def _on_rename(self, _: Any) -> None:
        if self.chat_id.value:
            await self._guard(self.api.update_chat(self.chat_id.value, title=self.title.value))
            await self._refresh_chats()

    async def _on_delete(self, _: Any) -> None:
        if not self.chat_id.value:
            return
        if self.delete.name != "Click again to delete":
            self.delete.name = "Click again to delete"
            await asyncio.sleep(4)
            self.delete.name = "Delete chat"
            return
        self.delete.name = "Delete chat"
        await self._guard(self.api.delete_chat(self.chat_id.value))
        self.sidebar.forget(self.chat_id.value)
        await self._refresh_chats()
        newest = self.sidebar.newest()
        if newest is not None:
            self.chat_id.value = newest
        else:
            await self._on_new_chat()

    async def _on_save(self, _: Any) -> None:
        if self.chat_id.value:
            saved = await self._guard(self.api.update_chat(
                self.chat_id.value, system_prompt=self.system_prompt.value,
                temperature=self.temperature.value, max_new_tokens=self.max_new_tokens.value,
            ))
            if saved is not None:
                self.state.object = "Settings saved; they apply from the next message."

    async def _respond(self, contents: str, user: str, instance: pn.chat.ChatInterface) -> AsyncIterator[Any]:
        """ChatInterface callback: stream the reply from the API, token by token. While a
        question is being edited, the message goes in its place (a new branch)."""
        chat_id = self.chat_id.value
        edit_of = self._editing
        self._end_edit()
        self.alert.visible = False
        if edit_of is not None:  # the transcript forks before the edited question: show that
            before = [i for i, m in enumerate(self._shown) if m["id"] == edit_of]
            if before:
                self.feed.objects = [*self.feed.objects[: before[0]], self.feed.objects[-1]]
        if not self.loaded and self.model.value:
            self.state.object = f"Loading **{self.model.value}** on {self.device.value}…"
            if await self._guard(self.api.load(chat_id, self.model.value, self.device.value)) is None:
                return
            await self._refresh_status()
        finished = False
        try:
            async for update in self._reply_updates(self.api.stream_chat(chat_id, contents, edit_of)):
                finished = finished or "footer_objects" in update
                yield update
        except ApiProblem as problem:
            if problem.signed_out:
                self._restore_draft(contents)
                self._on_problem(problem)
            elif problem.refused:
                self._restore_draft(contents)
                self._show_error(f"{problem} Your message was not sent; it is back in the message box.")
            else:  # accepted, then failed: the stored reply says why
                self._show_error(f"The reply failed: {problem}")
                finished = True
        except asyncio.CancelledError:
            # Stop button: leaving the stream closes the connection, so the API stores the
            # partial reply as "stopped"; show it as stored.
            asyncio.get_running_loop().create_task(self._after_stop(chat_id))
            raise
        finally:
            if finished and chat_id == self.chat_id.value:  # its versions, edit and regenerate buttons
                self._show_history(await self._guard(self.api.history(chat_id)) or [])
            await self._refresh_chats()
            await self._refresh_status()

    async def _reply_updates(self, events: AsyncIterator[tuple[str, dict[str, Any]]]) -> AsyncIterator[dict[str, Any]]:
        """A reply's events as updates of its ChatMessage (``object``, then ``footer_objects``
        once it has ended). While it streams, one Markdown pane is updated in place (redrawn
        at most every REDRAW_EVERY_S): a new pane per update would blink."""
        text = ""
        drawn_at = 0.0
        loop = asyncio.get_running_loop()
        body = plain_markdown("…")
        async for event, data in events:
            if event == "queued":  # every slot of the model is busy: say where this one stands
                ahead = data["ahead"]
                waiting = "next in line" if ahead == 0 else f"{ahead} ahead of you"
                body.object = f"Waiting for the model ({waiting})…" if data["position"] else "…"
                yield {"object": body}
            elif event == "token":
                text += data["text"]
                if loop.time() - drawn_at >= REDRAW_EVERY_S:
                    drawn_at = loop.time()
                    body.object = text or "…"
                    yield {"object": body}
            elif event == "done":
                yield {"object": show_reply(body, data["text"] or "(empty reply)"), "footer_objects": [self._footer(data)]}
            elif event == "error":
                body.object = text or "(no reply)"
                yield {"object": body, "footer_objects": [self._footer({"status": "error", "error": data["detail"]})]}
                self._show_error(f"The reply failed: {data['detail']}")

    async def _regenerate(self, message_id: int) -> None:
        """A new reply beside ``message_id``, streamed in its place; the old one stays a sibling."""
        chat_id = self.chat_id.value
        at = next((i for i, m in enumerate(self._shown) if m["id"] == message_id), None)
        if at is None or self._regenerating is not None or self.feed.disabled:
            return
        self.alert.visible = False
        reply = pn.chat.ChatMessage(object="…", user=ASSISTANT, avatar=AVATARS[ASSISTANT], renderers=[plain_markdown],
                                    timestamp_format=TIMESTAMP_FORMAT, show_timestamp=True, stylesheets=[MESSAGE_CSS])
        self.feed.objects = [*self.feed.objects[:at], reply]
        self._regenerating = asyncio.current_task()
        finished = False
        try:
            async for update in self._reply_updates(self.api.stream_regenerate(chat_id, message_id)):
                finished = finished or "footer_objects" in update
                reply.param.update(**update)
        except ApiProblem as problem:
            self._on_problem(problem)
            finished = True
        except asyncio.CancelledError:  # stopped: the API keeps the partial reply
            asyncio.get_running_loop().create_task(self._after_stop(chat_id))
            raise
        finally:
            self._regenerating = None
            if finished and chat_id == self.chat_id.value:
                self._show_history(await self._guard(self.api.history(chat_id)) or [])
            await self._refresh_chats()

    def _stop_reply(self) -> None:
        """Esc: stop the reply being written, sent or regenerated."""
        if self._regenerating is not None:
            self._regenerating.cancel()
        self.feed.stop()

    async def _switch(self, message_id: int) -> None:
        """Show another version of a message (‹ ›), and the newest branch after it."""
        shown = await self._guard(self.api.branch(self.chat_id.value, message_id))
        if shown is not None:
            self._show_history(shown)

    def _edit(self, message: dict[str, Any]) -> None:
        """Put an earlier question into the message box; sending it starts a new branch there."""
        self._editing = message["id"]
        self.feed.active_widget.value_input = message["text"]
        self.editing_note.visible = True

    def _end_edit(self, _: Any = None) -> None:
        self._editing = None
        self.editing_note.visible = False
        if _ is not None:  # cancelled by the user: the box empties
            self.feed.active_widget.value_input = ""

    def _restore_draft(self, contents: str) -> None:
        """A refused message was not stored: take it out of the transcript, back into the box."""
        mine = [m for m in self.feed.objects if getattr(m, "user", None) == USER and m.object == contents]
        if mine:
            self.feed.objects = [m for m in self.feed.objects if m is not mine[-1]]
        self.feed.active_widget.value_input = contents

    async def _after_stop(self, chat_id: str) -> None:
        for _ in range(30):
            history = await self._guard(self.api.history(chat_id)) or []
            if not history or history[-1]["status"] != "streaming":
                break
            await asyncio.sleep(0.1)
        if chat_id == self.chat_id.value:
            self._show_history(history)

    # Loading data

    async def _open(self, chat_id: str) -> None:
        """Show a chat. A page opened on ``?chat_id=`` asks twice (the URL's value arrives,
        and start() runs, in either order): an open of the same chat under way is waited
        for instead of run again, so the transcript is drawn once and a click on it is not
        lost to a redraw."""
        running = self._opens.get(chat_id)
        if running is not None:
            await asyncio.shield(running)
            return
        self._opens[chat_id] = asyncio.ensure_future(self._open_now(chat_id))
        try:
            await asyncio.shield(self._opens[chat_id])
        finally:
            self._opens.pop(chat_id, None)

    async def _open_now(self, chat_id: str) -> None:
        ticket = self._ticket("open")  # only the newest open draws (another chat may be asked for meanwhile)
        self.alert.visible = False
        if self._editing is not None:
            self._end_edit()
        try:
            chat = await self.api.chat(chat_id)
        except ApiProblem as problem:
            if problem.status == 404:  # or another user's: the API does not say which
                self._show_missing(chat_id)
                await self._refresh_chats()
            else:
                self._on_problem(problem)
            return
        self.missing.visible = False
        self.feed.disabled = False
        self.title.value = chat["title"] if chat["title"] != "New chat" else ""
        self.system_prompt.value = chat["system_prompt"]
        self.temperature.value = chat["temperature"]
        self.max_new_tokens.value = min(max(chat["max_new_tokens"], 16), 4096)
        if chat.get("model") in self.model.values:
            self.model.value = chat["model"]
        if chat.get("device") in self.device.options:
            self.device.value = chat["device"]
        history = await self._guard(self.api.history(chat_id)) or []
        if ticket != self._refreshes["open"]:
            return
        self._show_history(history)
        self._opened = chat_id
        self.state.object = ""
        await self._refresh_status()
        await self._refresh_chats()

    def _show_history(self, history: list[dict[str, Any]]) -> None:
        self._shown = history
        last_reply = max((i for i, m in enumerate(history) if m["sender"] == "assistant"), default=None)
        messages = []
        for i, m in enumerate(history):
            mine = m["sender"] == "user"
            messages.append(pn.chat.ChatMessage(
                object=reply_body(m["text"]) if m["text"] else ("…" if m["status"] == "streaming" else "(no reply)"),
                user=USER if mine else ASSISTANT,
                avatar=AVATARS[USER if mine else ASSISTANT],
                timestamp=_when(m["timestamp"]),
                timestamp_format=TIMESTAMP_FORMAT,
                show_timestamp=True,
                stylesheets=[MESSAGE_CSS],
                footer_objects=self._message_footer(m, last=i == last_reply),
                css_classes=[f"message-{m['id']}"],
            ))
        self.feed.objects = messages

    def _message_footer(self, m: dict[str, Any], last: bool) -> list[pn.viewable.Viewable]:
        """Under a message: its metrics (replies), ‹ n/N › between its versions, and Edit
        (questions) or Regenerate (the last reply)."""
        parts: list[pn.viewable.Viewable] = []
        if m["sender"] == "assistant":
            parts.append(self._footer(m))
        versions = m.get("siblings") or [m["id"]]
        if len(versions) > 1:
            at = versions.index(m["id"])
            previous = pn.widgets.Button(name="‹", button_type="light", width=28, height=26, margin=(0, 2),
                                         disabled=at == 0, description="Previous version",
                                         css_classes=["version-previous"], stylesheets=[VERSION_CSS])
            following = pn.widgets.Button(name="›", button_type="light", width=28, height=26, margin=(0, 2),
                                          disabled=at == len(versions) - 1, description="Next version",
                                          css_classes=["version-next"], stylesheets=[VERSION_CSS])
            if at > 0:
                previous.on_click(_later(self._switch, versions[at - 1]))
            if at < len(versions) - 1:
                following.on_click(_later(self._switch, versions[at + 1]))
            parts += [previous, pn.pane.HTML(f"{at + 1}/{len(versions)}", margin=(0, 2), styles={"font-size": "13px"},
                                             css_classes=["version-count"]), following]
        if m["sender"] == "user":
            edit = pn.widgets.Button(name="Edit", button_type="light", height=26, margin=(0, 4),
                                     description="Edit this message and send it again (a new branch)",
                                     css_classes=["message-edit"])
            edit.on_click(lambda _, message=m: self._edit(message))
            parts.append(edit)
        elif last and m["status"] != "streaming":
            again = pn.widgets.Button(name="Regenerate", button_type="light", height=26, margin=(0, 4),
                                      description="Write this reply again (the old one stays as a version)",
                                      css_classes=["message-regenerate"])
            again.on_click(_later(self._regenerate, m["id"]))
            parts.append(again)
        if len(parts) == 1 and m["sender"] == "assistant":
            return parts
        return [pn.FlexBox(*parts, align_items="center", flex_wrap="wrap", margin=0, css_classes=["message-tools"])]

    def _show_missing(self, chat_id: str) -> None:
        self._opened = None
        start = pn.widgets.Button(name="Start a new chat", button_type="primary")
        start.on_click(self._on_new_chat)
        self.missing.objects = [pn.pane.Alert(
            f"There is no chat with id `{chat_id}`: it may have been deleted, or the link is mistyped.",
            alert_type="warning"), start]
        self.missing.visible = True
        self.feed.objects = []
        self.feed.disabled = True
        self.loaded = False
        self._render_toggle()

    async def _refresh_models(self) -> None:
        listing = await self._guard(self.api.models())
        if listing is None:
            return
        self.models_dir = listing["models_dir"]
        # Fast llama.cpp models first: they are the better default on a CPU.
        found = sorted(listing["models"], key=lambda m: (m["backend"] != "llama.cpp", m["name"]))
        self.model.options = {
            f"{m['name']} ({m['backend']}, {m['size_bytes'] / 2**20:,.0f} MB)": m["name"] for m in found
        }
        names = [m["name"] for m in found]
        if names and self.model.value not in names:
            self.model.value = names[0]
        self.no_models.object = (
            f"No models found in `{self.models_dir}`. Put a `.gguf` file, or a Transformers model folder "
            "(`config.json` + `*.safetensors` + tokenizer files), into that folder, then reload this page."
        )
        self.no_models.visible = not names and not listing.get("preparing")
        self.toggle.disabled = not names
        self._show_preparing(listing.get("preparing", []))

    def _show_preparing(self, builds: list[dict[str, Any]]) -> None:
        """Models set-up is still deriving: say how far along, and look again until they are done."""
        lines = []
        for b in builds:
            took = f", {b['elapsed_s']:.0f} s" if b.get("elapsed_s") else ""
            why = f": {b['error']}" if b.get("error") else ""
            lines.append(f"- `{b['name']}`: {b['state']} ({b['step']}{took}){why}")
        self.preparing.object = "**Being prepared in the background** (they join the list when ready)\n" + "\n".join(lines)
        self.preparing.visible = bool(lines)
        building = any(b["state"] in ("queued", "building") for b in builds)
        if building and self._watch_builds is None:
            self._watch_builds = pn.state.add_periodic_callback(self._refresh_models, period=5000)
        elif not building and self._watch_builds is not None:
            self._watch_builds.stop()
            self._watch_builds = None

    async def _refresh_status(self) -> None:
        if not self.chat_id.value:
            return
        ticket = self._ticket("status")
        try:
            status = await self.api.status(self.chat_id.value)
        except ApiProblem as problem:
            if problem.signed_out:
                self._on_problem(problem)
            return
        if ticket != self._refreshes["status"]:
            return
        self.loaded = bool(status["loaded"])
        if not self.loaded and status.get("reason"):
            self.state.object = f"The model stopped: {status['reason']}. Press Load to start it again."
        self._render_toggle()

    async def _check_status(self) -> None:
        """The periodic check: only while the open chat's model is loaded (only then can it go
        away by itself: an administrator's force-unload, an idle unload, a crash) and no load
        or unload of this page's is under way. When it went, the chat list drops its mark."""
        if not self.loaded or self.toggle.loading or not self.chat_id.value or self._checking:
            return
        self._checking = True  # a slow answer does not pile up checks behind it
        try:
            await self._refresh_status()
            if not self.loaded:
                await self._refresh_chats()
        finally:
            self._checking = False

    def _render_toggle(self) -> None:
        self.toggle.name = "Unload" if self.loaded else "Load"
        self.toggle.button_type = "warning" if self.loaded else "success"
        self.model.disabled = self.loaded
        self.device.disabled = self.loaded

    async def _refresh_chats(self) -> None:
        """Bring the sidebar's list up to date (its newest page: cheap with any number of chats)."""
        await self.sidebar.refresh()

    # Helpers

    def _ticket(self, kind: str) -> int:
        self._refreshes[kind] += 1
        return self._refreshes[kind]

    def _footer(self, message: dict[str, Any]) -> pn.pane.Markdown:
        return pn.pane.Markdown(f"<small>{metrics_line(message)}</small>", css_classes=["reply-metrics"],
                                margin=(0, 8, 0, 0))

    def _show_error(self, text: str) -> None:
        self.alert.object = text
        self.alert.visible = True

    def _on_problem(self, problem: ApiProblem) -> None:
        """Show what went wrong; when the API no longer takes the session, go and sign in."""
        if problem.signed_out and self.user is not None:
            if pn.state.location is not None and not pn.state.location.reload:
                pn.state.location.reload = True  # the reload finds no sign-in: /login, then back here
            self._show_error("Your session has ended: sign in again.")
            return
        if problem.signed_out:
            problem = ApiProblem(f"{problem} (the API has accounts on, and this dashboard runs in local mode "
                                 "without sign-in: run both with the same LLMCHAT_AUTH)", problem.status)
        self._show_error(str(problem))

    async def _guard(self, call: Any) -> Any:
        """Await an API call; show its problem in plain words instead of raising."""
        try:
            return await call
        except ApiProblem as problem:
            self._on_problem(problem)
            return None


def create_dashboard() -> pn.viewable.Viewable:
    """A new dashboard for one browser session, with ``chat_id`` kept in the URL, acting for
    the user who signed in (with sign-in on)."""
    settings = UiSettings()
    user = signed_in_user()
    if settings.auth == "on" and user is None:  # fails closed: no user, no API calls
        return pn.pane.HTML('<p>You are not signed in. <a href="./login">Sign in</a></p>')
    api = ApiClient(settings, token=user.token if user is not None else None)
    dashboard = Dashboard(api, user)
    if pn.state.location is not None:
        pn.state.location.sync(dashboard.chat_id, {"value": "chat_id"})
    pn.state.onload(dashboard.start)

    def ended(_: Any) -> None:
        dashboard.stop()
        asyncio.ensure_future(api.close())

    pn.state.on_session_destroyed(ended)
    return dashboard.view()


if __name__.startswith("bokeh_app"):  # `LLMCHAT_AUTH=off panel serve ui/app.py` (sign-in needs python -m ui)
    create_dashboard().servable()
