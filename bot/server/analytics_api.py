"""The analytics API (docs/analytics.md): the funnel of a bot version and the counts of an
automation document's rules, over a range of UTC days, as JSON or CSV (``format=csv``).

``GET /api/analytics/bots/{id}?version=&from=&to=&format=``: per step entered, left by target,
ended, abandoned, waiting, median time at the step (``bot/runtime/funnel.py``);
``GET /api/analytics/automations/{id}?from=&to=&format=``: per rule or trigger and outcome
(fired, acted, skipped_if, waiting_window, …). Days are ``YYYY-MM-DD``; the range defaults to
the last 30 days and may span at most ``MAX_DAYS``. Operators and support read them.
"""

from __future__ import annotations

import csv
import io
import logging
import re
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from aiohttp import web

from ..builder.durations import DurationError, parse_duration
from ..engine.analytics import DAY
from ..runtime.automations import day_counts_key
from ..store import replies
from ..store.analytics import FIRST_DAY, AnalyticsCounts, day_number, day_text
from ..store.bots import BotNotFound
from .http import MAX_INDEX, HttpError, error, query_number, require
from .keys import SERVICES
from .pipeline_api import active_version

if TYPE_CHECKING:
    from ..runtime.funnel import StepFunnel

log = logging.getLogger("salesbot.analytics")
routes = web.RouteTableDef()
#: The most days one request may cover (the counters are kept about this long).
MAX_DAYS = 400
DEFAULT_DAYS = 30
DEFAULT_ABANDON_AFTER = 86400
_DAY = re.compile(r"\d{4}-\d{2}-\d{2}")
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")


