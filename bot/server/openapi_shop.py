"""The catalogue's and orders' routes of the OpenAPI document (``openapi.py`` joins them into
``PATHS``; its helpers come as arguments, as for ``openapi_processes``). docs/customers.md."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..shop.orders import PAYMENTS, STATUSES

_MONEY = {"type": "number", "minimum": 0, "description": "major units of the currency (35.5 EUR, 1200 JPY)"}
_TEXTS = {"type": "object", "additionalProperties": {"type": "string"}, "description": "language tag → text"}
_PRODUCT = {"type": "object", "required": ["sku", "name", "description", "image_url", "prices", "active", "updated_at"],
            "properties": {"sku": {"type": "string"}, "name": _TEXTS, "description": _TEXTS,
                           "image_url": {"type": ["string", "null"]},
                           "prices": {"type": "object", "additionalProperties": _MONEY},
                           "active": {"type": "boolean"}, "updated_at": {"type": "number"}}}
_PRODUCT_IN = {"type": "object", "required": ["name", "prices"], "additionalProperties": False, "properties": {
    "name": {"type": ["string", "object"]}, "description": {"type": ["string", "object", "null"]},
    "image_url": {"type": ["string", "null"]},
    "prices": {"type": "object", "minProperties": 1, "additionalProperties": _MONEY}, "active": {"type": "boolean"}}}
_LINE = {"type": "object", "required": ["sku", "name", "qty", "base_price", "unit_price", "total"], "properties": {
    "sku": {"type": "string"}, "name": {"type": "string"}, "qty": {"type": "integer", "minimum": 1, "maximum": 999},
    "base_price": _MONEY, "unit_price": _MONEY, "total": _MONEY}}
_HISTORY = {"type": "object", "required": ["at", "by", "field", "from", "to"], "properties": {
    "at": {"type": "number"}, "by": {"type": "string"}, "field": {"enum": ["status", "payment", "tracking"]},
    "from": {"type": ["string", "null"]}, "to": {"type": ["string", "null"]}}}
_ORDER = {"type": "object", "required": ["id", "number", "customer", "lead", "items", "currency", "discount", "total",
                                         "status", "payment", "tracking", "source", "created_at", "updated_at",
                                         "history"],
          "properties": {"id": {"type": "string"}, "number": {"type": "integer"}, "customer": {"type": "string"},
                         "lead": {"type": ["string", "null"]}, "items": {"type": "array", "items": _LINE},
                         "currency": {"type": "string"}, "discount": {"type": "number"}, "total": _MONEY,
                         "status": {"enum": list(STATUSES)}, "payment": {"enum": list(PAYMENTS)},
                         "tracking": {"type": ["string", "null"]}, "source": {"type": "string"},
                         "created_at": {"type": "number"}, "updated_at": {"type": "number"},
                         "history": {"type": "array", "items": _HISTORY}}}
_ORDER_IN = {"type": "object", "required": ["customer", "items"], "additionalProperties": False, "properties": {
    "customer": {"type": ["string", "integer"]}, "lead": {"type": ["string", "integer", "null"]},
    "items": {"type": "array", "minItems": 1, "maxItems": 50, "items": {
        "type": "object", "required": ["sku"], "additionalProperties": False, "properties": {
            "sku": {"type": "string"}, "qty": {"type": "integer", "minimum": 1, "maximum": 999}}}}}}
_PATCH = {"type": "object", "minProperties": 1, "additionalProperties": False, "properties": {
    "status": {"enum": list(STATUSES)}, "payment": {"enum": list(PAYMENTS)},
    "tracking": {"type": ["string", "null"], "maxLength": 200}}}
_READERS = ["support", "operator"]

Json = Callable[..., dict[str, Any]]


def paths(op: Json, json_: Json, p: Json, error: dict[str, Any]) -> dict[str, dict[str, Any]]:
    refused = json_(error, "Not valid: the message says what to fix")
    return {
        "/api/products": {"get": op(
            "The catalogue, by sku", {"200": json_({"type": "object", "required": ["products"], "properties": {
                "products": {"type": "array", "items": _PRODUCT}}}), "400": json_(error)},
            auth=_READERS, params=[p("active", "query", {"enum": ["true", "false"]}, required=False)])},
        "/api/products/{sku}": {
            "get": op("One product", {"200": json_(_PRODUCT), "404": json_(error)}, auth=_READERS, params=[p("sku")]),
            "put": op("Create or replace a product (prices per currency, translated name and description)",
                      {"200": json_(_PRODUCT, "Replaced"), "201": json_(_PRODUCT, "Created"), "400": json_(error),
                       "413": json_(error), "422": refused},
                      auth=["operator"], body=_PRODUCT_IN, params=[p("sku")]),
            "delete": op("Remove a product (orders keep their lines)", {"204": {"description": "Removed"},
                                                                         "404": json_(error)},
                         auth=["operator"], params=[p("sku")])},
        "/api/orders": {
            "get": op("Orders, newest first, filtered; next_before pages on",
                      {"200": json_({"type": "object", "required": ["orders", "next_before"], "properties": {
                          "orders": {"type": "array", "items": _ORDER},
                          "next_before": {"type": ["integer", "null"]},
                          "customers": {"type": "object",
                                        "description": "each listed customer's name (null: unknown); only for support "
                                                       "and admin tokens (the CRM is closed to operators)",
                                        "additionalProperties": {"type": ["string", "null"]}}}}),
                      "400": json_(error)},
                      auth=_READERS,
                      params=[p("status", "query", {"enum": list(STATUSES)}, required=False),
                              p("payment", "query", {"enum": list(PAYMENTS)}, required=False),
                              p("customer", "query", required=False),
                              p("limit", "query", {"type": "integer", "minimum": 1, "maximum": 200}, required=False),
                              p("before", "query", {"type": "integer", "minimum": 1}, required=False)]),
            "post": op("Make an order for a customer at the catalogue's prices (emits order.created)",
                       {"201": json_(_ORDER, "Made (or, with a known Idempotency-Key, the order it made)"),
                        "400": json_(error), "404": json_(error, "Unknown customer or lead"),
                        "413": json_(error), "422": refused, "429": json_(error, "Too many orders from this client")},
                       auth=_READERS, body=_ORDER_IN,
                       params=[p("Idempotency-Key", "header", required=False)])},
        "/api/orders/{id}": {
            "get": op("One order with its history", {"200": json_(_ORDER), "404": json_(error)},
                      auth=_READERS, params=[p("id")]),
            "patch": op("Move the status, mark paid, set tracking (each change emits its event)",
                        {"200": json_(_ORDER), "400": json_(error), "404": json_(error), "413": json_(error),
                         "422": refused, "429": json_(error)},
                        auth=_READERS, body=_PATCH, params=[p("id")])},
    }
