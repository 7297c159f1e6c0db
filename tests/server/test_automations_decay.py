"""Score decay once per contact: every lead of a contact runs its own decay timer (the rule engine
is per lead), and the shell subtracts once per contact and period — with the server's effect
runner, the embedded CRM and Redis."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientSession
from aiohttp.test_utils import TestServer
from redis.asyncio import Redis

from bot.automations import effects as fx
from bot.automations.engine import react
from bot.automations.state import LeadState
from bot.engine.events import TimerFired
from bot.runtime.automations import Keyed
from bot.server.keys import SERVICES
from tests.automations.helpers import compile_doc, event, later
from tests.server.conftest import ADMIN, make_config, running

H = {"Authorization": f"Bearer {ADMIN}"}
SCORING = [{"on": "email.opened", "add": 2}, {"decay": {"every": "30d", "subtract": 10}}]


@pytest.fixture
async def server(redis: Redis, redis_url: str, tmp_path: Path) -> AsyncIterator[TestServer]:
    async with running(make_config(redis_url, automations_dir=str(tmp_path))) as srv:
        yield srv


async def _post(http: ClientSession, path: str, body: dict[str, Any]) -> str:
    r = await http.post(path, json=body, headers=H)
    assert r.status == 201, await r.text()
    return str((await r.json())["id"])


async def _score(http: ClientSession, lead: str) -> int:
    r = await http.get(f"/api/crm/leads/{lead}", headers=H)
    assert r.status == 200
    return int((await r.json())["contacts"][0].get("score") or 0)


def _decay_work(lead: str, contact: dict[str, Any], opened_days: float) -> list[Keyed]:
    """What the engine asks of the shell for one lead: it scores an open ``opened_days`` after
    the helpers' NOW, then its decay timer fires twice (in the first period and the next)."""
    automations = compile_doc([], scoring=SCORING)
    snapshot = {"lead": {"id": lead, "pipeline": "Sales", "stage": "Incoming"}, "contact": contact}
    at = later(days=opened_days)
    state = react(automations, LeadState.for_lead(lead), event("email.opened", at=at), snapshot, at).state
    work = []
    for _ in range(2):
        (timer_id, pending), = ((k, p) for k, p in state.pending.items() if p.kind == "decay")
        fired = react(automations, state, TimerFired(timer_id), snapshot, datetime.fromtimestamp(pending.at, UTC))
        state = fired.state
        (effect,) = (e for e in fired.effects if isinstance(e, fx.AddScore))
        work.append(Keyed(f"timer:{timer_id}:0:score:decay", "sales", effect))
    return work


async def test_two_leads_of_one_contact_decay_its_score_once_per_period(
        server: TestServer, http: ClientSession, redis: Redis) -> None:
    contact = await _post(http, "/api/crm/contacts", {"name": "Ada"})
    first = await _post(http, "/api/crm/leads", {"name": "Sofa", "contact_id": contact})
    second = await _post(http, "/api/crm/leads", {"name": "Lamp", "contact_id": contact})
    effects = server.app[SERVICES].leads.effects
    await effects.run(first, [Keyed("evt-1:0:score:order.paid", "sales", fx.AddScore(45, "order.paid", 1))])
    assert await _score(http, second) == 45
    # the leads' timers fall due on Jan 6 and Jan 11, 2027: one 30-day period (Jan 2 … Feb 1)
    seen = {"id": contact, "score": 45}
    a1, a2 = _decay_work(first, seen, 0)
    b1, b2 = _decay_work(second, seen, 5)
    assert a1.effect.delta == b1.effect.delta == -10
    await effects.run(first, [a1])
    await effects.run(second, [b1])
    assert await _score(http, first) == 35  # once, not twice
    await effects.run(first, [a1])  # a redone batch: done once
    assert await _score(http, first) == 35
    await effects.run(second, [b2])  # the next period: the second lead's timer comes first
    await effects.run(first, [a2])
    assert await _score(http, second) == 25
    assert await redis.ttl(f"sb:automations:once:{{contact:{contact}}}:{b2.effect.once}") > 30 * 86400
