"""Our own changes in Kommo as lead events, at once, and Kommo's webhook about them recognised as an echo.

The embedded CRM emits a lead event for every write it makes (``crm_bridge/changes.py``); Kommo
only tells us by webhook, seconds later, without the ``depth`` that stops rule loops, and not at
all when its webhooks are not configured. So when ``KommoCrm`` moves a lead or changes its
responsible user, it emits the ``lead.stage_changed`` / ``lead.responsible_changed`` event itself
(``emit``: onto the lead queues of the ``ChangeSink``, with the command's depth) and, *before* the
write, notes the webhook it expects (``expect``: the new status or user, with the old one), as
*pending*. The event is stored in the same MULTI/EXEC that marks the note *emitted* (under WATCH).
When that webhook comes, ``is_echo`` consumes the note: an emitted one makes the webhook an echo
(its dedupe id is remembered for 7 days, so every redelivery is dropped too: a rule on the move runs
once, as with the embedded CRM); a pending one — our event was never stored (Redis failed after
Kommo's write) or is not stored yet — makes Kommo's webhook the event, and ``emit`` then finds the
note gone and stores nothing. Either way the move is one event, never none. A note nobody consumes
expires after ``ECHO_TTL`` (Kommo retries a webhook for about an hour). Tag and field changes of
the lead are emitted too (``lead.tag_added``/``lead.tag_removed``/``lead.field_changed``), without
a note: Kommo sends no webhook for tags, and its ``leads[update]`` is not a rule's event.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.exceptions import WatchError

from bot.store.clusterclient import is_cluster, send_plain, split_slot

from ..changes import Change, ChangeSink

log = logging.getLogger("salesbot.crm.kommo")

#: How long an expected webhook is waited for.
ECHO_TTL = 3600
#: How long a consumed echo's dedupe id is remembered (as long as lead queues dedupe).
ECHOED_TTL = 7 * 86400

#: A note's value: its state, then the old value: ``p:<old>`` (our event not stored yet), ``e:<old>`` (stored).
PENDING, EMITTED = "p:", "e:"

# KEYS: the expectation, the consumed echo's dedupe id. ARGV: the webhook's old value ("" unknown), ttl.
# 2: a redelivered echo; 1: the echo (consumed now); 0: not ours, or ours but our event was not stored
# (the note is consumed: the webhook is the event, and emit stores nothing).
_CONSUME = """
if redis.call('EXISTS', KEYS[2]) == 1 then return 2 end
local note = redis.call('GET', KEYS[1])
if not note then return 0 end
local state, old = string.sub(note, 1, 2), string.sub(note, 3)
if state ~= 'p:' and state ~= 'e:' then state, old = 'e:', note end  -- a note of an older version: emitted
if ARGV[1] ~= '' and old ~= '' and old ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
if state ~= 'e:' then return 0 end
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
        await self.redis.set(expect_key(lead_id, kind, new), PENDING + ("" if old is None else str(old)), ex=ECHO_TTL)

    async def forget(self, lead_id: str, kind: str, new: object) -> None:
        """The write failed: no webhook will come for it."""
        await self.redis.delete(expect_key(lead_id, kind, new))

    async def emit(self, changes: Sequence[Change], *, noted: tuple[str, str, object] | None = None) -> None:
        """After the write: its events onto the lead queues, handled in the background. ``noted``
        (lead, kind, new value) names the ``expect`` note of the write: the events are stored with
        the note marked emitted, in one MULTI/EXEC, unless Kommo's webhook consumed the note first
        (then that webhook was the event: nothing is stored)."""
        if not changes:
            return
        commands = self.sink.commands(changes)
        if is_cluster(self.redis):  # a MULTI/EXEC spans one slot: the note's (the lead queue's)
            outside, commands = split_slot(commands, expect_key(*noted) if noted else None)
            if outside:  # the queues' recovery marks first: one without its events is harmless
                await send_plain(self.redis, outside)
        async with self.redis.pipeline(transaction=True) as pipe:
            if noted is None:
                for command in commands:
                    pipe.execute_command(*command)
                await pipe.execute()
            elif not await self._emit_noted(pipe, commands, expect_key(*noted)):
                log.info("kommo.webhook_first", extra={"lead": noted[0], "kind": noted[1]})
                return
        self.sink.written(changes)

    async def _emit_noted(self, pipe: Pipeline, commands: Sequence[Sequence[Any]], key: str) -> bool:
        while True:
            try:
                await pipe.watch(key)
                note = await pipe.get(key)
                text = note.decode() if isinstance(note, bytes) else note
                if not text or not text.startswith(PENDING):
                    await pipe.unwatch()  # type: ignore[no-untyped-call]  # redis-py leaves it untyped
                    return False
                pipe.multi()  # type: ignore[no-untyped-call]
                for command in commands:
                    pipe.execute_command(*command)
                pipe.set(key, EMITTED + text[len(PENDING):], ex=ECHO_TTL, xx=True)
                await pipe.execute()
                return True
            except WatchError:  # the webhook came meanwhile: look again
                continue

    async def is_echo(self, lead_id: str, kind: str, new: object, old: object, dedupe_id: str) -> bool:
        """Whether a webhook reporting ``kind`` changed to ``new`` (from ``old``) reports our own write."""
        found = await self._consume(keys=[expect_key(lead_id, kind, new), echoed_key(lead_id, dedupe_id)],
                                    args=["" if old in (None, "") else str(old), ECHOED_TTL])
        return bool(found)
