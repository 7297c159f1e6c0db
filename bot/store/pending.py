"""Which pushes write the conversation's recovery entry (``sb:pending:<shard>``, scored with when
recovery looks at it: docs/server.md, "The recovery entry").

A push scores the entry ``now + lock_ttl``, unless this process wrote it with a push less than
half a lock TTL ago: that entry is still there and due no later than the new push's lock
expires, so a crash after the push is still found (the lock held: looked at again when it
expires, by the expiry in its inbox's head, ``inboxlock.py``; then free with events waiting:
taken over), once its lock expires, as after any push.
Nothing makes the entry's score earlier (pushes, ``postpone_pending``, ``pend``, a failure's
``XX GT``), and recovery forgets only an idle entry already due, a lock TTL after its last
write: never one that a push of the last half TTL relied on, while the processes' clocks differ
by less than half a lock TTL (15 s by default). What wants recovery sooner (a failure's
backoff, an unparked conversation given back, a lead event queued without the lock) writes a
second member, ``keys.retry_member``, forgotten on its own.
"""

from __future__ import annotations

#: Conversations whose last entry a process remembers (more: it forgets the old ones, or all).
REMEMBERED = 10_000


class RecentEntries:
    """When (the store's clock) this process last wrote each conversation's entry with a push."""

    def __init__(self, lock_ttl: float) -> None:
        self.window = lock_ttl / 2
        self._at: dict[str, float] = {}

    def needed(self, cid: str, now: float) -> bool:
        """Whether a push at ``now`` writes the entry (then forgotten until ``wrote``: Redis may
        not answer). A clock set back writes it too."""
        at = self._at.get(cid)
        if at is not None and 0 <= now - at < self.window:
            return False
        self._at.pop(cid, None)
        return True

    def late(self, cid: str, now: float) -> bool:
        """Whether a push that left the entry (``needed`` said no) came back at ``now`` so late
        that it may have reached Redis after the entry came due and recovery forgot it (its
        process's loop stalled, its connection was made again): then it writes the entry after
        all. A push answered within half a lock TTL of the entry's write landed before it was due."""
        at = self._at.get(cid)
        if at is not None and 0 <= now - at < self.window:
            return False
        self._at.pop(cid, None)  # written now: the next push writes its own
        return True

    def wrote(self, cid: str, now: float) -> None:
        """A push's ``ZADD`` of ``now + lock_ttl`` was applied."""
        if len(self._at) >= REMEMBERED:  # keep the entries still in their window, if few enough
            recent = {c: at for c, at in self._at.items() if 0 <= now - at < self.window}
            self._at = recent if len(recent) <= REMEMBERED // 2 else {}
        self._at[cid] = now

    def forget(self, cid: str) -> None:
        """This process moved or removed the entry otherwise: the next push writes it."""
        self._at.pop(cid, None)
