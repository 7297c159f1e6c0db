"""One live server for the fuzz tier (started once: each test checks it is still healthy)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from redis import Redis

from .live import LiveServer, live_server


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A failing example may hold megabytes (that is the point): hypothesis warns about its repr,
    and the suite turns warnings into errors, which would hide the failure itself."""
    here = Path(__file__).parent
    for item in items:
        if here in item.path.parents:
            item.add_marker(pytest.mark.filterwarnings(
                "ignore:Generating overly large repr:hypothesis.errors.HypothesisWarning"))


@pytest.fixture(scope="package")
def live_app(redis_url: str) -> Iterator[LiveServer]:
    client = Redis.from_url(redis_url)
    client.flushdb()  # before the start: the server uploads flows/*.json as it starts
    client.close()
    with live_server(redis_url) as server:
        yield server


@pytest.fixture
def live(live_app: LiveServer) -> Iterator[LiveServer]:
    """The server; after the test, it must still be healthy and have logged no error."""
    mark = live_app.trap.mark()
    yield live_app
    live_app.assert_healthy(since=mark)
