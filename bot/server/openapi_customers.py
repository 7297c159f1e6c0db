"""OpenAPI entries of the customers list, a customer's conversations and the live orders stream
(merged into ``openapi.PATHS``; helpers come as arguments, as for ``openapi_shop``). See
docs/customers.md and docs/dashboard.md."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Json = Callable[..., dict[str, Any]]

_NOTE = {"type": ["object", "null"], "required": ["id", "text", "priority"], "properties": {
    "id": {"type": "string"}, "text": {"type": "string"}, "priority": {"enum": ["high", "medium", "none"]},
    "created_at": {"type": "number"}, "updated_at": {"type": "number"}, "author": {"type": ["string", "null"]}}}
_CUSTOMER = {"type": "object", "required": ["id", "name", "status", "last_note", "orders"], "properties": {
    "id": {"type": "string"}, "name": {"type": "string"}, "phone": {"type": ["string", "null"]},
    "email": {"type": ["string", "null"]}, "status": {"enum": ["current", "potential"]},
    "temperature": {"type": ["string", "null"]}, "discount": {"type": "number"},
    "currency": {"type": ["string", "null"]}, "language": {"type": ["string", "null"]},
    "responsible": {"type": ["string", "null"]}, "tags": {"type": "array", "items": {"type": "string"}},
    "fields": {"type": "object"}, "updated_at": {"type": ["number", "null"]},
    "last_note": _NOTE, "orders": {"type": "integer", "minimum": 0}}}


def paths(op: Json, json_: Json, p: Json, error: dict[str, Any]) -> dict[str, dict[str, Any]]:
    stream = {"description": "text/event-stream", "content": {"text/event-stream": {"schema": {"type": "string"}}}}
    return {
        "/api/customers": {"get": op(
            "Customers (the embedded CRM's contacts), newest first: a section (status), search and filters "
            "through indexes; each with its first note by priority and its order count; next_before and "
            "next_before_id (the last row's time and id) page on as before and before_id",
            {"200": json_({"type": "object", "required": ["customers", "total", "next_before", "next_before_id"],
                           "properties": {
                "customers": {"type": "array", "items": _CUSTOMER}, "total": {"type": "integer"},
                "next_before": {"type": ["number", "null"]}, "next_before_id": {"type": ["string", "null"]}}}),
             "400": json_(error), "409": json_(error, "The embedded CRM is not used")},
            auth=["support"],
            params=[p("status", "query", {"enum": ["current", "potential"]}, required=False),
                    p("q", "query", {"type": "string", "maxLength": 200}, required=False),
                    p("temperature", "query", required=False),
                    p("tag", "query", {"type": "string", "maxLength": 100}, required=False),
                    p("responsible", "query", required=False),
                    p("limit", "query", {"type": "integer", "minimum": 1, "maximum": 100}, required=False),
                    p("before", "query", {"type": "number", "minimum": 0}, required=False),
                    p("before_id", "query", {"type": "string", "maxLength": 64}, required=False)])},
        "/api/customers/{id}/conversations": {"get": op(
            "The conversations of the customer's channel identities, latest activity first",
            {"200": json_({"type": "object", "required": ["conversations"], "properties": {
                "conversations": {"type": "array", "items": {"type": "object"}}}}),
             "404": json_(error), "409": json_(error)},
            auth=["support"], params=[p("id")])},
        "/api/live/orders": {"get": op(
            "Server-Sent Events: event order {id} for each order created or changed (read it with GET "
            "/api/orders/{id}); resync: reload the list. Auth: Authorization header or the sb_live cookie",
            {"200": stream}, auth=["support"])},
    }
