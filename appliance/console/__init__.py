"""The web console: server-rendered pages (jinja2) over the same services as the API.

Login makes a console session: an HttpOnly, SameSite=Strict cookie (Secure over
HTTPS) whose SHA-256 is stored, with a CSRF token that every form carries and that
the small scripts send as ``X-CSRF-Token`` when they call the API with the cookie.
The login form itself is protected by a double-submit token. Pages show actions
only to roles that may take them, and the handlers check again. Changes are
audited as ``user:NAME`` from ``console ADDRESS``.
"""

from __future__ import annotations

from appliance.console.views import setup_console

__all__ = ["setup_console"]
