"""A save's claim of its account's outbox queue entry (``bot.store.outbox``, "Replies at once").

The save adds the conversation to the queue in its own round trip (``ZADD NX``): due now, for
the poll, or with a lease, read back with ``ZSCORE`` (and the list's head), to send its messages
at once when the entry is its own. On a cluster the claim (the queue's node) and the script
that pushed the messages (the list's node) are answered in no set order: a claim that found the
entry taken is sent once more after the round trip (``SaveClaim.again``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from redis.exceptions import RedisError

from . import keys as k
from .resp import RespClient
from .scripts import send_commands

log = logging.getLogger("salesbot.store")

#: Outbox entries a save that claimed its outbox entry reads back (the rest: read when sent).
OUTBOX_PEEK = 16
#: Tries of ``SaveClaim.again`` before it leaves the messages to the conversation's next save.
AGAIN_ATTEMPTS = 3


@dataclass(frozen=True, slots=True)
class SaveClaim:
    """Where the claim's commands sit in the save's round trip, and what they wrote."""

    at: int  # the ZADD's index among the round trip's commands
    queue: str
    cid: str
    until: float  # the score written: the lease's end (or now: due for the poll)
    lease: float | None  # None: no claim, the entry is queued for the poll

    @classmethod
    def add(cls, commands: list[Any], cid: str, account: str, lease: float | None, now: float) -> SaveClaim:
        """Append the claim's commands to the save's ``commands``."""
        claim = cls(len(commands), k.outbox_queue_key(account), cid, now + (lease or 0.0), lease)
        commands.append(("ZADD", claim.queue, "NX", claim.until, cid))
        if lease is not None:  # claimed if the entry holds our score (a resend after NOSCRIPT
            # repeats the ZADD): and the list to send, same trip
            commands += [("ZSCORE", claim.queue, cid), ("LRANGE", k.ConversationKey(cid).out, 0, OUTBOX_PEEK - 1)]
        return claim

    def taken(self, replies: Sequence[Any]) -> tuple[list[bytes] | None, float]:
        """``(outbox, outbox_claim)`` of the save: the list's head and our score when claimed,
        else ``(None, 0.0)``."""
        if self.lease is None or replies[self.at + 1] is None or float(replies[self.at + 1]) != self.until:
            return None, 0.0
        return list(replies[self.at + 2]), self.until

    def refused(self, replies: Sequence[Any]) -> bool:
        """The ``ZADD NX`` found the entry taken (by another holder's score)."""
        return replies[self.at] == 0 and self.taken(replies)[0] is None

    async def again(self, client: RespClient, replies: Sequence[Any], now: float) -> tuple[list[bytes] | None, float]:
        """On a cluster, after a save whose claim was refused: add the entry once more, now that
        the script has pushed the messages. Meanwhile the holder may have released the entry and
        read the list's length before they were in it (it then found nothing more to send); from
        now on a holder that releases sees them, and an entry released already is ours to add
        (and claim: returns ``taken``'s pair, the list's head from the save's own read)."""
        until = now + (self.lease or 0.0)
        for attempt in range(AGAIN_ATTEMPTS):  # saved already: a failure must not fail the save (the
            try:  # turn would run again); retried, as the next save is the only other rescue
                added, score = await send_commands(client, [("ZADD", self.queue, "NX", until, self.cid),
                                                            ("ZSCORE", self.queue, self.cid)], [])
                break
            except RedisError as exc:
                log.warning("store.outbox_queue_failed",
                            extra={"cid": self.cid, "error": type(exc).__name__, "attempt": attempt + 1})
        else:
            return None, 0.0
        if self.lease is None or score is None or float(score) != until or not (added or attempt):
            # (a retry's ZADD may find the entry its lost first try added: our score says it is ours)
            return None, 0.0
        return list(replies[self.at + 2]), until
