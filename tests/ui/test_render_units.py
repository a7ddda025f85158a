"""What :func:`ui.render.reply_body` hands the browser: the HTML of the Markdown pane's Bokeh
model, in which the browser's MathJax typesets exactly what sits between ``\\(…\\)`` or
``\\[…\\]`` (and any ``$$…$$``), and Panel adds a copy button to every ``codehilite`` block."""

from __future__ import annotations

import html
import re
from typing import Any

import panel as pn
import pytest

from ui.render import RICH, highlighted_code, plain_markdown, reply_body

# What the browser's MathJax (FindTeX) takes for a formula in the HTML it is given.
TYPESET = re.compile(r"\$\$(.+?)\$\$|\\\[(.+?)\\\]|\\\((.+?)\\\)", re.DOTALL)


def rendered(text: str) -> str:
    """The HTML that the browser receives for ``text``."""
    body = reply_body(text)
    assert isinstance(body, pn.pane.Markdown)
    model: Any = body.get_root()  # the Bokeh model: its text is the HTML, escaped
    return html.unescape(model.text)


def formulas(text: str) -> list[str]:
    return [next(g for g in m.groups() if g is not None) for m in TYPESET.finditer(rendered(text))]


@pytest.mark.parametrize("text", [
    "Hello, *world*.",
    "A list:\n\n- one\n- two",
    "| a | b |\n|---|---|\n| 1 | 2 |",
    "Inline `code` only.",
])
def test_text_without_code_or_math_is_plain_markdown(text: str) -> None:
    body = reply_body(text)
    assert isinstance(body, pn.pane.Markdown) and body.object == text and not body.plugins


@pytest.mark.parametrize("text", [
    "<img src=x onerror=alert(1)>",
    "Look: <script>alert(1)</script> and $x$",
    "```\ncode\n```\n<iframe src=javascript:alert(1)></iframe>",
])
def test_raw_html_in_a_message_is_shown_as_text(text: str) -> None:
    for body in (reply_body(text), plain_markdown(text)):
        model: Any = body.get_root()
        shown = html.unescape(model.text)  # the HTML the browser gets
        assert not re.search(r"<(img|script|iframe)\b", shown), shown
        assert re.search(r"&lt;(img|script|iframe)\b", shown), shown  # shown as text


@pytest.mark.parametrize("text", ["```\nx\n```", "~~~sh\nls\n~~~", "costs $5", "$x$", "\\(x\\)", "\\[x\\]"])
def test_code_or_math_gets_a_pane(text: str) -> None:
    assert RICH.search(text)
    assert isinstance(reply_body(text), pn.pane.Markdown)


def test_display_math_keeps_its_backslashes_and_underscores() -> None:
    assert formulas("$$\\int_0^1 x\\,dx$$") == ["\\int_0^1 x\\,dx"]
    assert formulas("Before\n\n$$\na_{i}^2 * b_{j}^2\n$$\n\nafter") == ["a_{i}^2 * b_{j}^2"]


def test_inline_math_in_both_notations() -> None:
    assert formulas("Let $a_1 * b_1$ and \\(c_2 * d_2\\) be.") == ["a_1 * b_1", "c_2 * d_2"]
    assert formulas("Shown: \\[e^{i\\pi} = -1\\] inline.") == ["e^{i\\pi} = -1"]
    assert formulas("Double inline $$x^2$$ too.") == ["x^2"]


def test_prices_and_escaped_dollars_stay_text() -> None:
    page = rendered("It costs $5 or $10, and \\$x\\$ is not math.")
    assert formulas("It costs $5 or $10, and \\$x\\$ is not math.") == []
    assert "&#36;5 or &#36;10" in page and "&#36;x&#36;" in page


def test_dollars_and_backslashes_in_code_are_never_typeset() -> None:
    text = "Shell: `echo $$` and\n\n```sh\necho $$ \\(pid\\) $HOME\n```\n\nand $x$."
    assert formulas(text) == ["x"]
    code = re.sub(r"<[^>]+>", "", rendered(text))  # the text of the page, highlighting left out
    assert "echo &#36;&#36; &#92;(pid&#92;) &#36;HOME" in code


def test_angle_brackets_in_a_formula_never_reach_the_html() -> None:
    assert formulas("$a<b>c$") == ["a\\lt b\\gt c"]
    assert "<b>" not in rendered("$a<b>c$")


def test_a_formula_inside_a_table_cell() -> None:
    page = rendered("| f | value |\n|---|---|\n| $x_1$ | 2 |")
    assert "<table>" in page and "<td>\\(x_1\\)</td>" in page


def test_the_formula_marker_cannot_be_forged() -> None:
    assert formulas("\ue0000\ue000 and $y$") == ["y"]
    assert "\ue000" not in rendered("\ue0000\ue000 and $y$")


def test_code_blocks_are_highlighted_with_their_language() -> None:
    page = rendered("```python\ndef area(n):\n    return n < 1\n```")
    assert '<div class="code-lang">python</div>' in page
    assert '<div class="codehilite"><pre>' in page  # Panel puts its copy button into this block
    assert '<span class="k">def</span>' in page and '<span class="nf">area</span>' in page
    assert "&lt;" in page  # the code's own < stays text


def test_unknown_or_missing_language_is_plain_text() -> None:
    assert "<span class=\"k\">" not in highlighted_code("def f(): pass\n", "no-such-language")
    assert "code-lang" not in highlighted_code("def f(): pass\n", "")
    assert "&lt;script&gt;" in highlighted_code("x\n", "<script>")


def test_lines_break_as_typed() -> None:
    assert "one<br />\ntwo" in rendered("one\ntwo $x$")
