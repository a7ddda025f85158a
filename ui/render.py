"""How a chat message reads: Markdown with highlighted code blocks (each with its own copy
button), tables, and TeX math between ``$…$``, ``$$…$$``, ``\\(…\\)`` or ``\\[…\\]``.

The message stays a :class:`panel.pane.Markdown` with one more markdown-it plugin
(:func:`reply_markdown`), so everything Panel does for Markdown still happens in the browser:

- fenced code is highlighted here, with Pygments, into the ``codehilite`` markup that Panel's
  Markdown stylesheet colours and that Panel's HTML view gives a copy-to-clipboard button;
- math is typeset in the browser by MathJax from Bokeh's own ``bokeh-mathjax`` bundle, which
  the Panel server serves from its static files (nothing from a CDN) on every page with a
  Markdown pane. That typesetter finds ``$$…$$``, ``\\[…\\]`` and ``\\(…\\)`` in the whole
  rendered HTML, so the plugin hands it exactly the formulas it found (a Markdown parser
  would otherwise eat the backslashes and underscores in them) and hides every other
  ``$`` and backslash as an HTML entity: a ``$$`` in a shell snippet stays code.

A message without code and without math is Panel's plain Markdown. Neither renders raw
HTML: markup in a message shows as text.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import panel as pn
from markdown_it import MarkdownIt
from markdown_it.rules_core import StateCore
from markdown_it.rules_inline import StateInline
from markdown_it.token import Token
from mdit_py_plugins.dollarmath import dollarmath_plugin
from pygments import highlight
from pygments.formatters import HtmlFormatter
from pygments.lexer import Lexer
from pygments.lexers import TextLexer, get_lexer_by_name
from pygments.util import ClassNotFound

# Anything that may need more than Panel's default Markdown: a code fence or a math delimiter.
RICH = re.compile(r"^ {0,3}(?:```|~~~)|\$|\\[(\[]", re.MULTILINE)
# Where a formula goes in the rendered HTML until the other $ and \ are hidden. Private-use
# characters: the plugin removes them from the message first, so only formulas carry them.
_MARK = "\ue000"
_FORMULA = re.compile(f"{_MARK}(\\d+){_MARK}")
_FORMULAS = "reply_formulas"  # the key in markdown-it's env under which a render keeps them

# Bokeh serves its MathJax bundle with a page only when Panel is told the page wants it (a
# Markdown pane among the page's top-level roots happens to tell it; this always does).
pn.extension("mathjax")

CODE_STYLE = "default"  # a Pygments style for a light background
REPLY_CSS = """
.code-block { margin: 0.6em 0; }
.code-block .code-lang { font-size: 0.75em; color: #6a737d; padding: 0 0.4em; }
.code-block .codehilite { display: block; margin: 0; padding: 0.6em 0.8em; overflow-x: auto;
  border: 1px solid #e1e4e8; border-radius: 6px; }
.code-block .codehilite .copybtn { opacity: 0.55; color: #57606a; background-color: #f6f8fa; }
.code-block .codehilite:hover .copybtn { opacity: 1; }
table { border-collapse: collapse; margin: 0.6em 0; }
th, td { border: 1px solid rgba(127, 127, 127, 0.35); padding: 4px 10px; }
th { background: rgba(127, 127, 127, 0.12); }  /* readable on the light and the dark theme */
mjx-container[display="true"] { display: block; text-align: center; margin: 0.6em 0; overflow-x: auto; }
/* Panel's Markdown colours code for a dark background (names in white): start again from
   plain text, then the Pygments style's own colours. */
.codehilite, .codehilite code { color: #1f2328; }  /* a light block on either theme */
.codehilite [class] { color: inherit; font-weight: inherit; font-style: inherit; }
""" + HtmlFormatter(style=CODE_STYLE).get_style_defs(".codehilite")


# Raw HTML in a message is shown as text, never rendered: a reply (or an imported chat)
# could otherwise carry markup that runs script in the reader's page.
NO_HTML = {"html": False}


def reply_body(text: str) -> pn.pane.Markdown:
    """What a chat message shows for ``text``: Markdown without raw HTML, and with code
    highlighted and math typeset when the text has any."""
    return show_reply(plain_markdown(""), text)


def show_reply(pane: pn.pane.Markdown, text: str) -> pn.pane.Markdown:
    """Make ``pane`` (a :func:`plain_markdown`, say the one a reply streamed into) show ``text``
    as :func:`reply_body` would, in place: a pane swapped for another blinks empty."""
    if RICH.search(text):
        pane.param.update(object=text, plugins=[reply_markdown], dedent=False, disable_anchors=True,
                          stylesheets=[*pane.stylesheets, REPLY_CSS])
    else:
        pane.object = text
    return pane


def plain_markdown(text: str) -> pn.pane.Markdown:
    """A message as Panel's own Markdown, without raw HTML: what a ChatMessage shows for a
    string (the feed's ``renderers``), so a reply is safe while it streams too."""
    return pn.pane.Markdown(text, hard_line_break=True, renderer_options=NO_HTML)


def reply_markdown(md: MarkdownIt) -> None:
    """The markdown-it plugin behind :func:`reply_body` (Panel's Markdown ``plugins``)."""
    md.core.ruler.before("normalize", "reply_unmark", _unmark)
    dollarmath_plugin(md, allow_space=False, allow_digits=False, allow_labels=False, double_inline=True)
    md.inline.ruler.before("escape", "bracket_math", _bracket_math)
    for kind in ("math_inline", "math_inline_double", "math_block"):
        md.add_render_rule(kind, _render_formula)
    md.add_render_rule("fence", _render_fence)
    render = md.renderer.render

    def render_then_reveal_formulas(tokens: Sequence[Token], options: Any, env: Any) -> str:
        html = str(render(tokens, options, env)).replace("$", "&#36;").replace("\\", "&#92;")
        formulas: list[str] = env.get(_FORMULAS, [])
        return _FORMULA.sub(lambda m: formulas[int(m[1])], html)

    md.renderer.render = render_then_reveal_formulas  # type: ignore[method-assign]


def highlighted_code(code: str, language: str) -> str:
    """``code`` as Pygments HTML in a ``codehilite`` block, under the name of its language."""
    lexer: Lexer
    try:
        lexer = get_lexer_by_name(language) if language else TextLexer()
    except ClassNotFound:
        lexer = TextLexer()
    body = highlight(code, lexer, HtmlFormatter(cssclass="codehilite", wrapcode=True, style=CODE_STYLE))
    label = f'<div class="code-lang">{_escape(language)}</div>' if language else ""
    return f'<div class="code-block">{label}{body}</div>\n'


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")


def _unmark(state: StateCore) -> None:
    state.src = state.src.replace(_MARK, "")


def _bracket_math(state: StateInline, silent: bool) -> bool:
    """``\\(…\\)`` inline and ``\\[…\\]`` displayed, as many models write TeX."""
    start = state.pos
    if state.src[start] != "\\" or start + 1 >= state.posMax or state.src[start + 1] not in "([":
        return False
    closer = "\\)" if state.src[start + 1] == "(" else "\\]"
    end = state.src.find(closer, start + 2, state.posMax)
    if end < 0 or not state.src[start + 2:end].strip():
        return False
    if not silent:
        token = state.push("math_inline" if closer == "\\)" else "math_inline_double", "math", 0)
        token.content = state.src[start + 2:end]
        token.markup = state.src[start:start + 2]
    state.pos = end + 2
    return True


def _render_formula(self: Any, tokens: Sequence[Token], idx: int, options: Any, env: Any) -> str:
    token = tokens[idx]
    # MathJax's TeX has \lt and \gt: no angle bracket of a formula ever reaches the HTML.
    tex = token.content.strip().replace("<", "\\lt ").replace(">", "\\gt ")
    formulas = env.setdefault(_FORMULAS, [])
    if token.type == "math_inline":
        formulas.append(f"\\({tex}\\)")
        return f"{_MARK}{len(formulas) - 1}{_MARK}"
    formulas.append(f"\\[{tex}\\]")
    mark = f'<span class="math-display">{_MARK}{len(formulas) - 1}{_MARK}</span>'
    return f"<div>{mark}</div>\n" if token.type == "math_block" else mark


def _render_fence(self: Any, tokens: Sequence[Token], idx: int, options: Any, env: Any) -> str:
    token = tokens[idx]
    language = token.info.strip().split(maxsplit=1)[0] if token.info.strip() else ""
    return highlighted_code(token.content, language)
