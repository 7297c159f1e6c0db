"""A running app (all roles) on loopback, against the test Redis."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientSession
from aiohttp.test_utils import TestServer
from redis.asyncio import Redis

from bot.config import load_config
from bot.server.app import create_app

FLOWS = Path(__file__).resolve().parents[2] / "flows"
AUTOMATIONS = FLOWS.parent / "automations"
#: Servers of the tests load no automation document unless a test asks (``automations_dir=AUTOMATIONS``,
#: or the ``example_server`` fixture): the example's rules would act on every test's leads.
NO_AUTOMATIONS = Path(__file__).resolve().parent / "no-automations"
ADMIN = "test-admin-token"


def make_config(redis_url: str, flows_dir: Path = FLOWS, **extra: object) -> object:
    return load_config(env={}, overrides={"redis_url": redis_url, "flows_dir": str(flows_dir),
                                          "automations_dir": str(NO_AUTOMATIONS),
                                          "admin_token": ADMIN, "timer_poll_interval": 0.05, **extra})


@contextlib.asynccontextmanager
async def running(config: object, role: str = "all") -> AsyncIterator[TestServer]:
    """The app of ``config`` (in ``role``) served on loopback for the block."""
    srv = TestServer(create_app(config, role=role))  # type: ignore[arg-type]
    await srv.start_server()
    try:
        yield srv
    finally:
        await srv.close()


@contextlib.asynccontextmanager
async def client(config: object) -> AsyncIterator[ClientSession]:
    """A client of the app of ``config``, served for the block (``client.app`` is not set:
    tests that need the services use ``running``)."""
    async with running(config) as srv, ClientSession(base_url=str(srv.make_url(""))) as session:
        yield session


@pytest.fixture
async def server(redis: Redis, redis_url: str) -> AsyncIterator[TestServer]:
    async with running(make_config(redis_url)) as srv:
        yield srv


@pytest.fixture
async def http(server: TestServer) -> AsyncIterator[ClientSession]:
    async with ClientSession(base_url=str(server.make_url(""))) as session:
        yield session


@pytest.fixture
async def example_server(redis: Redis, redis_url: str) -> AsyncIterator[TestServer]:
    """A server that loaded the example automation document (``automations/sales.json``) at start."""
    async with running(make_config(redis_url, automations_dir=str(AUTOMATIONS))) as srv:
        yield srv


REMINDER = "Still there?"


def nudge_flow(after: str) -> dict[str, Any]:
    """A bot that asks, then reminds once (``REMINDER``) when no answer came ``after`` that long:
    one no-answer timer per conversation, for the timer tests."""
    return {
        "format": "salesbot.flow/1", "id": "nudge", "name": "Asks, then reminds once",
        "start": "ask",
        "steps": {
            "ask": {"type": "message", "text": "Anything else?", "buttons": [{"title": "No", "next": "bye"}],
                    "other_answer": "bye", "no_answer": {"after": after, "next": "remind"}},
            "remind": {"type": "message", "text": REMINDER},
            "bye": {"type": "message", "text": "Bye!"},
        },
    }
