"""Quick-order link tokens against a real Redis: signed, expiring, revocable, never another's."""

from __future__ import annotations

import pytest
from redis.asyncio import Redis

from bot.errors import OrderLinkRejected
from bot.outward.email import SignedTokens, UnsubscribeTokens
from bot.runtime.orderlinks import MAX_ACTIVE, OrderLinks
from bot.store.orderlinks import KEEP, links_key

SECRET = b"s" * 32


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def links(redis: Redis, clock: Clock, secret: bytes = SECRET) -> OrderLinks:
    return OrderLinks(redis, secret=secret, public_url="https://shop.test/", ttl_days=30, clock=clock)


def token_of(url: str) -> str:
    assert url.startswith("https://shop.test/order/")
    return url.removeprefix("https://shop.test/order/")


async def test_a_link_names_its_customer_and_expires_after_the_default_30_days(redis: Redis) -> None:
    clock = Clock()
    ol = links(redis, clock)
    made = await ol.create("42", by="ann")
    assert made["expires_at"] == int(clock.now) + 30 * 86400
    found = await ol.resolve(token_of(made["url"]))
    assert (found.status, found.customer_id, found.link_id) == ("valid", "42", made["id"])
    clock.now = made["expires_at"] - 1
    assert (await ol.resolve(token_of(made["url"]))).status == "valid"
    clock.now = made["expires_at"]
    assert (await ol.resolve(token_of(made["url"]))).status == "expired"


async def test_expires_is_one_hour_to_a_year(redis: Redis) -> None:
    clock = Clock()
    ol = links(redis, clock)
    assert (await ol.create("42", expires=3600))["expires_at"] == int(clock.now) + 3600
    for bad in (3599, 365 * 86400 + 1, 0, -5):
        with pytest.raises(OrderLinkRejected):
            await ol.create("42", expires=bad)
    with pytest.raises(OrderLinkRejected):
        await ol.create("4 2")


async def test_a_revoked_link_is_refused_at_once_and_listed_as_revoked(redis: Redis) -> None:
    clock = Clock()
    ol = links(redis, clock)
    first = await ol.create("7", by="ann")
    clock.now += 1
    second = await ol.create("7")
    revoked = await ol.revoke("7", first["id"], by="bob")
    assert revoked is not None and revoked["status"] == "revoked" and revoked["revoked_by"] == "bob"
    assert (await ol.resolve(token_of(first["url"]))).status == "revoked"
    assert (await ol.resolve(token_of(second["url"]))).status == "valid"
    clock.now += 5
    again = await ol.revoke("7", first["id"], by="carl")  # the first revocation stays
    assert again is not None and again["revoked_by"] == "bob"
    assert await ol.revoke("7", "nope", by="bob") is None
    assert await ol.revoke("8", second["id"], by="bob") is None  # another customer's link id
    listed = await ol.list("7")
    assert [(x["id"], x["status"]) for x in listed] == [(second["id"], "active"), (first["id"], "revoked")]
    assert listed[0]["url"] == second["url"] and "url" not in listed[1]


async def test_forged_damaged_foreign_and_unknown_tokens_are_bad(redis: Redis) -> None:
    clock = Clock()
    ol = links(redis, clock)
    made = await ol.create("42")
    token = token_of(made["url"])
    body, _, signature = token.partition(".")
    assert (await ol.resolve(body + "." + signature[:-2] + "AA")).status == "bad"
    assert (await ol.resolve(token + "x")).status == "bad"
    assert (await ol.resolve("")).status == "bad"
    assert (await ol.resolve("a" * 5000)).status == "bad"
    # Genuine signature, another customer: that customer has no such link.
    other = SignedTokens(SECRET).dump({"k": "ol", "c": "43", "l": made["id"], "x": made["expires_at"]})
    assert (await ol.resolve(other)).status == "bad"
    # Another kind of our tokens (an unsubscribe link) is never an order link.
    assert (await ol.resolve(UnsubscribeTokens(SECRET).make("42", "a@b.test"))).status == "bad"
    # Another server's secret.
    assert (await links(redis, clock, b"t" * 32).resolve(token)).status == "bad"
    # The record gone (pruned): refused even with its genuine token.
    await redis.delete(links_key("42"))
    assert (await ol.resolve(token)).status == "bad"


async def test_at_most_max_active_links_work_at_once_and_old_ones_are_pruned(redis: Redis) -> None:
    clock = Clock()
    ol = links(redis, clock)
    for _ in range(MAX_ACTIVE):
        await ol.create("5", expires=3600)
    with pytest.raises(OrderLinkRejected, match="revoke some first"):
        await ol.create("5")
    clock.now += 3600 + KEEP + 1  # all of them ended long ago
    await ol.create("5")
    assert len(await ol.list("5")) == 1
    assert 0 < await redis.ttl(links_key("5")) <= 30 * 86400 + KEEP + 1
