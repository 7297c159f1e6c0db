"""Prometheus metrics, in a registry owned by the app (no process-global state).

``prometheus_client`` is imported, and the metrics made, when one is first used (a duplicate
counted, ``/metrics`` scraped), not at start (issue 14: startup); all are made at once, so a
scrape always lists every one. Messages in and out and timers fired are counted here as plain
numbers and added to their counters by the scrape (``Metrics.flush``: issue 14 aim 5); so are
timers' lateness, as counts per bucket and their sum.
"""

from __future__ import annotations

from bisect import bisect_left
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


#: ``salesbot_timer_lateness_seconds``' bucket bounds (``+Inf`` after them), in seconds.
LATENESS_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60)


class Metrics:
    registry: CollectorRegistry
    messages_in: Counter
    messages_out: Counter
    step_errors: Counter
    duplicates: Counter
    timers_fired: Counter
    timer_lateness: Histogram
    queue_depth: Gauge
    outbox_failures: Counter

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self._given = registry
        # The hot path's counts (a message in or out, a timer fired, its lateness) are kept here
        # as plain numbers and added to their metrics when the registry is collected (``flush``,
        # by a collector registered before them): a prometheus_client ``inc`` takes a lock and
        # checks its labels, 4-6 k instructions, three times a timer's fire, and an ``observe``
        # about twice that (issue 14 aim 5).
        self._in: dict[str, int] = {}
        self._out: dict[str, int] = {}
        self._fired = 0
        #: Timers' lateness since the last collection: the count per bucket (``+Inf`` last) and the sum.
        self._late = [0] * (len(LATENESS_BUCKETS) + 1)
        self._late_sum = 0.0

    if not TYPE_CHECKING:  # hidden from mypy: a misspelt metric stays a type error

        def __getattr__(self, name: str) -> Any:
            """Only for a name not set yet: the first metric used makes them all."""
            if name not in Metrics.__annotations__ or "registry" in self.__dict__:
                raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
            self._make()
            return self.__dict__[name]

    def _make(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        r = self._given or CollectorRegistry()
        r.register(_Flush(self))  # first: collected before the counters it adds to
        self.messages_in = Counter("salesbot_messages_in", "Customer messages received", ["channel"], registry=r)
        self.messages_out = Counter("salesbot_messages_out", "Messages sent to customers", ["channel"], registry=r)
        self.step_errors = Counter("salesbot_step_errors", "Runs that failed or events that crashed", registry=r)
        self.duplicates = Counter("salesbot_duplicates", "Redelivered platform messages ignored", registry=r)
        self.timers_fired = Counter("salesbot_timers_fired", "Timers delivered to conversations", registry=r)
        self.timer_lateness = Histogram(
            "salesbot_timer_lateness_seconds", "How late timers fire",
            buckets=LATENESS_BUCKETS, registry=r)
        self.queue_depth = Gauge("salesbot_queue_depth", "Items waiting", ["queue"], registry=r)
        self.outbox_failures = Counter("salesbot_outbox_failures", "Failed delivery attempts", ["channel", "kind"],
                                       registry=r)
        self.registry = r  # last: it marks the metrics made

    def message_in(self, channel: str) -> None:
        """Count a customer message (in ``messages_in`` from the next collection)."""
        n = self._in.get(channel)
        if n is None:  # the channel's first since the last collection
            self._made()
            n = 0
        self._in[channel] = n + 1

    def message_out(self, channel: str) -> None:
        """Count a message sent (in ``messages_out`` from the next collection)."""
        n = self._out.get(channel)
        if n is None:
            self._made()
            n = 0
        self._out[channel] = n + 1

    def timer_fired(self, count: int = 1) -> None:
        """Count timers delivered (in ``timers_fired`` from the next collection)."""
        if not self._fired:
            self._made()
        self._fired += count

    def timer_late(self, seconds: float) -> None:
        """Observe a timer's lateness (in ``timer_lateness`` from the next collection): its bucket
        counted here, as ``Histogram.observe`` would (the first bound it is not above). Nothing
        to make first: only a collection reads these, and it makes the metrics (a fire has
        counted itself with ``timer_fired`` before anyway)."""
        self._late[bisect_left(LATENESS_BUCKETS, seconds)] += 1
        self._late_sum += seconds

    def _made(self) -> None:
        """The metrics made with the first count, as with any metric's first use: their import
        and making cost once, where they did (not with a later scrape or another metric)."""
        if "registry" not in self.__dict__:
            self._make()

    def flush(self) -> None:
        """Add the counts kept since the last collection to their Prometheus counters (called by
        the registry's collection, on the event loop's thread as the counting is)."""
        ins, outs, fired, late, late_sum = self._in, self._out, self._fired, self._late, self._late_sum
        self._in, self._out, self._fired = {}, {}, 0
        self._late, self._late_sum = [0] * len(late), 0.0
        for channel, n in ins.items():
            self.messages_in.labels(channel).inc(n)
        for channel, n in outs.items():
            self.messages_out.labels(channel).inc(n)
        if fired:
            self.timers_fired.inc(fired)
        if late_sum or any(late):  # added as ``observe`` adds one: the sum, and the count of each bucket
            histogram = self.timer_lateness
            histogram._sum.inc(late_sum)
            for bucket, n in zip(histogram._buckets, late, strict=True):
                if n:
                    bucket.inc(n)


class _Flush:
    """A collector of nothing that flushes ``Metrics``' counts when the registry is collected."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def describe(self) -> list[Any]:
        return []  # no names of its own: registering it checks none, collects nothing early

    def collect(self) -> list[Any]:
        self.metrics.flush()
        return []
