"""The Machine page (``/machine``): the shared machine, for every signed-in user.

It shows what ``GET /machine`` answers (:class:`ui.client.ApiClient`, acting for the user who
signed in): a table of the loaded models (backend, device, memory, running and waiting
requests, time left before the idle unload; for administrators also who holds each one),
and three live Bokeh figures of the last 15 minutes: tokens/s per model, memory per model,
and requests waiting for a slot. A periodic callback, stopped when the browser session
ends, asks again every few seconds and replaces the figures' ColumnDataSources' data in
place: the page never reloads and the figures are never rebuilt.
"""

from __future__ import annotations

import asyncio
import html
import math
import time
from typing import Any

import numpy as np
import panel as pn
from bokeh.core.properties import field
from bokeh.models import BasicTicker, ColumnDataSource, DataRange1d, DatetimeTicker, HoverTool, Range1d
from bokeh.models.annotations import Legend, LegendItem
from bokeh.models.renderers import GlyphRenderer
from bokeh.palettes import Category10_10
from bokeh.plotting import figure

from ui.a11y import PageFixes
from ui.admin import NARROW_CSS
from ui.auth import SignedIn, signed_in_user
from ui.client import ApiClient, ApiProblem
from ui.header import account_box
from ui.settings import UiSettings

REFRESH_MS = 2000
CSS = """
:host { width: 100%; }
table { border-collapse: collapse; width: 100%; font-size: 14px; }
caption { text-align: left; font-weight: 600; font-size: 16px; padding: 4px 0 8px; }
th, td { text-align: left; padding: 6px 10px; border-bottom: 1px solid #e3e7ee; vertical-align: top; }
th { background: #f4f6fa; font-weight: 600; white-space: nowrap; }
td.model { font-weight: 600; overflow-wrap: anywhere; }
td.num { white-space: nowrap; }
ul.holders { margin: 0; padding-left: 18px; }
.hint { color: #5b6576; font-size: 13px; }
.error { padding: 8px 12px; border-radius: 4px; font-size: 14px; background: #fdecea; color: #8a1c12;
  border: 1px solid #f5c2bd; }
td .label { display: none; }
.now { color: #3b4252; font-size: 13px; margin: 0 0 4px; overflow-wrap: anywhere; }
/* Phones: each model a block of labelled lines instead of a table wider than the screen. */
@media (max-width: 700px) {
  thead { position: absolute; width: 1px; height: 1px; overflow: hidden; clip: rect(0 0 0 0); }
  table, caption, tbody, tr, td { display: block; width: auto; }
  tr { border: 1px solid #d8dee9; border-radius: 6px; margin-bottom: 10px; padding: 4px 0; background: white; }
  td { border: none; padding: 3px 10px; }
  td .label { display: inline; color: #5b6576; font-weight: 400; }
}
"""
FIGURES = (  # (source name, title, y axis label)
    ("machine-tokens", "Tokens per second, per model", "tokens/s"),
    ("machine-memory", "Memory per model", "MB"),
    ("machine-queue", "Requests waiting for a slot, and replies being generated", "requests"),
)
WAITING, GENERATING = "waiting for a slot", "being generated"


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def _duration(seconds: float) -> str:
    whole = round(seconds)
    if whole < 60:
        return f"{whole} s"
    if whole < 3600:
        return f"{whole // 60} min {whole % 60} s"
    return f"{whole // 3600} h {whole % 3600 // 60} min"


def _idle_unload(m: dict[str, Any]) -> str:
    if not m.get("idle_unload_s"):
        return "never"
    if m.get("idle_unload_in_s") is None:
        return "not while busy"
    return f"in {_duration(m['idle_unload_in_s'])}"


def _memory(m: dict[str, Any]) -> str:
    mb = m.get("memory_mb")
    return f"{'unknown' if mb is None else f'{mb:,.0f} MB'} {m.get('memory_kind', '')}".strip()


