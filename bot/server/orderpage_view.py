"""The quick-order page's HTML: mobile first (one column, a cart bar fixed at the bottom), escaped
by Jinja2's autoescape (a product named ``<b>`` shows as text), no inline script. Without
JavaScript it is a plain form of quantity fields; ``/live/static/order.js`` adds the − / +
buttons and a running total (the server computes the real one)."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from aiohttp import web

from .http import page_headers

if TYPE_CHECKING:
    from jinja2 import Template

HEADERS = page_headers("default-src 'none'", "script-src 'self'", "style-src 'unsafe-inline'",
                       "img-src 'self' https: data:", "form-action 'self'")

_PAGE = """<!doctype html>
<html lang="{{ lang }}"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="robots" content="noindex">
<link rel="icon" href="data:,">
<title>{{ title }}</title>
<style>
*{box-sizing:border-box}
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;background:#f5f6f8;color:#1d2330;margin:0;
font-size:16px;line-height:1.45}
main{max-width:36rem;margin:0 auto;padding:1rem 1rem 7rem}
h1{font-size:1.4rem;margin:.5rem 0 1rem}
.note{background:#e8f5e9;color:#1b5e20;border-radius:8px;padding:.6rem .8rem;margin:0 0 1rem}
.error{background:#fdecea;color:#b71c1c;border-radius:8px;padding:.6rem .8rem;margin:0 0 1rem}
ul.products{list-style:none;margin:0;padding:0}
li.product{background:#fff;border-radius:12px;padding:.9rem;margin:0 0 .75rem;display:flex;gap:.8rem;
box-shadow:0 1px 3px rgba(0,0,0,.08)}
li.product img{width:72px;height:72px;object-fit:cover;border-radius:8px;flex:none}
.info{flex:1;min-width:0}
.name{font-weight:600;margin:0;overflow-wrap:anywhere}
.desc{color:#555;font-size:.9rem;margin:.2rem 0;overflow-wrap:anywhere}
.price{margin:.3rem 0}.price s{color:#888;margin-right:.4rem}.price strong{font-size:1.05rem}
.qty{display:flex;align-items:center;gap:.4rem;margin-top:.4rem}
.qty label{font-size:.85rem;color:#555}
.qty input{width:4.5rem;padding:.5rem;border:1px solid #c9ced6;border-radius:8px;font:inherit;text-align:center}
.qty button{width:2.75rem;height:2.75rem;border:1px solid #c9ced6;background:#fff;border-radius:8px;font-size:1.3rem}
.bar{position:fixed;left:0;right:0;bottom:0;background:#fff;border-top:1px solid #dde1e6;padding:.75rem 1rem}
.bar div{max-width:36rem;margin:0 auto;display:flex;align-items:center;gap:1rem}
.sum{flex:1}.sum span{display:block;font-size:.85rem;color:#555}
.bar button,a.button{padding:.8rem 1.2rem;border:0;border-radius:8px;background:#1f6feb;color:#fff;font:inherit;
font-weight:600;text-decoration:none;display:inline-block}
table{width:100%;border-collapse:collapse;background:#fff;border-radius:12px;margin:0 0 1rem}
td{padding:.5rem .7rem;border-bottom:1px solid #eef0f3}td.n{text-align:right;white-space:nowrap}
</style></head>
<body><main>
{% if kind == "message" %}
<h1>{{ title }}</h1>
<p id="message">{{ message }}</p>
{% elif kind == "done" %}
<h1>{{ t.thanks }}</h1>
<p id="message" role="status">{{ placed }}</p>
<table id="order"><tbody>
{% for line in lines %}<tr><td>{{ line.name }}</td><td class="n">{{ line.qty }} × {{ line.unit }}</td>
<td class="n">{{ line.total }}</td></tr>{% endfor %}
<tr><td colspan="2"><strong>{{ t.total }}</strong></td><td class="n"><strong id="total">{{ total }}</strong></td></tr>
</tbody></table>
<a class="button" href="">{{ t.again }}</a>
{% else %}
<h1>{{ t.title }}</h1>
{% if error %}<p class="error" role="alert">{{ error }}</p>{% endif %}
{% if discount %}<p class="note" id="discount">{{ discount }}</p>{% endif %}
{% if not products %}<p id="message">{{ t.nothing }}</p>{% else %}
<form method="post" id="order-form" data-currency="{{ currency }}" data-digits="{{ digits }}" data-lang="{{ lang }}"
 data-less="{{ t.less }}" data-more="{{ t.more }}">
<input type="hidden" name="key" value="{{ key }}">
<input type="hidden" name="shown" value="{{ shown }}">
<ul class="products">
{% for p in products %}
<li class="product">
{% if p.image_url %}<img src="{{ p.image_url }}" alt="" loading="lazy">{% endif %}
<div class="info">
<p class="name" id="name-{{ loop.index }}">{{ p.name }}</p>
{% if p.description %}<p class="desc">{{ p.description }}</p>{% endif %}
<p class="price">{% if p.base != p.unit %}<s>{{ p.base }}</s>{% endif %}<strong>{{ p.unit }}</strong></p>
<div class="qty"><label for="q-{{ loop.index }}">{{ t.qty }}</label>
<input id="q-{{ loop.index }}" name="q:{{ p.sku }}" type="number" inputmode="numeric" min="0" max="999" step="1"
 value="{{ values.get(p.sku, '') }}" data-price="{{ p.unit_minor }}" aria-describedby="name-{{ loop.index }}"></div>
</div></li>
{% endfor %}
</ul>
<div class="bar"><div>
<p class="sum" id="cart-summary" hidden><span>{{ t.cart }}: <b id="cart-count">0</b></span>
{{ t.total }}: <b id="cart-total"></b></p>
<button type="submit" id="place">{{ t.order }}</button>
</div></div>
</form>
{% endif %}
<script src="/live/static/order.js" defer></script>
{% endif %}
</main></body></html>
"""


@functools.cache
def _template() -> Template:
    """Compiled with the first page shown: jinja2 is not imported at start (issue 14: startup)."""
    from jinja2 import Environment

    return Environment(autoescape=True).from_string(_PAGE)


def render(status: int = 200, headers: Mapping[str, str] | None = None, **values: Any) -> web.Response:
    body = _template().render(**values)
    return web.Response(text=body, status=status, content_type="text/html", charset="utf-8",
                        headers={**HEADERS, **(headers or {})})
