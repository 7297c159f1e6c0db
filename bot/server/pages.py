"""Customer-facing pages: hosted forms (``/forms/{token}``) and unsubscribe links
(``/unsubscribe/{token}``). No login: the token in the path is the key. Everything shown is
escaped (Jinja2 autoescape), the pages run no script and may not be framed.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import re
from typing import TYPE_CHECKING, Any

from aiohttp import web

from ..errors import CrmRejected, CrmTemporary
from ..inputs import clean_text
from ..outward.actions import OutwardActions
from ..outward.forms import FormAlreadySent, FormError
from .http import page_headers
from .keys import SERVICES

if TYPE_CHECKING:
    from jinja2 import Template

log = logging.getLogger("salesbot.server.pages")
#: What a form or unsubscribe token is made of (``secrets.token_urlsafe``, base64url + signature).
_TOKEN = re.compile(r"^[A-Za-z0-9_=.-]{1,1024}$")
routes = web.RouteTableDef()

_HEADERS = page_headers("default-src 'none'", "style-src 'unsafe-inline'", "form-action 'self'")

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{ title }}</title>
<style>
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;background:#f5f6f8;color:#1d2330;margin:0}
main{max-width:28rem;margin:2rem auto;background:#fff;border-radius:12px;padding:1.5rem 1.75rem;
box-shadow:0 1px 3px rgba(0,0,0,.08)}
h1{font-size:1.35rem;margin:0 0 1rem}label{display:block;font-weight:600;margin:1rem 0 .3rem}
input,textarea{width:100%;box-sizing:border-box;padding:.6rem .7rem;border:1px solid #c9ced6;border-radius:8px;
font:inherit}
input[aria-invalid=true],textarea[aria-invalid=true]{border-color:#c62828}
.error{color:#c62828;font-size:.9rem;margin:.3rem 0 0}
button{margin-top:1.5rem;width:100%;padding:.75rem;border:0;border-radius:8px;background:#1f6feb;color:#fff;
font:inherit;font-weight:600;cursor:pointer}
p{line-height:1.5}
</style></head>
<body><main>
<h1>{{ title }}</h1>
{% if message %}<p id="message">{{ message }}</p>{% endif %}
{% if fields %}
<form method="post" novalidate>
{% for f in fields %}
<label for="f-{{ loop.index }}">{{ f.label }}</label>
{% if f.input_type == "textarea" %}
<textarea id="f-{{ loop.index }}" name="{{ f.name }}" rows="4" maxlength="1000"
{% if errors.get(f.name) %}aria-invalid="true"{% endif %}>{{ values.get(f.name, "") }}</textarea>
{% else %}
<input id="f-{{ loop.index }}" name="{{ f.name }}" type="{{ f.input_type }}" maxlength="1000"
 value="{{ values.get(f.name, "") }}"{% if f.input_type == "number" %} step="any" min="0"{% endif %}
{% if errors.get(f.name) %} aria-invalid="true"{% endif %}>
{% endif %}
{% if errors.get(f.name) %}<p class="error" role="alert">{{ errors[f.name] }}</p>{% endif %}
{% endfor %}
<button type="submit">{{ button }}</button>
</form>
{% endif %}
</main></body></html>
"""


@functools.cache
def _page_template() -> Template:
    """Compiled with the first page shown: jinja2 is not imported at start (issue 14: startup)."""
    from jinja2 import Environment

    return Environment(autoescape=True).from_string(_PAGE)


def page(title: str, *, status: int = 200, message: str = "", fields: list[Any] | None = None,
         values: dict[str, str] | None = None, errors: dict[str, str] | None = None,
         button: str = "Send") -> web.Response:
    body = _page_template().render(title=title, message=message, fields=fields or [], values=values or {},
                        errors=errors or {}, button=button)
    return web.Response(text=body, status=status, content_type="text/html", charset="utf-8", headers=_HEADERS)