def _holder(h: dict[str, Any]) -> str:
    who = f"<b>{_e(h.get('user') or '(no owner)')}</b>"
    if h.get("chat_id") is None:
        return f"<li>{who} · API (/v1)</li>"
    title = h.get("title")
    return f"<li>{who} · {_e(title)} <span class=\"hint\">({_e(h['chat_id'])})</span></li>" if title else \
        f"<li>{who} · {_e(h['chat_id'])}</li>"


def models_table(models: list[dict[str, Any]], holders: bool) -> str:
    """The loaded models as an HTML table, every value escaped; with a "Held by" column
    when the API said who holds them (administrators)."""
    if not models:
        return '<p class="hint">No model is loaded.</p>'
    heads = ["Model", "Backend", "Device", "Memory", "Generating", "Waiting", "Idle unload"]
    if holders:
        heads.append("Held by")
    rows = []
    for m in models:
        cells = [
            ("Model", "model", _e(m["model"])),
            ("Backend", "", _e(m["backend"])),
            ("Device", "num", f"{_e(m['device'])} (runs on {_e(m['running_on'])}"
                              f"{', node ' + _e(m['node']) if m.get('node') else ''})"),
            ("Memory", "num", _e(_memory(m))),
            ("Generating", "num", f"{int(m['running'])} of {int(m['parallel'])} at once"),
            ("Waiting", "num", str(int(m["queued"]))),
            ("Idle unload", "num", _e(_idle_unload(m))),
        ]
        if holders:
            listing = "".join(_holder(h) for h in m.get("holders") or []) or '<li class="hint">nobody</li>'
            cells.append(("Held by", "", f'<ul class="holders">{listing}</ul>'))
        # The model's name heads its block on a phone; every other cell is labelled there.
        rows.append("<tr>" + "".join(
            f'<td class="{cls}">{"" if label == "Model" else f"<span class=label>{label}: </span>"}{value}</td>'
            for label, cls, value in cells) + "</tr>")
    head = "".join(f'<th scope="col">{h}</th>' for h in heads)
    return (f'<table class="machine-models"><caption>Loaded models</caption><thead><tr>{head}</tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table>')


def _worker_label(w: dict[str, Any], workers: list[dict[str, Any]]) -> str:
    """A worker's name in a legend: its model, with device and backend only where the model
    runs in more than one worker."""
    if sum(1 for o in workers if o["model"] == w["model"]) > 1:
        return f"{w['model']} ({w['device']}, {w['backend']})"
    return str(w["model"])


def _values(values: list[float | int | None]) -> np.ndarray[Any, Any]:
    return np.array([math.nan if v is None else float(v) for v in values], dtype=float)


