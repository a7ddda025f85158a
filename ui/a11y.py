"""What every page needs to read well for everyone (an axe-core check of the pages finds no
serious violation): button colours with enough contrast, readable message timestamps, and
names for the template's own controls.

Panel's templates bring a theme switch without a name and put the sidebar's widgets straight
into a ``<ul>``; :class:`PageFixes`, placed anywhere in a page, names the one and takes the
list meaning from the other in the browser (neither is reachable from Python).
"""

from __future__ import annotations

from typing import Any, TypeVar

import panel as pn

# Bootstrap's danger, warning and success colours fail WCAG AA as text on the page's greys
# (4.1:1, 1.5:1) and white on warning orange is 2:1: the same hues, darker.
BUTTON_CSS = """
:host(.outline) .bk-btn-danger { color: #a52834; border-color: #a52834; }
:host(.outline) .bk-btn-danger:hover { color: #fff; background-color: #a52834; }
:host(.outline) .bk-btn-warning { color: #7a5400; border-color: #b07800; }
:host(.outline) .bk-btn-warning:hover { color: #1f2328; background-color: #ffc107; }
:host(.solid) .bk-btn-warning { color: #1f2328; }
:host(.solid) .bk-btn-success { background-color: #1c7c36; border-color: #1c7c36; color: #fff; }
:host(.outline) .bk-btn-success { color: #1c7c36; border-color: #1c7c36; }
"""
# A chat message's time is drawn at half opacity: 3.3:1. Readable, still quieter than the text.
MESSAGE_CSS = ".timestamp { opacity: 0.8; }"

B = TypeVar("B", bound=pn.widgets.Button)


def readable(button: B) -> B:
    """``button`` with colours that pass contrast checks, whatever its type and style."""
    button.stylesheets = [*button.stylesheets, BUTTON_CSS]
    return button


class PageFixes(pn.custom.JSComponent):
    """Invisible; names the template's theme switch and makes its sidebar list a plain block."""

    _esm = """
    export function render({ model }) {
      const fix = () => {
        const theme = document.getElementById("theme-switch")
        if (theme && !theme.getAttribute("aria-label")) theme.setAttribute("aria-label", "Light theme")
        for (const list of document.querySelectorAll("#sidebar ul, #sidebar li")) list.setAttribute("role", "none")
      }
      fix()
      setTimeout(fix, 500)  // the template may draw its header after this component
    }
    """

    def __init__(self, **params: Any) -> None:
        super().__init__(**{"width": 0, "height": 0, "margin": 0, **params})
