"""The JSON API: health, metrics, bots, conversations, widget continuations (events: ``events_api.py``)."""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from typing import Any, Protocol, runtime_checkable

from aiohttp import web

from crm_bridge import CrmRef

from ..engine import events as ev
from ..errors import CrmError
from ..inputs import clean_text
from ..runtime.leads import is_lead_queue
from ..runtime.requests import WIDGET_TOKEN_TTL
from ..store import codec, replies
from ..store.indexes import STATUSES, ConversationIndex, Filters, claim_key
from . import versioned
from .auth import Principal
from .http import MAX_TIMESTAMP, HttpError, error, json_body, query_flag, query_number, require
from .keys import SERVICES
from .views import held_view, run_view, state_of, summary

#: The longest message a person sends from the dashboard (the live chat's, WhatsApp's and Telegram's).
HUMAN_TEXT_MAX = 4096
routes = web.RouteTableDef()
#: At most this many queued events are discarded by one retry.
MAX_SKIP = 1000


@runtime_checkable
class LeadActivity(Protocol):
    """A CRM backend that lists a lead's tasks and notes (every built-in one), for the dashboard."""

    async def lead_tasks(self, ref: CrmRef) -> list[dict[str, Any]]: ...

    async def lead_notes(self, ref: CrmRef) -> list[dict[str, Any]]: ...


@routes.get("/healthz")
async def healthz(request: web.Request) -> web.Response:
    try:
        await asyncio.wait_for(request.app[SERVICES].redis.ping(), timeout=2)
    except Exception:
        return web.json_response({"status": "unavailable"}, status=503)
    return web.json_response({"status": "ok"})


