"""The processes' routes of the OpenAPI document (``openapi.py`` joins them into ``PATHS``; its
helpers come as arguments: that module is near its size limit and imports this one)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

_WHO = {"type": "object", "minProperties": 1, "maxProperties": 1, "properties": {
    "id": {"type": ["string", "integer"]}, "phone": {"type": "string"}, "email": {"type": "string"}}}
_JOB = {"type": "object", "required": ["id", "process", "state", "total", "done", "started", "skipped", "failed",
                                       "errors", "at", "finished"],
        "properties": {"id": {"type": "string"}, "process": {"type": "string"},
                       "state": {"enum": ["running", "finished"]}, "total": {"type": "integer"},
                       "done": {"type": "integer"}, "started": {"type": "integer"}, "skipped": {"type": "integer"},
                       "failed": {"type": "integer"}, "errors": {"type": "array", "items": {"type": "string"}},
                       "at": {"type": "number"}, "finished": {"type": ["number", "null"]}}}
_PROCESS = {"type": "object", "required": ["process", "conversation", "started", "status", "active", "step",
                                           "version"],
            "properties": {"process": {"type": "string"}, "conversation": {"type": "string"},
                           "started": {"type": "number"}, "status": {"type": "string"},
                           "active": {"type": "boolean"}, "step": {"type": ["string", "null"]},
                           "version": {"type": ["integer", "null"]}}}

Json = Callable[..., dict[str, Any]]


def paths(op: Json, json_: Json, p: Json, error: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        "/api/processes/{id}/contacts": {"post": op(
            "Start a process for one contact, or for up to 10,000 as a job (docs/processes.md)",
            {"202": json_({"type": "object", "properties": {
                "process": {"type": "string"}, "conversation": {"type": "string"},
                "status": {"enum": ["started", "already_running", "duplicate"]}, "contact": {"type": "string"},
                "lead": {"type": "string"}, "job": {"type": "string"}, "total": {"type": "integer"}}}),
             "400": json_(error), "404": json_(error, "Unknown process, contact or lead"),
             "409": json_(error), "422": json_(error, "The lead is not the contact's"),
             "503": json_(error, "The CRM (Kommo) cannot be asked now: try again")},
            auth=["operator"],
            body={"type": "object", "additionalProperties": False, "properties": {
                "contact": _WHO, "contacts": {"type": "array", "minItems": 1, "maxItems": 10_000, "items": _WHO},
                "lead": {"type": ["string", "integer"]}, "variables": {"type": "object"}}},
            params=[p("id"), p("Idempotency-Key", "header", required=False)])},
        "/api/processes/{id}/jobs": {"get": op(
            "A process's newest batch jobs, with their progress",
            {"200": json_({"type": "object", "required": ["jobs"], "properties": {
                "jobs": {"type": "array", "items": _JOB}}}), "400": json_(error)},
            auth=["operator"], params=[p("id")])},
        "/api/processes/{id}/jobs/{job}": {"get": op(
            "One batch job's progress", {"200": json_(_JOB), "400": json_(error), "404": json_(error)},
            auth=["operator"], params=[p("id"), p("job")])},
        "/api/contacts/{contact}/processes": {"get": op(
            "The contact's processes and the state of each run (the lead card in /live)",
            {"200": json_({"type": "object", "required": ["contact", "processes"], "properties": {
                "contact": {"type": "string"}, "processes": {"type": "array", "items": _PROCESS}}}),
             "400": json_(error)},
            auth=["support"], params=[p("contact")])},
        "/api/contacts/{contact}/processes/{process}/stop": {"post": op(
            "A person stops the contact's run of a process",
            {"200": json_({"type": "object", "required": ["process", "contact", "stopped"], "properties": {
                "process": {"type": "string"}, "contact": {"type": "string"}, "stopped": {"const": True}}}),
             "400": json_(error), "409": json_(error, "The process is not running for the contact")},
            auth=["support"], params=[p("contact"), p("process")])},
    }
