"""The line under the message box: the draft's size in tokens against the model's context
("1,234 / 8,192 tokens"), counted by the loaded model through the API.

Counting costs the model's worker a tokenisation, so the draft is counted once it has
rested for :data:`SETTLE_S`, and never by more than one request at a time: edits made while
a count is on its way are counted when it is back.
"""

from __future__ import annotations

import asyncio
import html
from collections.abc import Awaitable, Callable
from typing import Any

import panel as pn

from ui.client import ApiProblem

SETTLE_S = 0.3
NOT_LOADED = "no token count: the model is not loaded"
CSS = """
.draft-tokens { font-size: 12px; color: #6a737d; text-align: right; }
.draft-tokens.over { color: #c0392b; font-weight: 600; }
"""

Count = Callable[[str], Awaitable[dict[str, Any]]]


def tokens_line(tokens: int, context_length: int) -> str:
    """``1,234 / 8,192 tokens``."""
    return f"{tokens:,} / {context_length:,} tokens"


class DraftCounter:
    """Counts the draft with ``count(text)`` (an answer ``{tokens, context_length}``; an
    :class:`ApiProblem` with status 409 when no model is loaded, 413 when the text is longer
    than the API takes) and shows it in :attr:`view`."""

    def __init__(self, count: Count, settle_s: float = SETTLE_S) -> None:
        self.view = pn.pane.HTML("", stylesheets=[CSS], sizing_mode="stretch_width", height=18,
                                 margin=(0, 12, 4, 12), css_classes=["draft-counter"])
        self._count = count
        self._settle_s = settle_s
        self._draft = ""
        self._edits = 0  # how many times the draft changed: a count of an older draft is stale
        self._counting = False

    def watch(self, box: pn.widgets.TextAreaInput) -> None:
        """Count what is typed into ``box`` (its ``value_input``, key by key)."""
        box.param.watch(self._on_input, "value_input")

    async def _on_input(self, event: Any) -> None:
        await self.update(event.new or "")

    async def refresh(self, _: Any = None) -> None:
        """Count the draft again: the chat or its model changed."""
        await self.update(self._draft)

    async def update(self, text: str) -> None:
        """The draft is now ``text``: count it once it rests (at once, if it is empty)."""
        self._draft = text
        self._edits += 1
        if not text.strip():
            self._show("")
        if self._counting:
            return  # the count under way looks at the draft again when it is back
        self._counting = True
        try:
            await self._count_until_current()
        finally:
            self._counting = False

    async def _count_until_current(self) -> None:
        while True:
            edits = self._edits
            await asyncio.sleep(self._settle_s)
            if edits != self._edits:
                continue  # still typing
            text = self._draft
            if not text.strip():
                self._show("")
                return
            over = False
            try:
                answer = await self._count(text)
            except ApiProblem as problem:
                over = problem.status == 413  # longer than the API takes: it says by how much
                line = NOT_LOADED if problem.status == 409 else html.escape(str(problem)) if over else ""
            else:
                tokens, context = int(answer["tokens"]), int(answer["context_length"])
                line, over = tokens_line(tokens, context), tokens > context
            if self._draft.strip():  # while typing on, the count of a moment ago beats none
                self._show(line, over)
            if edits == self._edits:
                return

    def _show(self, line: str, over: bool = False) -> None:
        classes = "draft-tokens over" if over else "draft-tokens"
        self.view.object = f'<div class="{classes}">{line}</div>' if line else ""
