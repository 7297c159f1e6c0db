"""A fake Kommo account behind the documented REST API v4, on loopback (aiohttp).

Follows shared/research/kommo.md §5 (developers.kommo.com): Bearer long-lived token (401
``Invalid user name or password`` otherwise); at most ``rate_limit`` requests in any second
(429 ``Too Many Requests`` with ``retry_after`` and ``Retry-After``); validation errors as
400 ``{"validation-errors": [{"request_id", "errors": [{"code", "path", "detail"}]}], …}``;
empty lists and unknown ids as 204 No Content; HAL-shaped answers (``_embedded``, ``_links``).

Endpoints: ``/api/v4/account?with=task_types``, ``/api/v4/users``, ``/api/v4/leads/pipelines``,
``/api/v4/{leads,contacts,companies}/custom_fields`` (GET, POST), ``/api/v4/leads`` (GET
``filter[id][]``, POST, PATCH), ``/api/v4/leads/complex``, ``/api/v4/leads/{id}`` (GET
``?with=contacts``, PATCH), ``/api/v4/leads/{id}/link``, ``/api/v4/contacts`` (GET ``query``
``with=leads``, POST, PATCH) and ``/{id}``, ``/api/v4/companies`` likewise, ``/api/v4/tasks``
(GET with ``filter[entity_type]``, ``filter[entity_id][]``, ``filter[is_completed]``,
``filter[task_type][]``; POST; PATCH) and ``/{id}``, ``/api/v4/{entity}/{id}/notes`` (GET, POST).
PATCH understands ``tags_to_add`` / ``tags_to_delete`` and the replacing ``_embedded.tags``.

Test controls: ``fail_next(status)`` fails coming requests; ``down(status)`` / ``up()`` answer
every request with an error; ``stop_listening()`` / ``start_listening()`` refuse connections
on the same port; ``requests`` records every request (monotonic arrival time, method, path,
query, body, answer status); ``writes`` the successful writes in order.

The package: ``records`` holds the account's data and Kommo's rules for writing it, ``server``
the HTTP side (auth, rate limit, injected failures, routes).
"""

from __future__ import annotations

from typing import Any

from tests.waiting import wait_for

from .records import OWNER, SUBDOMAIN, TASK_TYPES, USERS, KommoAccount
from .server import TOKEN, FakeKommo, Request

__all__ = ["OWNER", "SUBDOMAIN", "TASK_TYPES", "TOKEN", "USERS", "FakeKommo", "KommoAccount", "Request",
           "wait_until"]


async def wait_until(predicate: Any, timeout: float = 10.0, what: str = "", interval: float = 0.02) -> Any:
    """Poll ``predicate()`` (sync or async) until it is truthy; bounded by ``timeout``."""
    return await wait_for(predicate, timeout, interval, what=what)