class MachineView:
    """One browser session's Machine page, acting for ``user`` (None in local mode)."""

    def __init__(self, api: ApiClient, user: SignedIn | None = None) -> None:
        self.api = api
        self.user = user
        self.message = pn.pane.HTML("", visible=False, stylesheets=[CSS], sizing_mode="stretch_width")
        self.summary = pn.pane.HTML('<p class="hint">Asking the server…</p>', stylesheets=[CSS],
                                    sizing_mode="stretch_width", css_classes=["machine-summary"])
        self.table = pn.pane.HTML("", stylesheets=[CSS], sizing_mode="stretch_width", css_classes=["machine-table"])
        # One time axis for the three figures, over every sample (also where a model was not loaded).
        now_ms = time.time() * 1000
        self.x_range = Range1d(start=now_ms - 60_000, end=now_ms)
        self.sources: dict[str, ColumnDataSource] = {}
        self.captions: dict[str, pn.pane.HTML] = {}
        self.figures = [self._figure(*spec) for spec in FIGURES]
        self._colors: dict[str, str] = {}
        self._shown_at: float | None = None  # the newest sample shown
        self._refreshing = False
        self._watch: Any = None

    # Layout

    def _figure(self, name: str, title: str, unit: str) -> pn.Column:
        source = ColumnDataSource(data={"xs": [], "ys": [], "color": [], "label": []}, name=name)
        self.sources[name] = source
        plot = figure(
            title=title, x_axis_type="datetime", x_range=self.x_range, height=240, sizing_mode="stretch_width",
            min_width=200, y_range=DataRange1d(start=0, range_padding=0.1), toolbar_location=None, tools="",
            name=f"{name}-figure", background_fill_color="#fbfcfe",
        )
        lines: GlyphRenderer[Any] = plot.multi_line(xs="xs", ys="ys", color="color", line_width=2, source=source)
        plot.add_tools(HoverTool(tooltips=[("", "@label"), ("at", "$x{%H:%M:%S}"), (unit, "$y{0,0.0}")],
                                 formatters={"$x": "datetime"}, line_policy="nearest"))
        plot.xaxis[0].ticker = DatetimeTicker(desired_num_ticks=4)  # legible on a phone too
        plot.yaxis[0].ticker = BasicTicker(min_interval=1 if name == "machine-queue" else 0)  # whole requests
        plot.yaxis.axis_label = unit
        # Below the figure, one entry per distinct label: never over the lines, on a phone neither.
        plot.add_layout(Legend(items=[LegendItem(label=field("label"), renderers=[lines])], location="top_left",
                               label_text_font_size="12px", spacing=0, border_line_alpha=0), "below")
        caption = pn.pane.HTML("", stylesheets=[CSS], sizing_mode="stretch_width", css_classes=[f"{name}-now"])
        self.captions[name] = caption
        return pn.Column(pn.pane.Bokeh(plot, sizing_mode="stretch_width"), caption, sizing_mode="stretch_width",
                         css_classes=["machine-figure"], styles={"border": "1px solid #d8dee9",
                                                                "border-radius": "6px", "background": "white",
                                                                "margin-bottom": "12px", "padding": "4px"})

    def view(self) -> pn.template.BaseTemplate:
        intro = pn.pane.Markdown(
            "The machine this server runs on, shared by everyone: the models loaded now and the last 15 minutes. "
            "It updates by itself every few seconds.", sizing_mode="stretch_width")
        body = pn.Column(intro, self.message, self.summary, self.table, *self.figures, sizing_mode="stretch_width",
                         styles={"max-width": "1100px"})
        template = pn.template.FastListTemplate(
            title="Machine · llmchat", main=[body, PageFixes()], main_layout=None, accent="#2f6fed",
            header_background="#1f3b73", header=account_box(self.user, machine_page=True),
        )
        template.config.raw_css.append(NARROW_CSS)
        return template

    # Lifecycle

    def start(self) -> None:
        """Runs once the page is shown (with the document locked): the first answer at the
        next tick, then one every ``REFRESH_MS``."""
        # Both run a coroutine function under the document's lock (their type hints say otherwise).
        self._watch = pn.state.add_periodic_callback(self.refresh, period=REFRESH_MS)  # type: ignore[arg-type]
        if pn.state.curdoc is not None:
            pn.state.curdoc.add_next_tick_callback(self.refresh)  # type: ignore[arg-type]

    def stop(self) -> None:
        """The browser session ended: no more questions to the API."""
        if self._watch is not None:
            self._watch.stop()
            self._watch = None

    async def refresh(self) -> None:
        """Ask the API and show its answer (the periodic callback: the document is locked)."""
        if self._refreshing:  # a slow answer does not pile up questions behind it
            return
        self._refreshing = True
        try:
            machine = await self.api.machine()
        except ApiProblem as problem:
            self._on_problem(problem)
            return
        finally:
            self._refreshing = False
        self.message.visible = False
        self.show(machine)

    def show(self, machine: dict[str, Any]) -> None:
        models = machine["models"]
        admin = any(m.get("holders") is not None for m in models)
        self.table.object = models_table(models, holders=admin)
        series = machine["series"]
        waiting = sum(int(m["queued"]) for m in models)
        generating = sum(int(m["running"]) for m in models)
        self.summary.object = (
            f'<p class="hint">{len(models)} model{"s" if len(models) != 1 else ""} loaded · '
            f"{generating} {GENERATING} · {waiting} {WAITING} · sampled every {series['interval_s']:g} s, "
            f"{len(series['timestamps'])} samples</p>")
        newest = series["timestamps"][-1] if series["timestamps"] else None
        if newest is not None and newest != self._shown_at:
            self._shown_at = newest
            self._plot(series)

    def _plot(self, series: dict[str, Any]) -> None:
        x = self._local_ms(series["timestamps"])
        self.x_range.update(start=float(x[0]), end=float(x[-1]) if len(x) > 1 else float(x[0]) + 1000)
        workers = series["workers"]
        lines = {
            "machine-tokens": [(r["model"], r["values"]) for r in series["tokens_per_s"]],
            "machine-memory": [(f"{_worker_label(w, workers)} ({w['memory_kind']})", w["memory_mb"])
                               for w in workers],
            "machine-queue": [(WAITING, series["queued"]), (GENERATING, series["running"])],
        }
        for name, named in lines.items():
            ys = [_values(values) for _, values in named]
            self.sources[name].data = {
                "xs": [x] * len(named), "ys": ys,
                "color": [self._color(label) for label, _ in named], "label": [label for label, _ in named],
            }
            self.captions[name].object = self._caption(name, named)

    def _caption(self, name: str, named: list[tuple[str, list[float | int | None]]]) -> str:
        """The figure's newest values in words, for readers who cannot see the figure."""
        unit = {"machine-tokens": "tokens/s", "machine-memory": "MB", "machine-queue": ""}[name]
        now = []
        for label, values in named:
            if values and values[-1] is not None:
                now.append(f"{_e(label)} {values[-1]:,.1f} {unit}".rstrip() if unit else f"{values[-1]} {_e(label)}")
        return f'<p class="now">Now: {"; ".join(now) if now else "nothing loaded"}.</p>'

    def _color(self, label: str) -> str:
        if label not in self._colors:
            self._colors[label] = Category10_10[len(self._colors) % len(Category10_10)]
        return self._colors[label]

    @staticmethod
    def _local_ms(timestamps: list[float]) -> np.ndarray[Any, Any]:
        """Unix seconds as milliseconds on the browser's clock (Bokeh's datetime axis shows UTC)."""
        offset_min = pn.state.browser_info.timezone_offset if pn.state.browser_info is not None else None
        if offset_min is None:
            offset_min = time.localtime().tm_gmtoff / -60
        return np.array(timestamps, dtype=float) * 1000 - float(offset_min) * 60_000

    def _on_problem(self, problem: ApiProblem) -> None:
        if problem.signed_out and self.user is not None:
            if pn.state.location is not None and not pn.state.location.reload:
                pn.state.location.reload = True  # the reload finds no sign-in: /login, then back here
            return
        self.message.object = f'<div class="error" role="alert">The API refused: {_e(problem)}</div>'
        self.message.visible = True


def create_machine_page() -> pn.viewable.Viewable | pn.template.BaseTemplate:
    """The Machine page for one browser session, acting for the user who signed in."""
    settings = UiSettings()
    user = signed_in_user()
    if settings.auth == "on" and user is None:  # fails closed: no user, no API calls
        return pn.pane.HTML('<p>You are not signed in. <a href="./login">Sign in</a></p>')
    api = ApiClient(settings, token=user.token if user is not None else None)
    machine = MachineView(api, user)
    pn.state.onload(machine.start)

    def ended(_: Any) -> None:
        machine.stop()
        asyncio.ensure_future(api.close())

    pn.state.on_session_destroyed(ended)
    return machine.view()
