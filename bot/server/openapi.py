"""The OpenAPI 3.1 document of the HTTP API, served at ``/api/openapi.json`` (bot/server/app.py
imports this module at the first request: start-up does not build the document).

Kept true by ``tests/server/test_openapi.py``: every route the app serves is documented and
every documented route exists, and real responses validate against the schemas here.
"""

from __future__ import annotations

from typing import Any

from .. import __version__
from . import openapi_customers, openapi_orderlinks, openapi_processes, openapi_shop
from .splits_api import split_paths

_ERROR = {"$ref": "#/components/schemas/Error"}


def _json(schema: dict[str, Any], description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _op(summary: str, responses: dict[str, Any], *, auth: list[str] | None = None,
        body: dict[str, Any] | None = None, params: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    op: dict[str, Any] = {"summary": summary, "responses": responses}
    if auth is not None:
        op["security"] = [{"bearer": []}]
        op["x-roles"] = auth
        op["responses"] = {**responses, "401": _json(_ERROR, "No or unknown token"),
                           "403": _json(_ERROR, "The token's role may not do this")}
    if body is not None:
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": body}}}
    if params:
        op["parameters"] = params
    return op


def _p(name: str, where: str = "path", schema: dict[str, Any] | None = None,
       required: bool | None = None) -> dict[str, Any]:
    return {"name": name, "in": where, "required": where == "path" if required is None else required,
            "schema": schema or {"type": "string"}}


SCHEMAS: dict[str, Any] = {
    "Error": {"type": "object", "required": ["error"], "properties": {"error": {
        "type": "object", "required": ["code", "message"], "properties": {
            "code": {"type": "string"}, "message": {"type": "string"},
            "details": {"type": "array", "items": {}}}}}},
    "Problem": {"type": "object", "required": ["pointer", "message"],
                "properties": {"pointer": {"type": "string"}, "message": {"type": "string"}}},
    "Health": {"type": "object", "required": ["status"], "properties": {"status": {"enum": ["ok", "unavailable"]}}},
    "BotStored": {"type": "object", "required": ["id", "version", "warnings"], "properties": {
        "id": {"type": "string"}, "version": {"type": "integer", "minimum": 1},
        "warnings": {"type": "array", "items": {"type": "string"}}}},
    "BotList": {"type": "object", "required": ["bots"], "properties": {"bots": {"type": "array", "items": {
        "type": "object", "required": ["id", "name", "active_version", "versions"], "properties": {
            "id": {"type": "string"}, "name": {"type": "string"}, "active_version": {"type": ["integer", "null"]},
            "versions": {"type": "integer"}}}}}},
    "BotFlow": {"type": "object", "required": ["id", "version", "flow"], "properties": {
        "id": {"type": "string"}, "version": {"type": "integer"},
        "flow": {"type": "object", "description": "the flow document (see flows/schema.json)"}}},
    "Version": {"type": "object", "required": ["id", "version", "created_at", "digest", "warnings", "name"],
                "properties": {"id": {"type": "string"}, "version": {"type": "integer"},
                               "created_at": {"type": "number"}, "digest": {"type": "string"},
                               "warnings": {"type": "array", "items": {"type": "string"}},
                               "name": {"type": "string"}, "active": {"type": "boolean"}}},
    "Versions": {"type": "object", "required": ["id", "active_version", "versions"], "properties": {
        "id": {"type": "string"}, "active_version": {"type": ["integer", "null"]},
        "versions": {"type": "array", "items": _ref("Version")}}},
    "Activated": {"type": "object", "required": ["id", "version", "active"], "properties": {
        "id": {"type": "string"}, "version": {"type": "integer"}, "active": {"const": True}}},
    "ConversationSummary": {
        "type": "object", "required": ["id", "channel", "account", "status", "owner"], "properties": {
        "id": {"type": "string"}, "channel": {"type": ["string", "null"]}, "account": {"type": ["string", "null"]},
        "contact": {"type": "object"}, "lead_id": {"type": ["string", "null"]},
        "status": {"enum": ["bot", "human", "idle"]}, "owner": {"type": "string"},
        "owner_user": {"type": ["string", "null"]}, "bot": {"type": ["string", "null"]},
        "step": {"type": ["string", "null"]}, "run_status": {"type": ["string", "null"]},
        "chat_status": {"type": ["string", "null"]}, "last_message": {"type": ["string", "null"]},
        "last_activity": {"type": ["number", "null"]},
        "unanswered": {"type": "boolean", "description": "the customer's last message is unanswered (chat_status)"},
        "waiting": {"type": "boolean",
                    "description": "waiting for a person: unanswered and no bot handling it (status human or idle)"},
        "waiting_since": {"type": ["number", "null"],
                          "description": "while waiting: epoch of the customer's oldest unanswered message"},
        "preview": {"type": ["object", "null"], "description": "the last message of anyone (role user, bot or human)",
                    "properties": {"role": {"type": "string"}, "text": {"type": "string"}}},
        "failures": {"type": "integer", "description": "processing failures in a row (0 once a batch goes through)"},
        "parked": {"type": "boolean", "description": "set aside after repeated failures: its events wait for a retry"},
        "error": {"type": ["string", "null"], "description": "the last processing error, while failing or parked"}}},
    "ConversationList": {"type": "object", "required": ["conversations", "next_before"], "properties": {
        "conversations": {"type": "array", "items": _ref("ConversationSummary")},
        "next_before": {"type": ["number", "null"], "description": "pass as ?before= for the next page"},
        "next_before_id": {"type": ["string", "null"], "description": "pass as ?before_id= with before"},
        "truncated": {"type": "boolean", "description": "a search word matched too many contacts: be more precise"}}},
    "TranscriptEntry": {"type": "object", "required": ["n", "role", "at"], "properties": {
        "n": {"type": "integer"}, "role": {"enum": ["user", "bot", "human", "internal", "system"]},
        "text": {"type": "string"}, "at": {"type": "number"}, "buttons": {"type": "array"},
        "list": {"type": "object"}, "attachments": {"type": "array"},
        "to": {"type": "array", "items": {"type": "string"},
               "description": "internal messages: who it is for (user:<id>, team:<id>)"}}},
    "Conversation": {"allOf": [_ref("ConversationSummary"), {
        "type": "object", "required": ["run", "transcript"], "properties": {
        "run": {"type": ["object", "null"], "properties": {
            "bot": {"type": "string"}, "version": {"type": "integer"}, "step": {"type": ["string", "null"]},
            "status": {"enum": ["running", "waiting", "finished", "stopped", "failed"]},
            "variables": {"type": "object"}, "error": {"type": ["string", "null"]},
            "waiting_for": {"type": ["object", "null"],
                            "description": "kind, step, events, until (epoch of the next timer), "
                                           "held (timers that fell due while a person had it)"},
            "callers": {"type": "array"}}},
        "lead": {"type": ["object", "null"]}, "tasks": {"type": "array"}, "notes": {"type": "array"},
        "held_message": {"type": ["object", "null"],
                         "description": "the customer's message that came while a person had the conversation, "
                                        "not answered by the bot: {text, payload, kind}; see release's answer",
                         "properties": {"text": {"type": "string"}, "payload": {"type": ["string", "null"]},
                                        "kind": {"type": "string"}}},
        "transcript": {"type": "array", "items": _ref("TranscriptEntry")}}}]},
    "Accepted": {"type": "object", "required": ["ok"], "properties": {"ok": {"const": True}}},
    "ChatMessageIn": {"type": "object", "required": ["session"], "properties": {
        "session": {"type": "string", "pattern": "^[A-Za-z0-9_-]{8,64}$"},
        "text": {"type": "string", "maxLength": 4096},
        "payload": {"type": "string"}, "client_msg_id": {"type": "string"}, "name": {"type": "string"}}},
    "ChatAccepted": {"type": "object", "required": ["accepted", "duplicate", "conversation"], "properties": {
        "accepted": {"const": True}, "duplicate": {"type": "boolean"}, "conversation": {"type": "string"}}},
    "ChatMessages": {"type": "object", "required": ["messages", "last"], "properties": {
        "messages": {"type": "array", "items": _ref("TranscriptEntry")}, "last": {"type": "integer"}}},
}

_BOT_ID = _p("id")
_CID = _p("cid")
_ACCOUNT = _p("account")

_SESSION_SCHEMA = {"type": "string", "pattern": "^[A-Za-z0-9_-]{8,64}$"}
_SESSION_HEADER = _p("X-Salesbot-Session", "header", _SESSION_SCHEMA, required=False)
_SESSION_PROTOCOL = _p("Sec-WebSocket-Protocol", "header",
                       {"type": "string", "example": "salesbot.v1, sid.<session>"}, required=False)
_TEXT = {"schema": {"type": "string"}}
_PAGE_HTML = {"description": "HTML", "content": {"text/html": _TEXT}}
_ACCEPTED = _json(_ref("Accepted"))
_TAKEN = _json(_ERROR, "Another person has the conversation")
_READERS = ["operator", "support"]
_SESSION_QUERY = {**_p("session", "query", _SESSION_SCHEMA, required=False), "deprecated": True,
                  "description": "Deprecated (ends up in proxy logs): use the header or subprotocol"}

PATHS: dict[str, dict[str, Any]] = {
    "/healthz": {"get": _op("Liveness and store check", {
        "200": _json(_ref("Health")), "503": _json(_ref("Health"), "The store does not answer")})},
    "/metrics": {"get": _op("Prometheus metrics", {
        "200": {"description": "Prometheus text", "content": {"text/plain": _TEXT}}})},
    "/api/openapi.json": {"get": _op("This document", {"200": _json({"type": "object"})})},
    "/api/bots": {"get": _op("List bots", {"200": _json(_ref("BotList"))}, auth=_READERS)},
    "/api/bots/{id}": {
        "put": _op("Upload a flow: a new immutable version that becomes active",
                   {"201": _json(_ref("BotStored"), "Stored as a new version"),
                    "200": _json(_ref("BotStored"), "Identical to the newest version, which is (re)activated"),
                    "400": _json(_ERROR, "Not JSON, or an id in the URL that no document may have"),
                    "422": _json(_ERROR, "Invalid flow: every problem in details as {pointer, message}")},
                   auth=["operator"], body={"type": "object"}, params=[_BOT_ID]),
        "get": _op("The active flow", {"200": _json(_ref("BotFlow")), "404": _json(_ERROR)},
                   auth=_READERS, params=[_BOT_ID]),
    },
    "/api/bots/{id}/versions": {"get": _op(
        "Version history", {"200": _json(_ref("Versions")), "404": _json(_ERROR)}, auth=_READERS, params=[_BOT_ID])},
    "/api/bots/{id}/versions/{n}": {"get": _op(
        "One version", {"200": _json(_ref("BotFlow")), "404": _json(_ERROR)}, auth=_READERS,
        params=[_BOT_ID, _p("n", schema={"type": "integer"})])},
    "/api/bots/{id}/activate": {"post": _op(
        "Roll back or forward", {"200": _json(_ref("Activated")), "404": _json(_ERROR)}, auth=["operator"],
        body={"type": "object", "required": ["version"], "properties": {"version": {"type": "integer"}}},
        params=[_BOT_ID])},
    "/api/conversations": {"get": _op(
        "Conversations, newest activity first", {"200": _json(_ref("ConversationList"))}, auth=["support"], params=[
            _p("status", "query", {"enum": ["bot", "human", "idle"]}), _p("channel", "query"), _p("bot", "query"),
            _p("waiting", "query", {"enum": ["1", "0", "true", "false"],
                                    "description": "1: only conversations waiting for a person"}),
            _p("q", "query", {"type": "string", "description": "search: prefix of a word of the contact's name, "
                                                               "its e-mail, or digits of its phone"}),
            _p("parked", "query", {"enum": ["1", "0", "true", "false"],
                                   "description": "1: only parked conversations, most recently parked first"}),
            _p("limit", "query", {"type": "integer", "minimum": 1, "maximum": 500}),
            _p("before", "query", {"type": "number", "description": "the previous page's next_before"}),
            _p("before_id", "query", {"type": "string",
                                      "description": "the previous page's next_before_id (with before)"})])},
    "/api/conversations/{cid}": {"get": _op(
        "One conversation: run, lead, transcript", {"200": _json(_ref("Conversation")), "404": _json(_ERROR)},
        auth=["support"], params=[_CID])},
    "/api/conversations/{cid}/takeover": {"post": _op(
        "A person takes the conversation (one person at a time)",
        {"202": _ACCEPTED, "404": _json(_ERROR), "409": _json(_ERROR, "Another person has it: details [{owner}]")},
        auth=["support"], params=[_CID])},
    "/api/conversations/{cid}/release": {"post": _op(
        "Hand back to the bot (optionally at a step; answer: the bot answers the held customer message)",
        {"202": _ACCEPTED, "400": _json(_ERROR), "404": _json(_ERROR),
         "409": _json(_ERROR, "taken: another person has it (only they or an admin hand it back); "
                              "not_taken: the bot has it already")},
        auth=["support"], params=[_CID],
        body={"type": "object", "properties": {
            "step": {"type": "string", "description": "continue at this step (else where the bot was)"},
            "answer": {"type": "boolean", "default": False,
                       "description": "the bot answers the customer's message that came during the takeover"}}})},
    "/api/conversations/{cid}/messages": {"post": _op(
        "A person's message to the customer",
        {"202": _ACCEPTED, "400": _json(_ERROR), "404": _json(_ERROR), "409": _TAKEN}, auth=["support"],
        body={"type": "object", "required": ["text"], "properties": {"text": {"type": "string"}}}, params=[_CID])},
    "/api/conversations/{cid}/stop": {"post": _op(
        "Stop the running bot", {"202": _ACCEPTED, "404": _json(_ERROR), "409": _TAKEN},
        auth=["support"], params=[_CID])},
    "/api/conversations/{cid}/retry": {"post": _op(
        "Retry a parked conversation (optionally discarding the oldest queued events first)",
        {"202": _json(_ref("ConversationSummary")), "400": _json(_ERROR), "404": _json(_ERROR), "409": _TAKEN},
        auth=["support"],
        body={"type": "object", "properties": {"skip": {"type": "integer", "minimum": 0, "maximum": 1000}}},
        params=[_CID])},
    "/api/conversations/{cid}/start": {"post": _op(
        "Start a bot", {"202": _ACCEPTED, "404": _json(_ERROR), "409": _TAKEN}, auth=["support"],
        body={"type": "object", "required": ["bot"],
              "properties": {"bot": {"type": "string"}, "step": {"type": "string"}}},
        params=[_CID])},
    "/api/events": {"post": _op(
        "An event about a lead or contact, stored on the lead's queue (token or [events] signature)",
        {"202": _json({"type": "object", "required": ["id", "lead", "duplicate"], "properties": {
            "id": {"type": "string"}, "lead": {"type": "string"}, "duplicate": {"type": "boolean"}}}),
         "404": _json(_ERROR, "No such lead or contact"), "413": _json(_ERROR, "Over 64 KiB"),
         "422": _json(_ERROR, "Not a valid event (details: pointer and message of every problem)"),
         "400": _json(_ERROR, "Not JSON (or NaN, Infinity, nested too deep)"),
         "429": _json(_ERROR, "Too many events from this client ([limits] events_per_ip; Retry-After)"),
         "503": _json(_ERROR, "The CRM cannot find the contact right now; send the event again")},
        auth=["operator"],
        body={"type": "object", "required": ["type"], "properties": {
            "id": {"type": "string"}, "type": {"type": "string"}, "at": {"type": "string"},
            "lead": {"type": "object", "properties": {"id": {"type": "string"}}},
            "contact": {"type": "object"}, "data": {"type": "object"}}})},
    "/api/leads/{id}/events": {"get": _op(
        "A lead's recent events and what the rules did with them, oldest first",
        {"200": _json({"type": "object", "required": ["lead", "events"], "properties": {
            "lead": {"type": "string"}, "events": {"type": "array", "items": {"type": "object"}}}})},
        auth=["support", "operator"], params=[_p("id")])},
    "/api/outbound": {"post": _op(
        "Start a bot that writes first to a contact (docs/outbound.md)",
        {"202": _json({"type": "object", "required": ["conversation", "account", "opened", "duplicate"],
                       "properties": {"conversation": {"type": "string"}, "account": {"type": "string"},
                                      "opened": {"type": "boolean"}, "duplicate": {"type": "boolean"},
                                      "contact": {"type": "string"}, "lead": {"type": "string"}}}),
         "400": _json(_ERROR), "404": _json(_ERROR, "Unknown bot, account, contact or lead"),
         "409": _json(_ERROR, "Nothing named can reach the contact (details: one reason per account)"),
         "422": _json(_ERROR, "The lead is not the contact's"),
         "503": _json(_ERROR, "The CRM (Kommo) cannot be asked now: try again")},
        auth=["operator"],
        body={"type": "object", "required": ["bot", "contact"], "additionalProperties": False, "properties": {
            "bot": {"type": "string"},
            "account": {"oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}],
                        "description": "an account name, \"last\" (default) or a list tried in order"},
            "contact": {"type": "object", "minProperties": 1, "maxProperties": 1, "properties": {
                "id": {"type": ["string", "integer"]}, "phone": {"type": "string"}, "email": {"type": "string"}}},
            "lead": {"type": ["string", "integer"]}, "variables": {"type": "object"}}},
        params=[_p("Idempotency-Key", "header", required=False)])},
    "/api/continue/{token}": {"post": _op(
        "The one-time return URL of a waiting widget step",
        {"200": _json({"type": "object"}), "404": _json(_ERROR)}, body={}, params=[_p("token")])},
    "/webhooks/kommo/{account}": {
        "post": _op("Kommo's account webhooks (form-encoded leads[status][0][id]=…): "
                    "CRM events of the leads' conversations",
                    {"200": _json({"type": "object", "required": ["ok", "events", "delivered"], "properties": {
                        "ok": {"const": True}, "events": {"type": "integer"}, "delivered": {"type": "integer"}}}),
                     "400": _json(_ERROR, "Not a Kommo webhook body"),
                     "401": _json(_ERROR, "Missing or wrong ?secret= (crm.webhook_secret)"),
                     "403": _json(_ERROR, "crm.webhook_secret is not configured"),
                     "404": _json(_ERROR, "This server's CRM is not this Kommo account")},
                    body={"description": "Kommo's form-encoded webhook payload"},
                    params=[_p("account"), _p("secret", "query", required=True)]),
    },
    "/webhooks/{channel}/{account}": {
        "post": _op("Inbound from a messaging platform, verified by the platform's signature",
                    {"200": _json({"type": "object"}), "400": _json(_ERROR, "Signed but unreadable"),
                     "401": _json(_ERROR, "Missing or wrong signature"), "403": _json(_ERROR, "Wrong signature"),
                     "404": _json(_ERROR, "No such channel account")},
                    body={"description": "the platform's own payload (JSON or form-encoded)"},
                    params=[_p("channel"), _p("account")]),
        "get": _op("The platform's verification handshake (Meta: hub.challenge)",
                   {"200": {"description": "the challenge", "content": {"text/plain": _TEXT}},
                    "403": {"description": "wrong verify token"}, "404": _json(_ERROR), "405": _json(_ERROR)},
                   params=[_p("channel"), _p("account")]),
    },
    "/live": {"get": _op("The support dashboard (HTML; signs in with a support or admin token)", {"200": _PAGE_HTML})},
    "/live/static/{name}": {"get": _op(
        "The dashboard's script and style", {"200": {"description": "asset"}, "404": _json(_ERROR)},
        params=[_p("name")])},
    "/live/session": {
        "post": _op("Sign in to the dashboard: sets the sb_live cookie (HttpOnly, SameSite=Strict, path /api/live, "
                    "12 h) that EventSource sends to /api/live",
                    {"200": _json({"type": "object", "required": ["user", "role", "expires", "channels", "bots"],
                                   "properties": {
                        "user": {"type": "string"}, "role": {"type": "string"}, "expires": {"type": "integer"},
                        "channels": {"type": "array", "items": {"type": "string"}},
                        "bots": {"type": "array", "items": {"type": "object"}}}})},
                    auth=["support"]),
        "delete": _op("Sign out: clears the cookie", {"200": _ACCEPTED}),
    },
    "/api/live": {"get": _op("Server-Sent Events: event conversation (a changed conversation's summary), with "
                             "?conversation=cid that conversation's event entry (id = transcript n; Last-Event-ID "
                             "resumes) and conversation (summary + run). "
                             "Auth: Authorization header or the sb_live cookie of POST /live/session",
                             {"200": {"description": "text/event-stream", "content": {"text/event-stream": _TEXT}},
                              "400": _json(_ERROR), "404": _json(_ERROR)}, auth=["support"],
                             params=[_p("conversation", "query"), _p("after", "query", {"type": "integer"})])},
    "/api/bots/{id}/graph": {"get": _op(
        "The flow's step graph laid out (nodes with x, y; edges as SVG paths) for drawing",
        {"200": _json({"type": "object",
                       "required": ["id", "version", "start", "width", "height", "nodes", "edges"]}),
         "400": _json(_ERROR), "404": _json(_ERROR)}, auth=_READERS,
        params=[_BOT_ID, _p("version", "query", {"type": "integer"})])},
    "/chat/{account}": {"get": _op(
        "The live chat page", {"200": _PAGE_HTML, "404": _json(_ERROR)}, params=[_ACCOUNT])},
    "/chat/static/{name}": {"get": _op(
        "The widget's script and style", {"200": {"description": "asset"}, "404": _json(_ERROR)},
        params=[_p("name")])},
    "/chat/{account}/ws": {"get": _op(
        "The widget's WebSocket (?after=N; the session as the subprotocol sid.<session> next to salesbot.v1)",
        {"101": {"description": "Switching protocols"}, "400": _json(_ERROR)},
        params=[_ACCOUNT, _SESSION_PROTOCOL, _SESSION_QUERY, _p("after", "query", {"type": "integer", "minimum": 0})])},
    "/chat/{account}/messages": {
        "post": _op("A customer's message",
                    {"202": _json(_ref("ChatAccepted")), "400": _json(_ERROR), "404": _json(_ERROR),
                     "503": _json(_ERROR, "store_full: a new conversation while Redis is near maxmemory; "
                                          "store_unavailable: Redis unreachable (Retry-After)")},
                    body=_ref("ChatMessageIn"), params=[_ACCOUNT]),
        "get": _op("Long poll: transcript entries after N", {"200": _json(_ref("ChatMessages")), "400": _json(_ERROR)},
                   params=[_ACCOUNT, _SESSION_HEADER, _SESSION_QUERY,
                           _p("after", "query", {"type": "integer", "minimum": 0}),
                           _p("wait", "query", {"type": "number", "minimum": 0, "maximum": 60})]),
    },
}
PATHS["/api/conversations/{cid}/release"]["post"]["requestBody"]["required"] = False  # {} or no body: hand back


# ---------------------------------------------------------------------- the embedded CRM (/api/crm)
_NULLABLE_TEXT = {"type": ["string", "null"]}
SCHEMAS.update({
    "CrmContact": {"type": "object", "required": ["id", "name", "phone", "email", "fields", "tags", "status",
                                                  "temperature", "discount", "currency", "language", "unsubscribed"],
                   "properties": {
        "id": {"type": "string"}, "name": {"type": "string"}, "first_name": _NULLABLE_TEXT,
        "phone": _NULLABLE_TEXT, "email": _NULLABLE_TEXT, "responsible": _NULLABLE_TEXT,
        "fields": {"type": "object"}, "tags": {"type": "array", "items": {"type": "string"}},
        "status": {"enum": ["current", "potential"]},
        "temperature": {"enum": ["hot", "warm", "cold", "not_interested", None]},
        "discount": {"type": "number", "minimum": 0, "maximum": 100},
        "currency": {"type": ["string", "null"], "pattern": "^[A-Z]{3}$"}, "language": _NULLABLE_TEXT,
        "unsubscribed": {"type": "boolean"}, "updated_at": {"type": ["number", "null"]},
        "leads": {"type": "array", "items": {"type": "object"}},
        "notes": {"type": "array", "items": _ref("CrmNote")}, "notes_total": {"type": "integer"}}},
    "CrmContactEdit": {"type": "object", "additionalProperties": False, "properties": {
        "name": {"type": "string"}, "first_name": _NULLABLE_TEXT, "phone": _NULLABLE_TEXT, "email": _NULLABLE_TEXT,
        "responsible": _NULLABLE_TEXT, "fields": {"type": "object", "description": "custom fields; null removes one"},
        "tags": {"type": "array", "items": {"type": "string"}, "description": "replaces the tags"},
        "tags_add": {"type": "array", "items": {"type": "string"}},
        "tags_remove": {"type": "array", "items": {"type": "string"}},
        "status": {"enum": ["current", "potential"]},
        "temperature": {"enum": ["hot", "warm", "cold", "not_interested", None]},
        "discount": {"type": "number", "minimum": 0, "maximum": 100}, "currency": _NULLABLE_TEXT,
        "language": _NULLABLE_TEXT, "unsubscribed": {"type": "boolean"}}},
    "CrmLead": {"type": "object", "required": ["id", "name", "price", "pipeline", "stage", "fields", "tags"],
                "properties": {
        "id": {"type": "string"}, "name": {"type": "string"}, "price": {"type": "number"},
        "pipeline": {"type": "string"}, "stage": {"type": "string"}, "responsible": _NULLABLE_TEXT,
        "fields": {"type": "object"}, "tags": {"type": "array", "items": {"type": "string"}},
        "contacts": {"type": "array", "description": "ids (lists) or contact objects (one lead)"},
        "company": {"type": ["string", "object", "null"]}, "subscribers": {"type": "array"},
        "tasks": {"type": "array", "items": {"type": "object"}}, "updated_at": {"type": ["number", "null"]},
        "notes": {"type": "array", "items": _ref("CrmNote")}, "notes_total": {"type": "integer"}}},
    "CrmLeadEdit": {"type": "object", "additionalProperties": False, "properties": {
        "name": {"type": "string"}, "price": {"type": "number", "minimum": 0}, "pipeline": {"type": "string"},
        "stage": {"type": "string"}, "responsible": _NULLABLE_TEXT, "fields": {"type": "object"},
        "tags": {"type": "array", "items": {"type": "string"}},
        "tags_add": {"type": "array", "items": {"type": "string"}},
        "tags_remove": {"type": "array", "items": {"type": "string"}},
        "contacts": {"type": "array", "items": {"type": "string"},
                     "description": "contact ids, the main contact first"},
        "contact_id": {"type": "string", "description": "POST only: the lead's contact"}}},
    "CrmNote": {"type": "object", "required": ["id", "entity", "entity_id", "text", "priority", "created_at"],
                "properties": {
        "id": {"type": "string"}, "entity": {"enum": ["lead", "contact"]}, "entity_id": {"type": "string"},
        "text": {"type": "string"}, "priority": {"enum": ["high", "medium", "none"]},
        "created_at": {"type": "number"}, "updated_at": {"type": "number"}, "author": _NULLABLE_TEXT}},
    "CrmNoteIn": {"type": "object", "additionalProperties": False, "properties": {
        "text": {"type": "string"}, "priority": {"enum": ["high", "medium", "none"]}}},
    "CrmNotes": {"type": "object", "required": ["notes", "total", "next_offset"], "properties": {
        "notes": {"type": "array", "items": _ref("CrmNote"),
                  "description": "by priority (high, medium, none), then newest"},
        "total": {"type": "integer"}, "next_offset": {"type": ["integer", "null"]}}},
    "CrmContacts": {"type": "object", "required": ["contacts", "total", "next_offset"], "properties": {
        "contacts": {"type": "array", "items": _ref("CrmContact")}, "total": {"type": "integer"},
        "next_offset": {"type": ["integer", "null"]}}},
    "CrmLeads": {"type": "object", "required": ["leads", "total", "next_offset"], "properties": {
        "leads": {"type": "array", "items": _ref("CrmLead")}, "total": {"type": "integer"},
        "next_offset": {"type": ["integer", "null"]}}},
})

_CRM_ROLES = ["support"]
_PAGE = [_p("limit", "query", {"type": "integer", "minimum": 1, "maximum": 200}),
         _p("offset", "query", {"type": "integer", "minimum": 0})]
_LIST_PAGE = [_PAGE[0], _p("offset", "query", {
    "type": "integer", "minimum": 0,
    "description": "at most 10000 inside the list (400 deeper: narrow it with q or filters); "
                   "past the end: an empty page"})]
_SEARCH = _p("q", "query", {"type": "string", "description": "name, e-mail or phone (prefix of any word)"})
_STAGE = [_p("stage", "query"),
          _p("pipeline", "query", {"type": "string", "description": "with stage; default the first pipeline"})]
_TAG = _p("tag", "query", {"type": "string", "description": "repeat for several (all must match)"})
_HTML = {"description": "HTML page", "content": {"text/html": {"schema": {"type": "string"}}}}
_RID = _p("id")
_NOTE = _p("note")


def _crm_record_paths(plural: str, item: str, edit: str, listing: str,
                      filters: list[dict[str, Any]]) -> dict[str, Any]:
    one = f"/api/crm/{plural}/{{id}}"
    found, missing, invalid = _json(_ref(item)), _json(_ERROR), _json(_ERROR)
    return {
        f"/api/crm/{plural}": {
            "get": _op(f"List {plural}, newest first; search and filter",
                       {"200": _json(_ref(listing)), "400": _json(_ERROR)},
                       auth=_CRM_ROLES, params=[_SEARCH, *filters, *_LIST_PAGE]),
            "post": _op(f"Create a {item.lower()}", {"201": _json(_ref(item)), "422": invalid},
                        auth=_CRM_ROLES, body=_ref(edit)),
        },
        one: {
            "get": _op(f"One {item.lower()} with its notes", {"200": found, "404": missing},
                       auth=_CRM_ROLES, params=[_RID]),
            "patch": _op(f"Edit a {item.lower()}", {"200": found, "404": missing, "422": invalid},
                         auth=_CRM_ROLES, body=_ref(edit), params=[_RID]),
        },
        f"{one}/notes": {
            "get": _op("Notes by priority, then newest", {"200": _json(_ref("CrmNotes")), "404": missing},
                       auth=_CRM_ROLES, params=[_RID, *_PAGE]),
            "post": _op("Add a note", {"201": _json(_ref("CrmNote")), "404": missing, "422": invalid},
                        auth=_CRM_ROLES, body=_ref("CrmNoteIn"), params=[_RID]),
        },
        f"{one}/notes/{{note}}": {
            "patch": _op("Edit a note's text or priority",
                         {"200": _json(_ref("CrmNote")), "404": missing, "422": invalid},
                         auth=_CRM_ROLES, body=_ref("CrmNoteIn"), params=[_RID, _NOTE]),
            "delete": _op("Delete a note", {"200": _ACCEPTED, "404": missing},
                          auth=_CRM_ROLES, params=[_RID, _NOTE]),
        },
    }


PATHS.update({
    "/api/crm/pipelines": {"get": _op("Pipelines and their stages", {"200": _json({
        "type": "object", "required": ["pipelines"], "properties": {
            "pipelines": {"type": "array", "items": {"type": "object", "required": ["name", "stages"]}}}})},
        auth=_CRM_ROLES)},
    "/api/crm/users": {"get": _op(
        "Users and teams (from the configuration)", {"200": _json({"type": "object", "required": ["users", "teams"]})},
        auth=_CRM_ROLES)},
    "/api/crm/tags": {"get": _op(
        "Tags in use with their counts",
        {"200": _json({"type": "object", "required": ["entity", "tags"]}), "400": _json(_ERROR)},
        auth=_CRM_ROLES, params=[_p("entity", "query", {"enum": ["contact", "lead"]})])},
    **_crm_record_paths("contacts", "CrmContact", "CrmContactEdit", "CrmContacts", [
        _p("status", "query", {"enum": ["current", "potential"]}),
        _p("temperature", "query", {"enum": ["hot", "warm", "cold", "not_interested"]}), _TAG, *_STAGE]),
    **_crm_record_paths("leads", "CrmLead", "CrmLeadEdit", "CrmLeads", [_TAG, *_STAGE, _p("responsible", "query")]),
    "/forms/{token}": {
        "get": _op("A hosted form (create_form): the fields to fill in", {"200": _HTML, "404": _HTML, "410": _HTML},
                   params=[_p("token")]),
        "post": _op("Submit a hosted form (form-encoded); updates or creates the lead, once",
                    {"200": _HTML, "404": _HTML, "410": _HTML, "422": _HTML, "503": _HTML},
                    body={"description": "application/x-www-form-urlencoded: one value per field"},
                    params=[_p("token")]),
    },
    "/unsubscribe/{token}": {
        "get": _op("An e-mail's unsubscribe link: the contact gets no more send_email", {"200": _HTML, "404": _HTML},
                   params=[_p("token")]),
        "post": _op("One-click unsubscribe (RFC 8058 List-Unsubscribe-Post)", {"200": _HTML, "404": _HTML},
                    params=[_p("token")]),
    },
})


# ---------------------------------------------------------------------- built-in trackers (tracking.py, livechat.py)
_GIF = {"description": "a transparent 1x1 GIF, not cached", "content": {"image/gif": {"schema": {"type": "string"}}}}
_NOT_OURS = _json(_ERROR, "not_found: a forged, damaged or truncated token")
SCHEMAS.update({
    "ChatVisitIn": {"type": "object", "required": ["session", "url"], "properties": {
        "session": {"type": "string", "pattern": "^[A-Za-z0-9_-]{8,64}$"},
        "url": {"type": "string", "maxLength": 2048, "description": "the page (http or https)"}}},
    "ChatVisitAccepted": {"type": "object", "required": ["accepted", "events"], "properties": {
        "accepted": {"const": True},
        "events": {"type": "array", "items": {"enum": ["site.visit", "site.returning_visitor"]},
                   "description": "the lead events queued (none for a visitor without a lead, or a repeat)"}}},
})
PATHS.update({
    "/t/o/{token}.gif": {"get": _op("An e-mail's open pixel: queues email.opened on the lead (once per e-mail)",
                                    {"200": _GIF, "404": _NOT_OURS, "429": _json(_ERROR)}, params=[_p("token")])},
    "/t/c/{token}": {"get": _op("An e-mail's tracked link: 302 to the signed address, queues email.link_clicked",
                                {"302": {"description": "Location: the link's address"}, "404": _NOT_OURS,
                                 "429": _json(_ERROR)}, params=[_p("token")])},
    "/chat/{account}/visits": {"post": _op(
        "The live chat widget opened on a page: site.visit / site.returning_visitor for a known visitor",
        {"202": _json(_ref("ChatVisitAccepted")), "400": _json(_ERROR), "404": _json(_ERROR),
         "413": _json(_ERROR), "429": _json(_ERROR), "503": _json(_ERROR)},
        body=_ref("ChatVisitIn"), params=[_ACCOUNT])},
})


# ---------------------------------------------------------------------- automation documents (automations_api.py)
_AUTOMATION_ID = _p("id")
_READERS = ["operator", "support"]
SCHEMAS.update({
    "AutomationsDocument": {"type": "object", "required": ["id", "version", "automations"], "properties": {
        "id": {"type": "string"}, "version": {"type": "integer"},
        "automations": {"type": "object", "description": "the document (see flows/automations.schema.json)"}}},
    "AutomationsList": {"type": "object", "required": ["automations"], "properties": {"automations": {
        "type": "array", "items": {"type": "object", "required": ["id", "name", "active_version", "versions"],
                                   "properties": {"id": {"type": "string"}, "name": {"type": "string"},
                                                  "active_version": {"type": ["integer", "null"]},
                                                  "versions": {"type": "integer"}}}}}},
})
PATHS.update({
    "/api/automations": {"get": _op("List automation documents", {"200": _json(_ref("AutomationsList"))},
                                    auth=_READERS)},
    "/api/automations/{id}": {
        "put": _op("Upload an automation document: checked against the pipelines and bots, a new active version",
                   {"201": _json(_ref("BotStored"), "Stored as a new version"),
                    "200": _json(_ref("BotStored"), "Identical to the newest version, which is (re)activated"),
                    "400": _json(_ERROR, "Not JSON, or an id in the URL that no document may have"),
                    "422": _json(_ERROR, "Invalid document: every problem in details as {pointer, message}")},
                   auth=["operator"], body={"type": "object"}, params=[_AUTOMATION_ID]),
        "get": _op("The active document", {"200": _json(_ref("AutomationsDocument")), "404": _json(_ERROR)},
                   auth=_READERS, params=[_AUTOMATION_ID]),
    },
    "/api/automations/{id}/versions": {"get": _op("Version history", {"200": _json(_ref("Versions")),
                                                                      "404": _json(_ERROR)},
                                                  auth=_READERS, params=[_AUTOMATION_ID])},
    "/api/automations/{id}/versions/{n}": {"get": _op("One version", {
        "200": _json(_ref("AutomationsDocument")), "400": _json(_ERROR), "404": _json(_ERROR)},
        auth=_READERS, params=[_AUTOMATION_ID, _p("n", schema={"type": "integer"})])},
    "/api/automations/{id}/counts": {"get": _op(
        "How often each rule and trigger fired, acted, waits (the lead loop's counters; 0 until counted)",
        {"200": _json({"type": "object", "required": ["id", "version", "counts"], "properties": {
            "id": {"type": "string"}, "version": {"type": "integer"},
            "counts": {"type": "object", "description": "rule or trigger id -> outcome -> count",
                       "additionalProperties": {"type": "object",
                                                "additionalProperties": {"type": "integer"}}}}}),
         "404": _json(_ERROR)}, auth=_READERS, params=[_AUTOMATION_ID])},
    "/api/automations/{id}/activate": {"post": _op("Roll back or forward", {
        "200": _json(_ref("Activated")), "400": _json(_ERROR), "404": _json(_ERROR)}, auth=["operator"],
        body={"type": "object", "required": ["version"], "properties": {"version": {"type": "integer"}}},
        params=[_AUTOMATION_ID])},
    "/api/automations/{id}/jobs": {"get": _op("apply_to_existing jobs, newest first", {
        "200": _json({"type": "object", "required": ["id", "jobs"], "properties": {
            "id": {"type": "string"}, "jobs": {"type": "array", "items": {
                "type": "object", "required": ["id", "rule", "version", "stage", "total", "done", "state",
                                               "started", "finished"],
                "properties": {"id": {"type": "string"}, "rule": {"type": "string"}, "version": {"type": "integer"},
                               "stage": {"type": "string"}, "total": {"type": "integer"},
                               "done": {"type": "integer"}, "state": {"enum": ["running", "finished", "failed"]},
                               "started": {"type": "number"}, "finished": {"type": ["number", "null"]},
                               "error": {"type": "string"}}}}}}),
        "404": _json(_ERROR)}, auth=_READERS, params=[_AUTOMATION_ID])},
})
_RANGE = [_p(name, "query", {"type": "string", "format": "date"}) for name in ("from", "to")] + [
    _p("format", "query", {"enum": ["json", "csv"]})]
_CSV = {"200": {"description": "JSON, or CSV with format=csv", "content": {
    "application/json": {"schema": {"type": "object", "required": ["from", "to", "days"]}},
    "text/csv": {"schema": {"type": "string"}}}}, "400": _json(_ERROR), "404": _json(_ERROR)}
PATHS.update({  # docs/analytics.md
    "/api/analytics/bots/{id}": {"get": _op("The funnel of a bot version per step over days", _CSV, auth=_READERS,
                                            params=[_p("id"), _p("version", "query", {"type": "integer"}), *_RANGE])},
    "/api/analytics/automations/{id}": {"get": _op("Rule and trigger outcomes of an automation document over days",
                                                   _CSV, auth=_READERS, params=[_AUTOMATION_ID, *_RANGE])},
})

PATHS.update(split_paths(_op, _json, _p, _ERROR))  # /api/bots/{id}/splits…: bot/server/splits_api.py
PATHS.update(openapi_processes.paths(_op, _json, _p, _ERROR))
PATHS.update(openapi_orderlinks.paths(_op, _json, _p, _ERROR, _HTML))
PATHS.update(openapi_shop.paths(_op, _json, _p, _ERROR))  # /api/products, /api/orders: docs/customers.md
PATHS.update(openapi_customers.paths(_op, _json, _p, _ERROR))  # /api/customers, /api/live/orders


def document() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {"title": "salesbot", "version": __version__,
                 "description": "Bots, conversations, live chat and support APIs of a salesbot server."},
        "paths": PATHS,
        "components": {"schemas": SCHEMAS, "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
    }

