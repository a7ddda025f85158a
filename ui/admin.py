"""The admin view (``/admin``), for administrators only: users, the machine's workers and who
holds them, and the audit log.

Like the dashboard it acts for the signed-in user through the API (:class:`ui.client.ApiClient`),
here the ``/admin`` routes. Nothing is shown before ``GET /auth/me`` says the user is an
administrator, and to anyone else the page says only that it is for administrators (the API
refuses them its ``/admin`` routes with 403 in any case).

- **Users**: every account with its role, whether it is disabled, its chats, its limits and
  today's usage; create one (a generated password, shown once), change a role, disable or
  enable, reset a password (shown once), set the three limits. A refusal shows the API's words.
- **Machine**: every loaded worker (model, backend, device, where it runs, queue) and its
  holders (user and chat, or "API" for ``/v1``), each with a "Force unload" button.
- **Audit log**: the newest entries, and an "Older" pager.
"""

from __future__ import annotations

import asyncio
import html
from datetime import datetime
from typing import Any

import panel as pn

from ui.a11y import PageFixes, readable
from ui.auth import SignedIn, signed_in_user
from ui.client import ApiClient, ApiProblem
from ui.header import account_box
from ui.settings import UiSettings

AUDIT_PAGE = 50
LIMITS = (  # (the API's field, the label, the override field of PATCH /admin/users/{name})
    ("loaded_models", "Loaded models", "limit_loaded_models"),
    ("concurrent_replies", "Replies at once", "limit_concurrent_replies"),
    ("tokens_per_day", "Tokens a day", "limit_tokens_per_day"),
)
# Narrow windows: a smaller title that gives way to the account box rather than widen the page.
NARROW_CSS = """
@media (max-width: 700px) {
  #header .app-header { min-width: 0; overflow: hidden; }
  #header .title { font-size: 18px; margin-left: 0; white-space: nowrap; overflow: hidden; text-overflow: ellipsis; }
}
"""
ADMINS_ONLY = "This page is for administrators. Your chats are on the <a href=\"./\">dashboard</a>."
CSS = """
:host { width: 100%; }
.scroll { overflow-x: auto; width: 100%; }
table { border-collapse: collapse; width: 100%; font-size: 14px; }
th, td { text-align: left; padding: 6px 10px; border-bottom: 1px solid #e3e7ee; vertical-align: top; white-space: nowrap; }
td.wrap { white-space: normal; min-width: 180px; overflow-wrap: anywhere; }
th { background: #f4f6fa; font-weight: 600; white-space: nowrap; }
td.num { text-align: right; white-space: nowrap; }
tr.disabled td { color: #8a94a6; }
.tag { display: inline-block; padding: 1px 7px; border-radius: 9px; font-size: 12px; background: #e8f0fe; color: #1f3b73; }
.tag.admin { background: #1f3b73; color: white; }
.tag.off { background: #fdecea; color: #8a1c12; }
.override { font-weight: 700; }
.hint { color: #5b6576; font-size: 13px; }
.notice, .error { padding: 8px 12px; border-radius: 4px; font-size: 14px; }
.notice { background: #e7f5ec; color: #14532d; border: 1px solid #b7dfc4; }
.error { background: #fdecea; color: #8a1c12; border: 1px solid #f5c2bd; }
.secret { font-family: ui-monospace, monospace; background: white; padding: 1px 6px; border: 1px solid #b7dfc4;
  border-radius: 3px; user-select: all; word-break: break-all; }
.worker h3 { margin: 0 0 6px; font-size: 16px; word-break: break-all; }
.worker dl { display: grid; grid-template-columns: max-content 1fr; gap: 2px 12px; margin: 0 0 8px; font-size: 14px; }
.worker dt { color: #5b6576; }
.worker dd { margin: 0; }
.worker ul { margin: 4px 0 0; padding-left: 20px; font-size: 14px; }
"""


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def _when(iso: str | None) -> str:
    return datetime.fromisoformat(iso).astimezone().strftime("%Y-%m-%d %H:%M:%S") if iso else ""


def _limit(value: int | None) -> str:
    return "none" if not value else f"{value:,}"


