"""The header bar's account box, on every dashboard page: who is signed in, the links between
the chats, the Machine page and the admin view (administrators only), and the sign-out button."""

from __future__ import annotations

import html

import panel as pn

from ui.auth import LOGOUT_URL, SignedIn

# Relative links, so that the pages also work under a proxy's path prefix.
CHATS_LINK, ADMIN_LINK, MACHINE_LINK = "./", "./admin", "./machine"
ACCOUNT_CSS = """
:host { margin-left: auto; }
.account, .account nav, .account .me { display: flex; align-items: center; gap: 12px; color: white; font-size: 14px;
  white-space: nowrap; }
.account form { margin: 0; }
.account a { color: white; text-decoration: none; border-bottom: 1px solid rgba(255,255,255,.6); }
.account a:hover { border-bottom-color: white; }
.account button { color: white; background: transparent; border: 1px solid rgba(255,255,255,.7);
  border-radius: 4px; padding: 4px 12px; font-size: 13px; cursor: pointer; }
.account button:hover { background: rgba(255,255,255,.15); }
@media (max-width: 700px) {
  .account, .account nav, .account .me { gap: 6px; font-size: 13px; }
  .account .label { display: none; }
  .account button { padding: 3px 6px; }
}
@media (max-width: 420px) {  /* the links above the name and the button: room for the title */
  .account { flex-direction: column; align-items: flex-end; gap: 3px; }
  .account nav, .account .me { gap: 6px; font-size: 12px; }
  .account button { padding: 1px 4px; font-size: 12px; }
}
"""


def account_box(user: SignedIn | None, admin_page: bool = False,
                machine_page: bool = False) -> list[pn.viewable.Viewable]:
    """The header's right-hand side. ``user`` None is local mode (no sign-in, one user, who
    is the administrator): only the links. The Admin link is a convenience: the admin page
    asks the API who is signed in, and the API refuses its routes to anyone but administrators."""
    links = []
    if admin_page or machine_page:
        links.append(f'<a href="{CHATS_LINK}">Chats</a>')
    else:  # from the chats; the admin view has a Machine tab of its own
        links.append(f'<a href="{MACHINE_LINK}">Machine</a>')
    if not admin_page and (user is None or user.role == "admin"):
        links.append(f'<a href="{ADMIN_LINK}">Admin</a>')
    parts = [f'<nav aria-label="Pages">{"".join(links)}</nav>']
    if user is not None:
        parts.append(f'<div class="me"><span><span class="label">Signed in as </span><b>{html.escape(user.name)}</b>'
                     # A form POST: a link elsewhere cannot sign anyone out.
                     f'</span><form method="post" action=".{LOGOUT_URL}"><button type="submit">Sign out</button>'
                     '</form></div>')
    return [pn.pane.HTML(f'<div class="account">{"".join(parts)}</div>', stylesheets=[ACCOUNT_CSS],
                         css_classes=["account-box"], margin=(0, 5), align="center")]
