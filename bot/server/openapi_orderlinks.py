"""The quick-order links' routes of the OpenAPI document (``openapi.py`` joins them into ``PATHS``;
its helpers come as arguments, as for ``openapi_processes``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

_LINK = {"type": "object", "required": ["id", "url", "expires_at"], "properties": {
    "id": {"type": "string"}, "url": {"type": "string", "format": "uri"}, "expires_at": {"type": "integer"}}}
_LISTED = {"type": "object", "required": ["id", "status", "created_at", "expires_at"], "properties": {
    "id": {"type": "string"}, "status": {"enum": ["active", "expired", "revoked"]},
    "url": {"type": "string", "format": "uri", "description": "active links only"},
    "created_at": {"type": "number"}, "expires_at": {"type": "integer"}, "by": {"type": ["string", "null"]},
    "source": {"enum": ["api", "flow"]}, "revoked_at": {"type": "number"}, "revoked_by": {"type": "string"}}}
_ROLES = ["support", "operator"]

Json = Callable[..., dict[str, Any]]


def paths(op: Json, json_: Json, p: Json, error: dict[str, Any], html: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        "/api/customers/{id}/order-link": {"post": op(
            "A new quick-order link for the customer (docs/customers.md)",
            {"201": json_(_LINK), "400": json_(error), "404": json_(error, "No such customer"),
             "409": json_(error, "The server does not use the embedded CRM"),
             "422": json_(error, "Too many working links")},
            auth=_ROLES, params=[p("id")],
            body={"type": "object", "additionalProperties": False, "properties": {
                "expires": {"type": ["string", "integer"], "description": '"7d" or seconds: 1 hour to 365 days'}}})},
        "/api/customers/{id}/order-links": {"get": op(
            "The customer's quick-order links, newest first",
            {"200": json_({"type": "object", "required": ["links"], "properties": {
                "links": {"type": "array", "items": _LISTED}}}), "404": json_(error), "409": json_(error)},
            auth=_ROLES, params=[p("id")])},
        "/api/customers/{id}/order-links/{link}": {"delete": op(
            "Revoke a quick-order link: the page refuses it at once",
            {"200": json_(_LISTED), "404": json_(error), "409": json_(error)},
            auth=_ROLES, params=[p("id"), p("link")])},
        "/order/{token}": {
            "get": op("The quick-order page: the customer's products and prices, a cart",
                      {"200": html, "404": html, "410": html, "429": html}, params=[p("token")]),
            "post": op("Place the order of the quick-order page (form-encoded); once per submit key",
                       {"200": html, "400": html, "404": html, "409": html, "410": html, "413": html, "422": html,
                        "429": html},
                       body={"description": "application/x-www-form-urlencoded: key, shown (the prices shown), "
                                            "q:<sku>=<quantity>"},
                       params=[p("token")]),
        },
    }