@routes.get("/metrics")
async def metrics(request: web.Request) -> web.Response:
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest  # with the first scrape, not at start

    services = request.app[SERVICES]
    services.metrics.queue_depth.labels("timers").set(await services.timers.pending())
    body = generate_latest(services.metrics.registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


# ---------------------------------------------------------------------- bots
@routes.put("/api/bots/{id}")
async def put_bot(request: web.Request) -> web.Response:
    require(request, "operator")
    bots = request.app[SERVICES].bots
    return await versioned.upload(request, bots.put, bots.activate, code="invalid_flow", noun="flow")


@routes.get("/api/bots")
async def list_bots(request: web.Request) -> web.Response:
    require(request, "operator", "support")
    return versioned.listing("bots", await request.app[SERVICES].bots.documents.listing())


@routes.get("/api/bots/{id}")
async def get_bot(request: web.Request) -> web.Response:
    require(request, "operator", "support")
    return await versioned.one(request.app[SERVICES].bots.documents, request.match_info["id"], None, "flow")


@routes.get("/api/bots/{id}/versions")
async def bot_versions(request: web.Request) -> web.Response:
    require(request, "operator", "support")
    return await versioned.history(request.app[SERVICES].bots.documents, request.match_info["id"], "bot")


@routes.get("/api/bots/{id}/versions/{n}")
async def bot_version(request: web.Request) -> web.Response:
    require(request, "operator", "support")
    return await versioned.one(request.app[SERVICES].bots.documents, request.match_info["id"],
                               request.match_info["n"], "flow")


@routes.post("/api/bots/{id}/activate")
async def activate_bot(request: web.Request) -> web.Response:
    require(request, "operator")
    return await versioned.activate(request, request.match_info["id"], request.app[SERVICES].bots.activate)


# ---------------------------------------------------------------------- conversations
#: The longest ``before_id`` (a conversation id) a listing takes: an id holds a chat id of up to
#: 256 characters percent-encoded (up to 9 bytes each as ``%XX``), its channel and account.
MAX_CURSOR_ID = 4096


def _public_meta(cid: str, meta: dict[str, str]) -> dict[str, Any]:
    return summary(cid, meta)


@routes.get("/api/conversations")
async def list_conversations(request: web.Request) -> web.Response:
    require(request, "support")
    services = request.app[SERVICES]
    q = request.query
    limit = query_number(request, "limit", 50, minimum=1, maximum=500, integer=True, clamp=True)
    before = query_number(request, "before", None, minimum=0, maximum=MAX_TIMESTAMP)
    before_id = q.get("before_id") or None  # with before: the last row of the previous page
    if before_id is not None and (before is None or len(before_id) > MAX_CURSOR_ID):
        return error(400, "bad_query", f"before_id goes with before, at most {MAX_CURSOR_ID} characters",
                     [{"parameter": "before_id"}])
    if q.get("status") and q["status"] not in STATUSES:
        return error(400, "bad_request", f"status is one of {', '.join(STATUSES)}")
    if query_flag(request, "parked"):  # set aside after repeated failures
        cids = await services.store.parked(limit)
        metas = await ConversationIndex(services.redis).metas(cids)
        return web.json_response({"conversations": [_public_meta(c, m) for c, m in zip(cids, metas, strict=True) if m],
                                  "next_before": None, "next_before_id": None},
                                 dumps=lambda v: json.dumps(v, ensure_ascii=False))
    # Secondary indexes kept by the save path (bot/store/indexes.py): no scan of all conversations.
    filters = Filters(status=q.get("status") or None, channel=q.get("channel") or None, bot=q.get("bot") or None,
                      waiting=query_flag(request, "waiting"))
    page = await ConversationIndex(services.redis).page(filters, search=q.get("q"), before=before,
                                                        before_id=before_id, limit=limit)
    body: dict[str, Any] = {"conversations": [_public_meta(cid, meta) for cid, _, meta in page.rows],
                            "next_before": page.next_before, "next_before_id": page.next_before_id}
    if page.truncated:
        body["truncated"] = True
    return web.json_response(body, dumps=lambda v: json.dumps(v, ensure_ascii=False))


def _visible(entry: dict[str, Any]) -> dict[str, Any]:
    return entry


@routes.get("/api/conversations/{cid}")
async def get_conversation(request: web.Request) -> web.Response:
    require(request, "support")
    services = request.app[SERVICES]
    cid = request.match_info["cid"]
    meta = await services.store.meta(cid, with_preview=True)
    if not meta or is_lead_queue(cid):  # a lead's queue has no transcript of its own: /api/leads/{id}/events
        return error(404, "not_found", f"no conversation {cid!r}")
    state = state_of(await services.store.state(cid))
    run = state.run if state else None
    transcript = [{"n": n, **codec.unpack(blob)} for n, blob in await services.store.tail_log(cid, 500)]
    body = _public_meta(cid, meta)
    body["run"] = run_view(run)
    body["held_message"] = held_view(state)
    if state and state.crm:
        ref = CrmRef(state.crm["contact_id"], state.crm["lead_id"], state.crm.get("company_id") or None)
        try:
            snapshot = await services.crm.snapshot(ref)
            body["lead"] = snapshot.get("lead")
            # The CRM's values over the conversation's, but not its blanks (a contact record whose
            # name is "" must not hide the name the channel gave).
            crm_contact = {k: v for k, v in (snapshot.get("contact") or {}).items() if v not in (None, "", [], {})}
            body["contact"] = {**body["contact"], **crm_contact}
            if isinstance(services.crm, LeadActivity):
                body["tasks"] = await services.crm.lead_tasks(ref)
                body["notes"] = await services.crm.lead_notes(ref)
        except CrmError as exc:  # the CRM is down: the conversation is still shown
            body["crm_error"] = str(exc)
    body["transcript"] = transcript
    return web.json_response(body, dumps=lambda v: json.dumps(v, ensure_ascii=False, default=str))


async def _conversation_event(request: web.Request, event: ev.Event, dedupe_id: str | None = None) -> web.Response:
    services = request.app[SERVICES]
    cid = request.match_info["cid"]
    if not await services.store.meta(cid):
        return error(404, "not_found", f"no conversation {cid!r}")
    await services.conversations.deliver(cid, event, dedupe_id=dedupe_id)
    return web.json_response({"ok": True}, status=202)


def _taken(holder: str) -> web.Response:
    return error(409, "taken", f"{holder} has this conversation", [{"owner": holder}])


async def _claim(request: web.Request) -> tuple[str | None, str]:
    """(who holds the conversation, the claim's id); the key's value is "<name>\x1f<claim id>"."""
    found = await request.app[SERVICES].redis.get(claim_key(request.match_info["cid"]))
    if found is None:
        return None, ""
    value = found.decode() if isinstance(found, bytes) else str(found)
    name, _, claim_id = value.partition("\x1f")
    return name, claim_id


async def _holder(request: web.Request) -> str | None:
    return (await _claim(request))[0]


@routes.post("/api/conversations/{cid}/takeover")
async def takeover(request: web.Request) -> web.Response:
    """One person at a time: the claim is a SET NX of the conversation's claim key (its hash tag);
    the second person gets 409 with the holder's name. The same person again is answered 202 and
    the event is deduplicated by the claim's id (one "took over" line)."""
    principal = require(request, "support")
    services = request.app[SERVICES]
    cid = request.match_info["cid"]
    if not await services.store.meta(cid):
        return error(404, "not_found", f"no conversation {cid!r}")
    key = claim_key(cid)
    claimed = False
    claim_id = secrets.token_hex(8)
    for _ in range(3):  # a release between our SET NX and GET: try again
        if await services.redis.set(key, f"{principal.name}\x1f{claim_id}", nx=True, ex=services.store.ttl):
            claimed = True
            break
        holder, claim_id = await _claim(request)
        if holder == principal.name:
            break
        if holder is not None:
            return _taken(holder)
    try:
        await services.conversations.deliver(cid, ev.Takeover(principal.name), dedupe_id=f"takeover:{claim_id}")
    except BaseException:
        if claimed:
            await services.redis.delete(key)
        raise
    return web.json_response({"ok": True, "owner": principal.name}, status=202)


@routes.post("/api/conversations/{cid}/release")
async def release(request: web.Request) -> web.Response:
    """Hand back (``{"step": …}`` to continue elsewhere). ``{"answer": true}``: the bot answers the
    customer's message that came while the person had the conversation; without it the bot leaves
    it unanswered. Either way the transcript says who handed back and what became of it."""
    principal = require(request, "support")
    body = await json_body(request) if request.can_read_body else {}
    if not isinstance(body, dict):
        return error(400, "bad_request", 'the body is an object: {"step"?, "answer"?}')
    step, answer = body.get("step"), body.get("answer", False)
    if step is not None and not isinstance(step, str):
        return error(400, "bad_request", 'step is a step id: {"step": "<step>"}')
    if not isinstance(answer, bool):
        return error(400, "bad_request", 'answer is true or false: {"answer": true}')
    holder, claim_id = await _claim(request)
    if holder is not None and holder != principal.name and principal.role != "admin":
        return _taken(holder)
    if holder is None and await _bot_owns(request):  # handed back already (a second tab, a retry)
        return error(409, "not_taken", "the bot has this conversation: nothing to hand back")
    if step is not None and (unknown := await _unknown_step(request, step)) is not None:
        return unknown
    # One hand-back per takeover: a second one sent meanwhile (a double click, two tabs) read the
    # same claim and is deduplicated by its id; it used to resume the bot twice (its messages sent twice).
    response = await _conversation_event(request, ev.Release(step, principal.name, answer),
                                         dedupe_id=f"release:{claim_id}" if claim_id else None)
    if response.status < 300 and claim_id:  # this claim only: a newer takeover's stays
        await request.app[SERVICES].redis.eval(_DROP_CLAIM, 1, claim_key(request.match_info["cid"]),
                                               f"{holder}\x1f{claim_id}")
    return response


#: Delete the claim key only while it holds this claim (a newer takeover's claim stays).
_DROP_CLAIM = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"


async def _bot_owns(request: web.Request) -> bool:
    """Whether the stored state says the bot has the conversation (no person took it over)."""
    state = state_of(await request.app[SERVICES].store.state(request.match_info["cid"]))
    return state is not None and state.owner != "human"


async def _unknown_step(request: web.Request, step: str) -> web.Response | None:
    """A 422 when the conversation's bot (its run's version) has no such step; None when it has
    it, or when there is no run to check against (the hand-back then says so in the transcript)."""
    services = request.app[SERVICES]
    state = state_of(await services.store.state(request.match_info["cid"]))
    run = state.run if state is not None else None
    if run is None:
        return None
    flow = await services.bots.ensure(run.bot, run.version)
    if flow is None or step in flow.steps:
        return None
    return error(422, "unknown_step", f"bot {run.bot!r} has no step {step[:64]!r}")


@routes.post("/api/conversations/{cid}/messages")
async def human_message(request: web.Request) -> web.Response:
    principal = require(request, "support")
    body = await json_body(request)
    text = body.get("text") if isinstance(body, dict) else None
    if isinstance(text, str) and len(text) > HUMAN_TEXT_MAX:  # what every channel carries in one message
        return error(400, "bad_request", f"a message is at most {HUMAN_TEXT_MAX} characters")
    # control characters out (a paste from a document: NUL, form feed), as of a visitor's text:
    # channels refuse them or show boxes, and a text of nothing else is no message
    text = clean_text(text, "text", limit=HUMAN_TEXT_MAX) if isinstance(text, str) else None
    if not text or not text.strip():
        return error(400, "bad_request", 'the body is {"text": "…"}')
    if (taken := await _claimed_by_other(request, principal)) is not None:
        return taken
    return await _conversation_event(request, ev.HumanMessage(text, principal.name))


async def _claimed_by_other(request: web.Request, principal: Principal) -> web.Response | None:
    """409 when someone else has taken the conversation over (admins may act anyway)."""
    holder = await _holder(request)
    if holder is not None and holder != principal.name and principal.role != "admin":
        return _taken(holder)
    return None


@routes.post("/api/conversations/{cid}/stop")
async def stop_bot(request: web.Request) -> web.Response:
    principal = require(request, "support")
    if (taken := await _claimed_by_other(request, principal)) is not None:
        return taken
    return await _conversation_event(request, ev.StopBot("stopped by a person"))


@routes.post("/api/conversations/{cid}/start")
async def start_bot(request: web.Request) -> web.Response:
    principal = require(request, "support")
    if (taken := await _claimed_by_other(request, principal)) is not None:
        return taken
    body = await json_body(request)
    bot = body.get("bot") if isinstance(body, dict) else None
    if not isinstance(bot, str):
        return error(400, "bad_request", 'the body is {"bot": "<bot id>"}')
    step = body.get("step")
    if step is not None and not isinstance(step, str):
        return error(400, "bad_request", 'step is a step id: {"bot": "<bot id>", "step": "<step>"}')
    flow = await request.app[SERVICES].bots.ensure(bot)
    if flow is None:
        return error(404, "not_found", f"no bot {bot!r}")
    if step is not None and step not in flow.steps:
        return error(422, "unknown_step", f"bot {bot!r} has no step {step[:64]!r}")
    return await _conversation_event(request, ev.StartBot(bot, step))


@routes.post("/api/conversations/{cid}/retry")
async def retry_conversation(request: web.Request) -> web.Response:
    """A person retries a parked conversation (see docs/server.md, "Failing conversations"):
    ``{"skip": n}`` first discards the n oldest queued events (the one that keeps failing)."""
    principal = require(request, "support")
    body = await json_body(request) if request.can_read_body else {}
    skip = body.get("skip", 0) if isinstance(body, dict) else None
    if not isinstance(skip, int) or isinstance(skip, bool) or not 0 <= skip <= MAX_SKIP:
        return error(400, "bad_request", f'the body is {{"skip": n}} with n from 0 to {MAX_SKIP} (optional)')
    services = request.app[SERVICES]
    cid = request.match_info["cid"]
    if not await services.store.meta(cid):
        return error(404, "not_found", f"no conversation {cid!r}")
    if (taken := await _claimed_by_other(request, principal)) is not None:
        return taken
    queue = services.leads if is_lead_queue(cid) else services.conversations  # a lead queue parks alike
    if not await queue.retry(cid, skip=skip, user=principal.name) and skip:
        return error(409, "busy", "the conversation is being processed right now; nothing was discarded, "
                                  "try again in a moment")
    return web.json_response(_public_meta(cid, await services.store.meta(cid, with_preview=True)), status=202,
                             dumps=lambda v: json.dumps(v, ensure_ascii=False))


@routes.post("/api/continue/{token}")
async def continue_widget(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    token = request.match_info["token"]
    found = await services.redis.getdel(f"sb:widget:{token}")
    if not found:
        return error(404, "not_found", "unknown or used continuation token")
    try:
        body = await json_body(request) if request.can_read_body else None
    except (HttpError, web.HTTPException):  # a bad body, or one over the size limit (aiohttp's 413)
        await services.redis.set(f"sb:widget:{token}", found, ex=WIDGET_TOKEN_TTL)  # let the caller retry
        raise
    await services.conversations.deliver(replies.text(found), ev.WidgetCallback(token, body),
                                         dedupe_id=f"widget:{token}")
    return web.json_response({"ok": True, "at": time.time()})
