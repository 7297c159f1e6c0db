"""Which lead events the flows listen to, so the lead loop forwards them to conversations.

The lead loop keeps some sources' events to itself (``bot.runtime.leads.UNFORWARDED``: the CRM's
own changes, the trackers' opens, clicks and page views…): a conversation could only trace them,
and each would cost it a turn. A flow that waits for one (a pause ``on: "event"``), counts one as
a goal, or re-checks a condition at every event (a pause ``on: "condition"``) does listen: those
types are forwarded too — all types but page views while any loaded flow has a condition pause
(so that costs every conversation with such a lead a turn per CRM change: use it knowingly). Read from the
flows this process has loaded (every active version from the start, kept in step by the bots
listener), so it costs no round trip; the customer's own chat messages are never sent back to
their conversation, but reach the contact's processes that wait for them (``hears``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # compiled flows are imported with the first flow (issue 14: startup)
    from ..builder import compiled as c

#: A conversation's own messages: never forwarded back to it.
OWN_SOURCES = frozenset({"chat"})
#: Page views: frequent, and nothing a condition reads changes with them; a condition pause does
#: not make them forwarded (a pause or goal on their type does).
PAGE_VIEWS = frozenset({"site.visit", "site.returning_visitor"})
_ANY = "*"
#: The customer's own messages as lead events (``bot.runtime.chatevents``).
CHAT_KINDS = frozenset({"chat.first_message", "chat.message"})


def listened(flow: c.CompiledFlow) -> frozenset[str]:
    """The event types ``flow`` reacts to (``"*"``: every type), worked out once per version."""
    found: frozenset[str] | None = flow.memo.get("listened")
    if found is None:
        from ..builder.compiled import CPause

        types = set(flow.goals)
        for step in flow.steps.values():
            if isinstance(step, CPause):
                for e in step.until:
                    if e.on == "event" and e.event:
                        types.add(e.event)
                    elif e.on == "condition":
                        types.add(_ANY)
        found = flow.memo["listened"] = frozenset(types)
    return found


class FlowInterest:
    """``wants(source, type)``: whether some loaded flow listens to events of ``type``;
    ``goal(type)``: whether some loaded flow counts it as a goal (a run that ended still counts
    its goals: such events also reach finished processes)."""

    def __init__(self, loaded: Callable[[], list[c.CompiledFlow]], count: Callable[[], int] | None = None) -> None:
        self._loaded = loaded  # e.g. ``BotRegistry.loaded``
        #: How many flows are loaded, without listing them (``BotRegistry.loaded_count``): ``chat``
        #: is asked for every customer message, and listing every cached version each time is not.
        self._count = count
        self._types: frozenset[str] = frozenset()
        self._goals: frozenset[str] = frozenset()
        self._chat = False
        self._seen = -1

    def _update(self) -> None:
        if self._count is not None and self._count() == self._seen:
            return
        flows = self._loaded()
        if len(flows) != self._seen:  # the cache only grows: its size says whether it changed
            self._seen = len(flows)
            self._types = frozenset().union(*(listened(f) for f in flows))
            self._goals = frozenset().union(*(frozenset(f.goals) for f in flows))
            self._chat = not self._types.isdisjoint(CHAT_KINDS)

    def goal(self, event_type: str) -> bool:
        self._update()
        return event_type in self._goals

    def hears(self, event_type: str) -> bool:
        """Whether some loaded flow waits for ``event_type`` by name or counts it as a goal,
        whatever its source: a process hears its contact's chat messages (another conversation
        than theirs; a condition pause's every event does not make them sent)."""
        self._update()
        return event_type in self._types

    def chat(self) -> bool:
        """Whether some loaded flow waits for a chat event by name or counts one as a goal (once a
        loaded version does, until the process restarts: the cache of versions only grows)."""
        self._update()
        return self._chat

    def wants(self, source: str, event_type: str) -> bool:
        if source in OWN_SOURCES:
            return False
        self._update()
        return event_type in self._types or (_ANY in self._types and event_type not in PAGE_VIEWS)
