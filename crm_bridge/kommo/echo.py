"""Our own changes in Kommo as lead events, at once, and Kommo's webhook about them recognised as an echo.

The embedded CRM emits a lead event for every write it makes (``crm_bridge/changes.py``); Kommo
only tells us by webhook, seconds later, without the ``depth`` that stops rule loops, and not at
all when its webhooks are not configured. So when ``KommoCrm`` moves a lead or changes its
responsible user, it emits the ``lead.stage_changed`` / ``lead.responsible_changed`` event itself
(``emit``: onto the lead queues of the ``ChangeSink``, with the command's depth) and, *before* the
write, notes the webhook it expects (``expect``: the new status or user, with the old one). When
that webhook comes, ``is_echo`` consumes the note and remembers the webhook's dedupe id for 7 days,
so the echo and every redelivery of it are dropped: a rule on the move runs once, as with the
embedded CRM. A note nobody consumes expires after ``ECHO_TTL`` (Kommo retries a webhook for about
an hour). Tag changes of the lead are emitted too (``lead.tag_added``/``lead.tag_removed``); Kommo
sends no webhook of its own for them, so there is no echo to expect.
"""

from __future__ import annotations

from collections.abc import Sequence

from redis.asyncio import Redis

from ..changes import Change, ChangeSink

#: How long an expected webhook is waited for.
ECHO_TTL = 3600
#: How long a consumed echo's dedupe id is remembered (as long as lead queues dedupe).
ECHOED_TTL = 7 * 86400

# KEYS: the expectation, the consumed echo's dedupe id. ARGV: the webhook's old value ("" unknown), ttl.
# 2: a redelivered echo; 1: the echo (consumed now); 0: not ours.
_CONSUME = """
if redis.call('EXISTS', KEYS[2]) == 1 then return 2 end
local old = redis.call('GET', KEYS[1])
if not old then return 0 end
if ARGV[1] ~= '' and old ~= '' and old ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
redis.call('SET', KEYS[2], '1', 'EX', tonumber(ARGV[2]))
return 1
"""


def expect_key(lead_id: str, kind: str, value: object) -> str:
    """The note of an expected webhook: ``kind`` is ``stage`` (value: status id) or ``responsible``."""
    return f"sb:kommo:echo:{{lead:{lead_id}}}:{kind}:{value}"


def echoed_key(lead_id: str, dedupe_id: str) -> str:
    return f"sb:kommo:echoed:{{lead:{lead_id}}}:{dedupe_id}"


class KommoEcho:
    """Emits our Kommo writes as lead events and recognises their webhooks (module docstring)."""

    def __init__(self, redis: Redis, sink: ChangeSink) -> None:
        self.redis = redis
        self.sink = sink
        self._consume = redis.register_script(_CONSUME)

    async def expect(self, lead_id: str, kind: str, new: object, old: object) -> None:
        """Before a write: its webhook (``kind`` changed from ``old`` to ``new``) will be an echo."""
        await self.redis.set(expect_key(lead_id, kind, new), "" if old is None else str(old), ex=ECHO_TTL)

    async def forget(self, lead_id: str, kind: str, new: object) -> None:
        """The write failed: no webhook will come for it."""
        await self.redis.delete(expect_key(lead_id, kind, new))

    async def emit(self, changes: Sequence[Change]) -> None:
        """After the write: its events onto the lead queues, handled in the background."""
        if not changes:
            return
        async with self.redis.pipeline(transaction=True) as pipe:
            for command in self.sink.commands(changes):
                pipe.execute_command(*command)
            await pipe.execute()
        self.sink.written(changes)

    async def is_echo(self, lead_id: str, kind: str, new: object, old: object, dedupe_id: str) -> bool:
        """Whether a webhook reporting ``kind`` changed to ``new`` (from ``old``) reports our own write."""
        found = await self._consume(keys=[expect_key(lead_id, kind, new), echoed_key(lead_id, dedupe_id)],
                                    args=["" if old in (None, "") else str(old), ECHOED_TTL])
        return bool(found)
