"""Prometheus metrics, in a registry owned by the app (no process-global state).

``prometheus_client`` is imported, and the metrics made, when one is first used (a message
counted, ``/metrics`` scraped), not at start (issue 14: startup); all are made at once, so a
scrape always lists every one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


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
        self._in: dict[str, Any] = {}
        self._out: dict[str, Any] = {}

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
        self.messages_in = Counter("salesbot_messages_in", "Customer messages received", ["channel"], registry=r)
        self.messages_out = Counter("salesbot_messages_out", "Messages sent to customers", ["channel"], registry=r)
        self.step_errors = Counter("salesbot_step_errors", "Runs that failed or events that crashed", registry=r)
        self.duplicates = Counter("salesbot_duplicates", "Redelivered platform messages ignored", registry=r)
        self.timers_fired = Counter("salesbot_timers_fired", "Timers delivered to conversations", registry=r)
        self.timer_lateness = Histogram(
            "salesbot_timer_lateness_seconds", "How late timers fire",
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60), registry=r)
        self.queue_depth = Gauge("salesbot_queue_depth", "Items waiting", ["queue"], registry=r)
        self.outbox_failures = Counter("salesbot_outbox_failures", "Failed delivery attempts", ["channel", "kind"],
                                       registry=r)
        self.registry = r  # last: it marks the metrics made

    def message_in(self, channel: str) -> None:
        """Count a customer message (the labelled child is looked up once per channel)."""
        child = self._in.get(channel)
        if child is None:
            child = self._in[channel] = self.messages_in.labels(channel)
        child.inc()

    def message_out(self, channel: str) -> None:
        child = self._out.get(channel)
        if child is None:
            child = self._out[channel] = self.messages_out.labels(channel)
        child.inc()