def users_table(users: list[dict[str, Any]]) -> str:
    """The accounts as an HTML table; every name and value escaped."""
    heads = "".join(f"<th>{label}</th>" for label in
                    ["Name", "Role", "Status", "Chats", *[label for _, label, _ in LIMITS], "Today"])
    rows = []
    for u in users:
        limits, overrides = u.get("limits") or {}, u.get("overrides") or {}
        cells = []
        for field, _, _ in LIMITS:
            own = overrides.get(field) is not None
            value = _limit(limits.get(field))
            mark = ' override" title="set for this user' if own else ""
            cells.append(f'<td class="num{mark}">{_e(value)}</td>')
        today = u.get("today") or {}
        used = f"{today.get('replies', 0):,} replies, {today.get('completion_tokens', 0):,} tokens"
        role = f'<span class="tag{" admin" if u["role"] == "admin" else ""}">{_e(u["role"])}</span>'
        status = '<span class="tag off">disabled</span>' if u["disabled"] else "enabled"
        rows.append(f'<tr class="{"disabled" if u["disabled"] else ""}"><td><b>{_e(u["name"])}</b></td>'
                    f'<td>{role}</td><td>{status}</td><td class="num">{u.get("chats", 0)}</td>'
                    f'{"".join(cells)}<td>{_e(used)}</td></tr>')
    return (f'<div class="scroll"><table class="users"><thead><tr>{heads}</tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table></div>'
            f'<p class="hint">Limits in bold are set for that user; the others are the server\'s settings. '
            f'"none": no limit. Today counts UTC days.</p>')


def holder_line(holder: dict[str, Any]) -> str:
    who = _e(holder.get("user") or "(no owner)")
    if holder.get("chat_id") is None:
        return f"<li><b>{who}</b> · API (/v1)</li>"
    title = holder.get("title")
    chat = f"{_e(title)} <span class=\"hint\">({_e(holder['chat_id'])})</span>" if title else _e(holder["chat_id"])
    return f"<li><b>{who}</b> · {chat}</li>"


def worker_html(w: dict[str, Any]) -> str:
    """One worker's facts and holders."""
    facts = [
        ("Backend", w.get("backend")),
        ("Device", f"{w.get('device')} (running on {w.get('running_on')})"),
        ("Process", f"pid {w.get('pid')}, loaded in {w.get('load_time_s', 0):.1f} s, "
                    f"context {w.get('context_length', 0):,} tokens"),
        ("Queue", f"{w.get('queued', 0)} waiting, {w.get('running', 0)} running of {w.get('parallel', 1)} at once"),
        ("Idle", f"{w.get('idle_s', 0):.0f} s" + (f" (unloads after {w['idle_unload_s']:.0f} s)"
                                                    if w.get("idle_unload_s") else "")),
    ]
    for key, label in (("memory_mb", "Memory"), ("rss_mb", "Memory"), ("vram_mb", "GPU memory")):
        if w.get(key) is not None:
            facts.append((label, f"{w[key]:,.0f} MB"))
    if w.get("cuda_visible_devices"):
        facts.append(("GPUs", w["cuda_visible_devices"]))
    holders = w.get("holders") or []
    listing = "".join(holder_line(h) for h in holders) or '<li class="hint">nobody</li>'
    return (f'<div class="worker"><h3>{_e(w["model"])}</h3><dl>'
            + "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in facts)
            + f'</dl><b>Held by</b> ({len(holders)})<ul class="holders">{listing}</ul></div>')


def audit_table(entries: list[dict[str, Any]]) -> str:
    if not entries:
        return '<p class="hint">No entries.</p>'
    rows = []
    for e in entries:
        detail = ", ".join(f"{k}={v}" for k, v in (e.get("detail") or {}).items())
        rows.append(f"<tr data-id=\"{int(e['id'])}\"><td>{_e(_when(e['at']))}</td><td>{_e(e.get('actor') or '—')}</td>"
                    f"<td>{_e(e['action'])}</td><td class=\"wrap\">{_e(e.get('target'))}</td><td>{_e(e.get('client'))}</td>"
                    f"<td class=\"wrap\">{_e(detail)}</td></tr>")
    heads = "".join(f"<th>{h}</th>" for h in ["When", "Who", "Action", "Target", "Client", "Detail"])
    return (f'<div class="scroll"><table class="audit"><thead><tr>{heads}</tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table></div>')


