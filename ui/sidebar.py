"""The dashboard's sidebar: the search box (Ctrl+K), the chat list grouped by date and paged
as it scrolls, and exporting and importing chats.

The list and the search results are drawn in the browser by one small component
(:class:`ChatRows`) from plain data: one row per chat, grouped under Today, Yesterday,
Previous 7 days and Older in the browser's own time zone. A widget per chat made a long
list slow to show (5,000 chats took a minute); this draws hundreds of rows in
milliseconds, updates each one in place, and moves no row while the pointer is pressed
on it. The list starts with the newest page of chats (``GET /chats?limit=``) and asks for
the next page when it is scrolled near its bottom, or on "Show more".

Everything comes from the API as the signed-in user (:class:`ui.client.ApiClient`).
"""

from __future__ import annotations

import asyncio
import html
import io
import re
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

import panel as pn
import param
from panel.custom import JSComponent

from ui.client import ApiClient, ApiProblem

PAGE = 50  # chats per request: the first page fills any screen
RESULTS = 20  # search results shown
# Results follow the typing, but a request per key press would queue behind each other on
# a busy machine: a search starts once typing pauses this long, one at a time.
SEARCH_DELAY_S = 0.25
SEARCH_PLACEHOLDER = "Search chats (Ctrl+K)"
SENDERS = {"user": "You", "assistant": "Assistant"}
_MARKS = re.compile(r"(</?mark>)")

ROWS_CSS = """
:host { display: block; width: 100%; }
.scroll { max-height: max(220px, calc(100vh - 440px)); overflow-y: auto; overscroll-behavior: contain;
  padding: 0 2px 4px 0; }
.group { font-size: 11px; font-weight: 600; letter-spacing: .04em; text-transform: uppercase;
  color: color-mix(in srgb, var(--neutral-foreground-rest, #1f2937) 80%, transparent);  /* the theme's hint colour is too faint (axe) */ padding: 10px 8px 3px; margin: 0; }
.group:first-child { padding-top: 2px; }
button { display: block; width: 100%; border: 0; border-radius: 6px; background: transparent;
  color: var(--neutral-foreground-rest, #1f2937); font: inherit; text-align: left; cursor: pointer; }
button:hover { background: rgba(47, 111, 237, .08); }
button:focus-visible { outline: 2px solid #2f6fed; outline-offset: -2px; }
.chat { height: 32px; padding: 0 8px; font-size: 14px; line-height: 32px;
  white-space: nowrap; overflow: hidden; text-overflow: ellipsis; }
.chat.current { background: rgba(47, 111, 237, .16); color: #1f3b73; font-weight: 600; }
.dot { color: #1e9e52; }
.result { padding: 5px 8px 6px; margin-bottom: 2px; }
.result .title { display: block; font-size: 14px; font-weight: 600; white-space: nowrap; overflow: hidden;
  text-overflow: ellipsis; }
.result .snippet { display: -webkit-box; -webkit-line-clamp: 2; -webkit-box-orient: vertical; overflow: hidden;
  font-size: 12px; line-height: 16px; color: color-mix(in srgb, var(--neutral-foreground-rest, #1f2937) 80%, transparent);  /* the theme's hint colour is too faint (axe) */ }
.result .who { font-weight: 600; }
mark { background: #fde68a; color: #1f2328; border-radius: 2px; padding: 0 1px; }
.note { font-size: 13px; color: color-mix(in srgb, var(--neutral-foreground-rest, #1f2937) 80%, transparent);  /* the theme's hint colour is too faint (axe) */ padding: 6px 8px; }
"""

