"""What ``salesbot serve`` imports before it answers: a live-chat-only server on the embedded CRM,
given plain values only (``bot.config.PLAIN``), loads neither pydantic nor the configuration's
models, no channel SDK, no e-mail or phone library, no currency data (babel), no flow or automation
validator, no Kommo module, neither the interpreter nor its templates (jinja2, regex), nor
prometheus_client, nor the request models of ``POST /api/events``; a second later ``_settle`` loads
what serving will need (``PRELOAD``) and turns the collector back on (issue 14: startup; the time
itself is measured by bench/startup.py, not asserted here)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from redis import Redis

ROOT = Path(__file__).resolve().parents[2]
#: Imported on first use only: by a channel account (of that kind), a validation step, an e-mail,
#: a Kommo widget or backend, a flow or automation document being checked or run (the rule engine
#: and its effects), the flow graph, the first price or currency checked (babel's CLDR data:
#: bot.shop.prices), the first request for ``/api/openapi.json`` (the document's dicts).
NOT_AT_START = (
    "telegram", "twilio", "aiogram", "playwright", "phonenumbers", "email_validator", "aiosmtplib", "jwt", "babel",
    "bot.builder.validate", "bot.builder.models", "bot.builder.graph", "bot.builder.models_process",
    "bot.builder.model_base", "bot.builder.models_split",
    "bot.automations.models", "bot.automations.validate", "bot.automations.compiled", "bot.automations.engine",
    "bot.automations.effects",
    "crm_bridge.kommo", "bot.runtime.kommo_events", "bot.runtime.outbound_kommo",
    "bot.channels.base", "bot.channels.registry", "bot.channels.webhooks",
    "bot.server.openapi", "bot.server.openapi_customers", "bot.server.openapi_orderlinks",
    "bot.server.openapi_processes", "bot.server.openapi_shop",
)
#: Imported by the first conversation turn, template or e-mail (the interpreter with the effects it
#: makes, compiled flows and their templates), the first metric counted or /metrics scrape, the
#: first page shown, an embedded Redis started (ctypes: libc), a config file read (tomllib), the
#: first event posted (its models), the first funnel asked for (bot.runtime.funnel); pydantic and the
#: configuration's models by a configuration that gives more than plain values (bot.config.PLAIN)
#: or the first request that validates a body.
NOT_UNTIL_USED = (
    "jinja2", "regex", "markupsafe", "prometheus_client", "ctypes", "tomllib", "pydantic", "pydantic_core",
    "annotated_types", "bot.config_models",
    "bot.engine.interpreter", "bot.engine.effects", "bot.messages", "bot.builder.compiled", "bot.builder.templates",
    "bot.builder.expressions", "bot.builder.sandbox", "bot.server.event_models", "babel.numbers",
    "bot.runtime.funnel",
)
#: Builds the app, then opens its services (Redis, stores, CRM, hub) as serving does before it
#: listens, and lists the modules loaded with no await in between: no background task has run;
#: then what serving's ``_settle`` loads, and whether it turned the collector back on.
PROGRAM = """
import asyncio, gc, json, sys
gc.disable()  # as bot.cli does for serve
import bot.cli, bot.server.run
from bot.config import load_config
from bot.server.app import create_app
from bot.server.services import open_services

config = load_config(None)
create_app(config, role="all")
built = sorted(sys.modules)

async def main():
    async with open_services(config) as services:
        services.pollers()  # what the app's start asks of them for its worker loops
        return sorted(sys.modules)

opened = asyncio.run(main())
collecting = gc.isenabled()
bot.server.run._settle()
json.dump({"built": built, "opened": opened, "settled": sorted(sys.modules), "collecting": [collecting, gc.isenabled()],
           "preload": bot.server.run.PRELOAD}, sys.stdout)
"""


def _loaded(modules: list[str], names: tuple[str, ...]) -> list[str]:
    return sorted(name for name in modules if name.split(".")[0] in names or name in names)


def test_a_live_chat_only_server_starts_without_what_it_does_not_use(tmp_path: Path, redis_url: str) -> None:
    # An empty folder: no salesbot.toml, no flows/ — the live chat only, as bench/startup.py runs it;
    # an empty Redis (flows stored by other tests would be compiled at start, with their validator).
    with Redis.from_url(redis_url) as client:
        client.flushdb()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SALESBOT_")}
    env["PYTHONPATH"] = str(ROOT)
    env["SALESBOT_REDIS_URL"] = redis_url
    done = subprocess.run([sys.executable, "-c", PROGRAM], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    modules = json.loads(done.stdout)
    built, opened = modules["built"], modules["opened"]
    assert "bot.server.app" in built and "aiohttp" in built  # the program did build the app
    assert "bot.runtime.service" in opened  # and opened its services
    assert _loaded(built, NOT_AT_START) == [], "building the app imported these again"
    assert _loaded(opened, NOT_AT_START) == [], "opening the services imported these again"
    assert _loaded(opened, NOT_UNTIL_USED) == [], "start-up imported these before their first use"
    assert modules["collecting"] == [False, True]  # no collection over start-up's objects, then serving's
    assert set(modules["preload"]) <= set(NOT_UNTIL_USED)  # each deferred module is checked above …
    assert set(modules["preload"]) <= set(modules["settled"])  # … and loaded before requests need it
    assert "babel.numbers" in modules["settled"]  # the first price imports no babel in the event loop
