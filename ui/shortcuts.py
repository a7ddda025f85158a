"""The dashboard's keyboard shortcuts, one ``keydown`` listener on the page:

- Esc stops the reply being written (as the Stop button does);
- Ctrl+Shift+O (Cmd+Shift+O on a Mac) opens a new chat and puts the cursor in the message box;
- Ctrl+K (Cmd+K) puts the cursor in the chat search box (a widget with the ``chat-search``
  CSS class), where there is one.

Enter sends and Shift+Enter starts a new line: Panel's ChatAreaInput does that by itself.

Panel draws every widget into its own shadow root, where ``document.querySelector`` does not
look, so the script walks the open shadow roots to find the boxes it focuses.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import panel as pn

Action = Callable[[], Any]  # a function or a coroutine function; what it returns is not used


class Shortcuts(pn.custom.JSComponent):
    """An invisible component: place it anywhere in the page. ``on_new_chat`` and ``on_stop``
    run on the server, as a button's click would; focusing happens in the browser."""

    _esm = """
    // The first element matching `selector`, looking into open shadow roots too.
    function find(root, selector) {
      const found = root.querySelector(selector)
      if (found) return found
      for (const el of root.querySelectorAll("*")) {
        if (el.shadowRoot) {
          const inner = find(el.shadowRoot, selector)
          if (inner) return inner
        }
      }
      return null
    }

    function focusIn(host, selector) {
      const box = host && find(host.shadowRoot || host, selector)
      if (box) box.focus()
      return box != null
    }

    export function render({ model }) {
      const onKey = (event) => {
        const mod = event.ctrlKey || event.metaKey
        if (event.key === "Escape" && !mod && !event.shiftKey && !event.altKey) {
          model.send_msg({ action: "stop" })
        } else if (mod && event.shiftKey && !event.altKey && event.code === "KeyO") {
          event.preventDefault()
          model.send_msg({ action: "new_chat" })
          focusIn(find(document, ".chat-interface-input-widget"), "textarea")  // ChatInterface's class for its box
        } else if (mod && !event.shiftKey && !event.altKey && event.code === "KeyK") {
          if (focusIn(find(document, ".chat-search"), "input")) event.preventDefault()
        }
      }
      // A re-render must not leave a second listener behind.
      if (window.llmchatShortcuts) document.removeEventListener("keydown", window.llmchatShortcuts)
      window.llmchatShortcuts = onKey
      document.addEventListener("keydown", onKey)
      model.on("remove", () => {
        document.removeEventListener("keydown", onKey)
        if (window.llmchatShortcuts === onKey) window.llmchatShortcuts = null
      })
    }
    """

    def __init__(self, on_new_chat: Action, on_stop: Action, **params: Any) -> None:
        super().__init__(**{"width": 0, "height": 0, "margin": 0, **params})
        self._actions = {"new_chat": on_new_chat, "stop": on_stop}

    def _handle_msg(self, data: Any) -> None:
        action = self._actions.get(str(data.get("action"))) if isinstance(data, dict) else None
        if action is not None:
            pn.state.execute(action)
