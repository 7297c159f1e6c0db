"""The generic webhook backend: signing, the receiver's checks, idempotent retries through the
outbox, error mapping; and choosing a backend from the configuration."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from redis.asyncio import Redis

from bot.config import ConfigError, load_config
from bot.errors import CrmRateLimited, CrmRejected, CrmUnavailable
from bot.store.ratelimit import RedisLimiter
from crm_bridge import ChannelIdentity, CrmRef, KommoCrm, RedisCrm, WebhookCrm
from crm_bridge._http import CircuitOpen
from crm_bridge.factory import build_backend, build_outbox
from crm_bridge.outbox import CrmOutbox
from crm_bridge.webhook_backend import (
    DELIVERY_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    InvalidSignature,
    sign,
    verify_request,
)
from tests.crm_bridge.fakes.webhook_receiver import SECRET, WebhookReceiver


@pytest.fixture
async def receiver() -> AsyncIterator[WebhookReceiver]:
    async with WebhookReceiver() as receiver:
        yield receiver


@pytest.fixture
async def crm(receiver: WebhookReceiver) -> AsyncIterator[WebhookCrm]:
    crm = WebhookCrm(receiver.url, SECRET)
    try:
        yield crm
    finally:
        await crm.aclose()


async def _ref(crm: WebhookCrm) -> CrmRef:
    return await crm.identify(ChannelIdentity("telegram", "t", "1", name="Ann"))


# ---------------------------------------------------------------------- signing
def test_the_signature_is_hmac_sha256_of_the_raw_body() -> None:
    body = b'{"op":"snapshot","ts":1}'
    assert sign("k", body) == "sha256=" + hmac.new(b"k", body, hashlib.sha256).hexdigest()


def _signed(body: dict[str, Any], secret: str = SECRET) -> tuple[bytes, dict[str, str]]:
    raw = json.dumps(body).encode()
    return raw, {SIGNATURE_HEADER: sign(secret, raw), TIMESTAMP_HEADER: str(body["ts"])}


def test_a_receiver_refuses_tampered_forged_mismatched_or_stale_requests() -> None:
    now = time.time()
    raw, headers = _signed({"op": "identify", "ts": int(now)})
    assert verify_request(SECRET, raw, headers, now=now)["op"] == "identify"
    with pytest.raises(InvalidSignature, match="bad signature"):
        verify_request(SECRET, raw.replace(b"identify", b"execute!"), headers, now=now)
    with pytest.raises(InvalidSignature, match="bad signature"):
        verify_request(SECRET, *_signed({"op": "x", "ts": int(now)}, secret="other"), now=now)
    with pytest.raises(InvalidSignature, match="bad signature"):
        verify_request(SECRET, raw, {TIMESTAMP_HEADER: headers[TIMESTAMP_HEADER]}, now=now)
    with pytest.raises(InvalidSignature, match="timestamp header"):
        verify_request(SECRET, raw, {**headers, TIMESTAMP_HEADER: str(int(now) + 1)}, now=now)
    with pytest.raises(InvalidSignature, match="stale"):
        verify_request(SECRET, raw, headers, now=now + 3600)


async def test_every_operation_is_a_signed_json_post(receiver: WebhookReceiver, crm: WebhookCrm) -> None:
    ref = await _ref(crm)
    await crm.snapshot(ref)
    await crm.execute(ref, {"do": "add_note", "text": "hi", "command_id": "cmd-1"})
    seen = [{"headers": h, "body": b} for h, b in receiver.received]
    ops = [s["body"]["op"] for s in seen]
    assert ops == ["identify", "snapshot", "execute"]
    identify, _, execute = (s["body"] for s in seen)
    assert identify["identity"] == {"channel": "telegram", "account": "t", "external_id": "1", "name": "Ann",
                                    "phone": None, "email": None}
    assert execute["ref"] == {"contact_id": ref.contact_id, "lead_id": ref.lead_id, "company_id": None}
    assert execute["command"] == {"do": "add_note", "text": "hi"} and execute["id"] == "cmd-1"
    headers = seen[2]["headers"]
    assert headers[DELIVERY_HEADER] == "cmd-1" and headers[TIMESTAMP_HEADER] == str(execute["ts"])
    assert headers[SIGNATURE_HEADER].startswith("sha256=") and abs(execute["ts"] - time.time()) < 60
    assert receiver.bad_signatures == 0


async def test_a_wrong_secret_is_refused_by_the_receiver_and_temporary_here(receiver: WebhookReceiver) -> None:
    crm = WebhookCrm(receiver.url, "not-the-secret")
    try:
        with pytest.raises(CrmUnavailable, match="401"):
            await _ref(crm)
    finally:
        await crm.aclose()
    assert receiver.bad_signatures == 1 and receiver.deliveries == []


# ---------------------------------------------------------------------- errors
async def test_receiver_errors_are_typed(receiver: WebhookReceiver, crm: WebhookCrm) -> None:
    ref = await _ref(crm)
    with pytest.raises(CrmRejected, match='unknown stage "Nowhere"'):
        await crm.execute(ref, {"do": "change_stage", "pipeline": "Sales", "stage": "Nowhere"})
    receiver.fail_next(429)
    with pytest.raises(CrmRateLimited) as caught:
        await crm.execute(ref, {"do": "add_note", "text": "x"})
    assert caught.value.retry_after == 2.0
    with pytest.raises(CircuitOpen):  # held back until retry_after has passed
        await crm.snapshot(ref)
    crm.breaker.open_until = 0.0
    receiver.fail_next(500)
    with pytest.raises(CrmUnavailable, match="500"):
        await crm.snapshot(ref)
    with pytest.raises(CrmRejected, match="send_email"):
        await crm.execute(ref, {"do": "send_email"})


async def test_odd_answers_are_temporary_failures() -> None:
    async def odd(request: web.Request) -> web.Response:
        op = json.loads(await request.read())["op"]
        if op == "identify":
            return web.json_response({"lead_id": "1"})  # no contact_id
        return web.Response(text="<html>proxy error page</html>")
    app = web.Application()
    app.router.add_post("/", odd)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    crm = WebhookCrm(str(server.make_url("/")), SECRET)
    try:
        with pytest.raises(CrmUnavailable, match="expected contact_id and lead_id"):
            await _ref(crm)  # type: ignore[arg-type]
        with pytest.raises(CrmUnavailable, match="not JSON"):
            await crm.snapshot(CrmRef("1", "1"))
    finally:
        await crm.aclose()
        await server.close()


async def test_an_unreachable_receiver_fails_fast_afterwards() -> None:
    receiver = WebhookReceiver()
    await receiver.server.start_server()
    url = receiver.url
    await receiver.server.close()
    crm = WebhookCrm(url, SECRET, timeout=2.0)
    try:
        with pytest.raises(CrmUnavailable) as first:
            await crm.snapshot(CrmRef("1", "1"))
        assert not isinstance(first.value, CircuitOpen)
        with pytest.raises(CircuitOpen):
            await crm.snapshot(CrmRef("1", "1"))
    finally:
        await crm.aclose()


# ---------------------------------------------------------------------- idempotent retries
async def test_a_redelivered_command_is_applied_once(receiver: WebhookReceiver, crm: WebhookCrm) -> None:
    ref = await _ref(crm)
    command = {"do": "create_lead", "copy": [], "command_id": "same-id"}
    first = await crm.execute(ref, command)
    again = await crm.execute(ref, command)  # e.g. our timeout fired after the receiver applied it
    assert first.value == again.value and len(receiver.crm.leads) == 2


async def test_through_the_outbox_a_retried_command_keeps_its_delivery_id(
        redis: Redis, receiver: WebhookReceiver, crm: WebhookCrm) -> None:
    ref = await _ref(crm)
    now = [1000.0]
    outbox = CrmOutbox(redis, crm, clock=lambda: now[0])
    receiver.down(503)
    assert await outbox.submit(ref, {"do": "add_note", "text": "kept"}, cid="c") is None
    receiver.up()
    now[0] += 5.0
    assert await outbox.run_once() == 1
    assert [n["text"] for n in receiver.crm.lead_notes(ref)] == ["kept"]
    attempts = [h[DELIVERY_HEADER] for h, body in receiver.received if body["op"] == "execute"]
    assert len(attempts) == 2 and attempts[0] == attempts[1]  # the 503 and the retry: one command id
    assert [d for d in receiver.deliveries if d[0] == "execute"] == [("execute", attempts[0], "add_note")]
    assert await outbox.pending(ref.lead_id) == []


# ---------------------------------------------------------------------- choosing a backend
def _config(**crm: Any) -> Any:
    return load_config(env={}, overrides={"redis_url": "redis://127.0.0.1:1", "crm": crm})


async def test_the_backend_is_chosen_by_the_configuration(redis: Redis) -> None:
    embedded = build_backend(load_config(env={}, overrides={"embedded_crm": {"pipelines": {"P": ["a", "b"]}}}), redis)
    assert isinstance(embedded, RedisCrm) and embedded.pipelines == {"P": ["a", "b"]}
    kommo = build_backend(_config(backend="kommo", base_url="https://acme.kommo.com", token="tok", rate_limit=3), redis)
    assert isinstance(kommo, KommoCrm) and kommo.base_url == "https://acme.kommo.com"
    assert kommo.limit.rate == 3 and isinstance(kommo.limiter, RedisLimiter)  # shared by every process
    hook = build_backend(_config(backend="webhook", base_url="https://crm.example.com/hook", secret="s"), redis)
    assert isinstance(hook, WebhookCrm) and hook.url == "https://crm.example.com/hook"
    outbox = build_outbox(_config(max_attempts=3, retry_base=0.5, retry_max=4), redis, embedded)
    assert (outbox.max_attempts, outbox.backoff(1), outbox.backoff(10)) == (3, 0.5, 4.0)
    await kommo.aclose()  # type: ignore[attr-defined]
    await hook.aclose()  # type: ignore[attr-defined]


def test_incomplete_crm_settings_are_refused_and_secrets_come_from_the_environment() -> None:
    with pytest.raises(ConfigError, match="kommo backend needs base_url and token"):
        _config(backend="kommo", base_url="https://acme.kommo.com")
    with pytest.raises(ConfigError, match="webhook backend needs base_url and secret"):
        _config(backend="webhook", base_url="https://x")
    with pytest.raises(ConfigError, match=r"crm\.backend"):
        _config(backend="salesforce")
    config = load_config(env={"SALESBOT_CRM_TOKEN": "from-env", "SALESBOT_CRM_WEBHOOK_SECRET": "w"})
    assert config.crm.token is not None and config.crm.token.get_secret_value() == "from-env"
    assert "from-env" not in repr(config.crm)
