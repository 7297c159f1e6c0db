"""Per-client limits on unauthenticated traffic: 429 with Retry-After, per IP and per session."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import ClientSession, WSServerHandshakeError
from aiohttp.test_utils import make_mocked_request
from redis.asyncio import Redis

from bot.config import LimitsConfig, RateConfig
from bot.server.ratelimit import Buckets, Limits
from tests.server.conftest import ADMIN, client, make_config

SMALL = {"new_sessions_per_ip": {"per_minute": 6, "burst": 3},
         "messages_per_session": {"per_minute": 6, "burst": 4},
         "messages_per_ip": {"per_minute": 60, "burst": 50},
         "ws_connects_per_ip": {"per_minute": 6, "burst": 2},
         "public_per_ip": {"per_minute": 6, "burst": 5},
         "auth_failures_per_ip": {"per_minute": 6, "burst": 3}}


@pytest.fixture
async def http(redis: Redis, redis_url: str) -> AsyncIterator[ClientSession]:
    async with client(make_config(redis_url, limits=SMALL)) as session:
        yield session


async def _say(http: ClientSession, session: str) -> Any:
    return await http.post("/chat/demo/messages", json={"session": session, "text": "hi",
                                                          "client_msg_id": uuid.uuid4().hex})


def test_a_bucket_allows_its_burst_then_refills_at_its_rate() -> None:
    now = [100.0]
    buckets = Buckets(RateConfig(per_minute=60, burst=3), clock=lambda: now[0])
    assert [buckets.take("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert buckets.take("a") == pytest.approx(1.0)  # one token a second
    assert buckets.take("b") == 0.0  # another key has its own bucket
    now[0] += 0.5
    assert buckets.take("a") == pytest.approx(0.5)
    now[0] += 1.0
    assert buckets.take("a") == 0.0
    now[0] += 3600
    assert [buckets.take("a") for _ in range(4)][-1] > 0  # refills up to the burst, not beyond


def test_buckets_are_bounded() -> None:
    buckets = Buckets(RateConfig(per_minute=1, burst=1), max_keys=10)
    for i in range(100):
        buckets.take(f"k{i}")
    assert len(buckets._buckets) == 10


def test_the_client_is_the_peer_unless_a_trusted_proxy_says_otherwise() -> None:
    plain = Limits(LimitsConfig(trusted_proxies=[]))
    local_proxy = Limits(LimitsConfig())  # the default: a reverse proxy on this host is believed
    proxied = Limits(LimitsConfig(trusted_proxies=["10.0.0.0/8"]))

    def req(peer: str, forwarded: str | None = None) -> Any:
        headers = {"X-Forwarded-For": forwarded} if forwarded else {}
        r = make_mocked_request("GET", "/", headers=headers)
        r._transport_peername = (peer, 1234)  # type: ignore[attr-defined]
        return r

    assert plain.client(req("203.0.113.9", "1.2.3.4")) == "203.0.113.9"  # not trusted: ignored
    assert proxied.client(req("10.0.0.2", "1.2.3.4, 10.0.0.7")) == "1.2.3.4"
    assert proxied.client(req("10.0.0.2", "evil, 1.2.3.4")) == "1.2.3.4"  # the spoofable left part is not read
    assert proxied.client(req("203.0.113.9", "1.2.3.4")) == "203.0.113.9"  # not from the proxy
    assert plain.client(req("127.0.0.1", "1.2.3.4")) == "127.0.0.1"
    assert local_proxy.client(req("127.0.0.1", "1.2.3.4")) == "1.2.3.4"
    assert local_proxy.client(req("127.0.0.1")) == "127.0.0.1"
    assert plain.client(req("2001:db8:1:2:3:4:5:6")) == "2001:db8:1:2::/64"
    assert plain.client(req("::ffff:198.51.100.7")) == "198.51.100.7"


async def test_one_client_cannot_open_conversations_without_end(http: ClientSession, redis: Redis) -> None:
    statuses = [(await _say(http, f"flood-session-{i:03d}")).status for i in range(6)]
    assert statuses == [202, 202, 202, 429, 429, 429]
    r = await _say(http, "flood-session-999")
    assert r.status == 429 and int(r.headers["Retry-After"]) >= 1
    body = await r.json()
    assert body["error"]["code"] == "rate_limited" and body["retry_after"] >= 1
    assert (await _say(http, "flood-session-000")).status == 202  # a known conversation goes on
    assert not await redis.exists("sb:c:{livechat:demo:flood-session-999}:meta")  # nothing was stored


async def test_one_conversation_cannot_be_flooded(http: ClientSession) -> None:
    statuses = [(await _say(http, "chatty-session")).status for _ in range(6)]
    assert statuses == [202, 202, 202, 202, 429, 429]
    async with http.ws_connect("/chat/demo/ws", params={"session": "chatty-session"}) as ws:
        await ws.send_json({"type": "message", "text": "and here?", "client_msg_id": "ws-1"})
        while (msg := await ws.receive_json(timeout=5))["type"] != "ack":
            pass
        assert msg["status"] == 429 and msg["error"]["code"] == "rate_limited"


async def test_websocket_connects_are_limited(http: ClientSession) -> None:
    for _ in range(2):
        async with http.ws_connect("/chat/demo/ws", params={"session": "sock-session"}):
            pass
    with pytest.raises(WSServerHandshakeError) as refused:
        await http.ws_connect("/chat/demo/ws", params={"session": "sock-session"})
    assert refused.value.status == 429


async def test_public_pages_are_limited(http: ClientSession) -> None:
    statuses = [(await http.get("/chat/demo")).status for _ in range(7)]
    assert statuses[:5] == [200] * 5 and statuses[5:] == [429, 429]


def test_trusted_proxies_must_be_addresses() -> None:
    with pytest.raises(ValueError, match="not an IP address"):
        LimitsConfig(trusted_proxies=["proxy.example.com"])


async def test_guessing_tokens_locks_the_guesser_out(http: ClientSession) -> None:
    for i in range(3):
        assert (await http.get("/api/bots", headers={"Authorization": f"Bearer guess-{i}"})).status == 401
    r = await http.get("/api/bots", headers={"Authorization": f"Bearer {ADMIN}"})
    assert r.status == 429 and r.headers["Retry-After"]  # even the right token, from this client, for now
    assert (await http.get("/healthz")).status == 200  # probes and platforms' webhooks are never held off
    r = await http.post("/webhooks/telegram/nobody", json={})
    assert r.status == 404


async def test_a_limited_session_is_logged_by_address_never_by_its_id(
        http: ClientSession, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("WARNING", logger="salesbot.server.limits"):
        for _ in range(6):
            await _say(http, "secret-session-id")
    records = [r for r in caplog.records if r.getMessage() == "limits.exceeded"]
    assert records and all(r.client == "127.0.0.1" for r in records)  # type: ignore[attr-defined]
    assert "secret-session-id" not in caplog.text


async def test_limits_can_be_turned_off(redis: Redis, redis_url: str) -> None:
    async with client(make_config(redis_url, limits={**SMALL, "enabled": False})) as http:
        statuses = {(await _say(http, f"free-session-{i:03d}")).status for i in range(8)}
        assert statuses == {202}
