"""The channel contract fails a broken adapter: each adapter below is the toy adapter (the one
docs/channels.md tells developers to copy) with one fault a real adapter has had or could
have, and each passed the suite before it checked for that fault.

Each case runs the contract's own test method against the broken adapter (it must fail) and
against the sound toy (it must pass), so the failure is the fault's and not the harness's.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any, ClassVar

import aiohttp
import pytest

from bot.channels.base import ChannelAdapter, Inbound
from bot.channels.contract import ContractContext
from bot.store.ratelimit import SharedLimiter

from . import test_toy_entry_point as toy_tests

TOY = Path(__file__).parent / "toy" / "toy_channel.py"


def _toy_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("toy_channel_for_catches", TOY)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


toy = _toy_module()


class IntIds(toy.ToyAdapter):  # type: ignore[name-defined,misc]
    """Drops every message: ids as the platform's JSON numbers, which ``dispatch`` refuses."""

    def parse(self, request: Any) -> list[Inbound]:
        items = super().parse(request)
        return [Inbound(i.kind, i.chat_id, dedupe_id=int(i.dedupe_id.split("-")[-1], 36) if i.dedupe_id else None,
                        text=i.text, payload=i.payload, attachments=i.attachments) for i in items]


class ListAttachments(toy.ToyAdapter):  # type: ignore[name-defined,misc]
    """Attachments as a list of dicts, not a tuple of ``InboundAttachment``."""

    def parse(self, request: Any) -> list[Inbound]:
        return [Inbound(i.kind, i.chat_id, dedupe_id=i.dedupe_id, text=i.text, payload=i.payload,
                        attachments=[{"kind": a.kind, "url": a.url} for a in i.attachments])  # type: ignore[arg-type]
                for i in super().parse(request)]


class RaisesOnSend(toy.ToyAdapter):  # type: ignore[name-defined,misc]
    """Lets aiohttp's connection error out of ``send`` (the toy as it was)."""

    async def send(self, account: str, chat: Mapping[str, str], message: Mapping[str, Any]) -> str | None:
        async with self.http.post(f"{self.base}/messages", json={"chat": chat["external_id"],
                                                                 "text": message.get("text") or "",
                                                                 "buttons": []}) as resp:
            return str((await resp.json())["id"])


class IgnoresLimits(toy.ToyAdapter):  # type: ignore[name-defined,misc]
    """Takes the shared limiter (so the outbox stops limiting it) and never asks it."""

    default_limits: ClassVar[dict[str, float]] = {"rate": 5, "burst": 1, "chat_interval": 1.0}

    def use_limiter(self, limiter: SharedLimiter) -> None:
        self.limiter = limiter


class NumericIdNoClaim(toy.ToyAdapter):  # type: ignore[name-defined,misc]
    """Returns the platform's id as a number (the outbox keys statuses by a string)."""

    async def send(self, account: str, chat: Mapping[str, str], message: Mapping[str, Any]) -> Any:
        platform_id = await super().send(account, chat, message)
        return int(platform_id.split("-")[-1]) if platform_id else None


class BadDefaultLimits(toy.ToyAdapter):  # type: ignore[name-defined,misc]
    """``default_limits`` with a key ``AccountLimits`` does not take: the server fails at start."""

    default_limits: ClassVar[dict[str, float]] = {"api_rate": 20}


class StrHandshake(toy.ToyAdapter):  # type: ignore[name-defined,misc]
    """``handshake`` answers a bare string: the webhook route cannot unpack it (a 500)."""

    def handshake(self, request: Any) -> Any:
        return "ok"


class AsyncVerify(toy.ToyAdapter):  # type: ignore[name-defined,misc]
    """``verify`` as a coroutine: the route never awaits it, so no request is ever rejected."""

    async def verify(self, request: Any) -> None:  # type: ignore[override]
        super().verify(request)