class AdminView:
    """One browser session's admin page, acting for ``user`` (None in local mode)."""

    def __init__(self, api: ApiClient, user: SignedIn | None = None) -> None:
        self.api = api
        self.user = user
        self.users: dict[str, dict[str, Any]] = {}
        self.body = pn.Column(sizing_mode="stretch_width")  # empty until the API says "administrator"
        self.message = pn.pane.HTML("", visible=False, stylesheets=[CSS], sizing_mode="stretch_width")
        # Users
        self.users_html = pn.pane.HTML("", stylesheets=[CSS], sizing_mode="stretch_width", css_classes=["users"])
        self.new_name = pn.widgets.TextInput(name="New user's name", placeholder="name", max_length=64, width=220)
        self.new_role = pn.widgets.Select(name="New user's role", options=["user", "admin"], value="user", width=110)
        self.create = pn.widgets.Button(name="Create user", button_type="primary", align="end", width=130)
        self.who = pn.widgets.Select(name="User", options=[], width=220)
        self.role = pn.widgets.Select(name="Role", options=["user", "admin"], width=110)
        self.change_role = pn.widgets.Button(name="Change role", align="end", width=130)
        self.disable = readable(pn.widgets.Button(name="Disable", button_type="danger", button_style="outline",
                                                  align="end", width=110))
        self.reset = readable(pn.widgets.Button(name="Reset password", button_type="warning", button_style="outline",
                                                align="end", width=150))
        self.limits = {field: pn.widgets.TextInput(name=label, width=150) for field, label, _ in LIMITS}
        self.set_limits = pn.widgets.Button(name="Set limits", align="end", width=110)
        # Machine
        self.workers_box = pn.Column(sizing_mode="stretch_width")
        self.refresh_workers = pn.widgets.Button(name="Refresh", icon="refresh", width=110)
        # Audit log
        self.audit_html = pn.pane.HTML("", stylesheets=[CSS], sizing_mode="stretch_width", css_classes=["audit"])
        self.newest = pn.widgets.Button(name="Newest", width=100)
        self.older = pn.widgets.Button(name="Older", width=100)
        self._audit_before: int | None = None  # the page shown: entries older than this (None: the newest)
        self._audit_oldest: int | None = None
        self.tabs = pn.Tabs(dynamic=False, sizing_mode="stretch_width")
        self.create.on_click(self._on_create)
        self.who.param.watch(self._on_pick, "value")
        self.change_role.on_click(self._on_change_role)
        self.disable.on_click(self._on_disable)
        self.reset.on_click(self._on_reset)
        self.set_limits.on_click(self._on_set_limits)
        self.refresh_workers.on_click(self._on_refresh_workers)
        self.newest.on_click(self._on_newest)
        self.older.on_click(self._on_older)
        self.tabs.param.watch(self._on_tab, "active")

    # Layout

    def view(self) -> pn.template.BaseTemplate:
        template = pn.template.FastListTemplate(
            title="Admin · llmchat", main=[self.body, PageFixes()], main_layout=None, accent="#2f6fed",
            header_background="#1f3b73", header=account_box(self.user, admin_page=True),
        )
        template.config.raw_css.append(NARROW_CSS)
        return template

    def _sections(self) -> pn.Tabs:
        wrap = {"flex_wrap": "wrap", "align_items": "end", "sizing_mode": "stretch_width"}
        manage = pn.Card(
            pn.FlexBox(self.who, self.role, self.change_role, self.disable, self.reset, **wrap),
            pn.FlexBox(*self.limits.values(), self.set_limits, **wrap),
            pn.pane.HTML('<span class="hint">Limits: a number, 0 for no limit, or empty for the server\'s '
                         "setting.</span>", stylesheets=[CSS], margin=(0, 10)),
            title="Change a user", collapsible=False, sizing_mode="stretch_width", margin=(10, 10),
        )
        create = pn.Card(pn.FlexBox(self.new_name, self.new_role, self.create, **wrap), title="Add a user",
                         collapsible=False, sizing_mode="stretch_width", margin=(10, 10))
        users = pn.Column(self.users_html, manage, create, sizing_mode="stretch_width", name="Users")
        machine = pn.Column(pn.Row(pn.pane.Markdown("Every loaded model process and who holds it. Force unload stops "
                                                    "it whoever holds it: their chats say it was unloaded by an "
                                                    "administrator.", sizing_mode="stretch_width"),
                                   self.refresh_workers, sizing_mode="stretch_width"),
                            self.workers_box, sizing_mode="stretch_width", name="Machine")
        audit = pn.Column(pn.Row(self.newest, self.older), self.audit_html, sizing_mode="stretch_width",
                          name="Audit log")
        self.tabs.objects = [users, machine, audit]
        return self.tabs

    # Lifecycle

    async def start(self) -> None:
        """Runs once the page is shown: ask the API who this is; build the sections for an
        administrator only."""
        try:
            me = await self.api.me()
        except ApiProblem as problem:
            self._on_problem(problem)
            return
        if me.get("role") != "admin":
            self._refuse()
            return
        self.body.objects = [self.message, self._sections()]
        await self.refresh_users()

    def _refuse(self) -> None:
        self.users = {}
        self.body.objects = [pn.pane.HTML(f'<p class="error" role="alert">{ADMINS_ONLY}</p>', stylesheets=[CSS],
                                          sizing_mode="stretch_width", css_classes=["admins-only"])]

    async def _on_tab(self, event: Any) -> None:
        await (self.refresh_users, self.refresh_machine, self.refresh_audit)[event.new]()

    # Users

    async def refresh_users(self) -> None:
        users = await self._guard(self.api.users())
        if users is None:
            return
        self.users = {u["name"]: u for u in users}
        self.users_html.object = users_table(users)
        picked = self.who.value
        self.who.options = list(self.users)
        if picked in self.users:
            self._fill(self.users[picked])
        elif self.users:
            self.who.value = next(iter(self.users))

    def _on_pick(self, event: Any) -> None:
        if event.new in self.users:
            self._fill(self.users[event.new])

    def _fill(self, user: dict[str, Any]) -> None:
        """The change form shows the picked user's role, state and limits."""
        self.role.value = user["role"]
        self.disable.name = "Enable" if user["disabled"] else "Disable"
        self.disable.button_type = "success" if user["disabled"] else "danger"
        overrides, limits = user.get("overrides") or {}, user.get("limits") or {}
        for field, _, _ in LIMITS:
            own = overrides.get(field)
            self.limits[field].value = "" if own is None else str(own)
            self.limits[field].placeholder = f"setting ({_limit(limits.get(field))})" if own is None else ""

    async def _on_create(self, _: Any) -> None:
        name = (self.new_name.value_input or self.new_name.value or "").strip()
        if not name:
            self._say("Type the new user's name.", error=True)
            return
        made = await self._guard(self.api.create_user(name, self.new_role.value))
        if made is None:
            return
        self.new_name.value = self.new_name.value_input = ""
        self._say(f"Created <b>{_e(made['name'])}</b> ({_e(made['role'])}). Their password, shown only this once: "
                  f'<span class="secret">{_e(made["password"])}</span> Pass it on now; they can change it.')
        await self.refresh_users()

    async def _on_change_role(self, _: Any) -> None:
        name = self.who.value
        if name and await self._guard(self.api.update_user(name, role=self.role.value)) is not None:
            self._say(f"<b>{_e(name)}</b> is now {_e(self.role.value)}.")
        await self.refresh_users()

    async def _on_disable(self, _: Any) -> None:
        name = self.who.value
        if not name or name not in self.users:
            return
        disabling = not self.users[name]["disabled"]
        if await self._guard(self.api.update_user(name, disabled=disabling)) is not None:
            what = "disabled: their sessions ended and their replies stopped" if disabling else "enabled again"
            self._say(f"<b>{_e(name)}</b> is {what}.")
        await self.refresh_users()

    async def _on_reset(self, _: Any) -> None:
        name = self.who.value
        if not name:
            return
        if self.reset.name != "Click again to reset":  # a stray click ends nobody's sessions
            self.reset.name = "Click again to reset"
            await asyncio.sleep(4)
            self.reset.name = "Reset password"
            return
        self.reset.name = "Reset password"
        password = await self._guard(self.api.reset_password(name))
        if password is not None:
            self._say(f"New password for <b>{_e(name)}</b>, shown only this once: "
                      f'<span class="secret">{_e(password)}</span> Their sessions have ended.')

    async def _on_set_limits(self, _: Any) -> None:
        name = self.who.value
        if not name:
            return
        changes: dict[str, int | None] = {}
        for field, label, override in LIMITS:
            text = (self.limits[field].value_input or self.limits[field].value or "").strip().replace(",", "")
            if text and not text.isdigit():
                self._say(f"{_e(label)}: a whole number, 0 for no limit, or empty for the setting.", error=True)
                return
            changes[override] = int(text) if text else None
        if await self._guard(self.api.update_user(name, **changes)) is not None:
            self._say(f"Limits of <b>{_e(name)}</b> set.")
        await self.refresh_users()

    # Machine

    async def _on_refresh_workers(self, _: Any) -> None:
        await self.refresh_machine()

    async def refresh_machine(self) -> None:
        workers = await self._guard(self.api.workers())
        if workers is None:
            return
        if not workers:
            self.workers_box.objects = [pn.pane.HTML('<p class="hint">No model is loaded.</p>', stylesheets=[CSS])]
            return
        self.workers_box.objects = [self._worker(w) for w in workers]

    def _worker(self, w: dict[str, Any]) -> pn.Column:
        button = readable(pn.widgets.Button(name="Force unload", button_type="danger", width=140,
                                            css_classes=["force-unload"]))

        async def on_click(_: Any) -> None:
            button.disabled = True
            button.loading = True
            done = await self._guard(self.api.force_unload(w["model"], w["device"], w["backend"]))
            if done is not None:
                exited = "its process has exited" if done.get("process_exited") else "its process is stopping"
                self._say(f"Unloaded <b>{_e(done['model'])}</b>: {done['holders']} hold(s) ended, {exited}.")
            await self.refresh_machine()

        button.on_click(on_click)
        return pn.Column(pn.pane.HTML(worker_html(w), stylesheets=[CSS], sizing_mode="stretch_width"), button,
                         sizing_mode="stretch_width", css_classes=["worker-card"],
                         styles={"border": "1px solid #d8dee9", "border-radius": "6px", "padding": "8px 12px",
                                 "margin-bottom": "10px", "background": "white"})

    # Audit log

    async def _on_newest(self, _: Any) -> None:
        await self.refresh_audit(None)

    async def _on_older(self, _: Any) -> None:
        await self.refresh_audit(self._audit_oldest)

    async def refresh_audit(self, before_id: int | None = None) -> None:
        entries = await self._guard(self.api.audit(before_id, AUDIT_PAGE))
        if entries is None:
            return
        if not entries and before_id is not None:
            self._say("There are no older entries.")
            return
        self._audit_before = before_id
        self._audit_oldest = min((e["id"] for e in entries), default=None)
        self.audit_html.object = audit_table(entries)
        self.older.disabled = len(entries) < AUDIT_PAGE
        self.newest.disabled = before_id is None

    # Helpers

    def _say(self, text: str, error: bool = False) -> None:
        """Show a result (HTML, escaped by the caller) above the tabs."""
        kind = "error" if error else "notice"
        self.message.object = f'<div class="{kind}" role="{"alert" if error else "status"}">{text}</div>'
        self.message.visible = True

    def _on_problem(self, problem: ApiProblem) -> None:
        if problem.signed_out and self.user is not None:
            if pn.state.location is not None and not pn.state.location.reload:
                pn.state.location.reload = True  # the reload finds no sign-in: /login, then back here
            return
        if problem.status == 403:  # no longer an administrator
            self._refuse()
            return
        self._say(f"The API refused: {_e(problem)}", error=True)

    async def _guard(self, call: Any) -> Any:
        try:
            return await call
        except ApiProblem as problem:
            self._on_problem(problem)
            return None


def create_admin_page() -> pn.viewable.Viewable:
    """The admin page for one browser session, acting for the user who signed in."""
    settings = UiSettings()
    user = signed_in_user()
    if settings.auth == "on" and user is None:  # fails closed: no user, no API calls
        return pn.pane.HTML('<p>You are not signed in. <a href="./login">Sign in</a></p>')
    api = ApiClient(settings, token=user.token if user is not None else None)
    admin = AdminView(api, user)
    pn.state.onload(admin.start)
    pn.state.on_session_destroyed(lambda _: asyncio.ensure_future(api.close()))
    return admin.view()
