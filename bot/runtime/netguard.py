"""Which addresses a flow's ``send_webhook`` may reach.

A flow's URL is a template an operator (or, through variables, a customer) controls, so by
default it may only reach public addresses: the host is resolved and *every* address it
resolves to is checked with ``ipaddress`` (loopback, private, link-local, carrier-grade NAT,
multicast, reserved and unspecified addresses are refused; an IPv4-mapped IPv6 address counts
as its IPv4 address). The same check runs again inside the HTTP connector on the addresses it
actually connects to, so a DNS answer that changes between the check and the connection
(DNS rebinding) is refused too. Redirects are not followed.

``allow_private_webhooks = true`` lifts the check; ``webhook_allowlist`` lifts it for some hosts
(exact names) or networks (``10.0.0.0/8``, ``127.0.0.1``).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from aiohttp.abc import AbstractResolver
from aiohttp.resolver import DefaultResolver

if TYPE_CHECKING:
    from aiohttp.abc import ResolveResult

from ..errors import ActionFailed, ActionRefused

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class AddressRefused(OSError):
    """Raised inside the connector (an ``OSError`` so aiohttp reports a connection error)."""


class WebhookPolicy:
    def __init__(self, *, allow_private: bool = False, allowlist: Iterable[str] = ()) -> None:
        self.allow_private = allow_private
        self.hosts: set[str] = set()
        self.networks: list[Network] = []
        for entry in allowlist:
            try:
                self.networks.append(ipaddress.ip_network(entry.strip(), strict=False))
            except ValueError:
                self.hosts.add(entry.strip().lower().rstrip("."))

    def host_allowed(self, host: str) -> bool:
        return self.allow_private or host.lower().rstrip(".") in self.hosts

    def address_allowed(self, address: str) -> bool:
        if self.allow_private:
            return True
        try:
            ip: IPAddress = ipaddress.ip_address(address.split("%", 1)[0])
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        if any(ip in net for net in self.networks):
            return True
        return ip.is_global and not ip.is_multicast

    async def check_url(self, url: str) -> None:
        """Refuse (``ActionRefused``) a URL that is not http(s) or whose host is not public."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ActionRefused(f"send_webhook: {url!r} is not an http(s) URL")
        host = parts.hostname
        if self.host_allowed(host):
            return
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError:
            raise ActionRefused(f"send_webhook: {url!r} has an invalid port") from None
        try:
            ipaddress.ip_address(host.split("%", 1)[0])
            addresses = [host]
        except ValueError:
            try:
                infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
            except OSError as exc:
                raise ActionFailed(f"send_webhook: cannot resolve {host!r}: {exc}") from None
            addresses = [str(info[4][0]) for info in infos]
        refused = sorted({a for a in addresses if not self.address_allowed(a)})
        if refused or not addresses:
            raise ActionRefused(
                f"send_webhook: {host} resolves to a private, loopback or link-local address "
                f"({', '.join(refused)}); allow it with [actions] allow_private_webhooks or webhook_allowlist")


class GuardedResolver(AbstractResolver):
    """aiohttp's resolver, keeping only the addresses the policy allows."""

    def __init__(self, policy: WebhookPolicy, inner: AbstractResolver | None = None) -> None:
        self.policy = policy
        self.inner = inner or DefaultResolver()

    async def resolve(self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        results = await self.inner.resolve(host, port, family)
        if self.policy.host_allowed(host):
            return results
        allowed = [r for r in results if self.policy.address_allowed(str(r["host"]))]
        if not allowed:
            raise AddressRefused(f"{host} resolves only to addresses webhooks may not reach")
        return allowed

    async def close(self) -> None:
        await self.inner.close()


def refused_cause(exc: BaseException) -> bool:
    """Whether a client error was caused by the guarded resolver."""
    seen: set[int] = set()
    stack: list[Any] = [exc]
    while stack:
        e = stack.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, AddressRefused):
            return True
        stack += [e.__cause__, e.__context__, getattr(e, "os_error", None)]
    return False
