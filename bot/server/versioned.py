"""The routes every versioned document shares (bots, automation documents): the list, the
history, one version, activation. Each API module keeps its own paths and roles and answers
through these, so both read and fail the same way."""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from aiohttp import web

from ..errors import DocumentInvalid, Problem
from ..store.bots import problems_as_details
from ..store.versions import DocumentNotFound, VersionedDocuments, VersionInfo
from .http import MAX_INDEX, error, json_body

Activate = Callable[[str, int], Awaitable[VersionInfo]]
#: Check and store a document with problems found before (``DocumentInvalid`` listing them all).
Put = Callable[[Any, Sequence[Problem]], Awaitable[tuple[VersionInfo, bool]]]


async def upload(request: web.Request, put: Put, activate: Activate, *, code: str, noun: str) -> web.Response:
    """The body as a new active version (201); the newest version again (re)activates it (200).
    A URL id that no document may have is a 400; any problem of the document (an id other than
    the URL's, a key written twice included) a 422 listing every problem."""
    from ..builder.model_base import BOT_ID_PATTERN  # with the first upload, not at start
    from ..builder.problems import repeated_key_problems

    doc_id = request.match_info["id"]
    if not re.fullmatch(BOT_ID_PATTERN, doc_id):
        return error(400, "bad_id", f"{json.dumps(doc_id, ensure_ascii=False)} (the id in the URL) is not a valid "
                     f"{noun} id: lower-case letters, digits, _ and -, up to 64, starting with a letter or digit")
    repeated: list[str] = []
    doc = await json_body(request, repeated)
    extra = repeated_key_problems(repeated)
    if isinstance(doc, dict) and doc.get("id") != doc_id:
        extra.append(Problem("/id", f'must be "{doc_id}" (the id in the URL)'))
    try:
        info, new = await put(doc, extra)
    except DocumentInvalid as exc:
        details = problems_as_details(exc.problems)
        return error(422, code, f"{len(details)} problem(s) in the {noun}", details)
    if not new:
        await activate(info.id, info.version)
    return web.json_response({"id": info.id, "version": info.version, "warnings": list(info.warnings)},
                             status=201 if new else 200)


def listing(key: str, rows: list[dict[str, object]]) -> web.Response:
    return web.json_response({key: rows})


async def history(documents: VersionedDocuments, doc_id: str, noun: str) -> web.Response:
    """Every version of a document, with the active one marked; 404 when there is none."""
    versions = await documents.versions(doc_id)
    if not versions:
        return error(404, "not_found", f"no {noun} {doc_id!r}")
    active = await documents.active_version(doc_id)
    return web.json_response({"id": doc_id, "active_version": active,
                              "versions": [{**v.as_dict(), "active": v.version == active} for v in versions]})


async def one(documents: VersionedDocuments, doc_id: str, version: str | None, key: str) -> web.Response:
    """A version of a document (the active one when ``version`` is None) as ``{id, version, <key>}``."""
    n = None
    if version is not None:
        try:
            n = int(version)
        except ValueError:
            n = 0
        if not 1 <= n <= MAX_INDEX:
            return error(400, "bad_version", "the version is a whole number")
    try:
        found, doc = await documents.document(doc_id, n)
    except DocumentNotFound as exc:
        return error(404, "not_found", str(exc))
    return web.json_response({"id": doc_id, "version": found, key: doc})


async def activate(request: web.Request, doc_id: str, activate: Activate) -> web.Response:
    """``{"version": n}`` becomes the active version (roll back or forward)."""
    body = await json_body(request)
    version = body.get("version") if isinstance(body, dict) else None
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        return error(400, "bad_request", 'the body is {"version": n}, n a version number from 1')
    try:
        info = await activate(doc_id, version)
    except DocumentNotFound as exc:
        return error(404, "not_found", str(exc))
    return web.json_response({"id": info.id, "version": info.version, "active": True})