def _range(request: web.Request, now: float) -> tuple[int, int]:
    """The ``from``/``to`` days of the query (inclusive), checked; a 400 names the parameter."""
    today = int(now // DAY)

    def day(name: str, default: int) -> int:
        raw = request.query.get(name, "")
        if raw == "":
            return default
        try:
            if not _DAY.fullmatch(raw):
                raise ValueError(raw)
            return day_number(raw)
        except ValueError:
            log.warning("analytics.bad_day", extra={"parameter": name})
            raise HttpError(400, "bad_query", f"{name} is a day, YYYY-MM-DD", [{"parameter": name}]) from None

    last = day("to", today)
    first = day("from", max(last - DEFAULT_DAYS + 1, FIRST_DAY))
    if first < FIRST_DAY:  # (a day number before 0001-01-01 has no date)
        raise HttpError(400, "bad_query", "from is before 0001-01-01", [{"parameter": "from"}])
    if first > last:
        raise HttpError(400, "bad_query", "from is after to", [{"parameter": "from"}])
    if last - first + 1 > MAX_DAYS:
        raise HttpError(400, "bad_query", f"a range spans at most {MAX_DAYS} days", [{"parameter": "from"}])
    return first, last


def _csv_format(request: web.Request) -> bool:
    fmt = request.query.get("format", "json")
    if fmt not in ("json", "csv"):
        raise HttpError(400, "bad_query", "format is json or csv", [{"parameter": "format"}])
    return fmt == "csv"


def _csv(rows: list[list[Any]], name: str) -> web.Response:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    for row in rows:  # a cell a spreadsheet would run as a formula is quoted as text
        writer.writerow([f"'{v}" if isinstance(v, str) and v[:1] in ("=", "+", "-", "@") else v for v in row])
    return web.Response(text=out.getvalue(), content_type="text/csv", charset="utf-8",
                        headers={"Content-Disposition": f'attachment; filename="{name}.csv"'})


def abandon_after_of(doc: Any) -> float:
    """``settings.abandon_after`` of a stored flow document, in seconds (default a day)."""
    settings = doc.get("settings") if isinstance(doc, Mapping) else None
    value = settings.get("abandon_after") if isinstance(settings, Mapping) else None
    if value is None:
        return DEFAULT_ABANDON_AFTER
    try:
        return float(parse_duration(value))
    except DurationError:
        return DEFAULT_ABANDON_AFTER


def _row(f: StepFunnel) -> list[Any]:
    return [f.step, f.entered, f.left_total, f.ended, f.abandoned, f.waiting,
            "" if f.median_seconds is None else f.median_seconds,
            " ".join(f"{t}={n}" for t, n in sorted(f.left.items()))]


@routes.get("/api/analytics/bots/{id}")
async def bot_analytics(request: web.Request) -> web.Response:
    require(request, "operator", "support")
    bot = request.match_info["id"]
    as_csv = _csv_format(request)
    version = query_number(request, "version", None, minimum=1, maximum=MAX_INDEX, integer=True)
    services = request.app[SERVICES]
    now = time.time()
    first, last = _range(request, now)
    if not _ID.fullmatch(bot):
        log.warning("analytics.bad_bot", extra={"bot": bot[:80]})
        return error(404, "not_found", "no such bot")
    try:
        version, doc = await services.bots.document(bot, version)
    except BotNotFound as exc:
        return error(404, "not_found", str(exc))
    from ..runtime.funnel import day_rows, funnel  # a funnel asked for: not at start (PRELOAD, issue 14)

    abandon_after = abandon_after_of(doc)
    days = await AnalyticsCounts(services.redis).read(bot, version, range(first, last + 1))
    steps = doc.get("steps") if isinstance(doc, Mapping) else None
    order = list(steps) if isinstance(steps, Mapping) else []
    if as_csv:
        rows: list[list[Any]] = [["day", "step", "entered", "left", "ended", "abandoned", "waiting",
                                  "median_seconds", "left_to"]]
        rows += [[day_text(day), *_row(f)] for day, f in day_rows(days, abandon_after=abandon_after, now=now)]
        return _csv(rows, f"{bot}-v{version}-{day_text(first)}-{day_text(last)}")
    result = funnel(days, order=order, abandon_after=abandon_after, now=now)
    return web.json_response({
        "bot": bot, "version": version, "from": day_text(first), "to": day_text(last),
        "abandon_after": abandon_after, "days": [day_text(d) for d in sorted(days)],
        "steps": [f.as_dict() for f in result]})


@routes.get("/api/analytics/automations/{id}")
async def automation_analytics(request: web.Request) -> web.Response:
    require(request, "operator", "support")
    doc_id = request.match_info["id"]
    as_csv = _csv_format(request)
    first, last = _range(request, time.time())
    version = await active_version(request, doc_id, event="analytics.bad_automation")
    services = request.app[SERVICES]
    pipe = services.redis.pipeline(transaction=False)
    for day in range(first, last + 1):
        pipe.hgetall(day_counts_key(doc_id, day))
    per_day: list[tuple[int, dict[str, dict[str, int]]]] = []
    total: dict[str, dict[str, int]] = {}
    for day, raw in zip(range(first, last + 1), await pipe.execute(), strict=True):
        counts: dict[str, dict[str, int]] = {}
        for name, value in raw.items():
            rule, sep, outcome = replies.text(name).rpartition(":")
            try:
                n = int(value)
            except ValueError:
                continue
            if sep and rule:
                counts.setdefault(rule, {})[outcome] = n
                into = total.setdefault(rule, {})
                into[outcome] = into.get(outcome, 0) + n
        if counts:
            per_day.append((day, counts))
    if as_csv:
        rows: list[list[Any]] = [["day", "rule", "outcome", "count"]]
        rows += [[day_text(day), rule, outcome, n] for day, counts in per_day
                 for rule, outcomes in sorted(counts.items()) for outcome, n in sorted(outcomes.items())]
        return _csv(rows, f"{doc_id}-{day_text(first)}-{day_text(last)}")
    return web.json_response({"id": doc_id, "version": version, "from": day_text(first), "to": day_text(last),
                              "rules": {rule: dict(sorted(o.items())) for rule, o in sorted(total.items())},
                              "days": {day_text(day): counts for day, counts in per_day}})