class StrEncodesSignature(toy.ToyAdapter):  # type: ignore[name-defined,misc]
    """Compares the signature after ``str.encode``: a header aiohttp could not decode raises."""

    def verify(self, request: Any) -> None:
        import hashlib
        import hmac

        given = {k.lower(): v for k, v in request.headers.items()}.get("x-toy-signature")
        if not given:
            raise toy.WebhookRejected("missing signature", 401)
        expected = hmac.new(self.secret, request.body, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(given.encode(), expected.encode()):
            raise toy.WebhookRejected("wrong signature", 403)


class JsonLoads(toy.ToyAdapter):  # type: ignore[name-defined,misc]
    """Parses with ``json.loads``: a deeply nested body is a RecursionError, a 500."""

    def parse(self, request: Any) -> list[Inbound]:
        import json

        try:
            data = json.loads(request.body)
            chat, mid = str(data["chat"]), str(data["id"])
        except (ValueError, KeyError, TypeError) as exc:
            raise toy.MalformedWebhook(str(exc)) from exc
        return [Inbound("message", chat, dedupe_id=mid, text=data.get("text") or "")]


def _contract(adapter_class: type | None, **attrs: Any) -> Any:
    """A toy contract whose adapter is ``adapter_class`` (None: the sound toy)."""

    class Contract(toy_tests.TestToyContract):  # type: ignore[misc]
        def create_adapter(self, upstream: Any, http: aiohttp.ClientSession) -> ChannelAdapter:
            cls = adapter_class or toy.ToyAdapter
            made: ChannelAdapter = cls(account=self.account, config=self.account_config(upstream), http=http,
                                       public_url=self.public_url)
            return made

    for name, value in attrs.items():
        setattr(Contract, name, value)
    return Contract()


async def _run(contract: Any, test: str, **kwargs: Any) -> BaseException | None:
    """Run one contract test method; the exception it failed with, or None if it passed."""
    method: Callable[..., Awaitable[None]] = getattr(contract, test)
    try:
        if "channel_ctx" in method.__code__.co_varnames[:method.__code__.co_argcount]:
            async with contract.context() as ctx:
                assert isinstance(ctx, ContractContext)
                await method(ctx, **kwargs)
        else:
            await method(**kwargs)
    except (Exception, pytest.fail.Exception) as exc:
        return exc
    return None


CASES = [
    (IntIds, "test_a_text_message_is_normalised", {}, "dispatch would drop"),
    (ListAttachments, "test_a_media_message_is_normalised", {}, "tuple of InboundAttachment"),
    (RaisesOnSend, "test_an_unreachable_platform_is_delivery_temporary", {}, "Cannot connect"),
    (IgnoresLimits, "test_a_limit_sharing_adapter_takes_the_limit_per_call", {}, "turns of the shared limiter"),
    (BadDefaultLimits, "test_adapter_is_a_channel_adapter", {}, "api_rate"),
    (StrHandshake, "test_adapter_is_a_channel_adapter", {}, "handshake() must return"),
    (AsyncVerify, "test_adapter_is_a_channel_adapter", {}, "must be a plain method"),
    (StrEncodesSignature, "test_a_signature_that_is_not_ascii_is_rejected", {}, "surrogates not allowed"),
    (JsonLoads, "test_a_hostile_body_is_malformed_not_an_error", {}, "RecursionError"),
]


@pytest.mark.parametrize(("broken", "test", "kwargs", "reason"), CASES, ids=[c[0].__name__ for c in CASES])
async def test_the_contract_fails_a_broken_adapter(broken: type, test: str, kwargs: dict[str, Any],
                                                   reason: str) -> None:
    assert await _run(_contract(None), test, **kwargs) is None, "the sound toy must pass this check"
    failure = await _run(_contract(broken), test, **kwargs)
    assert failure is not None, f"the contract passed {broken.__name__}: {broken.__doc__}"
    assert reason in str(failure), failure


async def test_an_id_that_is_not_a_string_fails_even_without_message_ids() -> None:
    contract = _contract(NumericIdNoClaim, returns_message_id=False)
    assert await _run(_contract(None, returns_message_id=False), "test_send_returns_the_platform_message_id") is None
    failure = await _run(contract, "test_send_returns_the_platform_message_id")
    assert failure is not None and "as str or None" in str(failure), failure


async def test_statuses_built_but_not_declared_fail_instead_of_going_untested() -> None:
    # the docs said "inbound_status (return None when the platform has no statuses)": a developer
    # who implemented it and no ``delivery_statuses`` had no status test at all, and a green suite
    undeclared = _contract(None, delivery_statuses=frozenset())
    failure = await _run(undeclared, "test_inbound_status_builds_only_declared_statuses")
    assert failure is not None and "delivery_statuses" in str(failure), failure
    assert await _run(_contract(None), "test_inbound_status_builds_only_declared_statuses") is None


def test_an_adapter_finds_every_delivery_error_in_base() -> None:
    # an adapter that paces itself raises DeliveryDeferred: it was only in bot.store.outbox
    from bot.channels import base
    from bot.store import outbox

    for name in ("DeliveryTemporary", "DeliveryRejected", "DeliveryDeferred"):
        assert name in base.__all__ and getattr(base, name) is getattr(outbox, name)
