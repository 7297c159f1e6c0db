"""The identity claims named by a digest of the identity (``redis_crm.identity_field``): a field of
12 bytes where the identity itself took about 35, the older fields renamed at start (once, one
script per bucket; a start interrupted midway is finished by the next), every claim found again."""

from __future__ import annotations

from redis.asyncio import Redis

from crm_bridge import RedisCrm
from crm_bridge.contract import PIPELINES
from crm_bridge.interface import ChannelIdentity, CrmRef
from crm_bridge.redis_crm import (
    _RENAME,
    IDENTITY_DIGESTS_DONE,
    identity_field,
    identity_hash,
    move_identity_names,
    move_old_layout,
)

OLD = [f"livechat:demo:old-{n}" for n in range(40)]


async def test_a_claim_is_a_field_named_by_the_identitys_digest(redis: Redis) -> None:
    crm = RedisCrm(redis, pipelines=PIPELINES)
    ref = await crm.identify(ChannelIdentity("livechat", "demo", "s1"))
    fields = await redis.hgetall(identity_hash("livechat:demo:s1"))
    assert fields == {identity_field("livechat:demo:s1"): f"{ref.contact_id}:{ref.lead_id}".encode()}
    assert len(identity_field("livechat:demo:s1")) == 12  # (the identity: 16 B here, 35 for a live chat's)
    assert await crm.identify(ChannelIdentity("livechat", "demo", "s1")) == ref
    other = CrmRef("900", "901")
    assert await crm.attach(ChannelIdentity("telegram", "shop", "42"), other) == other
    assert await crm.attach(ChannelIdentity("telegram", "shop", "42"), ref) == other  # claimed: kept
    assert await crm.identify(ChannelIdentity("telegram", "shop", "42")) == other


async def _old_claims(redis: Redis) -> None:
    for n, key in enumerate(OLD):  # as an older version wrote them: the identity as the field's name
        await redis.hset(identity_hash(key), key, f"{100 + 2 * n}:{101 + 2 * n}")


async def test_the_claims_an_older_version_named_by_the_identity_are_renamed_at_start(redis: Redis) -> None:
    await _old_claims(redis)
    crm = RedisCrm(redis, pipelines=PIPELINES)
    mine = await crm.identify(ChannelIdentity("livechat", "demo", "new"))
    assert await move_old_layout(redis) == len(OLD)
    assert await redis.get(IDENTITY_DIGESTS_DONE) == str(len(OLD)).encode()
    for n, key in enumerate(OLD):
        assert await redis.hkeys(identity_hash(key)) != [] and not await redis.hexists(identity_hash(key), key)
        assert await crm.identify(ChannelIdentity(*key.split(":"))) == CrmRef(str(100 + 2 * n), str(101 + 2 * n))
    assert await crm.identify(ChannelIdentity("livechat", "demo", "new")) == mine
    assert await move_identity_names(redis) == 0  # once


async def test_a_rename_interrupted_midway_is_finished_by_the_next_start(redis: Redis) -> None:
    await _old_claims(redis)
    half = OLD[:20]
    for key in half:  # the first start renamed these buckets, then died before the done mark
        await redis.eval(_RENAME, 1, identity_hash(key))
    # one claim this version made meanwhile in a bucket not renamed yet, for an old identity: it wins
    await redis.hset(identity_hash(OLD[30]), identity_field(OLD[30]), "7:8")
    assert not await redis.exists(IDENTITY_DIGESTS_DONE)
    renamed = {identity_hash(key) for key in half}
    assert await move_identity_names(redis) == sum(identity_hash(key) not in renamed for key in OLD)
    crm = RedisCrm(redis, pipelines=PIPELINES)
    for n, key in enumerate(OLD):
        expected = CrmRef("7", "8") if n == 30 else CrmRef(str(100 + 2 * n), str(101 + 2 * n))
        assert await crm.identify(ChannelIdentity(*key.split(":"))) == expected
        assert not await redis.hexists(identity_hash(key), key)