def _actions(request: web.Request) -> OutwardActions:
    actions = request.app[SERVICES].outward
    if actions is None:
        raise web.HTTPNotFound()
    return actions


def _title(record: dict[str, Any]) -> str:
    return "Recommend someone" if record["form"] == "referral" else "Your details"


_GONE = "This link is no longer valid. It may have expired or been used already."


@routes.get("/forms/{token}")
async def show_form(request: web.Request) -> web.Response:
    forms = _actions(request).forms
    record = None if _token(request) is None else await forms.load(request.match_info["token"])
    if record is None:
        return page("Form not found", status=404, message=_GONE)
    if record.get("done"):
        return page("Thank you!", status=410, message="This form has been sent already. Thank you!")
    return page(_title(record), fields=forms.fields(record))


@routes.post("/forms/{token}")
async def submit_form(request: web.Request) -> web.Response:
    forms = _actions(request).forms
    token = request.match_info["token"]
    record = None if _token(request) is None else await forms.load(token)
    if record is None:
        return page("Form not found", status=404, message=_GONE)
    if record.get("done"):
        return page("Thank you!", status=410, message="This form has been sent already. Thank you!")
    posted = await request.post()
    fields = forms.fields(record)
    values = {f.name: clean_text(str(posted.get(f.name, "")), f.name, limit=2000) for f in fields}
    try:
        await forms.submit(token, record, values)
    except FormAlreadySent:
        return page("Thank you!", status=410, message="This form has been sent already. Thank you!")
    except FormError as exc:
        return page(_title(record), status=422, fields=fields, values=values, errors=exc.errors,
                    message="Please check the fields marked below.")
    except CrmRejected as exc:
        log.warning("form.rejected", extra={"error": str(exc)})
        return page(_title(record), status=422, fields=fields, values=values,
                    message=f"We could not save this: {exc}")
    except CrmTemporary as exc:
        log.warning("form.temporary_failure", extra={"error": str(exc)})
        return page(_title(record), status=503, fields=fields, values=values,
                    message="We could not save this right now. Please try again in a minute.")
    await _form_submitted(request, token, record)
    return page("Thank you!", message="We have received your details.")


async def _form_submitted(request: web.Request, token: str, record: dict[str, Any]) -> None:
    """``form.submitted`` (``form``: individual or referral) onto the form's lead queue; its id is
    derived from the token (a form is sent once) without revealing it."""
    lead_id = record.get("lead_id")
    if not lead_id:
        return
    leads = request.app[SERVICES].leads
    event = leads.event("form.submitted", str(lead_id), data={"form": record["form"]},
                        id_="form:" + hashlib.sha256(token.encode()).hexdigest()[:24],
                        contact_id=record.get("contact_id") or None, source="form")
    await leads.deliver(event, background=True)


def _token(request: web.Request) -> str | None:
    """The path's token if it can be one of ours (URL-safe base64, dots): anything else, such as
    non-ASCII text, is not looked up at all."""
    token = request.match_info["token"]
    return token if _TOKEN.match(token) else None


async def _unsubscribe(request: web.Request) -> web.Response:
    token = _token(request)
    result = None if token is None else await _actions(request).unsubscribe(token)
    if result is None:
        return page("Link not valid", status=404, message="This unsubscribe link is not valid.")
    address, first = result
    if not first:
        return page("Unsubscribed", message=f"{address} is unsubscribed already. You will get no more e-mails from us.")
    return page("Unsubscribed", message=f"{address} will get no more e-mails from us.")


@routes.get("/unsubscribe/{token}")
async def unsubscribe_get(request: web.Request) -> web.Response:
    return await _unsubscribe(request)


@routes.post("/unsubscribe/{token}")
async def unsubscribe_post(request: web.Request) -> web.Response:
    """RFC 8058 one-click: mail clients POST ``List-Unsubscribe=One-Click``."""
    return await _unsubscribe(request)
