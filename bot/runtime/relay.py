"""A message step's ``recipients`` beyond the chat it runs in: what the conversation loop needs.

With ``main_contact`` or ``all_contacts`` the loop still queues the message in its own chat and
hands it to ``Recipients.relay`` (``bot.runtime.outbound`` implements it); the job that returns
runs before the batch is saved: it sends the message to each other recipient's own conversation
on the same account as a ``Relayed`` event (deduplicated by the message's ref, so a batch that is
redone after a crash relays nothing twice), and takes it out of this chat when this chat's
contact is not a recipient. ``queue_relayed`` is how the receiving conversation sends it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from ..engine import events as ev
from ..engine.state import ConversationState
from ..store import codec
from ..store.conversations import SaveRequest

Job = Callable[[], Awaitable[None]]


class Recipients(Protocol):
    def relay(self, state: ConversationState, recipients: str, entry: dict[str, Any], req: SaveRequest,
              logged: bytes, queued: bytes | None) -> Job:
        """The work of sending ``entry`` to the lead's other recipients; ``logged`` and ``queued``
        are the transcript and outbox items of this chat's copy (``queued`` None: live chat)."""
        ...


def queue_relayed(event: ev.Relayed, state: ConversationState, req: SaveRequest, *, inline: bool) -> None:
    """Send another conversation's message in this one: its transcript and (but the live chat)
    its outbox. A failure is not this conversation's run's to handle (``human``: no
    ``DeliveryFailed`` back)."""
    entry = {**event.message, "relayed_from": event.source}
    req.add_log(entry)
    if not inline:
        req.out.append(codec.pack({"ref": entry.get("ref") or "", "message": entry, "attempts": 0, "human": True}))
        req.outbox_account = state.account