ROWS_ESM = """
const GROUPS = ["Today", "Yesterday", "Previous 7 days", "Older"]

// The date group of a chat, by the browser's own calendar (and time zone).
function groupOf(iso, now) {
  const t = new Date(iso).getTime()
  const midnight = (daysBack) => new Date(now.getFullYear(), now.getMonth(), now.getDate() - daysBack).getTime()
  if (t >= midnight(0)) return GROUPS[0]
  if (t >= midnight(1)) return GROUPS[1]
  if (t >= midnight(7)) return GROUPS[2]
  return GROUPS[3]
}

// Moves only the nodes that are out of place, so that a row keeps its element (and the
// pointer over it keeps its target) however the list around it changes.
function place(parent, nodes) {
  let at = parent.firstChild
  for (const node of nodes) {
    if (node === at) {
      at = at.nextSibling
    } else {
      parent.insertBefore(node, at)
    }
  }
  while (at) {
    const next = at.nextSibling
    parent.removeChild(at)
    at = next
  }
}

export function render({ model, el }) {
  const scroll = document.createElement("nav")
  scroll.className = "scroll"
  scroll.setAttribute("aria-label", "Chats")
  const note = document.createElement("div")
  note.className = "note"
  note.setAttribute("role", "status")
  const list = document.createElement("div")
  list.className = "chats"
  const found = document.createElement("div")
  found.className = "results"
  scroll.append(note, list, found)
  el.append(scroll)

  const nodes = new Map()  // "c:<chat id>" and "h:<group>": the elements drawn, kept across draws
  let pressed = false
  let stale = false
  let asked = false

  const open = (chatId, messageId) => {
    model.send_msg({action: "open", chat_id: chatId, message_id: messageId})
  }

  function heading(group) {
    let h = nodes.get("h:" + group)
    if (!h) {
      h = document.createElement("h3")
      h.className = "group"
      h.textContent = group
      nodes.set("h:" + group, h)
    }
    return h
  }

  function chatRow(chat) {
    let row = nodes.get("c:" + chat.id)
    if (!row) {
      row = document.createElement("button")
      row.type = "button"
      row.className = "chat"
      row.dataset.id = chat.id
      row.append(document.createElement("span"))
      row.addEventListener("click", () => {
        markCurrent(row.dataset.id)
        open(row.dataset.id, null)
      })
      nodes.set("c:" + chat.id, row)
    }
    const label = row.lastChild
    if (label.textContent !== chat.title) label.textContent = chat.title
    const dot = row.querySelector(".dot")
    if (chat.loaded && !dot) {
      const mark = document.createElement("span")
      mark.className = "dot"
      mark.textContent = "\u25cf "  // a model is loaded for it
      row.prepend(mark)
    } else if (!chat.loaded && dot) {
      dot.remove()
    }
    if (row.title !== chat.tip) row.title = chat.tip
    return row
  }

  function markCurrent(chatId) {
    for (const row of list.querySelectorAll("button.chat")) {
      const current = row.dataset.id === chatId
      row.classList.toggle("current", current)
      if (current) row.setAttribute("aria-current", "true")
      else row.removeAttribute("aria-current")
    }
  }

  function drawChats() {
    const now = new Date()
    const wanted = []
    let group = null
    for (const chat of model.chats) {
      const g = groupOf(chat.updated_at, now)
      if (g !== group) {
        group = g
        wanted.push(heading(g))
      }
      wanted.push(chatRow(chat))
    }
    place(list, wanted)
    const kept = new Set(wanted)
    for (const [key, node] of nodes) {
      if (!kept.has(node)) nodes.delete(key)
    }
    markCurrent(model.current)
  }

  function resultRow(result) {
    const row = document.createElement("button")
    row.type = "button"
    row.className = "result"
    const title = document.createElement("span")
    title.className = "title"
    title.textContent = result.title
    const snippet = document.createElement("span")
    snippet.className = "snippet"
    snippet.innerHTML = result.snippet  // escaped text and <mark> only: see safe_snippet
    if (result.who) {
      const who = document.createElement("span")
      who.className = "who"
      who.textContent = result.who + ": "
      snippet.prepend(who)
    }
    row.append(title, snippet)
    row.addEventListener("click", () => open(result.chat_id, result.message_id))
    return row
  }

  function draw() {
    if (pressed) {  // drawn when the pointer lets go, so that the press stays a click
      stale = true
      return
    }
    stale = false
    note.textContent = model.note
    note.hidden = !model.note
    list.hidden = model.searching
    found.hidden = !model.searching
    if (model.searching) {
      found.replaceChildren(...model.results.map(resultRow))
    } else {
      drawChats()
    }
  }

  // The next page, once the list is scrolled near its end (or does not fill its box).
  function maybeMore() {
    if (!model.more || model.searching || asked || scroll.clientHeight === 0) return
    if (scroll.scrollHeight - scroll.scrollTop - scroll.clientHeight < 240) {
      asked = true
      model.send_msg({action: "more"})
    }
  }

  function release() {
    if (!pressed) return
    pressed = false
    if (stale) setTimeout(draw, 0)  // after the click this press makes
  }

  // Esc in the search box clears it (the list comes back), and does nothing else: this
  // listener runs before the page's shortcuts (ui.shortcuts: Esc there stops a reply).
  // Ctrl+K, which puts the cursor here, is one of those shortcuts.
  function onKey(event) {
    if (event.key !== "Escape") return
    const path = event.composedPath()  // the input sits in the search widget's shadow root
    const input = path[0]
    const inSearch = path.some((node) => node.classList && node.classList.contains("chat-search"))
    if (inSearch && input instanceof HTMLInputElement && input.value) {
      event.preventDefault()
      event.stopPropagation()
      input.value = ""
      input.dispatchEvent(new Event("input", {bubbles: true}))
      input.dispatchEvent(new Event("change", {bubbles: true}))
    }
  }

  scroll.addEventListener("pointerdown", () => { pressed = true })
  window.addEventListener("pointerup", release, true)
  window.addEventListener("pointercancel", release, true)
  window.addEventListener("keydown", onKey, true)
  scroll.addEventListener("scroll", maybeMore, {passive: true})
  model.on(["chats", "results", "searching", "note"], draw)
  model.on(["chats", "more"], () => {
    asked = false
    requestAnimationFrame(maybeMore)
  })
  model.on("current", () => markCurrent(model.current))
  model.on("after_layout", maybeMore)
  model.on("remove", () => {
    window.removeEventListener("pointerup", release, true)
    window.removeEventListener("pointercancel", release, true)
    window.removeEventListener("keydown", onKey, true)
  })
  draw()
  model.send_msg({action: "ready"})  // the server sends the rows again: one set before this view existed may be lost
}
"""


