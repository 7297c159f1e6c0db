"""Which addresses a flow's ``send_webhook`` may reach.

A flow's URL is a template an operator (or, through variables, a customer) controls, so by
default it may only reach public addresses: the host is resolved and *every* address it
resolves to is checked with ``ipaddress`` (loopback, private, link-local, carrier-grade NAT,
multicast, reserved and unspecified addresses are refused). An IPv6 address that carries an
IPv4 address (IPv4-mapped, IPv4-compatible, NAT64 ``64:ff9b::/96``, 6to4 ``2002::/16``,
Teredo ``2001::/32``) counts as that IPv4 address: Python's ``is_global`` calls several of
these forms global whatever they embed, and a NAT64 or 6to4 gateway would forward to it. The
same check runs again inside the HTTP connector on the addresses it actually connects to, so a
DNS answer that changes between the check and the connection (DNS rebinding) is refused too.
Redirects are not followed.

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


#: IPv6 prefixes whose low 32 bits are an IPv4 address a gateway forwards to (RFC 6052 NAT64:
#: the well-known and the local-use prefix). Python 3.11 counts them as global.
_NAT64 = (ipaddress.IPv6Network("64:ff9b::/96"), ipaddress.IPv6Network("64:ff9b:1::/48"))
_COMPAT = ipaddress.IPv6Network("::/96")  # IPv4-compatible ::a.b.c.d (deprecated, still routed)


def embedded_ipv4(ip: IPAddress) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses an IPv6 address carries: IPv4-mapped (``::ffff:a.b.c.d``),
    IPv4-compatible (``::a.b.c.d``), NAT64 (``64:ff9b::a.b.c.d``), 6to4 (``2002:AABB:CCDD::``)
    and Teredo (``2001::/32``: server and client). Empty for anything else."""
    if not isinstance(ip, ipaddress.IPv6Address):
        return []
    low32 = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if ip.ipv4_mapped is not None:
        return [ip.ipv4_mapped]
    if ip in _COMPAT and int(ip) > 1:  # not :: or ::1, which are checked as themselves
        return [low32]
    if any(ip in net for net in _NAT64):
        return [low32]
    if ip.sixtofour is not None:
        return [ip.sixtofour]
    if ip.teredo is not None:
        return list(ip.teredo)
    return []


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
        if any(ip in net for net in self.networks):
            return True
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            return self._public(ip.ipv4_mapped)  # the socket talks IPv4 to it
        # An IPv6 form that reaches an IPv4 address: it and every IPv4 address in it must pass.
        return self._public(ip) and all(self._public(v4) for v4 in embedded_ipv4(ip))

    def _public(self, ip: IPAddress) -> bool:
        return any(ip in net for net in self.networks) or (ip.is_global and not ip.is_multicast)


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

    async def resolve(self, host: str, port: int = 0,
                      family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
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
