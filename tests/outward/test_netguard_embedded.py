"""SSRF: IPv6 forms that carry an IPv4 address (NAT64, 6to4, IPv4-compatible, IPv4-mapped,
Teredo) count as that IPv4 address. Python 3.11's ``is_global`` calls several of them global
whatever they embed, and a NAT64 or 6to4 gateway would forward the request to it."""

from __future__ import annotations

import socket
from typing import Any

import pytest
from aiohttp.abc import AbstractResolver

from bot.errors import ActionRefused
from bot.outward.netguard import AddressRefused, GuardedResolver, WebhookPolicy, embedded_ipv4
from tests.live_app import running_app

REFUSED = [
    "64:ff9b::7f00:1",          # NAT64 well-known prefix -> 127.0.0.1
    "64:ff9b::a9fe:a9fe",       # NAT64 -> 169.254.169.254 (cloud metadata)
    "64:ff9b::c0a8:101",        # NAT64 -> 192.168.1.1
    "64:ff9b:1::a00:1",         # NAT64 local-use prefix -> 10.0.0.1
    "2002:7f00:1::1",           # 6to4 -> 127.0.0.1
    "2002:a9fe:a9fe::",         # 6to4 -> 169.254.169.254
    "2002:a00:1:1::5",          # 6to4 -> 10.0.0.1
    "::127.0.0.1",              # IPv4-compatible
    "::10.0.0.1",
    "::169.254.169.254",
    "::ffff:127.0.0.1",         # IPv4-mapped
    "::ffff:100.64.0.1",
    "2001:0:4136:e378:8000:63bf:f5ff:fffe",  # Teredo, client 10.0.0.1
    "2001:0:4136:e378:8000:63bf:80ff:fffe",  # Teredo, client 127.0.0.1
]
ALLOWED = ["64:ff9b::808:808", "2002:808:808::1", "::8.8.8.8", "::ffff:93.184.216.34", "2606:4700:4700::1111"]


@pytest.mark.parametrize("address", REFUSED)
def test_ipv6_forms_of_private_ipv4_addresses_are_refused(address: str) -> None:
    assert not WebhookPolicy().address_allowed(address)
    assert WebhookPolicy(allow_private=True).address_allowed(address)


@pytest.mark.parametrize("address", ALLOWED)
def test_ipv6_forms_of_public_ipv4_addresses_are_allowed(address: str) -> None:
    assert WebhookPolicy().address_allowed(address)


def test_an_allowlisted_network_is_reached_through_its_ipv6_forms_too() -> None:
    policy = WebhookPolicy(allowlist=["10.0.0.0/8"])
    assert policy.address_allowed("64:ff9b::a00:1") and policy.address_allowed("::ffff:10.0.0.1")
    assert not policy.address_allowed("64:ff9b::c0a8:101")


@pytest.mark.parametrize(("address", "ipv4"), [
    ("64:ff9b::a00:1", ["10.0.0.1"]), ("2002:a00:1::", ["10.0.0.1"]), ("::10.0.0.1", ["10.0.0.1"]),
    ("::ffff:10.0.0.1", ["10.0.0.1"]), ("2001:0:4136:e378:8000:63bf:f5ff:fffe", ["65.54.227.120", "10.0.0.1"]),
    ("2606:4700::1", []), ("::1", []), ("10.0.0.1", [])])
def test_embedded_ipv4_names_every_address_a_form_carries(address: str, ipv4: list[str]) -> None:
    import ipaddress

    assert [str(a) for a in embedded_ipv4(ipaddress.ip_address(address))] == ipv4


@pytest.mark.parametrize("address", ["64:ff9b::7f00:1", "2002:7f00:1::1", "::127.0.0.1"])
async def test_literal_urls_and_resolved_names_with_these_forms_are_refused(address: str) -> None:
    with pytest.raises(ActionRefused, match="private, loopback or link-local"):
        await WebhookPolicy().check_url(f"http://[{address}]:8080/hook")
    with pytest.raises(AddressRefused):
        await GuardedResolver(WebhookPolicy(), _Fixed(address)).resolve("nat64.example", 80)


class _Fixed(AbstractResolver):
    def __init__(self, address: str) -> None:
        self.address = address

    async def resolve(self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET) -> list[Any]:
        return [{"hostname": host, "host": self.address, "port": port, "family": socket.AF_INET6,
                 "proto": 0, "flags": 0}]

    async def close(self) -> None:
        pass


async def test_a_flow_cannot_send_a_webhook_through_a_nat64_address(
        redis: Any, redis_url: str, caplog: pytest.LogCaptureFixture) -> None:
    flow = {"call": {"type": "action", "actions": [{"do": "send_webhook", "url": "http://[64:ff9b::7f00:1]:9/x",
                                                    "method": "POST", "timeout": "2s"}],
                     "next": "ok", "failed": "failed"},
            "ok": {"type": "message", "text": "ok"},
            "failed": {"type": "message", "text": "failed"}}
    async with running_app(redis_url) as app:
        await app.put_flow(flow, "call")
        _, texts = await app.say("nat64-webhook-1", "hello")
        assert texts == ["failed"]
    errors = [str(r.error) for r in caplog.records if r.getMessage() == "action.failed" and hasattr(r, "error")]
    assert len(errors) == 1 and "private, loopback or link-local" in errors[0], errors