def safe_snippet(snippet: str) -> str:
    """The API's snippet (escaped text with ``<mark>…</mark>`` around each match) escaped
    once more around the marks, so that nothing but those marks reaches the page as markup."""
    parts = _MARKS.split(snippet)
    return "".join(p if _MARKS.fullmatch(p) else html.escape(html.unescape(p), quote=False) for p in parts)


def _label(text: str) -> pn.pane.HTML:
    return pn.pane.HTML(f'<span style="font-size: 13px; color: #4b5563">{html.escape(text)}</span>',
                        margin=(6, 10, 0, 10))


def _tip(chat: dict[str, Any]) -> str:
    count = chat.get("message_count") or 0
    messages = f"{count} message{'s' if count != 1 else ''}"
    if not chat.get("model"):
        return f"{messages} · no model yet"
    return f"{messages} · {chat['model']} · {chat.get('device') or 'auto'}"


def _updated(chat: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(chat["updated_at"])


class ChatRows(JSComponent):  # type: ignore[misc]
    """The chat list or the search results, drawn in the browser. Clicks and the wish for
    another page come back as messages: ``{"action": "open", "chat_id", "message_id"}``
    and ``{"action": "more"}``; ``{"action": "ready"}`` once a view is drawn (after a reload,
    rows set while the page was being built did not always reach it)."""

    chats = param.List(default=[], doc="Rows newest first: {id, title, loaded, tip, updated_at}.")
    results = param.List(default=[], doc="Search results: {chat_id, message_id, title, who, snippet}.")
    searching = param.Boolean(default=False, doc="Show the results instead of the list.")
    note = param.String(default="", doc="A line above the rows: no chats yet, searching, no match.")
    current = param.String(default="", doc="The open chat, highlighted.")
    more = param.Boolean(default=False, doc="Older chats remain to be loaded.")

    _esm = ROWS_ESM


OpenChat = Callable[[str, int | None], Awaitable[None]]


class ChatSidebar:
    """One browser session's sidebar. ``open_chat(chat_id, message_id)`` shows a chat (the
    dashboard's); ``current()`` says which chat is open; ``on_problem`` shows an API refusal
    (and sends a signed-out user to sign in), as the dashboard does for its own calls."""

    def __init__(self, api: ApiClient, open_chat: OpenChat, current: Callable[[], str],
                 on_problem: Callable[[ApiProblem], None]) -> None:
        self.api = api
        self.open_chat = open_chat
        self.current = current
        self.on_problem = on_problem
        self._chats: dict[str, dict[str, Any]] = {}  # what the API said about each chat listed
        self._cursor: str | None = None  # where the next page starts
        self._more = False
        self._listed = False  # the first page has come
        self._loading = False  # a next page is on its way
        self._refreshes = 0
        self._typed = 0
        self._query = ""
        self._searching = False  # a search request is on its way
        self._again = False  # and the query changed meanwhile
        self._results: list[dict[str, Any]] = []

        self.search = pn.widgets.TextInput(placeholder=SEARCH_PLACEHOLDER, css_classes=["chat-search"],
                                           sizing_mode="stretch_width", margin=(5, 10, 5, 10))
        self.rows = ChatRows(css_classes=["chat-list"], stylesheets=[ROWS_CSS], sizing_mode="stretch_width",
                             margin=(0, 5))
        self.show_more = pn.widgets.Button(name="Show more", button_type="light", visible=False,
                                           sizing_mode="stretch_width", css_classes=["show-more"])
        self.export_markdown = pn.widgets.FileDownload(callback=self._markdown, label="Markdown",
                                                       filename="chat.md", sizing_mode="stretch_width")
        self.export_json = pn.widgets.FileDownload(callback=self._json, label="JSON", filename="chat.json",
                                                   sizing_mode="stretch_width")
        self.export_all = pn.widgets.FileDownload(callback=self._archive, label="All chats (.zip)",
                                                  filename="chats.zip", sizing_mode="stretch_width")
        self.upload = pn.widgets.FileInput(accept=".json,application/json", css_classes=["chat-import"],
                                           sizing_mode="stretch_width")
        self.transfer_note = pn.pane.Alert("", alert_type="success", visible=False, sizing_mode="stretch_width",
                                           css_classes=["import-result"])
        self.transfers = pn.Card(
            _label("Download this chat as"),
            pn.Row(self.export_markdown, self.export_json, sizing_mode="stretch_width"),
            self.export_all,
            _label("Import chats from a JSON export"), self.upload, self.transfer_note,
            title="Export / import", collapsed=True, sizing_mode="stretch_width",
        )

        self.rows.on_msg(self._on_rows)
        self.show_more.on_click(self._on_show_more)
        self.search.param.watch(self._on_typing, "value_input")
        self.search.param.watch(self._on_enter, "enter_pressed")
        self.upload.param.watch(self._on_upload, "value")

    def view(self) -> pn.Column:
        """The search box, the list and its "Show more" button (the export card is :attr:`transfers`)."""
        return pn.Column(self.search, self.rows, self.show_more, sizing_mode="stretch_width", margin=0)

    def newest(self) -> str | None:
        """The most recently active chat listed, if any."""
        return self._sorted()[0]["chat_id"] if self._chats else None

    def forget(self, chat_id: str) -> None:
        """Drop a chat that was deleted from the list now, wherever it sits in it."""
        if self._chats.pop(chat_id, None) is not None:
            self._draw()

    # The list

    async def refresh(self) -> None:
        """Fetch the newest page of chats and merge it into the list: new chats appear, changed
        ones move up, and the ones missing from its span are gone. Cheap enough for after
        every reply, whatever the number of chats."""
        self._refreshes += 1
        ticket = self._refreshes
        page = await self._guard(self.api.chat_page(limit=PAGE))
        if page is None or ticket != self._refreshes:
            return  # a newer refresh started while this one waited: its answer is fresher
        chats: list[dict[str, Any]] = page["chats"]
        cursor = page.get("next_cursor")
        fresh = {c["chat_id"] for c in chats}
        if cursor is None:  # the whole list
            gone = self._chats.keys() - fresh
        else:  # only those this page covers: every chat newer than its oldest (a tie may be on the next)
            oldest = min((_updated(c) for c in chats), default=None)
            gone = {i for i, c in self._chats.items()
                    if i not in fresh and oldest is not None and _updated(c) > oldest}
        for chat_id in gone:
            del self._chats[chat_id]
        self._merge(chats)
        if not self._listed or cursor is None:
            self._cursor, self._more = cursor, cursor is not None
        self._listed = True
        self._draw()

    async def load_more(self) -> None:
        """Add the next page of older chats, once (a second call while it loads does nothing)."""
        if self._loading or not self._more:
            return
        self._loading = True
        try:
            page = await self._guard(self.api.chat_page(limit=PAGE, cursor=self._cursor))
            if page is None:
                return
            self._merge(page["chats"])
            self._cursor = page.get("next_cursor")
            self._more = self._cursor is not None
            self._draw()
        finally:
            self._loading = False

    def _merge(self, chats: list[dict[str, Any]]) -> None:
        for chat in chats:
            known = self._chats.get(chat["chat_id"])
            if known is None or _updated(chat) >= _updated(known):
                self._chats[chat["chat_id"]] = chat

    def _sorted(self) -> list[dict[str, Any]]:
        return sorted(self._chats.values(), key=_updated, reverse=True)

    def _draw(self) -> None:
        rows = [{"id": c["chat_id"], "title": c["title"], "loaded": bool(c.get("loaded")), "tip": _tip(c),
                 "updated_at": c["updated_at"]} for c in self._sorted()]
        changes: dict[str, Any] = {"current": self.current() or "", "more": self._more}
        if rows != self.rows.chats:
            changes["chats"] = rows
        if not self.rows.searching:
            changes["note"] = "" if rows else "No chats yet."
        self.rows.param.update(**changes)
        self.show_more.visible = self._more

    async def _on_rows(self, event: Any) -> None:
        message = event.data if isinstance(event.data, dict) else {}
        if message.get("action") == "open" and message.get("chat_id"):
            message_id = message.get("message_id")
            await self.open_chat(str(message["chat_id"]), message_id if isinstance(message_id, int) else None)
        elif message.get("action") == "more":
            await self.load_more()
        elif message.get("action") == "ready" and self._listed:
            self.rows.chats = []  # so that the same rows are a change, and reach this new view
            self._draw()

    async def _on_show_more(self, _: Any) -> None:
        await self.load_more()

    # Search

    async def _on_typing(self, event: Any) -> None:
        self._typed += 1
        ticket = self._typed
        query = (event.new or "").strip()
        if not query:  # cleared (or Esc): the list again, at once
            self._query = ""
            self.rows.param.update(searching=False, results=[], note="" if self._chats else "No chats yet.")
            return
        await asyncio.sleep(SEARCH_DELAY_S)
        if ticket != self._typed:
            return  # still typing
        self._query = query
        await self._search()

    async def _search(self) -> None:
        """Search for the newest query; while a request is out, only note that another is due."""
        if self._searching:
            self._again = True
            return
        self._searching = True
        try:
            while self._query:
                self._again = False
                query = self._query
                if not self.rows.searching:
                    self.rows.param.update(searching=True, results=[], note="Searching…")
                found = await self._guard(self.api.search(query, limit=RESULTS))
                if self._again:
                    continue
                if found is not None and query == self._query:
                    self._show_results(query, found)
                break
        finally:
            self._searching = False

    def _show_results(self, query: str, found: list[dict[str, Any]]) -> None:
        self._results = found
        results = [{"chat_id": r["chat_id"], "message_id": r.get("message_id"), "title": r["title"],
                    "who": SENDERS.get(r.get("sender") or "", "") if r.get("message_id") is not None else "Title",
                    "snippet": safe_snippet(r.get("snippet") or "")} for r in found]
        note = "" if results else f"No chats match “{query}”."
        self.rows.param.update(searching=True, results=results, note=note)

    async def _on_enter(self, _: Any) -> None:
        """Enter in the search box opens the first result."""
        if self.rows.searching and self._results:
            first = self._results[0]
            await self.open_chat(first["chat_id"], first.get("message_id"))

    # Export and import

    async def _markdown(self) -> io.BytesIO:
        return await self._export(self.export_markdown, "markdown", "md")

    async def _json(self) -> io.BytesIO:
        return await self._export(self.export_json, "json", "json")

    async def _export(self, button: pn.widgets.FileDownload, fmt: str, suffix: str) -> io.BytesIO:
        chat_id = self.current()
        self.transfer_note.visible = False
        try:
            if not chat_id:
                raise ApiProblem("Open a chat to export it.")
            data, name = await self.api.export_chat(chat_id, fmt)
        except ApiProblem as problem:
            self._problem(problem, "The export failed: ")
            raise  # FileDownload has no way to say "nothing to download"; the note above said why
        button.filename = name or f"chat-{chat_id}.{suffix}"
        return io.BytesIO(data)

    async def _archive(self) -> io.BytesIO:
        self.transfer_note.visible = False
        try:
            data, name = await self.api.export_all()
        except ApiProblem as problem:
            self._problem(problem, "The export failed: ")
            raise
        self.export_all.filename = name or "chats.zip"
        return io.BytesIO(data)

    async def _on_upload(self, event: Any) -> None:
        data = event.new[0] if isinstance(event.new, list) and event.new else event.new
        if not data:
            return
        self.transfer_note.visible = False
        try:
            imported = await self.api.import_chats(data)
        except ApiProblem as problem:
            self._problem(problem, "Import refused: ")
            return
        finally:
            self.upload.value = None  # the same file may be chosen again
            self.upload.clear()
        titles = ", ".join(f"“{html.escape(c['title'])}”" for c in imported)
        count = f"{len(imported)} chat{'s' if len(imported) != 1 else ''}"
        self._say(f"Imported {count}: {titles}." if imported else "The file held no chats.", "success")
        await self.refresh()
        if imported:
            await self.open_chat(imported[0]["chat_id"], None)

    # Helpers

    def _say(self, text: str, kind: str) -> None:
        self.transfer_note.param.update(object=text, alert_type=kind, visible=True)

    def _problem(self, problem: ApiProblem, prefix: str) -> None:
        if problem.signed_out:
            self.on_problem(problem)
        else:
            self._say(prefix + html.escape(str(problem)), "danger")

    async def _guard(self, call: Awaitable[Any]) -> Any:
        """Await an API call; show its problem as the dashboard does and return None."""
        try:
            return await call
        except ApiProblem as problem:
            self.on_problem(problem)
            return None
